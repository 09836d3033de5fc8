//! `orchestrator submit` and `orchestrator tasks follow-up`: create a task; with `--wait`,
//! follow it to the end.

use serde_json::{Value, json};

use super::{FollowUpArgs, Outcome, Result, ServerArgs, SubmitArgs, TaskOptions, follow, render, wait::TaskWaiter};
use eval::{ApiClient, client::Submitted};

use crate::domain::TaskStatus;

/// The user of tasks submitted without an API key or `--user`.
const DEFAULT_USER: &str = "cli";

pub async fn submit(client: &ApiClient, args: &SubmitArgs) -> Result<Outcome> {
    let mut body = body(&args.goal, &args.options);
    // With a key the server knows the user; a server without auth needs one named.
    match (&args.user, &args.server.api_key) {
        (Some(user), _) => body["user_id"] = json!(user),
        (None, None) => body["user_id"] = json!(DEFAULT_USER),
        (None, Some(_)) => {}
    }
    let submitted = client.create(&body).await?;
    report(client, &args.server, submitted, args.options.wait).await
}

/// A follow-up belongs to its parent's user: the request names none.
pub async fn follow_up(client: &ApiClient, server: &ServerArgs, args: &FollowUpArgs) -> Result<Outcome> {
    let submitted = client.follow_up(args.id, &body(&args.goal, &args.options)).await?;
    report(client, server, submitted, args.options.wait).await
}

fn body(goal: &str, options: &TaskOptions) -> Value {
    let mut body = json!({ "description": goal });
    if let Some(priority) = &options.priority {
        body["priority"] = json!(priority);
    }
    if let Some(attempts) = options.max_attempts {
        body["max_attempts"] = json!(attempts);
    }
    if let Some(task_type) = &options.task_type {
        body["task_type"] = json!(task_type);
    }
    if !options.require_approval.is_empty() {
        body["require_approval"] = json!(options.require_approval);
    }
    body
}

/// Prints where the created task is; with `wait`, follows it and says how it ended.
async fn report(client: &ApiClient, server: &ServerArgs, submitted: Submitted, wait: bool) -> Result<Outcome> {
    let id = submitted.task.id;
    let location = match submitted.location {
        Some(l) if l.starts_with("http://") || l.starts_with("https://") => l,
        Some(path) => format!("{}{path}", client.base_url()),
        None => format!("{}/tasks/{id}", client.base_url()),
    };
    if !wait {
        // The id alone on the first line, for scripts: `id=$(orchestrator submit … | head -1)`.
        println!("{id}");
        println!("location: {location}");
        return Ok(Outcome::Success);
    }
    println!("task {id} submitted: {location}");
    let task = follow::follow(client, &TaskWaiter::new(server), id).await?;
    print!("{}", render::summary(&task));
    Ok(match task.status.parse() {
        Ok(TaskStatus::Completed) => Outcome::Success,
        Ok(TaskStatus::Failed) => Outcome::TaskFailed,
        Ok(TaskStatus::Cancelled) => Outcome::TaskCancelled,
        Ok(TaskStatus::Partial) => Outcome::TaskPartial,
        // `follow` only returns a task that has ended.
        _ => Outcome::Error,
    })
}
