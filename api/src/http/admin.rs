//! `GET /admin/dead-letters`: the jobs the workers set aside because they kept failing
//! (after `JOB_MAX_DELIVERIES` deliveries).

use axum::{Json, extract::State};
use serde::{Deserialize, Serialize};

use super::{
    AppState,
    error::{ApiError, Problem},
    extract::QueryParams,
};
use crate::{auth::Caller, queue::DeadLetter};

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeadLetterParams {
    /// How many of the newest dead letters, 1 to 1000 (default 100).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeadLetterList {
    /// Newest first.
    pub dead_letters: Vec<DeadLetter>,
}

/// List dead letters
///
/// Jobs that failed on every one of `JOB_MAX_DELIVERIES` deliveries (or kept killing their
/// worker), newest first. The work each one named was failed with `error_code:
/// dead_lettered`; `POST /tasks/{id}/retry` runs it again once the cause is fixed. Admin keys only.
#[utoipa::path(
    get,
    path = "/admin/dead-letters",
    tag = "operations",
    params(DeadLetterParams),
    responses(
        (status = 200, description = "The newest dead letters.", body = DeadLetterList),
        (status = 400, description = "`limit` is not acceptable.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The API key is not an admin key.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Redis is unavailable.", body = Problem, content_type = "application/problem+json"),
    ),
)]
pub async fn dead_letters(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(params): QueryParams<DeadLetterParams>,
) -> Result<Json<DeadLetterList>, ApiError> {
    if !caller.admin {
        return Err(ApiError::Forbidden { field: "Authorization".into(), message: "needs an admin API key".into() });
    }
    let limit = match params.limit.as_deref() {
        None => DEFAULT_LIMIT,
        Some(raw) => match raw.parse::<usize>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
            _ => {
                let message = format!("must be an integer from 1 to {MAX_LIMIT}");
                return Err(ApiError::BadParameter { field: "limit".into(), message });
            }
        },
    };
    let dead_letters = state.dispatcher.dead_letters(limit).await?;
    Ok(Json(DeadLetterList { dead_letters }))
}
