//! Long agent loops through the service, on a fake provider: the conversation is summarised
//! every N tool calls so the prompt stays bounded, the step yields its worker slot every few
//! turns and continues from its checkpoint, summary included, and nothing runs twice.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use serde_json::{Value, json};

use crate::{
    fake_llm::{FakeOpenAi, answer, is_planning},
    helpers::{TestApp, data_dir, events},
};

/// Turns of the step that ask for tools, four calculator calls each: 40 tool calls.
const TOOL_TURNS: usize = 10;
const CALLS_PER_TURN: usize = 4;

fn is_summary(request: &Value) -> bool {
    !is_planning(request) && request["tools"].as_array().is_none_or(|t| t.is_empty())
}

fn is_turn(request: &Value) -> bool {
    !is_planning(request) && !is_summary(request)
}

fn texts(request: &Value) -> Vec<String> {
    request["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// A turn asking for `CALLS_PER_TURN` calculator calls, ids `t{turn}-{k}`.
fn calculator_turn(turn: usize) -> (u16, Value) {
    let calls: Vec<Value> = (0..CALLS_PER_TURN)
        .map(|k| {
            let arguments = json!({"expression": format!("{turn} * 10 + {k}")}).to_string();
            json!({"id": format!("t{turn}-{k}"), "type": "function",
                   "function": {"name": "calculator", "arguments": arguments}})
        })
        .collect();
    (
        200,
        json!({
            "id": "chatcmpl-test", "object": "chat.completion", "model": "gpt-4o-mini",
            "choices": [{"index": 0, "finish_reason": "tool_calls",
                         "message": {"role": "assistant", "content": null, "tool_calls": calls}}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}
        }),
    )
}

#[tokio::test]
async fn a_long_loop_is_summarised_yields_its_slot_and_continues_from_its_checkpoint() {
    let turns = Arc::new(AtomicUsize::new(0));
    let summaries = Arc::new(AtomicUsize::new(0));
    let (t, s) = (turns.clone(), summaries.clone());
    let fake = FakeOpenAi::start(move |request| {
        if is_planning(request) {
            let step =
                json!({"title": "Tally", "instruction": "Add up forty sums.", "agent": "tallier", "depends_on": []});
            return crate::fake_llm::tool_call("plan-1", "submit_plan", &json!({"steps": [step]}));
        }
        if is_summary(request) {
            let n = s.fetch_add(1, Ordering::SeqCst);
            return answer(&format!("SUMMARY-{n}: the sums so far are done."), 500, 30);
        }
        let turn = t.fetch_add(1, Ordering::SeqCst);
        if turn < TOOL_TURNS { calculator_turn(turn) } else { answer("All forty sums are done.", 300, 20) }
    })
    .await;

    // An agent allowed the whole loop, summarising every 8 tool calls (its own setting,
    // against a deployment default of never), and yielding every 3 turns.
    let agents = data_dir(&format!("long-loops-{}", uuid::Uuid::new_v4().simple())).join("agents.toml");
    std::fs::create_dir_all(agents.parent().unwrap()).unwrap();
    std::fs::write(
        &agents,
        "[[agent]]\nname = \"tallier\"\nsystem_prompt = \"You are the tallier agent. Add things up.\"\n\
         tools = [\"calculator\"]\nmax_iterations = 20\ncompress_every = 8\n",
    )
    .unwrap();
    let mut settings = fake.settings();
    settings.agents_file = Some(agents);
    settings.context_compress_every = 0;
    settings.context_keep_recent = 6;
    settings.step_yield_after_turns = 3;
    let app = TestApp::spawn_with(settings, 1).await;

    let id = app.submit("Add up forty sums.").await;
    let task = app.client.wait(id, std::time::Duration::from_secs(30)).await.expect("the task finishes").raw;
    assert_eq!(task["status"], "completed", "{task}");
    assert_eq!(task["result"], "All forty sums are done.");
    assert_eq!(task["steps"][0]["attempt"], 1, "yielding charges no attempt");

    // 11 turns, yielding after every third: three yields, each followed by a resumed claim.
    assert_eq!(events(&app.db, id, "step_yielded").await.len(), 3);
    assert_eq!(events(&app.db, id, "step_resumed").await.len(), 3);

    // Every tool call ran once.
    let ran: Vec<String> =
        sqlx::query_scalar("SELECT arguments->>'expression' FROM tool_calls WHERE task_id = $1 ORDER BY id")
            .bind(id)
            .fetch_all(&app.db)
            .await
            .unwrap();
    let expected: Vec<String> =
        (0..TOOL_TURNS).flat_map(|t| (0..CALLS_PER_TURN).map(move |k| format!("{t} * 10 + {k}"))).collect();
    assert_eq!(ran, expected);

    // Summaries every 8 tool calls (two turns), and the prompt stays bounded: no turn's
    // request carries more than the system prompt, the step prompt, a summary, the kept
    // messages and one turn with its replies, however many calls came before.
    let requests = fake.requests();
    let step_turns: Vec<&Value> = requests.iter().filter(|r| is_turn(r)).collect();
    assert_eq!(step_turns.len(), TOOL_TURNS + 1, "no turn was asked twice");
    // Five are due (every 8 calls); one of them finds nothing older than the kept tail but
    // the previous summary, and is skipped.
    assert_eq!(summaries.load(Ordering::SeqCst), 4, "a summary after every 8 tool calls");
    let sizes: Vec<usize> = step_turns.iter().map(|r| r["messages"].as_array().unwrap().len()).collect();
    let largest = *sizes.iter().max().unwrap();
    // System prompt, step prompt and summary; the kept 6 messages widened to whole turns (two
    // turns of an assistant message and its replies); the newest turn.
    assert!(largest <= 3 + 3 * (1 + CALLS_PER_TURN), "message counts per turn: {sizes:?}");
    let chars: Vec<usize> = step_turns.iter().map(|r| texts(r).concat().len()).collect();
    assert!(chars[TOOL_TURNS] < 2 * chars[3], "the prompt does not grow with the loop: {chars:?}");

    // A turn that opened an attempt after a yield (turns 4, 7 and 10) and was sent with a
    // summary the attempt before it made: that summary came from the checkpoint. It replaced
    // the first turns' calls and results.
    let position = |r: &Value| requests.iter().position(|x| std::ptr::eq(x, r)).unwrap();
    let summary_positions: Vec<usize> =
        requests.iter().enumerate().filter(|(_, r)| is_summary(r)).map(|(i, _)| i).collect();
    let from_checkpoint = [3, 6, 9].into_iter().find(|&turn| {
        let text = texts(step_turns[turn]).join("\n");
        summary_positions
            .iter()
            .enumerate()
            .any(|(k, &at)| text.contains(&format!("SUMMARY-{k}:")) && at < position(step_turns[turn - 1]))
    });
    let turn = from_checkpoint.expect("a resumed attempt started from a summary of the attempt before it");
    let resumed = texts(step_turns[turn]).join("\n");
    assert!(!resumed.contains("0 * 10 + 0"), "{resumed}");

    // The step's messages hold every turn, reply and summary once.
    let stored: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM task_messages m JOIN steps s ON s.id = m.step_id WHERE s.task_id = $1",
    )
    .bind(id)
    .fetch_one(&app.db)
    .await
    .unwrap();
    let summaries = summaries.load(Ordering::SeqCst) as i64;
    let expected = 1 + (TOOL_TURNS as i64 + 1) + (TOOL_TURNS * CALLS_PER_TURN) as i64 + summaries;
    assert_eq!(stored, expected, "prompt, turns, replies and summaries, each once");
    app.stop().await;
}

#[tokio::test]
async fn a_step_at_its_iteration_limit_fails_once_and_a_retry_continues_its_conversation() {
    // The model keeps calling the calculator until it is allowed to answer.
    let may_answer = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let answer_now = may_answer.clone();
    let turns = Arc::new(AtomicUsize::new(0));
    let t = turns.clone();
    let fake = FakeOpenAi::start(move |request| {
        if is_planning(request) {
            let step = json!({"title": "Tally", "instruction": "Add up.", "agent": "tallier", "depends_on": []});
            return crate::fake_llm::tool_call("plan-1", "submit_plan", &json!({"steps": [step]}));
        }
        if answer_now.load(Ordering::SeqCst) {
            return answer("Done at last.", 100, 10);
        }
        calculator_turn(t.fetch_add(1, Ordering::SeqCst))
    })
    .await;
    let agents = data_dir(&format!("iteration-limit-{}", uuid::Uuid::new_v4().simple())).join("agents.toml");
    std::fs::create_dir_all(agents.parent().unwrap()).unwrap();
    std::fs::write(
        &agents,
        "[[agent]]\nname = \"tallier\"\nsystem_prompt = \"You are the tallier agent.\"\n\
         tools = [\"calculator\"]\nmax_iterations = 3\nmax_attempts = 3\n",
    )
    .unwrap();
    let mut settings = fake.settings();
    settings.agents_file = Some(agents);
    let app = TestApp::spawn_with(settings, 1).await;

    let id = app.submit("Add up.").await;
    let task = app.wait(id).await;
    assert_eq!(task["status"], "failed", "{task}");
    assert!(task["error"].as_str().unwrap().contains("iteration limit"), "{task}");
    assert_eq!(task["steps"][0]["attempt"], 1, "a step at its iteration limit is not retried");
    assert_eq!(turns.load(Ordering::SeqCst), 3);

    // A retry gives the step a fresh allowance and continues its conversation: the first
    // request of the new run carries the three turns' tool results.
    may_answer.store(true, Ordering::SeqCst);
    let retried = app.http.post(app.url(&format!("/tasks/{id}/retry"))).send().await.unwrap();
    assert_eq!(retried.status(), 202, "{}", retried.text().await.unwrap());
    let task = app.wait(id).await;
    assert_eq!(task["status"], "completed", "{task}");
    let last = fake.requests().into_iter().rev().find(is_turn).unwrap();
    let replies = last["messages"].as_array().unwrap().iter().filter(|m| m["role"] == "tool").count();
    assert_eq!(replies, 3 * CALLS_PER_TURN, "{last}");
    let ran: i64 = sqlx::query_scalar("SELECT count(*) FROM tool_calls WHERE task_id = $1")
        .bind(id)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(ran, (3 * CALLS_PER_TURN) as i64, "no tool call ran again");
    app.stop().await;
}

#[tokio::test]
async fn a_warm_start_begins_from_the_last_run_of_the_same_work_and_a_lost_context_is_a_cold_start() {
    // The step computes with the calculator, then answers; when the conversation already
    // holds the earlier run's answer, the model says so.
    let fake = FakeOpenAi::start(|request| {
        if is_planning(request) {
            let step =
                json!({"title": "Compute", "instruction": "Compute 6 * 7.", "agent": "analyst", "depends_on": []});
            return crate::fake_llm::tool_call("plan-1", "submit_plan", &json!({"steps": [step]}));
        }
        // Tool replies of this run: after the step prompt, the last user message (a warm
        // start's earlier conversation comes before it).
        let messages = request["messages"].as_array().unwrap();
        let prompt_at = messages.iter().rposition(|m| m["role"] == "user").unwrap();
        match messages[prompt_at..].iter().filter(|m| m["role"] == "tool").count() {
            0 => crate::fake_llm::tool_call("c1", "calculator", &json!({"expression": "6 * 7"})),
            _ => answer("The answer is 42.", 100, 10),
        }
    })
    .await;
    let app = TestApp::spawn_with(fake.settings(), 1).await;
    let submit = |warm_start: bool| {
        let app = &app;
        async move {
            let body = json!({"user_id": "ann", "description": "Compute 6 * 7.", "task_type": "arithmetic",
                              "warm_start": warm_start});
            let id = app.client.submit(&body).await.expect("202").id;
            (id, app.wait(id).await)
        }
    };
    let tool_statuses = |id: uuid::Uuid| {
        let db = app.db.clone();
        async move {
            sqlx::query_scalar::<_, String>("SELECT status FROM tool_calls WHERE task_id = $1 ORDER BY id")
                .bind(id)
                .fetch_all(&db)
                .await
                .unwrap()
        }
    };

    // Whether the run's first step request showed the model an earlier conversation: a tool
    // reply before the step prompt.
    let started_warm = |from: usize| {
        let request = fake.requests().into_iter().skip(from).find(is_turn).unwrap();
        let messages = request["messages"].as_array().unwrap().clone();
        let prompt_at = messages.iter().rposition(|m| m["role"] == "user").unwrap();
        messages[..prompt_at].iter().any(|m| m["role"] == "tool" && m["content"].as_str().unwrap().contains("42"))
    };

    // The first run is cold: the tool runs. Its step's context is kept (the task has a type).
    let (first, task) = submit(false).await;
    assert_eq!(task["result"], "The answer is 42.", "{task}");
    assert_eq!(tool_statuses(first).await, ["ok"]);
    assert!(!started_warm(0));

    // The same work with a warm start: the same hash, the earlier conversation before the
    // prompt, and the identical call answered from the kept result, at no latency.
    let before = fake.requests().len();
    let (second, task) = submit(true).await;
    assert_eq!(task["task_hash"], app.wait(first).await["task_hash"]);
    assert_eq!(task["warm_start"], true);
    assert_eq!(task["status"], "completed", "{task}");
    assert!(started_warm(before));
    assert_eq!(tool_statuses(second).await, ["cached"]);
    let calls: Value =
        app.http.get(app.url(&format!("/tasks/{second}/tool-calls"))).send().await.unwrap().json().await.unwrap();
    assert_eq!(calls["items"][0]["latency_ms"], 0.0);
    assert_eq!(calls["items"][0]["result"]["result"], 42);

    // The second run kept its own context in turn (under context:{hash}:{position}); Redis
    // losing it only makes the next warm start cold.
    let mut redis = app.app.queue.pool().get().await.unwrap();
    let pattern = format!("{}*context:{}:0", app.app.settings.redis_prefix, task["task_hash"].as_str().unwrap());
    let keys = crate::helpers::eventually(std::time::Duration::from_secs(5), "the second run's context", || {
        let (pool, pattern) = (app.app.queue.pool().clone(), pattern.clone());
        async move {
            let mut redis = pool.get().await.ok()?;
            let keys: Vec<String> = redis::cmd("KEYS").arg(&pattern).query_async(&mut redis).await.ok()?;
            let body: Option<String> = redis::cmd("GET").arg(keys.first()?).query_async(&mut redis).await.ok()?;
            body?.contains(&second.to_string()).then_some(keys)
        }
    })
    .await;
    redis::cmd("DEL").arg(&keys).query_async::<()>(&mut redis).await.unwrap();
    let before = fake.requests().len();
    let (third, task) = submit(true).await;
    assert_eq!(task["status"], "completed", "{task}");
    assert!(!started_warm(before));
    assert_eq!(tool_statuses(third).await, ["ok"]);
    app.stop().await;
}
