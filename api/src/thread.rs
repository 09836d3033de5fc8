//! Threads of follow-ups: the conversation a follow-up (`POST /tasks/{id}/follow-ups`) starts
//! from. It is built at submission from what the store holds, deterministically and without a
//! model call: a submission must stay cheap, and must not depend on a provider answering.
//!
//! A follow-up's short-term context (the earlier conversation every one of its steps sees, the
//! same messages as the `context` of `POST /tasks`) opens with at most [`SEED_MESSAGES`]
//! messages of its thread:
//!
//! 1. `user`: the thread so far, condensed, when there is anything: the goal and outcome of each
//!    task before the parent on its branch, then the last messages of the parent's own work
//!    (what its agents said and its tools answered), oldest first, at most
//!    [`DIGEST_MAX_CHARS`] with the most recent kept;
//! 2. `user`: the parent's goal, its description;
//! 3. `assistant`: how the parent ended: its result, or for a partial, failed or cancelled
//!    parent what completed and what did not, at most [`OUTCOME_MAX_CHARS`].
//!
//! The follow-up's own `context` follows them. Every part is bounded, so a thread of any
//! length costs each model call of a follow-up the same few thousand tokens at most: a longer
//! thread is condensed harder, never carried whole.

use agents::Role;

use crate::{
    domain::{StepStatus, TaskStatus},
    store::{EarlierTask, STEP_CONTEXT_MESSAGES, TaskDetail, ThreadHistory},
};

/// Messages the thread may put before a follow-up's own context.
pub const SEED_MESSAGES: usize = 3;

/// Context messages a follow-up may bring of its own: a task's context holds at most
/// [`STEP_CONTEXT_MESSAGES`] (what a step reads), and the thread's come first.
pub const OWN_CONTEXT_MESSAGES: usize = STEP_CONTEXT_MESSAGES as usize - SEED_MESSAGES;

/// Longest outcome message: the longest message a client may send as context (a description's
/// 8000 characters), so the thread never hands a step more than a client could have. The
/// outcome is what a follow-up is most likely about, so it gets the most room.
pub const OUTCOME_MAX_CHARS: usize = 8000;

/// Longest condensed thread (about 1,000 tokens). Every model call of the follow-up, and of
/// each follow-up after it, carries it; earlier exchanges are reminders next to the parent's
/// goal and outcome, which come whole.
pub const DIGEST_MAX_CHARS: usize = 4000;

/// Tasks before the parent read for the digest. Half of [`DIGEST_MAX_CHARS`] holds about a
/// dozen short exchanges when there is work to show as well; more rows could not be shown.
pub const EARLIER_TASKS: i64 = 12;

/// Messages of the parent's work read for the digest; at least 5 of them fill its room.
pub const RECENT_WORK_MESSAGES: i64 = 16;

/// Longest goal, outcome and work message in the digest, each squashed to one line.
const GOAL_LINE_CHARS: usize = 300;
const OUTCOME_LINE_CHARS: usize = 500;
const WORK_LINE_CHARS: usize = 400;
/// Longest output of a completed step listed in a failed or cancelled parent's outcome.
const STEP_OUTPUT_CHARS: usize = 1000;

const EARLIER_HEADING: &str = "Earlier in this conversation (condensed, oldest first):";
const WORK_HEADING: &str = "From the work on the request that follows (its last messages, condensed, oldest first):";

/// The messages, as (role, content), that a follow-up of `parent` starts from, before its own
/// context. `history` is what the store found around the parent ([`crate::store::TaskStore::thread_history`]).
pub fn seed(parent: &TaskDetail, history: &ThreadHistory) -> Vec<(String, String)> {
    let mut messages = Vec::with_capacity(SEED_MESSAGES);
    if let Some(digest) = digest(history, parent.task.result.as_deref()) {
        messages.push((Role::User.as_str().to_owned(), digest));
    }
    messages.push((Role::User.as_str().to_owned(), parent.task.description.clone()));
    messages.push((Role::Assistant.as_str().to_owned(), outcome(parent)));
    messages
}

/// How `parent` ended, for the model: its result, or what completed and what did not.
fn outcome(parent: &TaskDetail) -> String {
    let task = &parent.task;
    let error = task.error.as_deref().unwrap_or("no reason was recorded");
    let text = match task.status {
        TaskStatus::Completed => task.result.clone().unwrap_or_else(|| "(It completed without a result.)".to_owned()),
        TaskStatus::Partial => format!(
            "It was partly done.\n\nWhat completed:\n{}\n\nWhat failed:\n{error}",
            task.result.as_deref().unwrap_or("(nothing recorded)")
        ),
        TaskStatus::Failed => format!("It failed: {error}{}", completed_steps(parent)),
        TaskStatus::Cancelled => format!("It was cancelled before it finished.{}", completed_steps(parent)),
        // Follow-ups are only made of ended tasks; should one get here, say what is known.
        TaskStatus::Pending | TaskStatus::Planning | TaskStatus::Running | TaskStatus::RequiresAction => {
            format!("It had not ended (it was {}).", task.status)
        }
    };
    clip(&text, OUTCOME_MAX_CHARS)
}

/// The outputs of a parent's completed steps, for a failed or cancelled one ("" when none).
fn completed_steps(parent: &TaskDetail) -> String {
    let done: Vec<String> = parent
        .steps
        .iter()
        .filter(|s| s.status == StepStatus::Completed)
        .map(|s| {
            let output = s.output.as_deref().unwrap_or("");
            format!("- {}: {}", squash(&s.title), clip(&squash(output), STEP_OUTPUT_CHARS))
        })
        .collect();
    if done.is_empty() { String::new() } else { format!("\n\nWhat completed before that:\n{}", done.join("\n")) }
}

/// An earlier task's outcome in a few words.
fn earlier_outcome(task: &EarlierTask) -> String {
    let error = task.error.as_deref().unwrap_or("no reason was recorded");
    match task.status {
        TaskStatus::Completed => task.result.clone().unwrap_or_default(),
        TaskStatus::Partial => {
            format!("partly done: {}; failed: {error}", task.result.as_deref().unwrap_or(""))
        }
        TaskStatus::Failed => format!("failed: {error}"),
        TaskStatus::Cancelled => "cancelled".to_owned(),
        // Retried since: it runs again.
        TaskStatus::Pending | TaskStatus::Planning | TaskStatus::Running | TaskStatus::RequiresAction => {
            format!("{}, not ended", task.status)
        }
    }
}

/// The thread so far in at most [`DIGEST_MAX_CHARS`]; `None` when there is nothing before the
/// parent and nothing of its work. A work message that is the parent's result is left out:
/// the outcome message carries it whole.
fn digest(history: &ThreadHistory, parent_result: Option<&str>) -> Option<String> {
    // Both lists come newest first.
    let earlier: Vec<String> = history
        .earlier
        .iter()
        .map(|t| {
            format!(
                "- asked: {}\n  answered: {}",
                clip(&squash(&t.description), GOAL_LINE_CHARS),
                clip(&squash(&earlier_outcome(t)), OUTCOME_LINE_CHARS)
            )
        })
        .collect();
    let work: Vec<String> = history
        .recent_work
        .iter()
        .filter(|(_, content)| Some(content.as_str()) != parent_result)
        .map(|(role, content)| format!("- {role}: {}", clip(&squash(content), WORK_LINE_CHARS)))
        .collect();
    // The earlier exchanges get half the room when there is work to show, all of it otherwise.
    let earlier_room = if work.is_empty() { DIGEST_MAX_CHARS } else { DIGEST_MAX_CHARS / 2 };
    let earlier = section(EARLIER_HEADING, &earlier, earlier_room);
    let used = earlier.as_deref().map_or(0, |s| chars(s) + SEPARATOR.len());
    let work = section(WORK_HEADING, &work, DIGEST_MAX_CHARS - used);
    match (earlier, work) {
        (None, None) => None,
        (Some(one), None) | (None, Some(one)) => Some(one),
        (Some(earlier), Some(work)) => Some(format!("{earlier}{SEPARATOR}{work}")),
    }
}

const SEPARATOR: &str = "\n\n";

/// `heading`, then as many of `lines` (newest first) as fit in `room` characters, oldest
/// first, after a note of how many older ones were left out. `None` when no line fits.
fn section(heading: &str, lines: &[String], room: usize) -> Option<String> {
    // The note is at most this long ("- (N older left out)" for any N of a few digits).
    const NOTE_ROOM: usize = 32;
    let mut used = chars(heading) + NOTE_ROOM;
    let mut kept = 0;
    for line in lines {
        let need = 1 + chars(line);
        if used + need > room {
            break;
        }
        used += need;
        kept += 1;
    }
    if kept == 0 {
        return None;
    }
    let mut text = heading.to_owned();
    if kept < lines.len() {
        text.push_str(&format!("\n- ({} older left out)", lines.len() - kept));
    }
    for line in lines[..kept].iter().rev() {
        text.push('\n');
        text.push_str(line);
    }
    Some(text)
}

/// `text` on one line: every run of whitespace becomes one space.
fn squash(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `text` cut to at most `max` characters, the cut marked with an ellipsis.
fn clip(text: &str, max: usize) -> String {
    if chars(text) <= max {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

fn chars(text: &str) -> usize {
    text.chars().count()
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;
    use crate::{
        domain::{Priority, StepId, TaskId},
        store::{Step, Task, Totals},
    };

    fn task(status: TaskStatus, result: Option<&str>, error: Option<&str>) -> Task {
        let id = TaskId::new();
        Task {
            id,
            user_id: "ann".into(),
            description: "Write a haiku about job queues.".into(),
            metadata: serde_json::json!({}),
            status,
            priority: Priority::Normal,
            max_cost_usd: None,
            max_tokens: None,
            result: result.map(Into::into),
            error: error.map(Into::into),
            error_code: None,
            reserved_cost_usd: 0.0,
            reserved_tokens: 0,
            totals: Totals { cost_usd: 0.0, tokens_in: 0, tokens_out: 0, tokens_cached: 0 },
            created_at: Utc::now(),
            started_at: None,
            completed_at: None,
            updated_at: Utc::now(),
            callback_url: None,
            agent_hints: Vec::new(),
            task_type: None,
            task_hash: None,
            warm_start: false,
            required_action: None,
            require_approval: Vec::new(),
            replan: false,
            max_replans: 2,
            replans: 0,
            start: Default::default(),
            thread_id: id,
            parent_task_id: None,
        }
    }

    fn step(title: &str, status: StepStatus, output: Option<&str>) -> Step {
        Step {
            id: StepId::new(),
            position: 0,
            title: title.into(),
            instruction: title.into(),
            agent: "writer".into(),
            depends_on: Vec::new(),
            status,
            attempt: 1,
            max_attempts: 3,
            output: output.map(Into::into),
            error: None,
            totals: Totals { cost_usd: 0.0, tokens_in: 0, tokens_out: 0, tokens_cached: 0 },
            required: false,
            created_at: Utc::now(),
            started_at: None,
            completed_at: None,
            updated_at: Utc::now(),
        }
    }

    fn earlier(n: usize) -> EarlierTask {
        EarlierTask {
            description: format!("Question {n}"),
            status: TaskStatus::Completed,
            result: Some(format!("Answer {n}")),
            error: None,
        }
    }

    #[test]
    fn a_completed_parent_alone_gives_its_goal_and_result() {
        let parent = TaskDetail {
            task: task(TaskStatus::Completed, Some("Queues wait in line."), None),
            steps: vec![],
            pending_approvals: vec![],
        };
        let seed = seed(&parent, &ThreadHistory::default());
        assert_eq!(
            seed,
            [
                ("user".to_owned(), "Write a haiku about job queues.".to_owned()),
                ("assistant".to_owned(), "Queues wait in line.".to_owned())
            ]
        );
    }

    #[test]
    fn a_partial_failed_or_cancelled_parent_says_what_completed_and_what_did_not() {
        let partial = TaskDetail {
            task: task(TaskStatus::Partial, Some("Haiku: done."), Some("step Research failed: refused")),
            steps: vec![],
            pending_approvals: vec![],
        };
        let said = &seed(&partial, &ThreadHistory::default())[1].1;
        assert!(said.contains("partly done") && said.contains("Haiku: done.") && said.contains("Research failed"));

        let steps = vec![
            step("Research", StepStatus::Completed, Some("Three  queues\nfound.")),
            step("Write", StepStatus::Failed, None),
        ];
        let failed = TaskDetail {
            task: task(TaskStatus::Failed, None, Some("step Write failed")),
            steps,
            pending_approvals: vec![],
        };
        let said = &seed(&failed, &ThreadHistory::default())[1].1;
        assert!(said.starts_with("It failed: step Write failed"), "{said}");
        assert!(said.contains("- Research: Three queues found."), "{said}");
        assert!(!said.contains("- Write"), "{said}");

        let cancelled =
            TaskDetail { task: task(TaskStatus::Cancelled, None, None), steps: vec![], pending_approvals: vec![] };
        assert_eq!(seed(&cancelled, &ThreadHistory::default())[1].1, "It was cancelled before it finished.");
    }

    #[test]
    fn the_thread_before_the_parent_comes_first_oldest_first_with_the_parents_work() {
        let parent = TaskDetail {
            task: task(TaskStatus::Completed, Some("The haiku."), None),
            steps: vec![],
            pending_approvals: vec![],
        };
        let history = ThreadHistory {
            earlier: vec![earlier(2), earlier(1)],
            recent_work: vec![
                ("assistant".into(), "The haiku.".into()),
                ("tool".into(), "{\"result\": 119}".into()),
                ("assistant".into(), "Let me count syllables.".into()),
            ],
        };
        let seed = seed(&parent, &history);
        assert_eq!(seed.len(), SEED_MESSAGES);
        let (role, digest) = &seed[0];
        assert_eq!(role, "user");
        let at = |needle: &str| digest.find(needle).unwrap_or_else(|| panic!("{needle} missing from {digest}"));
        assert!(at("Question 1") < at("Answer 1") && at("Answer 1") < at("Question 2"));
        assert!(at("Question 2") < at("Let me count") && at("Let me count") < at("119"));
        // The result is the next-but-one message, whole; not repeated here.
        assert!(!digest.contains("The haiku."), "{digest}");
        assert_eq!(seed[1].1, "Write a haiku about job queues.");
    }

    #[test]
    fn every_part_is_bounded_and_the_most_recent_is_kept() {
        let long = "word ".repeat(5000);
        let mut parent = task(TaskStatus::Completed, Some(&long), None);
        parent.description = "d".repeat(8000);
        let parent = TaskDetail { task: parent, steps: vec![], pending_approvals: vec![] };
        let history = ThreadHistory {
            earlier: (0..EARLIER_TASKS as usize)
                .map(|n| EarlierTask { description: format!("Q{n} {long}"), ..earlier(n) })
                .collect(),
            recent_work: (0..RECENT_WORK_MESSAGES).map(|n| ("assistant".to_owned(), format!("W{n} {long}"))).collect(),
        };
        let seed = seed(&parent, &history);
        let digest = &seed[0].1;
        assert!(chars(digest) <= DIGEST_MAX_CHARS, "{}", chars(digest));
        assert!(chars(&seed[2].1) <= OUTCOME_MAX_CHARS);
        assert!(seed[2].1.ends_with('…'));
        // Newest first in the input: Q0 and W0 are the most recent, and kept.
        assert!(digest.contains("Q0 ") && digest.contains("W0 "), "{digest}");
        assert!(!digest.contains(&format!("Q{} ", EARLIER_TASKS - 1)), "{digest}");
        assert!(digest.contains("older left out"), "{digest}");

        // Without work, the earlier exchanges may take all the room; still bounded.
        let only_earlier = ThreadHistory { recent_work: vec![], ..history };
        let digest = &super::seed(&parent, &only_earlier)[0].1;
        assert!(chars(digest) <= DIGEST_MAX_CHARS, "{}", chars(digest));
    }

    #[test]
    fn clipping_counts_characters_not_bytes() {
        assert_eq!(clip("ééé", 3), "ééé");
        assert_eq!(clip("éééé", 3), "éé…");
        assert_eq!(squash(" a \n\t b "), "a b");
    }
}
