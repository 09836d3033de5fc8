//! `orchestrator submit`: submits a task; with `--wait`, follows it to the end.

use serde_json::json;

use super::{Outcome, Result, SubmitArgs, follow, render, wait::TaskWaiter};
use eval::ApiClient;

use crate::domain::TaskStatus;

/// The user of tasks submitted without an API key or `--user`.
const DEFAULT_USER: &str = "cli";

pub async fn submit(client: &ApiClient, args: &SubmitArgs) -> Result<Outcome> {
    let mut body = json!({ "description": args.goal });
    // With a key the server knows the user; a server without auth needs one named.
    match (&args.user, &args.server.api_key) {
        (Some(user), _) => body["user_id"] = json!(user),
        (None, None) => body["user_id"] = json!(DEFAULT_USER),
        (None, Some(_)) => {}
    }
    if let Some(priority) = &args.priority {
        body["priority"] = json!(priority);
    }
    if let Some(attempts) = args.max_attempts {
        body["max_attempts"] = json!(attempts);
    }
    if let Some(task_type) = &args.task_type {
        body["task_type"] = json!(task_type);
    }
    if !args.require_approval.is_empty() {
        body["require_approval"] = json!(args.require_approval);
    }
    let submitted = client.create(&body).await?;
    let id = submitted.task.id;
    let location = match submitted.location {
        Some(l) if l.starts_with("http://") || l.starts_with("https://") => l,
        Some(path) => format!("{}{path}", client.base_url()),
        None => format!("{}/tasks/{id}", client.base_url()),
    };
    if !args.wait {
        // The id alone on the first line, for scripts: `id=$(orchestrator submit … | head -1)`.
        println!("{id}");
        println!("location: {location}");
        return Ok(Outcome::Success);
    }
    println!("task {id} submitted: {location}");
    let task = follow::follow(client, &TaskWaiter::new(&args.server), id).await?;
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
