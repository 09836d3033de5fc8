//! The [`Budget`] asked before every model call (the agent loop's and the planner's, both
//! through [`crate::BudgetedModel`]).
//!
//! Before a call its worst case is priced ([`CallEstimate`]: every prompt token plus the
//! output ceiling put on the request, at the model's price) and the budget is asked to
//! reserve it. A refusal stops the step or the planning with [`BudgetExceeded`]. A granted
//! [`Reservation`] travels with the call's [`crate::LlmCallRecord`], so the host settles it
//! with the real usage in the same write that records the call; a call that fails gives it
//! back ([`Budget::release`]).
//!
//! The guarantee is only as good as the ceiling: providers must honour the request's
//! `max_tokens` (the HTTP providers send it), and the model that answers must be priced no
//! higher than the one the request named.

use uuid::Uuid;

use crate::{
    llm::{ChatRequest, Usage, prompt_tokens, warm_up_tokenizer},
    pricing::PriceTable,
};

/// The worst case of one model call.
#[derive(Debug, Clone, PartialEq)]
pub struct CallEstimate {
    /// The model the request names (or the client's default).
    pub model: String,
    pub prompt_tokens: u64,
    /// The ceiling on the answer, as sent to the provider.
    pub max_output_tokens: u64,
    /// Both at the model's price; 0 for a model without a price.
    pub cost_usd: f64,
}

impl CallEstimate {
    /// Prices `request` (whose `max_tokens` must be set) at `model`'s price. Counts on the
    /// blocking pool: a long prompt takes noticeable CPU to encode.
    pub async fn worst_case(request: &ChatRequest, model: &str, prices: &PriceTable) -> Self {
        warm_up_tokenizer().await;
        let counted = request.clone();
        let prompt = match tokio::task::spawn_blocking(move || prompt_tokens(&counted)).await {
            Ok(n) => n,
            // Only a panic in the tokenizer gets here; inline counting is the best left.
            Err(_) => prompt_tokens(request),
        };
        let max_output = u64::from(request.max_tokens.unwrap_or(0));
        let usage = Usage { prompt_tokens: prompt, completion_tokens: max_output, cached_tokens: 0 };
        let cost_usd = prices.cost(model, &usage).unwrap_or(0.0);
        Self { model: model.to_owned(), prompt_tokens: prompt, max_output_tokens: max_output, cost_usd }
    }

    /// Tokens the call may use in all.
    pub fn tokens(&self) -> u64 {
        self.prompt_tokens.saturating_add(self.max_output_tokens)
    }
}

/// Room taken from a budget for one call.
#[derive(Debug, Clone, PartialEq)]
pub struct Reservation {
    pub id: Uuid,
    pub cost_usd: f64,
    pub tokens: u64,
}

/// Which limit a call did not fit in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetLimit {
    /// The task's `max_cost_usd`.
    TaskCost,
    /// The task's `max_tokens`.
    TaskTokens,
    /// The user's daily cost quota.
    DailyCost,
}

impl BudgetLimit {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TaskCost => "the task's max_cost_usd",
            Self::TaskTokens => "the task's max_tokens",
            Self::DailyCost => "the user's daily cost quota",
        }
    }
}

/// The next call does not fit. The text starts with `budget_exceeded`, the stable code.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error(
    "budget_exceeded: the next model call may use up to {tokens} tokens costing up to ${cost_usd:.6}, which does not fit in {}",
    limit.as_str()
)]
pub struct BudgetExceeded {
    pub limit: BudgetLimit,
    pub cost_usd: f64,
    pub tokens: u64,
}

impl BudgetExceeded {
    pub fn new(limit: BudgetLimit, estimate: &CallEstimate) -> Self {
        Self { limit, cost_usd: estimate.cost_usd, tokens: estimate.tokens() }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BudgetError {
    #[error(transparent)]
    Exceeded(#[from] BudgetExceeded),
    /// The budget's store could not be reached; the step must not run unaccounted.
    #[error("could not reach the budget: {0}")]
    Unavailable(String),
}

/// Asked before every budgeted model call. Implemented by the host (Postgres in `api`).
#[async_trait::async_trait]
pub trait Budget: Send + Sync {
    /// The output ceiling put on a request that names none, so that its worst case is
    /// bounded; `None` when nothing limits this run, and calls are then made as they are,
    /// without reserving.
    fn output_ceiling(&self) -> Option<u32>;
    /// Reserves `estimate`, or refuses with [`BudgetError::Exceeded`].
    async fn reserve(&self, estimate: &CallEstimate) -> Result<Reservation, BudgetError>;
    /// Gives back the reservation of a call that failed and used nothing.
    async fn release(&self, reservation: Reservation) -> Result<(), BudgetError>;
}

/// No limits: the agents crate's own tests, and hosts without budgets.
#[derive(Debug, Clone, Copy, Default)]
pub struct Unlimited;

#[async_trait::async_trait]
impl Budget for Unlimited {
    fn output_ceiling(&self) -> Option<u32> {
        None
    }

    async fn reserve(&self, estimate: &CallEstimate) -> Result<Reservation, BudgetError> {
        Ok(Reservation { id: Uuid::nil(), cost_usd: estimate.cost_usd, tokens: estimate.tokens() })
    }

    async fn release(&self, _reservation: Reservation) -> Result<(), BudgetError> {
        Ok(())
    }
}
