//! HTTP observability: request counts and latencies by route template and status, and
//! `GET /metrics`, which refreshes the shared-state gauges before rendering.
//!
//! Every label value comes from a closed set, whatever clients send: the standard methods
//! (anything else is `OTHER`), route templates (`unmatched` when no route matched) and
//! status codes. Otherwise `curl -X M1`, `-X M2`, … would add series without end.

use std::time::Instant;

use axum::{
    extract::{MatchedPath, Request, State},
    http::{Method, header},
    middleware::Next,
    response::{IntoResponse, Response},
};

use super::AppState;
use crate::domain::TaskStatus;

/// Counts every request under its route template (`/tasks/{id}`, not the concrete path), so
/// the label set stays bounded whatever clients send.
pub async fn record(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let method = method_label(request.method());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    state.metrics.http_requests.with_label_values(&[method, &route, &status]).inc();
    state.metrics.http_duration.with_label_values(&[method, &route]).observe(started.elapsed().as_secs_f64());
    response
}

/// The method as a label: one of the seven this API can answer, or `OTHER`.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

/// Prometheus metrics
///
/// The text exposition format: HTTP request counts and latencies, task and queue gauges.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses((status = 200, description = "Metrics in the Prometheus text format.", body = String, content_type = "text/plain; version=0.0.4")),
)]
pub async fn metrics(State(state): State<AppState>) -> Response {
    // Shared state is read at scrape time; a dependency that does not answer leaves its
    // gauges at their last value rather than failing the scrape.
    let (tasks, queue) = tokio::join!(state.tasks.unfinished_counts(), state.dispatcher.stats());
    match tasks {
        Ok(counts) => {
            for status in TaskStatus::ALL.iter().filter(|s| !s.is_terminal()) {
                let n = counts.iter().find(|(s, _)| s == status).map(|(_, n)| *n).unwrap_or(0);
                state.metrics.tasks_unfinished.with_label_values(&[status.as_str()]).set(n);
            }
        }
        Err(e) => tracing::warn!(error = %e, "task gauges not refreshed"),
    }
    match queue {
        Ok(stats) => {
            for s in stats {
                state.metrics.queue_depth.with_label_values(&[s.priority.as_str()]).set(s.depth as i64);
                state
                    .metrics
                    .queue_oldest_age
                    .with_label_values(&[s.priority.as_str()])
                    .set(s.oldest_age.as_secs_f64());
            }
        }
        Err(e) => tracing::warn!(error = %e, "queue gauges not refreshed"),
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render()).into_response()
}
