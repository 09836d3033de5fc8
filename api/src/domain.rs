//! Domain vocabulary: ids, states and events. The `as_str`/`parse` pairs here are the only
//! mapping between these enums and the CHECK-constrained columns of the schema.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema,
        )]
        #[serde(transparent)]
        #[sqlx(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A new time-ordered id, so recent rows sit together in the index.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }
    };
}

id_type!(
    /// Identifies a task.
    TaskId
);
id_type!(
    /// Identifies a step of a task.
    StepId
);

/// An unknown state string came out of the database: the schema and this file disagree.
#[derive(Debug, thiserror::Error)]
#[error("unknown {kind} `{value}`")]
pub struct UnknownState {
    pub kind: &'static str,
    pub value: String,
}

/// Declares a state enum with its column text, once. With `sql = name` it also declares the
/// macro `name!(Variant, …)` that expands to the states' SQL literals (`'running', 'ready'`),
/// so the statements in the store are written with the enum's text and an unknown state is a
/// compile error, not a query that silently matches nothing. Those macros are in textual
/// scope (`#[macro_use] mod domain` in `lib.rs`): a path-based re-export of a macro that a
/// macro defines cannot be resolved from inside other macros, as the store's are.
macro_rules! state_enum {
    ($(#[$doc:meta])* $name:ident, $kind:literal, sql = $sql:ident { $($(#[$vattr:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        state_enum!($(#[$doc])* $name, $kind { $($(#[$vattr])* $variant => $text),+ });
        // `$` cannot be written in the inner macro's matchers directly: it is handed in.
        state_enum!(@sql ($) $name $sql { $($variant => $text),+ });
    };
    (@sql ($d:tt) $name:ident $sql:ident { $($variant:ident => $text:literal),+ }) => {
        #[doc = concat!("SQL literals of [`", stringify!($name), "`] states, comma-separated: `",
                        stringify!($sql), "!(Running)` is `'running'`.")]
        macro_rules! $sql {
            $( (@one $variant) => { concat!("'", $text, "'") }; )+
            ($d first:ident $d(, $d rest:ident)* $d(,)?) => {
                concat!($sql!(@one $d first) $d(, ", ", $sql!(@one $d rest))*)
            };
        }
    };
    ($(#[$doc:meta])* $name:ident, $kind:literal { $($(#[$vattr:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vattr])* $variant),+
        }

        impl $name {
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text),+
                }
            }
        }

        impl FromStr for $name {
            type Err = UnknownState;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok(Self::$variant),)+
                    _ => Err(UnknownState { kind: $kind, value: s.to_owned() }),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

state_enum!(
    /// `pending → planning → running → completed | partial | failed | cancelled`; a running
    /// task `requires_action` while a person must act (`required_action` says what) and runs
    /// again once they have.
    TaskStatus, "task status", sql = task_status {
        Pending => "pending",
        Planning => "planning",
        Running => "running",
        /// Waiting for a person: a tool call to approve or deny, or a plan to approve. Steps
        /// on other branches go on; nothing waits on a worker.
        RequiresAction => "requires_action",
        Completed => "completed",
        Failed => "failed",
        Cancelled => "cancelled",
        /// Some steps failed (or were skipped after a dependency failed) and others ran to
        /// the end, among them at least one step nothing depends on: the task's result is
        /// what completed.
        Partial => "partial",
    }
);

impl TaskStatus {
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled | Self::Partial)
    }

    /// Whether nothing more happens without someone outside: the task ended, or a person
    /// must act. What `Prefer: wait` (and `submit --wait`) wait for.
    pub fn awaits_outside(self) -> bool {
        self.is_terminal() || self == Self::RequiresAction
    }
}

/// The task states in which its steps run: a task that requires action on one branch goes on
/// with the others. SQL: `status IN (` [`active_task!()`] `)`.
macro_rules! active_task {
    () => {
        task_status!(Running, RequiresAction)
    };
}

state_enum!(
    /// What a task in `requires_action` waits for.
    RequiredAction, "required action", sql = required_action {
        /// Tool calls wait for a decision: `pending_approvals` lists them.
        ToolApproval => "tool_approval",
        /// The plan waits to be approved (and perhaps edited) before it runs.
        PlanApproval => "plan_approval",
    }
);

state_enum!(
    /// A tool call that waited for a person: `pending → approved | denied | expired | cancelled`.
    ApprovalStatus, "approval status", sql = approval_status {
        Pending => "pending",
        Approved => "approved",
        Denied => "denied",
        /// Nobody decided within `APPROVAL_TIMEOUT_SECS`: treated as a denial.
        Expired => "expired",
        /// The task ended (cancelled, or failed elsewhere) before a decision.
        Cancelled => "cancelled",
    }
);

state_enum!(
    /// `pending → ready → running → completed | failed | skipped | cancelled`; a step is
    /// ready when all its dependencies are completed.
    StepStatus, "step status", sql = step_status {
        Pending => "pending",
        Ready => "ready",
        Running => "running",
        /// Tool calls of its last turn wait for a person's decision; no worker holds it.
        Waiting => "waiting",
        Completed => "completed",
        Failed => "failed",
        Skipped => "skipped",
        Cancelled => "cancelled",
    }
);

state_enum!(
    /// Dispatch order: high before normal before low.
    #[derive(Default)]
    Priority, "priority" {
        High => "high",
        #[default]
        Normal => "normal",
        Low => "low",
    }
);

state_enum!(
    /// What a `task_events` row records.
    EventKind, "event kind", sql = event_kind {
        TaskCreated => "task_created",
        TaskPlanning => "task_planning",
        TaskPlanned => "task_planned",
        TaskCompleted => "task_completed",
        TaskFailed => "task_failed",
        TaskCancelled => "task_cancelled",
        /// The task ended `partial`: nothing more could run, some steps failed, and a final
        /// step completed.
        TaskPartial => "task_partial",
        /// `POST /tasks/{id}/retry` started the failed task again; `data.run` counts runs.
        TaskRetried => "task_retried",
        StepReady => "step_ready",
        StepStarted => "step_started",
        StepCompleted => "step_completed",
        StepRetrying => "step_retrying",
        StepFailed => "step_failed",
        StepSkipped => "step_skipped",
        StepCancelled => "step_cancelled",
        StepReleased => "step_released",
        /// The agent ran `STEP_YIELD_AFTER_TURNS` turns and gave its worker slot back; the step
        /// is ready again and continues from its checkpoint.
        StepYielded => "step_yielded",
        /// A claimed step continues from the checkpoint an earlier attempt left (after a
        /// yield, a release, a crash or a failed attempt); follows its `step_started`.
        StepResumed => "step_resumed",
        /// A tool call was recorded (ok, error or rejected); `data` names the tool and status.
        ToolCalled => "tool_called",
        /// A tool call waits for a person's decision; `data` has the call id, tool, arguments
        /// and agent. The step waits and the task requires action.
        ApprovalRequested => "approval_requested",
        /// A person approved or denied a call (or it expired, or its task ended); `data` has
        /// the call id, decision, reason and who decided.
        ApprovalDecided => "approval_decided",
        /// The task's user is at the running-task cap; the task waits, pending. Once per task.
        WaitingForCapacity => "waiting_for_capacity",
    }
);

state_enum!(
    /// A webhook delivery: `pending → delivered | failed`.
    DeliveryStatus, "webhook delivery status", sql = delivery_status {
        /// Waiting for its next attempt (or being attempted).
        Pending => "pending",
        /// A receiver answered 2xx.
        Delivered => "delivered",
        /// Every attempt failed.
        Failed => "failed",
    }
);

state_enum!(
    /// Why a task failed, in a form clients can match on (`tasks.error_code`); `error`
    /// says the same in words.
    TaskErrorCode, "task error code" {
        /// The next model call did not fit in the task's budget or the user's daily quota.
        BudgetExceeded => "budget_exceeded",
        /// Every attempt of a step (or of the planning) was taken over from a worker that
        /// died or hung: the work kills its workers and is not tried again.
        AttemptsExhausted => "attempts_exhausted",
        /// The job kept failing before it could record an outcome and was moved to the
        /// dead-letter stream after `JOB_MAX_DELIVERIES` deliveries.
        DeadLettered => "dead_lettered",
        /// A step the plan marked `required` failed for good: the task failed at once
        /// instead of letting its other branches finish.
        RequiredStepFailed => "required_step_failed",
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_through_their_column_text() {
        for s in TaskStatus::ALL {
            assert_eq!(s.as_str().parse::<TaskStatus>().unwrap(), *s);
        }
        for s in StepStatus::ALL {
            assert_eq!(s.as_str().parse::<StepStatus>().unwrap(), *s);
        }
        for s in EventKind::ALL {
            assert_eq!(s.as_str().parse::<EventKind>().unwrap(), *s);
        }
        for s in TaskErrorCode::ALL {
            assert_eq!(s.as_str().parse::<TaskErrorCode>().unwrap(), *s);
        }
        assert!("done".parse::<TaskStatus>().is_err());
    }

    #[test]
    fn serde_names_match_column_text() {
        for s in StepStatus::ALL {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        assert_eq!(serde_json::to_value(Priority::High).unwrap(), "high");
    }

    #[test]
    fn sql_literals_are_the_column_text() {
        assert_eq!(task_status!(Running), "'running'");
        assert_eq!(step_status!(Pending, Ready, Running), "'pending', 'ready', 'running'");
        const IN_FLIGHT: &str = concat!("status IN (", task_status!(Planning, Running,), ")");
        assert_eq!(IN_FLIGHT, "status IN ('planning', 'running')");
    }

    #[test]
    fn only_final_task_states_are_terminal() {
        let terminal: Vec<_> = TaskStatus::ALL.iter().filter(|s| s.is_terminal()).collect();
        assert_eq!(
            terminal,
            [&TaskStatus::Completed, &TaskStatus::Failed, &TaskStatus::Cancelled, &TaskStatus::Partial]
        );
    }
}
