//! Budgets for the LLM planner. The planner makes each of its model calls through the
//! agents crate's [`BudgetedModel`], the same call the agent loop makes (reserved against
//! the task's budget, recorded as soon as it answers, which settles the reservation); this
//! module supplies the budget and a recorder that writes the calls to the task, with no
//! step, as planning calls belong to the task.

use std::sync::Arc;

use agents::{BudgetExceeded, BudgetedModel, CallRecorder, Halt, LlmCallRecord, LlmClient, PriceTable, RecordError};
use planner::{HeuristicPlanner, LlmPlanner, PlanLimits, PlanOutcome, ReplanOutcome, ReplanRequest};

use super::StoreBudget;
use crate::{domain::TaskId, metrics::Metrics, store::ExecutionStore};

/// Plans one task with the model, every call reserved and recorded.
pub struct MeteredPlanner {
    planner: LlmPlanner,
    llm: Arc<dyn LlmClient>,
    prices: Arc<PriceTable>,
    budget: StoreBudget,
    recorder: PlanningRecorder,
}

/// How metered planning (or replanning) ended.
pub enum Planned<T = PlanOutcome> {
    /// The planner's outcome; its calls are recorded already.
    Outcome(T),
    /// A planning call did not fit in the budget.
    OverBudget(BudgetExceeded),
    /// A call could not be reserved or recorded: planning must not go on unaccounted.
    Unaccounted(String),
}

/// What a [`MeteredPlanner`] is built from.
pub struct MeteredPlannerParts {
    pub llm: Arc<dyn LlmClient>,
    pub store: Arc<dyn ExecutionStore>,
    pub prices: Arc<PriceTable>,
    pub metrics: Arc<Metrics>,
    pub budget: StoreBudget,
    /// (name, description) of the agents a plan may use.
    pub agents: Vec<(String, String)>,
    /// The task's agent hints, for the heuristic fallback (empty: any built-in agent).
    pub hints: Vec<String>,
    pub limits: PlanLimits,
}

impl MeteredPlanner {
    pub fn new(parts: MeteredPlannerParts) -> Self {
        let fallback = HeuristicPlanner::new(parts.limits).with_hints(parts.hints);
        let planner = LlmPlanner::new(parts.llm.clone(), parts.agents, parts.limits, fallback);
        let recorder =
            PlanningRecorder { store: parts.store, metrics: parts.metrics, task: parts.budget.holder().task };
        Self { planner, llm: parts.llm, prices: parts.prices, budget: parts.budget, recorder }
    }

    pub async fn plan(&self, description: &str) -> Planned {
        let model = BudgetedModel { llm: self.llm.as_ref(), prices: &self.prices, budget: &self.budget };
        halted(self.planner.plan_within(description, &model, &self.recorder).await)
    }

    /// A revised plan after a failure, asked of the model with the failure in the prompt,
    /// every call reserved and recorded as planning's are.
    pub async fn replan(&self, request: &ReplanRequest) -> Planned<ReplanOutcome> {
        let model = BudgetedModel { llm: self.llm.as_ref(), prices: &self.prices, budget: &self.budget };
        halted(self.planner.replan_within(request, &model, &self.recorder).await)
    }
}

fn halted<T>(result: Result<T, Halt>) -> Planned<T> {
    match result {
        Ok(outcome) => Planned::Outcome(outcome),
        Err(Halt::OverBudget(e)) => Planned::OverBudget(e),
        Err(Halt::BudgetUnavailable(reason) | Halt::Unrecorded(RecordError(reason))) => Planned::Unaccounted(reason),
    }
}

/// Writes planning calls to their task, with no step, as the step recorder writes a step's.
struct PlanningRecorder {
    store: Arc<dyn ExecutionStore>,
    metrics: Arc<Metrics>,
    task: TaskId,
}

#[async_trait::async_trait]
impl CallRecorder for PlanningRecorder {
    async fn record_llm_call(&self, call: LlmCallRecord) -> Result<(), RecordError> {
        let latency = std::time::Duration::from_secs_f64(call.latency_ms.max(0.0) / 1000.0);
        self.metrics.observe_llm_call(&call.provider, &call.model, &call.usage, call.cost_usd, latency);
        let recorded = match &call.reservation {
            // The call and the settlement of its reservation commit together.
            Some(reservation) => self.store.record_settled_llm_call(self.task, None, &call, reservation.id, None).await,
            None => self.store.record_llm_call(self.task, None, &call, None).await,
        };
        recorded.map_err(|e| RecordError(e.to_string()))
    }
}
