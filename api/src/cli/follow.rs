//! Follows a task until it ends: its live event stream, resumed from the last event seen when
//! it drops, or, when streaming is not available, `GET /tasks/{id}` with `Prefer: wait`, which
//! the server answers when the task ends (or after a minute, and then it is asked again).

use std::time::Duration;

use eval::{ApiClient, TaskView};
use uuid::Uuid;

use super::{Result, render::Progress, wait::TaskWaiter};

/// Stream (re)connections in a row that may fail before falling back to waiting reads.
const STREAM_ATTEMPTS: u32 = 3;
/// The pause between reads the server answered without waiting (this user holds as many
/// waits as the server allows, or the server does not know `Prefer: wait`): then it is polling.
const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// Prints the task's progress as it happens and returns the task once it has ended.
pub async fn follow(client: &ApiClient, waiter: &TaskWaiter, id: Uuid) -> Result<TaskView> {
    let mut progress = Progress::new(client.clone(), id);
    let mut after = None;
    let mut failures = 0;
    while failures < STREAM_ATTEMPTS {
        match client.events(id, after).await {
            Ok(mut stream) => loop {
                match stream.next().await {
                    Ok(Some(event)) => {
                        failures = 0;
                        after = Some(event.id);
                        progress.event(&event).await;
                        if event.ends_task() {
                            return client.task(id).await;
                        }
                    }
                    // Closed before the end (the server restarted, say): resume after `after`.
                    Ok(None) => break,
                    Err(e) => {
                        eprintln!("note: the event stream broke off ({e}); resuming");
                        break;
                    }
                }
            },
            // The server refuses to stream (an older server, a proxy): no use retrying.
            Err(e) if e.status().is_some_and(|s| (400..500).contains(&s)) => break,
            Err(_) => {}
        }
        failures += 1;
        tokio::time::sleep(Duration::from_millis(200) * failures).await;
    }
    eprintln!("note: live events are unavailable; waiting for the task to end");
    loop {
        let read = waiter.read(id).await?;
        progress.snapshot(&read.task);
        if read.task.is_terminal() {
            return Ok(read.task);
        }
        if !read.waited {
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }
}
