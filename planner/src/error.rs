//! The planner crate's single error type.
//!
//! Step indices in errors are zero-based, the same indices `depends_on` uses,
//! so a caller can point at the offending step directly.

/// Why a plan could not be produced or is not acceptable.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum PlanError {
    /// The plan has no steps.
    #[error("the plan has no steps")]
    Empty,
    /// The plan has more steps than the limits allow.
    #[error("the plan has {count} steps, more than the maximum of {max}")]
    TooManySteps {
        /// Number of steps in the plan.
        count: usize,
        /// Largest number of steps allowed.
        max: usize,
    },
    /// A required text field of a step is empty or whitespace only.
    #[error("step {step}: the {field} is blank")]
    BlankField {
        /// Index of the offending step.
        step: usize,
        /// Name of the blank field (`"title"` or `"instruction"`).
        field: &'static str,
    },
    /// A step's title is longer than [`crate::MAX_TITLE_CHARS`].
    #[error("step {step}: the title is longer than {max} characters")]
    TitleTooLong {
        /// Index of the offending step.
        step: usize,
        /// Largest number of characters allowed.
        max: usize,
    },
    /// A step's instruction is longer than the limits allow.
    #[error("step {step}: the instruction is longer than {max} characters")]
    InstructionTooLong {
        /// Index of the offending step.
        step: usize,
        /// Largest number of characters allowed.
        max: usize,
    },
    /// A step names an agent that does not exist.
    #[error("step {step}: unknown agent \"{agent}\"")]
    UnknownAgent {
        /// Index of the offending step.
        step: usize,
        /// The agent name as given.
        agent: String,
    },
    /// A step depends on itself or on a step index outside the plan.
    #[error("step {step}: dependency {dependency} is not another step of the plan")]
    BadDependency {
        /// Index of the offending step.
        step: usize,
        /// The dependency index as given.
        dependency: usize,
    },
    /// A step lists the same dependency more than once.
    #[error("step {step}: dependency {dependency} is listed more than once")]
    DuplicateDependency {
        /// Index of the offending step.
        step: usize,
        /// The repeated dependency index.
        dependency: usize,
    },
    /// The dependencies form a cycle, so the plan can never finish.
    #[error("step {step} is part of a dependency cycle")]
    Cycle {
        /// Smallest index among the steps on the cycle.
        step: usize,
    },
    /// The task description to plan is empty or whitespace only.
    #[error("the task description is empty")]
    EmptyDescription,
    /// A model-backed planner failed or answered something unusable.
    #[error("the planning model failed: {0}")]
    Model(String),
}
