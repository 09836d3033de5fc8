//! Task planning: turns a free-text task description into a [`Plan`], a small
//! DAG of steps, each assigned to one agent.
//!
//! Owns the plan data model, plan validation and the planners. Invariant: every
//! planner in this crate returns only plans that pass [`validate()`] against the
//! limits it was built with.

pub mod error;
pub mod heuristic;
pub mod llm;
pub mod plan;
pub mod replan;
mod text;
pub mod validate;

pub use error::PlanError;
pub use heuristic::{HEURISTIC_PLANNER_VERSION, HeuristicPlanner};
pub use llm::{LLM_PLANNER_VERSION, LlmPlanner, PlanOutcome, PlannedCall, ReplanOutcome};
pub use plan::{MAX_TITLE_CHARS, Plan, PlannedStep, make_title};
pub use replan::{CurrentStep, ReplanRequest, Revision, StepState, validate_revision};
pub use validate::{PlanLimits, validate};

/// Names of the agents the system ships with; the heuristic planner only
/// assigns these.
pub const BUILTIN_AGENTS: [&str; 5] = ["researcher", "analyst", "engineer", "writer", "reviewer"];

/// Something that turns a task description into a plan.
#[async_trait::async_trait]
pub trait Planner: Send + Sync {
    /// Identifies the planner and its logic version (for plan caching later).
    fn version(&self) -> &str;

    /// Plans `description`; the returned plan has passed [`validate()`].
    async fn plan(&self, description: &str) -> Result<Plan, PlanError>;

    /// A revised plan for the work that did not complete after a step failed for good (see
    /// [`replan`]); the revision has passed [`validate_revision`]. `None` when the planner
    /// sees no other way to do the work.
    async fn replan(&self, request: &ReplanRequest) -> Result<Option<Revision>, PlanError>;
}
