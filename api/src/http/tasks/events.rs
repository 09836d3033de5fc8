//! `GET /tasks/{id}/events`: the task's event log as Server-Sent Events, replayed then live.
//!
//! A stream replays the task's events after `Last-Event-ID` (or `?after=`), then follows new
//! ones, and closes right after the task's final event (`task_completed`, `task_failed` or
//! `task_cancelled`), at once if the client has seen that event already. Each SSE event
//! carries `id: <event id>`, `event: <kind>` and the event as JSON.
//!
//! Postgres is the only source of events: a notification (see [`crate::events`]) merely
//! wakes the stream to read the rows after the last one it sent, and a periodic re-read
//! covers a lost notification. The store hands rows out in an order no later commit can
//! precede, so a stream, and a client resuming from the last id it saw, never skips one.
//!
//! Each open stream holds a connection and a reader; one user may hold at most
//! `SSE_MAX_STREAMS_PER_USER` of them at once in each API process ([`StreamSlots`]); the
//! next gets 429 with `Retry-After`. The slot is held for as long as the stream is.

use std::{collections::VecDeque, sync::Arc, time::Duration};

use axum::{
    Extension,
    extract::{Path, Query, State},
    http::{HeaderMap, HeaderName, HeaderValue},
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
};
use chrono::{DateTime, Utc};
use futures_util::Stream;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{
    domain::{EventKind, StepId, TaskId},
    events::Subscription,
    http::{
        AppState,
        error::{ApiError, Problem},
        slots::{Slot, StreamSlots, Streams},
    },
    store::{EventCursor, EventStreamStart, TaskEvent, TaskStore},
};

/// Comment lines sent while nothing happens, so proxies and clients keep the connection.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Re-read this often while idle, in case a notification was lost.
const REREAD_INTERVAL: Duration = Duration::from_secs(2);
/// First wait for events withheld behind a running transaction; it doubles up to
/// `REREAD_INTERVAL`. Such transactions last milliseconds.
const HELD_BACK_FIRST_WAIT: Duration = Duration::from_millis(20);
/// Events read per query.
const PAGE: i64 = 200;
/// Consecutive failed reads after which the stream closes; the client resumes from its
/// last event id.
const MAX_READ_FAILURES: u32 = 3;

/// `Retry-After` of a refused stream: streams last as long as their task runs, so a slot
/// frees on a scale of seconds.
const SLOT_RETRY_AFTER_SECS: u64 = 5;

/// Every parameter arrives as text so a bad value gets an error naming it.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventParams {
    /// Replay only the events after this event id (0: from the start). `Last-Event-ID` wins
    /// over it.
    #[param(value_type = Option<i64>, minimum = 0)]
    after: Option<String>,
}

/// Stream a task's events
///
/// Server-Sent Events: the task's events after `Last-Event-ID` (or `?after=`) are replayed,
/// then new ones follow; the stream closes after the task's final event (`task_completed`,
/// `task_failed` or `task_cancelled`). Each SSE event carries `id: <event id>`,
/// `event: <kind>` and a `TaskEvent` as JSON `data`. One user may hold at most
/// `SSE_MAX_STREAMS_PER_USER` streams open at once (per API process); beyond it the answer
/// is `429` with `Retry-After`.
#[utoipa::path(
    get,
    path = "/tasks/{id}/events",
    tag = "tasks",
    params(
        ("id" = uuid::Uuid, Path, description = "The task id (a UUID)."),
        ("Last-Event-ID" = Option<i64>, Header, description = "Resume after this event id, as an SSE client does on reconnection."),
        EventParams,
    ),
    responses(
        (status = 200, description = "An SSE stream; each event's `data` is a `TaskEvent`.", body = EventBody<'static>, content_type = "text/event-stream"),
        (status = 400, description = "The id is not a UUID, or the resume point is not an event of this task.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such task.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Postgres is unavailable.", body = Problem, content_type = "application/problem+json"),
    ),
)]
pub async fn task_events(
    State(state): State<AppState>,
    Extension(slots): Extension<Arc<StreamSlots>>,
    caller: crate::auth::Caller,
    Path(id): Path<String>,
    Query(params): Query<EventParams>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = super::task_id(&id)?;
    let owner = crate::http::access::check_task(state.tasks.as_ref(), &caller, id).await?;
    let (field, after) = resume_point(&headers, params.after.as_deref())?;
    // Counted against the key's user; without keys, against the task's user.
    let user = caller.user_id.as_deref().unwrap_or(&owner);
    let Some(slot) = slots.acquire(user) else {
        return Err(ApiError::TooManyOpen {
            message: format!("at most {} event streams may be open at once per user; close one and retry", slots.max()),
            retry_after: SLOT_RETRY_AFTER_SECS,
        });
    };
    let (cursor, ended) = match state.tasks.event_stream_start(id, after).await? {
        EventStreamStart::NoTask => return Err(ApiError::NotFound { resource: "task", id: id.to_string() }),
        EventStreamStart::NoSuchEvent => {
            return Err(ApiError::BadParameter {
                field: field.into(),
                message: format!("is not the id of an event of task {id}"),
            });
        }
        EventStreamStart::Resume { cursor, ended } => (cursor, ended),
    };
    let follower = Follower {
        store: state.tasks.clone(),
        task: id,
        cursor,
        subscription: state.events.subscribe(id),
        pending: VecDeque::new(),
        replay_only: ended,
        finished: false,
        held_back_wait: HELD_BACK_FIRST_WAIT,
        failures: 0,
        _slot: slot,
    };
    let sse = Sse::new(follower.into_stream()).keep_alive(KeepAlive::new().interval(KEEP_ALIVE));
    // Reverse proxies such as nginx would otherwise buffer the stream.
    let headers = [(HeaderName::from_static("x-accel-buffering"), HeaderValue::from_static("no"))];
    Ok((headers, sse).into_response())
}

/// The event to resume after, from `Last-Event-ID` (sent by a reconnecting `EventSource`,
/// so it wins) or `?after=`, with the name of the one used. `0` means from the start.
fn resume_point(headers: &HeaderMap, after: Option<&str>) -> Result<(&'static str, Option<i64>), ApiError> {
    let (field, raw) = match headers.get("last-event-id") {
        Some(value) => ("Last-Event-ID", value.to_str().unwrap_or("-")),
        None => ("after", after.unwrap_or("")),
    };
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok((field, None));
    }
    match raw.parse::<i64>() {
        Ok(0) => Ok((field, None)),
        Ok(id) if id > 0 => Ok((field, Some(id))),
        _ => Err(ApiError::BadParameter {
            field: field.into(),
            message: "must be an event id (a positive integer)".into(),
        }),
    }
}

/// The JSON of one SSE event: the `task_events` row.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = TaskEvent)]
pub struct EventBody<'a> {
    /// The event id: pass it as `Last-Event-ID` or `after` to resume after this event.
    id: i64,
    task_id: TaskId,
    step_id: Option<StepId>,
    kind: EventKind,
    /// Details of the event; their shape depends on `kind`.
    #[schema(value_type = Object)]
    data: &'a Value,
    created_at: DateTime<Utc>,
}

fn sse_event(event: &TaskEvent) -> Result<Event, axum::Error> {
    Event::default().id(event.id.to_string()).event(event.kind.as_str()).json_data(EventBody {
        id: event.id,
        task_id: event.task_id,
        step_id: event.step_id,
        kind: event.kind,
        data: &event.data,
        created_at: event.created_at,
    })
}

/// One client's position in one task's events.
struct Follower {
    store: Arc<dyn TaskStore>,
    task: TaskId,
    /// The last event sent.
    cursor: EventCursor,
    subscription: Subscription,
    /// Read but not yet sent.
    pending: VecDeque<TaskEvent>,
    /// The client saw the final event already: send what is left, then close.
    replay_only: bool,
    /// The final event was sent.
    finished: bool,
    held_back_wait: Duration,
    failures: u32,
    /// Given back when the stream is dropped.
    _slot: Slot<Streams>,
}

impl Follower {
    fn into_stream(self) -> impl Stream<Item = Result<Event, axum::Error>> + Send {
        futures_util::stream::unfold(self, |mut follower| async move {
            let event = follower.next().await?;
            Some((sse_event(&event), follower))
        })
    }

    /// The next event to send, waiting for it if need be; `None` ends the stream.
    async fn next(&mut self) -> Option<TaskEvent> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                self.cursor = event.cursor;
                if event.ends_task() {
                    // Anything after the end (a step stopping late) is not part of the stream.
                    self.finished = true;
                    self.pending.clear();
                }
                return Some(event);
            }
            if self.finished || self.subscription.is_closed() {
                return None;
            }
            // Wake-ups queued so far are answered by this read.
            self.subscription.clear();
            let pause = match self.store.task_events_after(self.task, self.cursor, PAGE).await {
                Ok(batch) if !batch.events.is_empty() => {
                    self.failures = 0;
                    self.held_back_wait = HELD_BACK_FIRST_WAIT;
                    self.pending.extend(batch.events);
                    continue;
                }
                Ok(_) if self.replay_only => return None,
                Ok(batch) if batch.held_back => {
                    self.failures = 0;
                    let wait = self.held_back_wait;
                    self.held_back_wait = (wait * 2).min(REREAD_INTERVAL);
                    wait
                }
                Ok(_) => {
                    self.failures = 0;
                    REREAD_INTERVAL
                }
                Err(e) => {
                    self.failures += 1;
                    tracing::warn!(task = %self.task, error = %e, failures = self.failures, "reading task events failed");
                    if self.failures >= MAX_READ_FAILURES {
                        return None;
                    }
                    REREAD_INTERVAL
                }
            };
            tokio::select! {
                alive = self.subscription.changed() => if !alive { return None },
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_header(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("last-event-id", HeaderValue::from_str(value).unwrap());
        headers
    }

    fn field(result: Result<(&'static str, Option<i64>), ApiError>) -> String {
        match result {
            Err(ApiError::BadParameter { field, .. }) => field,
            other => panic!("expected a bad parameter, got {other:?}"),
        }
    }

    #[test]
    fn the_header_wins_over_the_query_and_zero_means_the_start() {
        assert_eq!(resume_point(&with_header("7"), Some("3")).unwrap(), ("Last-Event-ID", Some(7)));
        assert_eq!(resume_point(&HeaderMap::new(), Some("3")).unwrap(), ("after", Some(3)));
        assert_eq!(resume_point(&HeaderMap::new(), None).unwrap(), ("after", None));
        assert_eq!(resume_point(&HeaderMap::new(), Some("0")).unwrap(), ("after", None));
        assert_eq!(resume_point(&with_header(""), None).unwrap(), ("Last-Event-ID", None));
    }

    #[test]
    fn a_bad_resume_point_names_where_it_came_from() {
        assert_eq!(field(resume_point(&with_header("x"), None)), "Last-Event-ID");
        assert_eq!(field(resume_point(&HeaderMap::new(), Some("-1"))), "after");
        assert_eq!(field(resume_point(&HeaderMap::new(), Some("1.5"))), "after");
    }
}
