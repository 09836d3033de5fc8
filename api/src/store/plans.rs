//! Plan versions: every plan a task got, as it was saved, who made it and why.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{NewStep, Step};
use crate::domain::{StepId, StepStatus};

/// One `plan_versions` row.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanVersion {
    /// 1 for the first plan, one more for each revision.
    pub version: i32,
    /// The whole plan as saved, in plan order: steps kept from the version before (they had
    /// completed) and new ones.
    pub steps: Vec<NewStep>,
    /// The planner's name (`heuristic-2`, `llm-1`) or `user:<id>`.
    pub created_by: String,
    /// Why the version replaced the one before (the failure a replan answered); `None` for
    /// the first.
    pub reason: Option<String>,
    /// The steps of the version before that this one replaced, as they ended.
    pub replaced: Vec<ReplacedStep>,
    pub created_at: DateTime<Utc>,
}

/// A step a newer plan version replaced, as it ended (`plan_versions.replaced`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplacedStep {
    pub id: StepId,
    pub title: String,
    pub instruction: String,
    pub agent: String,
    pub status: StepStatus,
    pub error: Option<String>,
}

/// What a replan starts from: the task's steps as they ended, and who failed what before.
#[derive(Debug, Clone)]
pub struct ReplanContext {
    /// The current plan's steps in plan order, with their states, outputs and errors.
    pub steps: Vec<Step>,
    /// (instruction, agent) of the steps that failed in earlier plan versions, oldest first.
    pub earlier_failures: Vec<(String, String)>,
}

/// A replan's revised plan, to save.
#[derive(Debug, Clone, Copy)]
pub struct ReplanSave<'a> {
    /// The new steps: positions after every step the task has had, dependencies on completed
    /// steps or on each other.
    pub steps: &'a [NewStep],
    /// The whole revised plan as saved in the version: the completed steps, then `steps`.
    pub plan: &'a [NewStep],
    /// The planner that made it.
    pub created_by: &'a str,
    /// The failure it answers.
    pub reason: &'a str,
}
