//! The budgeted model call, the one way this crate and its host call a model under a
//! budget: the agent loop for each of its turns and summaries, and the LLM planner (through
//! `planner::LlmPlanner::plan_within`).
//!
//! [`BudgetedModel::call`] reserves the call's worst case with the [`Budget`] (when the
//! budget limits anything), puts the reserved output ceiling on the request so the provider
//! enforces it, makes the call, gives the reservation back when the call fails, prices the
//! answer and hands its record, reservation included, to the [`CallRecorder`], which settles
//! the reservation in the same write. [`BudgetedModel::answer`] does all but the record, for
//! the agent loop, which records the call together with its checkpoint.
//!
//! Invariant: a call that answered has been recorded before [`BudgetedModel::call`] returns
//! it (the loop records what [`BudgetedModel::answer`] returns before it goes on); a call
//! whose cost cannot be kept ([`Halt`]) stops whoever made it, since going on would spend
//! unaccounted money.

use std::time::Instant;

use crate::{
    budget::{Budget, BudgetError, BudgetExceeded, CallEstimate, Reservation},
    llm::{ChatRequest, ChatResponse, LlmClient, LlmError},
    pricing::PriceTable,
    record::{CallRecorder, LlmCallRecord, RecordError},
};

/// A model client, the prices of its models and the budget its calls are reserved against.
#[derive(Clone, Copy)]
pub struct BudgetedModel<'a> {
    pub llm: &'a dyn LlmClient,
    pub prices: &'a PriceTable,
    pub budget: &'a dyn Budget,
}

/// A call that answered, and was recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct Answered {
    pub response: ChatResponse,
    /// The answer's usage at its model's price; 0 for a model without a price.
    pub cost_usd: f64,
    /// Wall time of the model call alone (retries included), not of the reservation or the
    /// record.
    pub latency_ms: f64,
}

/// A call that answered, and the record to write for it (not written yet).
#[derive(Debug, Clone, PartialEq)]
pub struct Priced {
    pub answered: Answered,
    pub record: LlmCallRecord,
}

/// Why a budgeted call gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The model failed; its reservation, if any, was given back. The caller may go on
    /// (the planner falls back to its heuristic).
    #[error(transparent)]
    Model(#[from] LlmError),
    /// The caller must stop.
    #[error(transparent)]
    Halted(#[from] Halt),
}

/// Why whoever made a call must stop: it did not fit, or its cost could not be kept.
#[derive(Debug, thiserror::Error)]
pub enum Halt {
    /// The call does not fit in the task's budget or the user's quota; it was not made.
    #[error(transparent)]
    OverBudget(BudgetExceeded),
    /// The budget's store could not be reached; the call was not made.
    #[error("could not reach the budget: {0}")]
    BudgetUnavailable(String),
    /// The call answered but could not be recorded.
    #[error(transparent)]
    Unrecorded(RecordError),
}

impl Halt {
    /// Why the cost could not be kept, in the words of the budget or the recorder; `None`
    /// for [`Halt::OverBudget`].
    pub fn unaccounted_reason(&self) -> Option<&str> {
        match self {
            Self::OverBudget(_) => None,
            Self::BudgetUnavailable(reason) | Self::Unrecorded(RecordError(reason)) => Some(reason),
        }
    }
}

impl From<BudgetError> for Halt {
    fn from(e: BudgetError) -> Self {
        match e {
            BudgetError::Exceeded(e) => Self::OverBudget(e),
            BudgetError::Unavailable(reason) => Self::BudgetUnavailable(reason),
        }
    }
}

impl BudgetedModel<'_> {
    /// Reserves, makes, prices and records one call; see the module docs.
    pub async fn call(
        &self,
        request: ChatRequest,
        recorder: &(impl CallRecorder + ?Sized),
    ) -> Result<Answered, CallError> {
        let priced = self.answer(request).await?;
        recorder.record_llm_call(priced.record).await.map_err(Halt::Unrecorded)?;
        Ok(priced.answered)
    }

    /// Reserves, makes and prices one call; the caller must record [`Priced::record`] (which
    /// settles the reservation) before it acts on the answer.
    pub async fn answer(&self, mut request: ChatRequest) -> Result<Priced, CallError> {
        let reservation = self.reserve(&mut request).await.map_err(Halt::from)?;
        let started = Instant::now();
        let response = match self.llm.chat(&request).await {
            Ok(response) => response,
            Err(e) => {
                if let Some(reservation) = reservation
                    && let Err(release) = self.budget.release(reservation).await
                {
                    // Left to the host's sweep of reservations whose lease has ended.
                    tracing::warn!(error = %release, "could not release the reservation of a failed model call");
                }
                return Err(e.into());
            }
        };
        let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
        let cost_usd = self.prices.cost(&response.model, &response.usage).unwrap_or_else(|| {
            tracing::warn!(model = %response.model, "model has no price; its calls are recorded at zero cost");
            0.0
        });
        let record = LlmCallRecord {
            provider: self.llm.provider().to_owned(),
            model: response.model.clone(),
            usage: response.usage,
            cost_usd,
            latency_ms,
            reservation,
        };
        Ok(Priced { answered: Answered { response, cost_usd, latency_ms }, record })
    }

    /// Reserves the call's worst case when the budget limits anything, after putting the
    /// output ceiling on the request, so the provider enforces the worst case reserved.
    async fn reserve(&self, request: &mut ChatRequest) -> Result<Option<Reservation>, BudgetError> {
        let Some(ceiling) = self.budget.output_ceiling() else { return Ok(None) };
        request.max_tokens = Some(request.max_tokens.map_or(ceiling, |asked| asked.min(ceiling)));
        let model = request.model.clone().unwrap_or_else(|| self.llm.model().to_owned());
        let estimate = CallEstimate::worst_case(request, &model, self.prices).await;
        self.budget.reserve(&estimate).await.map(Some)
    }
}
