//! Records what an agent does in Postgres, attributed to its task and step.

use std::sync::Arc;

use agents::{ChatMessage, LlmCallRecord, Role, RunRecorder, ToolCallRecord, run::RecordError};

use crate::{
    domain::{StepId, TaskId},
    store::ExecutionStore,
};

pub(super) struct StoreRecorder {
    pub store: Arc<dyn ExecutionStore>,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub task: TaskId,
    pub step: Option<StepId>,
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
        self.metrics.tool_calls.with_label_values(&[&call.tool, call.status.as_str()]).inc();
        self.store.record_tool_call(self.task, self.step, &call).await.map_err(|e| RecordError(e.to_string()))
    }

    async fn message(&self, message: &ChatMessage) -> Result<(), RecordError> {
        let role = match message.role {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        };
        self.store
            .record_message(self.task, self.step, role, &message.content)
            .await
            .map_err(|e| RecordError(e.to_string()))
    }
}
