//! The command line of the `orchestrator` binary ([`Cli`]) and the commands that are not the
//! service itself: the operator commands `keys` and `users`, straight on Postgres, and the
//! client commands `submit` and `tasks list|show|follow-up|cancel|retry`, over HTTP. The top
//! layer of the crate, next to `http` and `worker`: nothing below it names this module.
//!
//! The client commands talk to a running server over HTTP through [`eval::ApiClient`], the same typed client
//! the evaluation harness uses, and only render here. Errors are one line on stderr
//! (`error: <detail>`, the server's problem `detail` when it sent one), never a panic trace.
//!
//! Exit codes ([`Outcome`]): 0 success (for `submit --wait`: the task completed), 1 the task
//! failed, 2 the task was cancelled, 3 a usage error, an unreachable server or an error answer
//! from it.

mod args;
mod command;
mod follow;
pub mod keys;
mod render;
mod submit;
mod tasks;
pub mod users;
mod wait;

pub use args::{ClientCommand, FollowUpArgs, ListArgs, ServerArgs, SubmitArgs, TaskOptions, TasksArgs, TasksCommand};
pub use command::{Cli, Command, MemoryCommand};
pub use keys::KeysCommand;
pub use users::UsersCommand;

use std::process::ExitCode;

use eval::{ApiClient, ClientError};

/// How a client command ended; its exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Done; for `submit --wait`, the task completed.
    Success = 0,
    TaskFailed = 1,
    TaskCancelled = 2,
    /// A usage error, an unreachable server, or an error answer from it.
    Error = 3,
    /// For `submit --wait`: the task ended `partial` (some steps failed, a result completed).
    TaskPartial = 4,
}

impl From<Outcome> for ExitCode {
    fn from(outcome: Outcome) -> Self {
        ExitCode::from(outcome as u8)
    }
}

/// Runs a client command and says how it ended.
pub async fn run(command: ClientCommand) -> ExitCode {
    let result = match command {
        ClientCommand::Submit(args) => submit::submit(&client(&args.server), &args).await,
        ClientCommand::Tasks(args) => tasks::run(&client(&args.server), &args.server, &args.command).await,
    };
    match result {
        Ok(outcome) => outcome.into(),
        Err(e) => {
            eprintln!("error: {}", e.detail());
            Outcome::Error.into()
        }
    }
}

/// Prints a command line that did not parse (or `--help`) and picks the exit code: 0 for help
/// and version, [`Outcome::Error`] otherwise, so that 2 always means a cancelled task.
pub fn usage(error: &clap::Error) -> ExitCode {
    // Printing to a closed terminal has nowhere to report to.
    let _ = error.print();
    if error.use_stderr() { Outcome::Error.into() } else { ExitCode::SUCCESS }
}

fn client(server: &ServerArgs) -> ApiClient {
    ApiClient::new(server.url.clone()).with_api_key(server.api_key.clone())
}

/// The error a command could not get past.
type Result<T> = std::result::Result<T, ClientError>;
