//! Cross-origin access for browser clients, from CORS_ALLOWED_ORIGINS.

use std::time::Duration;

use axum::http::{HeaderName, HeaderValue, Method, header};
use tower_http::cors::{AllowOrigin, CorsLayer};

#[derive(Debug, thiserror::Error)]
#[error("CORS_ALLOWED_ORIGINS: `{0}` is not an origin like https://app.example.com")]
pub struct BadOrigin(String);

/// The layer for `origins`, or `None` when no origin is allowed (browsers then keep to
/// same-origin calls). Keys travel in `Authorization`, never in cookies, so credentials mode
/// stays off and `*` is safe to offer.
pub fn layer(origins: &[String]) -> Result<Option<CorsLayer>, BadOrigin> {
    let origins: Vec<&str> = origins.iter().map(|o| o.trim()).filter(|o| !o.is_empty()).collect();
    if origins.is_empty() {
        return Ok(None);
    }
    let allow = if origins.contains(&"*") {
        AllowOrigin::any()
    } else {
        let parsed = origins
            .iter()
            .map(|o| {
                let ok = (o.starts_with("https://") || o.starts_with("http://")) && !o.ends_with('/');
                ok.then(|| HeaderValue::from_str(o).ok()).flatten().ok_or_else(|| BadOrigin((*o).to_owned()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        AllowOrigin::list(parsed)
    };
    Ok(Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST, Method::DELETE])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                HeaderName::from_static("idempotency-key"),
                HeaderName::from_static("last-event-id"),
            ])
            .expose_headers([
                header::LOCATION,
                header::RETRY_AFTER,
                HeaderName::from_static("x-request-id"),
                HeaderName::from_static("idempotent-replayed"),
                HeaderName::from_static("ratelimit-limit"),
                HeaderName::from_static("ratelimit-remaining"),
                HeaderName::from_static("ratelimit-reset"),
            ])
            .max_age(Duration::from_secs(3600)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_checked() {
        assert!(layer(&[]).unwrap().is_none());
        assert!(layer(&[" ".into()]).unwrap().is_none());
        assert!(layer(&["*".into()]).unwrap().is_some());
        assert!(layer(&["https://app.example.com".into(), "http://localhost:3000".into()]).unwrap().is_some());
        for bad in ["app.example.com", "https://app.example.com/", "ftp://x"] {
            assert!(layer(&[bad.into()]).is_err(), "{bad}");
        }
    }
}
