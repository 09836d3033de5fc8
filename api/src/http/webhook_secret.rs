//! `GET /webhook-secret` and `POST /webhook-secret/rotate`: a user's own webhook signing
//! secret (see [`crate::webhooks::secrets`]), the one their receivers verify deliveries with.
//! A caller sees and rotates only its own user's secret; admin keys may name any user.
//! Answers carry `Cache-Control: no-store`, since they hold a secret.

use axum::{
    Json, Router,
    extract::State,
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{
    AppState,
    access::{Named, acting_user},
    error::{ApiError, Problem},
    extract::QueryParams,
};
use crate::{auth::Caller, webhooks::UserSecrets};

pub fn routes() -> Router<AppState> {
    Router::new().route("/webhook-secret", get(show)).route("/webhook-secret/rotate", post(rotate))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct Owner {
    /// Whose secret; defaults to the API key's user, and only admin keys may name another.
    /// Required when auth is disabled.
    user_id: Option<String>,
}

/// A user's webhook signing secret, in the Standard Webhooks form.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = json!({
    "user_id": "demo-user",
    "secret": "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD4v3TavBfk2I=",
    "previous": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwUjlgMeGzGAE=",
    "rotated_at": "2026-01-01T12:00:00Z",
    "previous_expires_at": "2026-01-02T12:00:00Z"
}))]
pub struct WebhookSecretResponse {
    pub user_id: String,
    /// Signs every delivery of the user's tasks: `webhook-signature` holds
    /// `v1,<base64 HMAC-SHA256>` of `{webhook-id}.{webhook-timestamp}.{body}` keyed with the
    /// base64-decoded part after `whsec_`. Give it as is to a Standard Webhooks library.
    pub secret: String,
    /// The secret before the last rotation: it signs too (a second `v1,` entry) until
    /// `previous_expires_at`, then `null`.
    pub previous: Option<String>,
    /// The last rotation; `null` if there was none.
    pub rotated_at: Option<DateTime<Utc>>,
    /// When `previous` stops signing, 24 h after the rotation.
    pub previous_expires_at: Option<DateTime<Utc>>,
}

impl WebhookSecretResponse {
    /// The answer: the body, marked uncacheable.
    fn respond(user_id: String, secrets: &UserSecrets) -> Response {
        let body = Self {
            user_id,
            secret: secrets.current.to_whsec(),
            previous: secrets.previous.as_ref().map(|s| s.to_whsec()),
            rotated_at: secrets.rotated_at,
            previous_expires_at: secrets.previous_expires_at,
        };
        ([(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))], Json(body)).into_response()
    }
}

/// Show the webhook signing secret
///
/// The secret that signs the webhooks of the user's tasks (and, for 24 h after a rotation,
/// the previous one, which signs too). Made on first use.
#[utoipa::path(
    get,
    path = "/webhook-secret",
    operation_id = "get_webhook_secret",
    tag = "webhooks",
    params(Owner),
    responses(
        (status = 200, description = "The user's secret.", body = WebhookSecretResponse),
        (status = 400, description = "`user_id` is invalid, or missing while auth is disabled.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`user_id` names another user than the API key's.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Postgres is unavailable.", body = Problem, content_type = "application/problem+json"),
    ),
)]
pub(super) async fn show(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(owner): QueryParams<Owner>,
) -> Result<Response, ApiError> {
    let user = acting_user(&caller, owner.user_id.as_deref(), Named::Query)?;
    let secrets = state.webhook_secrets.of(&user).await?;
    Ok(WebhookSecretResponse::respond(user, &secrets))
}

/// Rotate the webhook signing secret
///
/// Makes a new secret. For the next 24 h both the new and the previous one sign every
/// delivery (two `v1,` entries in `webhook-signature`), so receivers can switch without
/// refusing a call; rotating again within that time drops the older one at once.
#[utoipa::path(
    post,
    path = "/webhook-secret/rotate",
    operation_id = "rotate_webhook_secret",
    tag = "webhooks",
    params(Owner),
    responses(
        (status = 200, description = "The new secret, with the previous one.", body = WebhookSecretResponse),
        (status = 400, description = "`user_id` is invalid, or missing while auth is disabled.", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`user_id` names another user than the API key's.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Postgres is unavailable.", body = Problem, content_type = "application/problem+json"),
    ),
)]
pub(super) async fn rotate(
    State(state): State<AppState>,
    caller: Caller,
    QueryParams(owner): QueryParams<Owner>,
) -> Result<Response, ApiError> {
    let user = acting_user(&caller, owner.user_id.as_deref(), Named::Query)?;
    let secrets = state.webhook_secrets.rotate(&user).await?;
    tracing::info!(user = %user, "webhook secret rotated");
    Ok(WebhookSecretResponse::respond(user, &secrets))
}
