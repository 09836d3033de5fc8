//! Terminal rendering of the client commands: progress lines, task summaries and tables.
//! Everything here returns or prints plain text, one line per fact, so output stays readable
//! when piped.

use std::collections::HashMap;

use eval::{
    ApiClient, TaskView,
    client::{EventView, StepView},
};
use serde_json::Value;
use uuid::Uuid;

use crate::domain::{EventKind, TaskStatus};

/// What a progress line needs to know about a step.
#[derive(Debug, Clone)]
struct StepLabel {
    position: i32,
    title: String,
    agent: String,
}

/// Prints a task's progress, one line per event (or per change seen when polling). Steps are
/// learned from the task itself, which is read again once planned or when an event names a
/// step not seen yet.
pub struct Progress {
    client: ApiClient,
    task: Uuid,
    steps: HashMap<Uuid, StepLabel>,
    total: usize,
    /// Statuses last printed while polling: the task's, then each step's.
    polled: HashMap<Option<Uuid>, String>,
}

impl Progress {
    pub fn new(client: ApiClient, task: Uuid) -> Self {
        Self { client, task, steps: HashMap::new(), total: 0, polled: HashMap::new() }
    }

    /// Prints the line of a streamed event.
    pub async fn event(&mut self, event: &EventView) {
        let unknown_step = event.step_id.is_some_and(|s| !self.steps.contains_key(&s));
        if event.kind == "task_planned" || unknown_step {
            // Without the plan the line names the step by id only; not worth failing over.
            if let Ok(task) = self.client.task(self.task).await {
                self.learn(&task);
            }
        }
        println!("{}", self.describe(event));
    }

    /// Prints what changed since the last snapshot (polling).
    pub fn snapshot(&mut self, task: &TaskView) {
        self.learn(task);
        if self.polled.get(&None) != Some(&task.status) {
            self.polled.insert(None, task.status.clone());
            println!("task {}", task.status);
        }
        for step in &task.steps {
            if self.polled.get(&Some(step.id)) != Some(&step.status) {
                self.polled.insert(Some(step.id), step.status.clone());
                let (prefix, label) = self.step_parts(Some(step.id));
                println!("{prefix}step {}: {label}", step.status);
            }
        }
    }

    fn learn(&mut self, task: &TaskView) {
        self.total = task.steps.len();
        for s in &task.steps {
            let label = StepLabel { position: s.position, title: s.title.clone(), agent: s.agent.clone() };
            self.steps.insert(s.id, label);
        }
    }

    /// `[2/4] ` and `Implement core APIs (engineer)` for a known step.
    fn step_parts(&self, step: Option<Uuid>) -> (String, String) {
        match step.and_then(|s| self.steps.get(&s).map(|label| (s, label))) {
            Some((_, s)) => (format!("[{}/{}] ", s.position + 1, self.total), format!("{} ({})", s.title, s.agent)),
            None => (String::new(), step.map(|s| format!("step {s}")).unwrap_or_default()),
        }
    }

    /// One line for an event.
    fn describe(&self, event: &EventView) -> String {
        let data = &event.data;
        let text = |key: &str| data.get(key).and_then(Value::as_str).unwrap_or("").to_owned();
        let number = |key: &str| data.get(key).and_then(Value::as_i64).unwrap_or(0);
        let (prefix, label) = self.step_parts(event.step_id);
        // A newer server may send kinds this client does not know: they are shown as named.
        let Ok(kind) = event.kind.parse::<EventKind>() else {
            return format!("{prefix}{}", event.kind.replace('_', " "));
        };
        match kind {
            EventKind::TaskCreated => "task created".into(),
            EventKind::TaskPlanning => "planning".into(),
            EventKind::TaskPlanned => {
                let cached =
                    if data.get("from_cache").and_then(Value::as_bool) == Some(true) { " (cached plan)" } else { "" };
                format!("planned {} step(s){cached}", number("steps"))
            }
            EventKind::StepStarted if number("attempt") > 1 => {
                format!("{prefix}step started: {label}, attempt {}", number("attempt"))
            }
            EventKind::StepRetrying => format!(
                "{prefix}step retrying: {label}: attempt {} failed: {}; next in {:.1}s",
                number("attempt"),
                text("error"),
                number("backoff_ms") as f64 / 1000.0
            ),
            EventKind::StepFailed => format!("{prefix}step failed: {label}: {}", text("error")),
            EventKind::ToolCalled => format!("{prefix}tool called: {} ({})", text("tool"), text("status")),
            EventKind::TaskCompleted => "task completed".into(),
            EventKind::TaskFailed => format!("task failed: {}", text("error")),
            EventKind::TaskCancelled => "task cancelled".into(),
            EventKind::TaskPartial => format!("task partial: {}", text("error")),
            // What a person needs to decide, and how, on the line that asks.
            EventKind::ApprovalRequested => format!(
                "{prefix}awaiting approval: {} {} (call {})\n  approve: orchestrator tasks approve {} {}\n  deny:    \
                 orchestrator tasks approve {} {} --deny --reason '…'",
                text("tool"),
                data.get("arguments").map(Value::to_string).unwrap_or_default(),
                text("call_id"),
                self.task,
                text("call_id"),
                self.task,
                text("call_id"),
            ),
            EventKind::ApprovalDecided => {
                let reason = text("reason");
                let reason = if reason.is_empty() { String::new() } else { format!(": {reason}") };
                format!("{prefix}{} {} by {}{reason}", text("tool"), text("decision"), text("decided_by"))
            }
            kind if kind.as_str().starts_with("step_") => {
                format!("{prefix}{}: {label}", kind.as_str().replace('_', " "))
            }
            other => format!("{prefix}{}", other.as_str().replace('_', " ")),
        }
    }
}

/// The end of `submit --wait`: the result or the error, then tokens and cost.
pub fn summary(task: &TaskView) -> String {
    let mut out = String::new();
    match (&task.result, &task.error) {
        (Some(result), _) if task.status == TaskStatus::Completed.as_str() => {
            out.push_str(&format!("\nresult:\n{}\n", result.trim_end()))
        }
        (Some(result), error) if task.status == TaskStatus::Partial.as_str() => {
            out.push_str(&format!("\npartial result:\n{}\n", result.trim_end()));
            if let Some(error) = error {
                out.push_str(&format!("not done: {error}\n"));
            }
        }
        (_, Some(error)) => out.push_str(&format!("\n{}: {error}\n", task.status)),
        _ => out.push('\n'),
    }
    out.push_str(&format!("{}\n", totals(task)));
    out
}

/// `completed · 1200 tokens in, 340 out · $0.000120`.
pub fn totals(task: &TaskView) -> String {
    format!("{} · {} tokens in, {} out · ${:.6}", task.status, task.tokens_in, task.tokens_out, task.cost_usd)
}

/// The task with its steps, for `tasks show`.
pub fn task_detail(task: &TaskView) -> String {
    let mut out = String::new();
    for (name, value) in [
        ("task", task.id.to_string()),
        ("status", task.status.clone()),
        ("user", task.user_id.clone()),
        ("priority", task.priority.clone()),
        ("created", task.created_at.clone()),
        ("ended", task.completed_at.clone().unwrap_or_else(|| "-".into())),
        ("goal", task.description.clone()),
    ] {
        // Continuation lines line up under the first.
        out.push_str(&format!("{name:<9}{}\n", value.trim_end().replace('\n', "\n         ")));
    }
    // Only a follow-up has a thread worth naming: any other task is its own.
    if let Some(parent) = task.parent_task_id {
        out.push_str(&format!("{:<9}{parent}\n", "follows"));
        if let Some(thread) = task.thread_id {
            out.push_str(&format!("{:<9}{thread} (orchestrator tasks list --thread {thread})\n", "thread"));
        }
    }
    out.push_str(&format!(
        "{:<9}{} in, {} out\n{:<9}${:.6}\n",
        "tokens", task.tokens_in, task.tokens_out, "cost", task.cost_usd
    ));
    if task.steps.is_empty() {
        out.push_str("\nno steps yet\n");
    } else {
        out.push_str(&format!("\nsteps:\n{}", step_table(&task.steps)));
    }
    if let Some(result) = &task.result {
        out.push_str(&format!("\nresult:\n{}\n", result.trim_end()));
    }
    if let Some(error) = &task.error {
        out.push_str(&format!("\nerror:\n{}\n", error.trim_end()));
    }
    out
}

fn step_table(steps: &[StepView]) -> String {
    let rows: Vec<Vec<String>> = steps
        .iter()
        .map(|s| {
            vec![
                (s.position + 1).to_string(),
                s.status.clone(),
                s.agent.clone(),
                format!("{}/{}", s.attempt, s.max_attempts),
                format!("${:.6}", s.cost_usd),
                clip(&s.title, 60),
            ]
        })
        .collect();
    table(&["#", "STATUS", "AGENT", "ATTEMPT", "COST", "TITLE"], &rows)
}

/// Tasks as a table, for `tasks list`.
pub fn task_table(tasks: &[TaskView]) -> String {
    let rows: Vec<Vec<String>> = tasks
        .iter()
        .map(|t| {
            vec![
                t.id.to_string(),
                t.status.clone(),
                t.priority.clone(),
                t.user_id.clone(),
                format!("${:.6}", t.cost_usd),
                t.created_at.chars().take(19).collect(),
                clip(&t.description, 50),
            ]
        })
        .collect();
    table(&["ID", "STATUS", "PRIORITY", "USER", "COST", "CREATED", "GOAL"], &rows)
}

/// Left-aligned columns two spaces apart; the last column is not padded.
fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        let padded: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| if i == last { (*c).to_owned() } else { format!("{c:<width$}", width = widths[i]) })
            .collect();
        format!("{}\n", padded.join("  "))
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// `text` on one line, cut to `max` characters with an ellipsis.
fn clip(text: &str, max: usize) -> String {
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() <= max {
        return one_line;
    }
    let mut cut: String = one_line.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn event(kind: &str, step: Option<Uuid>, data: Value) -> EventView {
        EventView { id: 1, task_id: Uuid::nil(), step_id: step, kind: kind.into(), data, created_at: String::new() }
    }

    fn progress_with_steps() -> (Progress, Uuid) {
        let mut progress = Progress::new(ApiClient::new("http://127.0.0.1:9"), Uuid::nil());
        let step = Uuid::new_v4();
        progress.total = 4;
        progress
            .steps
            .insert(step, StepLabel { position: 1, title: "Implement core APIs".into(), agent: "engineer".into() });
        (progress, step)
    }

    #[test]
    fn step_events_name_the_step_its_place_and_its_agent() {
        let (progress, step) = progress_with_steps();
        assert_eq!(
            progress.describe(&event("step_started", Some(step), json!({"attempt": 1}))),
            "[2/4] step started: Implement core APIs (engineer)"
        );
        assert_eq!(
            progress.describe(&event("step_started", Some(step), json!({"attempt": 2}))),
            "[2/4] step started: Implement core APIs (engineer), attempt 2"
        );
        assert_eq!(
            progress.describe(&event("tool_called", Some(step), json!({"tool": "calculator", "status": "ok"}))),
            "[2/4] tool called: calculator (ok)"
        );
        assert_eq!(
            progress.describe(&event("step_failed", Some(step), json!({"error": "timed out"}))),
            "[2/4] step failed: Implement core APIs (engineer): timed out"
        );
        assert_eq!(progress.describe(&event("task_failed", None, json!({"error": "boom"}))), "task failed: boom");
        let unknown = Uuid::new_v4();
        assert_eq!(
            progress.describe(&event("step_skipped", Some(unknown), json!({}))),
            format!("step skipped: step {unknown}")
        );
    }

    #[test]
    fn tables_align_columns_and_clip_long_text() {
        let rows = vec![vec!["a".into(), "long value".into()], vec!["bbb".into(), "x".into()]];
        assert_eq!(table(&["K", "V"], &rows), "K    V\na    long value\nbbb  x\n");
        assert_eq!(clip("one\ntwo  three", 20), "one two three");
        assert_eq!(clip("abcdefghij", 5), "abcd…");
    }
}
