//! Follows a task until it ends: its live event stream, resumed from the last event seen when
//! it drops, or polling `GET /tasks/{id}` when streaming is not available.

use std::time::Duration;

use eval::{ApiClient, TaskView};
use uuid::Uuid;

use super::{Result, render::Progress};

/// Stream (re)connections in a row that may fail before falling back to polling.
const STREAM_ATTEMPTS: u32 = 3;
const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// Prints the task's progress as it happens and returns the task once it has ended.
pub async fn follow(client: &ApiClient, id: Uuid) -> Result<TaskView> {
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
    eprintln!("note: live events are unavailable; following the task by polling");
    loop {
        let task = client.task(id).await?;
        progress.snapshot(&task);
        if task.is_terminal() {
            return Ok(task);
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}
