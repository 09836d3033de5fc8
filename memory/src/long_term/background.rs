//! The store's background task: catch-up passes every `catch_up_interval` and periodic
//! snapshots, until the store is shut down or dropped.
//!
//! A failing pass (Postgres down) is retried on the next tick; the cursor only advances on
//! success, so nothing is skipped. Catch-up and snapshots share the cursor lock, so they never
//! run at the same time.

use std::sync::Arc;

use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::long_term::{Shared, catch_up};

/// Catches up every `catch_up_interval` and snapshots every `snapshot_interval` until
/// cancelled.
pub(crate) async fn run(shared: Arc<Shared>, token: CancellationToken) {
    let mut catch_up_timer = tokio::time::interval(shared.config.catch_up_interval);
    catch_up_timer.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // The first tick is immediate; `open` has just caught up.
    catch_up_timer.tick().await;
    let mut snapshot_timer = shared.config.snapshot_interval.map(|period| {
        let mut timer = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        timer.set_missed_tick_behavior(MissedTickBehavior::Delay);
        timer
    });
    let mut failures: u32 = 0;
    loop {
        tokio::select! {
            biased;
            () = token.cancelled() => break,
            _ = catch_up_timer.tick() => {
                let mut cursor = shared.cursor.lock().await;
                match catch_up::catch_up(&shared, &mut cursor).await {
                    Ok(stats) => {
                        if failures > 0 {
                            tracing::info!(failures, "memory catch-up recovered");
                        }
                        failures = 0;
                        if stats != Default::default() {
                            tracing::debug!(?stats, "memory caught up");
                        }
                    }
                    Err(error) => {
                        failures += 1;
                        // Every pass while Postgres is down would fail: log the first and then
                        // about every 10 seconds at the default interval.
                        if failures == 1 || failures.is_multiple_of(40) {
                            tracing::warn!(%error, failures, "memory catch-up failed; retrying");
                        }
                    }
                }
            }
            () = tick(&mut snapshot_timer) => {
                if let Err(error) = shared.snapshot_if_changed().await {
                    tracing::warn!(%error, "periodic memory snapshot failed");
                }
            }
        }
    }
}

/// Waits for the next tick of `timer`, or forever without one.
async fn tick(timer: &mut Option<tokio::time::Interval>) {
    match timer {
        Some(timer) => {
            timer.tick().await;
        }
        None => std::future::pending().await,
    }
}
