//! `orchestrator tasks list|show|follow-up|cancel|retry|approve|approvals`.

use eval::{ApiClient, client::ListQuery};
use serde_json::json;

use super::{ListArgs, Outcome, Result, ServerArgs, TasksCommand, render, submit};

pub async fn run(client: &ApiClient, server: &ServerArgs, command: &TasksCommand) -> Result<Outcome> {
    match command {
        TasksCommand::List(args) => list(client, args).await,
        TasksCommand::Show { id } => {
            print!("{}", render::task_detail(&client.task(*id).await?));
            Ok(Outcome::Success)
        }
        TasksCommand::Cancel { id } => {
            let task = client.cancel(*id).await?;
            println!("task {} is {}", task.id, task.status);
            Ok(Outcome::Success)
        }
        TasksCommand::Retry { id } => {
            let task = client.retry(*id).await?;
            println!("task {} is {} again", task.id, task.status);
            Ok(Outcome::Success)
        }
        TasksCommand::FollowUp(args) => submit::follow_up(client, server, args).await,
        TasksCommand::Approve { id, call, deny, reason, arguments } => {
            let mut body = json!({ "decision": if *deny { "deny" } else { "approve" } });
            if let Some(reason) = reason {
                body["reason"] = json!(reason);
            }
            if let Some(arguments) = arguments {
                body["arguments"] = arguments.clone();
            }
            let decided = client.decide(*id, *call, &body).await?;
            println!("call {} ({}) is {}", decided.call_id, decided.tool, decided.status);
            Ok(Outcome::Success)
        }
        TasksCommand::Approvals { id } => {
            let approvals = client.approvals(*id).await?;
            if approvals.is_empty() {
                println!("no tool call of this task waited for approval");
            }
            for a in approvals {
                let reason = a.reason.map(|r| format!(": {r}")).unwrap_or_default();
                println!("{}  {:<9} {} {} (agent {}){reason}", a.call_id, a.status, a.tool, a.arguments, a.agent);
            }
            Ok(Outcome::Success)
        }
    }
}

async fn list(client: &ApiClient, args: &ListArgs) -> Result<Outcome> {
    let query = ListQuery {
        user_id: args.user.clone(),
        status: args.status.clone(),
        task_type: args.task_type.clone(),
        thread_id: args.thread,
        limit: Some(args.limit),
        cursor: args.cursor.clone(),
    };
    let page = client.list(&query).await?;
    if page.items.is_empty() {
        println!("no tasks");
    } else {
        print!("{}", render::task_table(&page.items));
    }
    if let Some(cursor) = page.next_cursor {
        let mut next = format!("orchestrator tasks list --limit {}", args.limit);
        let thread = args.thread.map(|t| t.to_string());
        for (flag, value) in
            [("--user", &args.user), ("--status", &args.status), ("--type", &args.task_type), ("--thread", &thread)]
        {
            if let Some(value) = value {
                next.push_str(&format!(" {flag} '{value}'"));
            }
        }
        println!("more: {next} --cursor {cursor}");
    }
    Ok(Outcome::Success)
}
