//! Records what an agent does in Postgres, attributed to its task and step.
//!
//! Model and tool calls are written as they happen (they carry cost and the event stream
//! shows them). The step's messages are kept in memory and written with the step's end
//! (`complete_step_with_messages`, or [`StoreRecorder::flush_messages`] on the other
//! outcomes): two commits fewer per step. Nothing reads a step's own messages while it runs,
//! and an attempt cut short by a crash is run again, writing its messages anew.

use std::sync::{Arc, Mutex, PoisonError};

use agents::{ChatMessage, LlmCallRecord, RunRecorder, ToolCallRecord, run::RecordError};

use crate::{
    domain::{StepId, TaskId},
    store::ExecutionStore,
};

pub(super) struct StoreRecorder {
    pub store: Arc<dyn ExecutionStore>,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub task: TaskId,
    pub step: Option<StepId>,
    /// (role, content) of the messages not written yet, in order.
    pending: Mutex<Vec<(String, String)>>,
}

impl StoreRecorder {
    pub fn new(
        store: Arc<dyn ExecutionStore>,
        metrics: Arc<crate::metrics::Metrics>,
        task: TaskId,
        step: StepId,
    ) -> Self {
        Self { store, metrics, task, step: Some(step), pending: Mutex::default() }
    }

    /// The messages not written yet, which the caller now writes.
    pub fn take_messages(&self) -> Vec<(String, String)> {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Writes the messages not written yet.
    pub async fn flush_messages(&self) -> Result<(), crate::store::StoreError> {
        let messages = self.take_messages();
        self.store.record_messages(self.task, self.step, &messages).await
    }
}

#[async_trait::async_trait]
impl RunRecorder for StoreRecorder {
    async fn llm_call(&self, call: LlmCallRecord) -> Result<(), RecordError> {
        let latency = std::time::Duration::from_secs_f64(call.latency_ms.max(0.0) / 1000.0);
        self.metrics.observe_llm_call(&call.provider, &call.model, &call.usage, call.cost_usd, latency);
        let recorded = match &call.reservation {
            // The call and the settlement of its reservation commit together.
            Some(reservation) => self.store.record_settled_llm_call(self.task, self.step, &call, reservation.id).await,
            None => self.store.record_llm_call(self.task, self.step, &call).await,
        };
        recorded.map_err(|e| RecordError(e.to_string()))
    }

    async fn tool_call(&self, call: ToolCallRecord) -> Result<(), RecordError> {
        self.metrics.observe_tool_call(&call.tool, call.status);
        self.store.record_tool_call(self.task, self.step, &call).await.map_err(|e| RecordError(e.to_string()))
    }

    async fn message(&self, message: &ChatMessage) -> Result<(), RecordError> {
        let role = message.role.as_str().to_owned();
        self.pending.lock().unwrap_or_else(PoisonError::into_inner).push((role, message.content.clone()));
        Ok(())
    }
}
