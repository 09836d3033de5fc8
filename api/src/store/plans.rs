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

/// A plan to save when planning ends: its steps, where it came from and who made it.
#[derive(Debug, Clone, Copy)]
pub struct PlanSave<'a> {
    pub steps: &'a [NewStep],
    pub origin: super::PlanOrigin<'a>,
    /// The planner's name (its version), recorded with the plan version.
    pub created_by: &'a str,
    /// The task starts paused: no step is ready, and the task waits for plan approval.
    pub paused: bool,
}

/// A person's edit of a plan (`PUT /tasks/{id}/plan`), as the handler read the task.
#[derive(Debug, Clone, Copy)]
pub struct PlanEdit<'a> {
    /// The version the edit was made from (`If-Match`).
    pub expected_version: i32,
    /// The steps that stay (they have started, or wait for a worker), as the handler saw them.
    pub kept: &'a [StepId],
    /// The new steps; `max_attempts` is their agent's, which the task's own overrides.
    pub steps: &'a [NewStep],
    /// The whole edited plan, in plan order: kept steps and new ones.
    pub plan: &'a [NewStep],
    /// `user:<id>`.
    pub created_by: &'a str,
}

/// What an edit did.
#[derive(Debug, Clone, PartialEq)]
pub enum EditOutcome {
    /// Saved as `version`; `ready` new steps need a job (none while `paused`).
    Edited {
        version: i32,
        ready: Vec<StepId>,
        paused: bool,
        user_id: String,
        priority: crate::domain::Priority,
    },
    /// Only a task paused for plan approval, or running, has a plan to edit.
    NotEditable(crate::domain::TaskStatus),
    /// The plan is at another version than the edit was made from.
    StaleVersion {
        current: i32,
    },
    /// A step the edit would replace started meanwhile, or one it builds on failed: the plan
    /// must be read again.
    Moved,
    NotFound,
}

/// What `POST /tasks/{id}/start` did.
#[derive(Debug, Clone, PartialEq)]
pub enum StartOutcome {
    /// The task runs; `ready` steps need a job.
    Started {
        ready: Vec<StepId>,
        user_id: String,
        priority: crate::domain::Priority,
    },
    /// Only a task paused for plan approval can be started; this one is in this state.
    NotPaused(crate::domain::TaskStatus),
    NotFound,
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
