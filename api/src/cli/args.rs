//! The command line of the client commands. They talk to a running server over HTTP and
//! never touch Postgres or Redis themselves.

use clap::{Args, Subcommand, builder::PossibleValuesParser};
use uuid::Uuid;

use crate::domain::TaskStatus;

/// Commands that drive a running server; flattened into the top level (`orchestrator submit`).
#[derive(Debug, Clone, Subcommand)]
pub enum ClientCommand {
    /// Submit a task to a running server; with --wait, follow it to the end.
    #[command(after_help = EXIT_CODES)]
    Submit(SubmitArgs),
    /// List, show, follow up, cancel or retry tasks on a running server.
    #[command(after_help = EXIT_CODES)]
    Tasks(TasksArgs),
}

/// Printed under `--help`; the codes are [`super::Outcome`]'s.
const EXIT_CODES: &str = "Exit codes: 0 success (with --wait: the task completed), 1 the task failed, 2 the task was \
cancelled, 3 a usage error, an unreachable server or an error answer from it (printed as `error: <detail>`), 4 the \
task ended partial (some steps failed; what completed is the result).";

/// Where the server is; every client command takes these.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// Base URL of the orchestrator's API.
    #[arg(long, global = true, env = "ORCHESTRATOR_URL", default_value = "http://127.0.0.1:8000")]
    pub url: String,

    /// Sent as `Authorization: Bearer <key>` when set; prefer the environment variable, which
    /// stays out of the process list.
    #[arg(long, global = true, env = "ORCHESTRATOR_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct SubmitArgs {
    /// What the task should achieve, in plain words.
    pub goal: String,

    /// The user the task belongs to. With an API key the key's user is the default (only
    /// admin keys may name another); without one, `cli`.
    #[arg(long, env = "ORCHESTRATOR_USER")]
    pub user: Option<String>,

    #[command(flatten)]
    pub options: TaskOptions,

    #[command(flatten)]
    pub server: ServerArgs,
}

/// What `submit` and `tasks follow-up` may say about the task they create.
#[derive(Debug, Clone, Args)]
pub struct TaskOptions {
    /// Dispatch priority.
    #[arg(long, value_parser = ["high", "normal", "low"])]
    pub priority: Option<String>,

    /// Attempts per step (1 to 10), overriding each agent's retry policy.
    #[arg(long, value_parser = clap::value_parser!(i32).range(1..=10))]
    pub max_attempts: Option<i32>,

    /// The kind of work (`task_type`): a short name the task list can filter on.
    #[arg(long = "type")]
    pub task_type: Option<String>,

    /// A tool whose calls wait for a person's approval in this task (repeatable); with
    /// `--wait` the calls are shown as they wait, with the command that decides them.
    #[arg(long = "require-approval", value_name = "TOOL")]
    pub require_approval: Vec<String>,

    /// Follow the task live until it ends, then print its result; the exit code says how it
    /// ended.
    #[arg(long)]
    pub wait: bool,
}

#[derive(Debug, Clone, Args)]
pub struct FollowUpArgs {
    /// The task to follow up; it must have ended.
    pub id: Uuid,

    /// What to do next, in plain words. The new task sees the earlier one's goal and result.
    pub goal: String,

    #[command(flatten)]
    pub options: TaskOptions,
}

#[derive(Debug, Clone, Args)]
pub struct TasksArgs {
    #[command(subcommand)]
    pub command: TasksCommand,

    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Debug, Clone, Subcommand)]
pub enum TasksCommand {
    /// Tasks, newest first.
    List(ListArgs),
    /// One task: its steps with status, agent and attempts, its result and cost.
    Show {
        /// The task's id.
        id: Uuid,
    },
    /// Cancel a task that has not ended.
    Cancel {
        /// The task's id.
        id: Uuid,
    },
    /// Run a failed task again from where it failed (its completed steps are kept).
    Retry {
        /// The task's id.
        id: Uuid,
    },
    /// Continue an ended task with a new one in its thread, as its user's; with --wait, follow
    /// it to the end.
    #[command(after_help = EXIT_CODES)]
    FollowUp(FollowUpArgs),
    /// Approve (or with --deny, deny) a tool call that waits for a person; the call ids are
    /// in `tasks show`, `tasks approvals` and the output of `submit --wait`.
    Approve {
        /// The task's id.
        id: Uuid,
        /// The call's id.
        call: Uuid,
        /// Deny the call instead: the tool does not run and the model reads the reason.
        #[arg(long)]
        deny: bool,
        /// Why; the model reads a denial's reason.
        #[arg(long)]
        reason: Option<String>,
        /// Approve the call with these arguments (a JSON object) instead of the model's.
        #[arg(long, conflicts_with = "deny", value_parser = json_object)]
        arguments: Option<serde_json::Value>,
    },
    /// The task's tool calls that waited for a person, and their decisions.
    Approvals {
        /// The task's id.
        id: Uuid,
    },
}

#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    /// Only this user's tasks.
    #[arg(long)]
    pub user: Option<String>,

    /// Only tasks in this state.
    #[arg(long, value_parser = PossibleValuesParser::new(TaskStatus::ALL.iter().map(|s| s.as_str())))]
    pub status: Option<String>,

    /// Only tasks of this type (`task_type` at submission).
    #[arg(long = "type")]
    pub task_type: Option<String>,

    /// Only the tasks of this thread (any task's `thread_id`): its first task and its
    /// follow-ups.
    #[arg(long)]
    pub thread: Option<Uuid>,

    /// Tasks per page.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub limit: u32,

    /// Continue after a previous page (the cursor it printed).
    #[arg(long)]
    pub cursor: Option<String>,
}

/// A JSON object on the command line (`--arguments '{"url": "https://example.com"}'`).
fn json_object(raw: &str) -> std::result::Result<serde_json::Value, String> {
    match serde_json::from_str::<serde_json::Value>(raw) {
        Ok(value @ serde_json::Value::Object(_)) => Ok(value),
        Ok(_) => Err("must be a JSON object".into()),
        Err(e) => Err(format!("not JSON: {e}")),
    }
}
