//! A JSON body extractor whose rejections are problem+json naming the offending field.

use axum::{
    body::Bytes,
    extract::{FromRequest, FromRequestParts, Query, Request},
    http::{header, request::Parts},
};
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// Largest accepted request body.
pub const BODY_LIMIT: usize = 256 * 1024;

/// Like `axum::Json`, with errors that say which field is wrong.
pub struct JsonBody<T>(pub T);

impl<T, S> FromRequest<S> for JsonBody<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|m| {
                let m = m.trim();
                m.eq_ignore_ascii_case("application/json") || m.to_ascii_lowercase().ends_with("+json")
            })
            .unwrap_or(false);
        if !is_json {
            return Err(ApiError::UnsupportedMediaType);
        }
        let bytes =
            Bytes::from_request(req, state).await.map_err(|_| ApiError::PayloadTooLarge { limit: BODY_LIMIT })?;
        parse(&bytes).map(JsonBody)
    }
}

/// Like `axum::extract::Query`, with problem+json errors naming the parameter (a repeated
/// `?limit=1&limit=2`, say) instead of axum's plain-text rejection.
pub struct QueryParams<T>(pub T);

impl<T, S> FromRequestParts<S> for QueryParams<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        Query::try_from_uri(&parts.uri).map(|Query(params)| QueryParams(params)).map_err(|rejection| {
            let message = rejection.body_text();
            // serde names the parameter between backticks ("duplicate field `limit`").
            let field = message.split('`').nth(1).unwrap_or("query").to_owned();
            ApiError::BadParameter { field, message }
        })
    }
}

/// Deserialises `bytes`, reporting the JSON path of the first error.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = inner.to_string();
        // Broken JSON has no field at fault; a value of the wrong shape does. serde names a
        // missing field only in its message, at the parent's path.
        let field = if inner.is_data() {
            missing_field(&message)
                .map(|f| if path == "." { f.to_owned() } else { format!("{path}.{f}") })
                .or_else(|| (path != ".").then_some(path))
        } else {
            None
        };
        let message = match &field {
            Some(f) => format!("{f}: {message}"),
            None => message,
        };
        ApiError::MalformedBody { field, message }
    })
}

fn missing_field(message: &str) -> Option<&str> {
    message.strip_prefix("missing field `")?.split('`').next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        name: String,
        count: Option<u32>,
    }

    fn field_of(json: &str) -> Option<String> {
        match parse::<Body>(json.as_bytes()) {
            Err(ApiError::MalformedBody { field, .. }) => field,
            other => panic!("expected a malformed body, got {other:?}"),
        }
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(field_of(r#"{"count": 1}"#).as_deref(), Some("name"));
        assert_eq!(field_of(r#"{"name": 5}"#).as_deref(), Some("name"));
        assert_eq!(field_of(r#"{"name": "a", "count": -1}"#).as_deref(), Some("count"));
        assert_eq!(field_of(r#"{"name": "a", "colour": 1}"#).as_deref(), Some("colour"));
        assert_eq!(field_of(r#"{"name": "#), None);
    }
}
