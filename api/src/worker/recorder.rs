//! Records what an agent does in Postgres, attributed to its task and step.
//!
//! Model and tool calls are written as they happen (they carry cost and the event stream
//! shows them), each with the loop's checkpoint in the same statement, under the step's
//! lease: a worker that takes the step over continues from the last one. The checkpoint of a
//! final answer is not written: the completion follows at once and clears it, and a worker
//! that dies between the two costs one model call again.
//!
//! The step's messages travel in the checkpoint's transcript and are written to the task's
//! short-term memory with the step's end (`complete_step_with_messages`, or
//! [`StoreRecorder::flush_messages`] on the other outcomes, which empties the stored
//! transcript in the same statement): each message is written once, however many attempts
//! the step took.

use std::sync::{Arc, Mutex, PoisonError};

use agents::{
    CachedToolResult, Checkpoint, LlmCallRecord, RunRecorder, ToolCallRecord, ToolCallStatus, WarmContext,
    run::RecordError,
};
use uuid::Uuid;

use crate::{
    domain::{StepId, TaskId},
    store::{ExecutionStore, StepCheckpoint},
};

pub(super) struct StoreRecorder {
    pub store: Arc<dyn ExecutionStore>,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub task: TaskId,
    pub step: StepId,
    /// The attempt's lease, which fences every checkpoint it writes.
    lease_token: Uuid,
    /// The loop's latest checkpoint, and whether one is stored on the step (this attempt's
    /// or the one it resumed from).
    latest: Mutex<Latest>,
}

#[derive(Default)]
struct Latest {
    checkpoint: Option<Checkpoint>,
    stored: bool,
    /// This attempt's successful tool calls, for the step's warm context.
    tool_results: Vec<CachedToolResult>,
}

impl StoreRecorder {
    pub fn new(
        store: Arc<dyn ExecutionStore>,
        metrics: Arc<crate::metrics::Metrics>,
        task: TaskId,
        step: StepId,
        lease_token: Uuid,
        resumed: Option<&Checkpoint>,
    ) -> Self {
        let latest = Latest { checkpoint: resumed.cloned(), stored: resumed.is_some(), tool_results: Vec::new() };
        Self { store, metrics, task, step, lease_token, latest: Mutex::new(latest) }
    }

    fn latest(&self) -> std::sync::MutexGuard<'_, Latest> {
        self.latest.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The step's messages not written yet, (role, content) in order, which the caller now
    /// writes with the step's completion.
    pub fn take_messages(&self) -> Vec<(String, String)> {
        let mut latest = self.latest();
        latest.checkpoint.as_mut().map(|c| messages(std::mem::take(&mut c.transcript))).unwrap_or_default()
    }

    /// What the step leaves for a warm start of the same work: its conversation as it ended
    /// and the results of this attempt's successful tool calls.
    pub fn warm_context(&self, metadata: serde_json::Value) -> WarmContext {
        let latest = self.latest();
        WarmContext {
            messages: latest.checkpoint.as_ref().map(|c| c.work.clone()).unwrap_or_default(),
            tool_results: latest.tool_results.clone(),
            status: "completed".into(),
            metadata,
        }
    }

    /// Writes the messages not written yet; when a checkpoint is stored, empties its
    /// transcript in the same statement.
    pub async fn flush_messages(&self) -> Result<(), crate::store::StoreError> {
        let (messages, checkpoint) = {
            let mut latest = self.latest();
            let stored = latest.stored;
            let Some(checkpoint) = latest.checkpoint.as_mut() else { return Ok(()) };
            let messages = messages(std::mem::take(&mut checkpoint.transcript));
            (messages, stored.then(|| self.stored(checkpoint)))
        };
        self.store.record_messages(self.task, Some(self.step), &messages, checkpoint.as_ref()).await
    }

    fn stored(&self, checkpoint: &Checkpoint) -> StepCheckpoint {
        // A checkpoint is plain data: serialising it cannot fail.
        let state = serde_json::to_value(checkpoint).unwrap_or_default();
        StepCheckpoint { lease_token: self.lease_token, state }
    }

    /// Remembers `checkpoint` and answers what to store with the call it follows.
    fn advance(&self, checkpoint: &Checkpoint) -> Option<StepCheckpoint> {
        let mut latest = self.latest();
        latest.checkpoint = Some(checkpoint.clone());
        if checkpoint.final_answer().is_some() {
            return None;
        }
        latest.stored = true;
        Some(self.stored(checkpoint))
    }
}

fn messages(transcript: Vec<agents::ChatMessage>) -> Vec<(String, String)> {
    transcript.into_iter().map(|m| (m.role.as_str().to_owned(), m.content)).collect()
}

#[async_trait::async_trait]
impl RunRecorder for StoreRecorder {
    async fn model_call(&self, call: LlmCallRecord, checkpoint: &Checkpoint) -> Result<(), RecordError> {
        let latency = std::time::Duration::from_secs_f64(call.latency_ms.max(0.0) / 1000.0);
        self.metrics.observe_llm_call(&call.provider, &call.model, &call.usage, call.cost_usd, latency);
        let stored = self.advance(checkpoint);
        let step = Some(self.step);
        let recorded = match &call.reservation {
            // The call and the settlement of its reservation commit together.
            Some(reservation) => {
                self.store.record_settled_llm_call(self.task, step, &call, reservation.id, stored.as_ref()).await
            }
            None => self.store.record_llm_call(self.task, step, &call, stored.as_ref()).await,
        };
        recorded.map_err(|e| RecordError(e.to_string()))
    }

    async fn tool_call(&self, call: ToolCallRecord, checkpoint: &Checkpoint) -> Result<(), RecordError> {
        self.metrics.observe_tool_call(&call.tool, call.status);
        if matches!(call.status, ToolCallStatus::Ok | ToolCallStatus::Cached)
            && let Some(reply) = checkpoint.work.last()
        {
            self.latest().tool_results.push(CachedToolResult {
                tool: call.tool.clone(),
                arguments: call.arguments.clone(),
                result: call.result.clone(),
                reply: reply.content.clone(),
            });
        }
        let stored = self.advance(checkpoint);
        self.store
            .record_tool_call(self.task, Some(self.step), &call, stored.as_ref())
            .await
            .map_err(|e| RecordError(e.to_string()))
    }
}
