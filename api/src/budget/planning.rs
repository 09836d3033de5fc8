//! Budgets for the LLM planner. The planner crate calls its model client itself, so the
//! planner gets a client that reserves each call before passing it on and records it
//! (settling the reservation) as soon as it answers, just as the agent loop does.

use std::{
    sync::{Arc, Mutex},
    time::Instant,
};

use agents::{
    Budget, BudgetError, BudgetExceeded, CallEstimate, ChatRequest, ChatResponse, LlmCallRecord, LlmClient, LlmError,
    PriceTable, Reservation,
};
use planner::{HeuristicPlanner, LlmPlanner, PlanLimits, PlanOutcome};

use super::StoreBudget;
use crate::{metrics::Metrics, store::ExecutionStore};

/// Status a refused planning call reports to the planner (which then stops asking).
const PAYMENT_REQUIRED: u16 = 402;

/// Plans one task with the model, every call reserved and recorded.
pub struct MeteredPlanner {
    planner: LlmPlanner,
    client: Arc<MeteredClient>,
}

/// How metered planning ended.
pub enum Planned {
    /// The planner's outcome; its calls are recorded already.
    Outcome(PlanOutcome),
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
        let client = Arc::new(MeteredClient {
            inner: parts.llm,
            store: parts.store,
            prices: parts.prices,
            metrics: parts.metrics,
            budget: parts.budget,
            stop: Mutex::new(None),
        });
        let fallback = HeuristicPlanner::new(parts.limits).with_hints(parts.hints);
        let planner = LlmPlanner::new(client.clone(), parts.agents, parts.limits, fallback);
        Self { planner, client }
    }

    pub async fn plan(&self, description: &str) -> Planned {
        let outcome = self.planner.plan_with_usage(description).await;
        let stop = self.client.stop.lock().unwrap_or_else(|e| e.into_inner()).take();
        match stop {
            None => Planned::Outcome(outcome),
            Some(BudgetError::Exceeded(e)) => Planned::OverBudget(e),
            Some(BudgetError::Unavailable(reason)) => Planned::Unaccounted(reason),
        }
    }
}

struct MeteredClient {
    inner: Arc<dyn LlmClient>,
    store: Arc<dyn ExecutionStore>,
    prices: Arc<PriceTable>,
    metrics: Arc<Metrics>,
    budget: StoreBudget,
    /// Why planning must stop, set by the call that found out.
    stop: Mutex<Option<BudgetError>>,
}

impl MeteredClient {
    /// Remembers why planning stops, and tells the planner in its own terms.
    fn stop(&self, reason: BudgetError) -> LlmError {
        let error = match &reason {
            BudgetError::Exceeded(e) => LlmError::Rejected { status: PAYMENT_REQUIRED, message: e.to_string() },
            BudgetError::Unavailable(m) => LlmError::Unavailable(m.clone()),
        };
        *self.stop.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason);
        error
    }

    async fn reserve(&self, request: &mut ChatRequest) -> Result<Option<Reservation>, BudgetError> {
        let Some(ceiling) = self.budget.output_ceiling() else { return Ok(None) };
        request.max_tokens = Some(request.max_tokens.map_or(ceiling, |asked| asked.min(ceiling)));
        let model = request.model.clone().unwrap_or_else(|| self.inner.model().to_owned());
        let estimate = CallEstimate::worst_case(request, &model, &self.prices).await;
        self.budget.reserve(&estimate).await.map(Some)
    }
}

#[async_trait::async_trait]
impl LlmClient for MeteredClient {
    fn provider(&self) -> &str {
        self.inner.provider()
    }

    fn model(&self) -> &str {
        self.inner.model()
    }

    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, LlmError> {
        let mut request = request.clone();
        let reservation = self.reserve(&mut request).await.map_err(|e| self.stop(e))?;
        let started = Instant::now();
        let response = match self.inner.chat(&request).await {
            Ok(response) => response,
            Err(e) => {
                if let Some(r) = reservation
                    && let Err(release) = self.budget.release(r).await
                {
                    tracing::warn!(error = %release, "could not release the reservation of a failed planning call");
                }
                return Err(e);
            }
        };
        let latency = started.elapsed();
        let cost_usd = self.prices.cost(&response.model, &response.usage).unwrap_or_else(|| {
            tracing::warn!(model = %response.model, "model has no price; its calls are recorded at zero cost");
            0.0
        });
        self.metrics.observe_llm_call(self.inner.provider(), &response.model, &response.usage, cost_usd, latency);
        let record = LlmCallRecord {
            provider: self.inner.provider().to_owned(),
            model: response.model.clone(),
            usage: response.usage,
            cost_usd,
            latency_ms: latency.as_secs_f64() * 1000.0,
            reservation: None,
        };
        let task = self.budget.holder().task;
        // Planning calls belong to the task, not to a step.
        let recorded = match &reservation {
            Some(r) => self.store.record_settled_llm_call(task, None, &record, r.id).await,
            None => self.store.record_llm_call(task, None, &record).await,
        };
        recorded.map_err(|e| self.stop(BudgetError::Unavailable(e.to_string())))?;
        Ok(response)
    }
}
