//! The HTTP transport shared by the hosted providers: per-attempt timeouts, retries with
//! backoff, and turning provider failures into [`LlmError`]s.
//!
//! Invariants:
//! - a call makes at most `1 + max_retries` attempts, each bounded by `timeout` (connect,
//!   send and reading the whole body);
//! - only transient failures are retried: 408, 429, 500, 502, 503, 504, 529, connection
//!   errors and timeouts. Every other non-2xx status is a [`LlmError::Rejected`] at once,
//!   carrying the provider's own message (`error.message` of its JSON body);
//! - before a retry the client waits what the provider asked (`Retry-After` in seconds or
//!   as an HTTP date, or OpenAI's `retry-after-ms`), capped at `Backoff::max_retry_after`;
//!   without one it waits a full-jitter exponential backoff;
//! - when retries run out the call fails with [`LlmError::Timeout`] if the last attempt
//!   timed out, else [`LlmError::Unavailable`];
//! - the API key is sent only in headers marked sensitive, and is scrubbed from any text
//!   (provider messages, transport errors) before it reaches an error or a log line.

use std::time::{Duration, SystemTime};

use rand::Rng;
use reqwest::{
    StatusCode, Url,
    header::{CONTENT_TYPE, HeaderMap, HeaderValue, RETRY_AFTER},
};

use super::{LlmConfigError, LlmError};

/// Longest provider message kept in an error, in characters: enough for any real
/// explanation, bounded so an HTML error page does not flood the logs.
const MAX_MESSAGE_CHARS: usize = 500;
/// Connecting never gets more than this, even with a long overall timeout, so a dead host
/// is detected quickly and retried.
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default limit of one attempt: long answers from large models take a while.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);
/// Default number of retries after the first attempt.
pub(crate) const DEFAULT_MAX_RETRIES: u32 = 3;
/// Shown in place of the API key.
const REDACTED: &str = "[redacted]";

/// How long to wait between attempts of a model call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Ceiling of the first retry's random wait; the ceiling doubles with each retry.
    pub initial: Duration,
    /// Largest ceiling of a random wait.
    pub max: Duration,
    /// Longest wait honoured from a provider's `Retry-After`; longer requests are cut to it.
    pub max_retry_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(20),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

impl Backoff {
    /// The wait before retry number `retry` (0 for the first retry).
    fn wait(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(asked) = retry_after {
            return asked.min(self.max_retry_after);
        }
        // Full jitter: uniform in [0, ceiling], so clients that failed together spread out.
        let ceiling = self.initial.saturating_mul(1u32 << retry.min(20)).min(self.max);
        let micros = u64::try_from(ceiling.as_micros()).unwrap_or(u64::MAX);
        Duration::from_micros(rand::rng().random_range(0..=micros))
    }
}

/// The longest one call can take: every attempt runs into `timeout`, and each retry waits
/// the longest the backoff allows. Hosts compare it with their own deadlines (a job's
/// visibility timeout must outlast the model call it waits for).
pub(crate) fn max_call_duration(timeout: Duration, max_retries: u32, backoff: &Backoff) -> Duration {
    let longest_wait = backoff.max.max(backoff.max_retry_after);
    timeout.saturating_mul(max_retries.saturating_add(1)).saturating_add(longest_wait.saturating_mul(max_retries))
}

/// A failed attempt.
enum Failure {
    /// Worth another attempt.
    Transient { reason: String, retry_after: Option<Duration>, timed_out: bool },
    /// Final: retrying cannot help.
    Fatal(LlmError),
}

/// Sends JSON bodies to one provider endpoint with the retry policy above.
///
/// Deliberately not `Debug`: it holds the API key (for scrubbing).
pub(crate) struct Transport {
    client: reqwest::Client,
    endpoint: Url,
    /// Provider name for log lines.
    provider: &'static str,
    timeout: Duration,
    max_retries: u32,
    backoff: Backoff,
    secret: Option<String>,
}

/// What a provider hands to [`Transport::new`].
pub(crate) struct TransportSettings<'a> {
    pub provider: &'static str,
    pub base_url: &'a str,
    /// Appended to the base URL, e.g. `/chat/completions`.
    pub path: &'a str,
    pub timeout: Duration,
    pub max_retries: u32,
    pub backoff: Backoff,
    /// Sent with every request; the authentication header must be marked sensitive.
    pub headers: HeaderMap,
    /// The API key, to scrub from error texts.
    pub secret: Option<String>,
}

impl Transport {
    pub(crate) fn new(settings: TransportSettings<'_>) -> Result<Self, LlmConfigError> {
        if settings.timeout.is_zero() {
            return Err(LlmConfigError::Setting { field: "timeout", reason: "must be greater than zero".into() });
        }
        let endpoint = endpoint(settings.base_url, settings.path)?;
        let client = reqwest::Client::builder()
            .default_headers(settings.headers)
            .connect_timeout(settings.timeout.min(MAX_CONNECT_TIMEOUT))
            .user_agent(concat!("agent-orchestrator/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(LlmConfigError::Http)?;
        Ok(Self {
            client,
            endpoint,
            provider: settings.provider,
            timeout: settings.timeout,
            max_retries: settings.max_retries,
            backoff: settings.backoff,
            secret: settings.secret.filter(|s| !s.is_empty()),
        })
    }

    /// The URL requests go to.
    pub(crate) fn endpoint(&self) -> &Url {
        &self.endpoint
    }

    /// POSTs `body` and returns the body of the first successful (2xx) answer.
    pub(crate) async fn post_json(&self, body: &impl serde::Serialize) -> Result<Vec<u8>, LlmError> {
        // Serialising plain wire structs cannot fail; the error path exists only because
        // the signature allows it.
        let body = serde_json::to_vec(body)
            .map_err(|e| LlmError::InvalidResponse(format!("cannot encode the request body: {e}")))?;
        let mut retries = 0;
        loop {
            let (reason, retry_after, timed_out) = match self.attempt(&body).await {
                Ok(answer) => return Ok(answer),
                Err(Failure::Fatal(err)) => return Err(err),
                Err(Failure::Transient { reason, retry_after, timed_out }) => (reason, retry_after, timed_out),
            };
            let attempts = retries + 1;
            if retries >= self.max_retries {
                tracing::warn!(provider = self.provider, attempts, %reason, "model call failed; no retries left");
                return Err(if timed_out {
                    LlmError::Timeout
                } else {
                    LlmError::Unavailable(format!("{reason} (gave up after {attempts} attempts)"))
                });
            }
            let wait = self.backoff.wait(retries, retry_after);
            tracing::warn!(
                provider = self.provider,
                attempt = attempts,
                wait_ms = wait.as_millis() as u64,
                %reason,
                "model call failed; retrying"
            );
            tokio::time::sleep(wait).await;
            retries += 1;
        }
    }

    async fn attempt(&self, body: &[u8]) -> Result<Vec<u8>, Failure> {
        let request = self
            .client
            .post(self.endpoint.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .body(body.to_vec())
            .timeout(self.timeout);
        let response = request.send().await.map_err(|e| self.transport_failure(e))?;
        let status = response.status();
        if status.is_success() {
            return match response.bytes().await {
                Ok(bytes) => Ok(bytes.to_vec()),
                Err(err) => Err(self.transport_failure(err)),
            };
        }
        let retry_after = retry_after(response.headers(), SystemTime::now());
        // An error body that cannot be read still leaves the status to go on.
        let error_body = response.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
        let message = self.scrub(&error_message(status, &error_body));
        if is_transient(status) {
            Err(Failure::Transient {
                reason: format!("HTTP {}: {message}", status.as_u16()),
                retry_after,
                timed_out: false,
            })
        } else {
            Err(Failure::Fatal(LlmError::Rejected { status: status.as_u16(), message }))
        }
    }

    fn transport_failure(&self, err: reqwest::Error) -> Failure {
        if err.is_timeout() {
            return Failure::Transient {
                reason: format!("no answer within {:?}", self.timeout),
                retry_after: None,
                timed_out: true,
            };
        }
        let reason = self.scrub(&error_chain(&err));
        if err.is_builder() {
            // A request that cannot be built now cannot be built on a retry either.
            return Failure::Fatal(LlmError::Unavailable(format!("cannot build the request: {reason}")));
        }
        Failure::Transient { reason, retry_after: None, timed_out: false }
    }

    fn scrub(&self, text: &str) -> String {
        scrub(text, self.secret.as_deref())
    }
}

/// `{base_url}{path}`, checked to be an http(s) URL.
fn endpoint(base_url: &str, path: &str) -> Result<Url, LlmConfigError> {
    let invalid = |reason: String| LlmConfigError::BaseUrl { url: base_url.to_owned(), reason };
    let url = Url::parse(&format!("{}{path}", base_url.trim_end_matches('/'))).map_err(|e| invalid(e.to_string()))?;
    match url.scheme() {
        "http" | "https" => Ok(url),
        other => Err(invalid(format!("scheme `{other}` is not http or https"))),
    }
}

/// Statuses that say "not now" rather than "not this request". 529 is Anthropic's
/// "overloaded".
fn is_transient(status: StatusCode) -> bool {
    matches!(status.as_u16(), 408 | 429 | 500 | 502 | 503 | 504 | 529)
}

/// How long the provider asked us to wait, if it said.
fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    // OpenAI's millisecond header is the more precise of the two when both are sent.
    if let Some(ms) = header("retry-after-ms").and_then(|v| v.parse::<f64>().ok()) {
        return Duration::try_from_secs_f64(ms / 1000.0).ok();
    }
    let value = header(RETRY_AFTER.as_str())?;
    if let Ok(seconds) = value.parse::<f64>() {
        return Duration::try_from_secs_f64(seconds).ok();
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let now = chrono::DateTime::<chrono::Utc>::from(now);
    // A date in the past means "now".
    Some((at.with_timezone(&chrono::Utc) - now).to_std().unwrap_or(Duration::ZERO))
}

/// The provider's explanation of an error status. OpenAI, Anthropic and vLLM put it in
/// `error.message`; Ollama and llama.cpp sometimes send `error` as a string, FastAPI-based
/// servers `detail`. Anything else is shown as text, cut short.
pub(crate) fn error_message(status: StatusCode, body: &[u8]) -> String {
    if let Ok(json) = serde_json::from_slice::<serde_json::Value>(body) {
        let found = [json.pointer("/error/message"), json.get("error"), json.get("message"), json.get("detail")]
            .into_iter()
            .flatten()
            .find_map(|v| v.as_str().map(str::to_owned));
        if let Some(message) = found {
            return truncate(message.trim());
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() { status.canonical_reason().unwrap_or("no details given").to_owned() } else { truncate(text) }
}

fn truncate(text: &str) -> String {
    match text.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// The error and its causes: reqwest's own message ("error sending request") hides the
/// useful part ("connection refused") in its sources.
fn error_chain(err: &reqwest::Error) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// `text` with every occurrence of `secret` replaced.
pub(crate) fn scrub(text: &str, secret: Option<&str>) -> String {
    match secret {
        Some(secret) if !secret.is_empty() && text.contains(secret) => text.replace(secret, REDACTED),
        _ => text.to_owned(),
    }
}

/// An HTTP header holding a secret: marked sensitive, so `http` never prints it in `Debug`.
pub(crate) fn secret_header(value: &str) -> Result<HeaderValue, LlmConfigError> {
    let mut header = HeaderValue::from_str(value).map_err(|_| LlmConfigError::ApiKey)?;
    header.set_sensitive(true);
    Ok(header)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn retry_after_reads_seconds_dates_and_milliseconds() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_470); // 2015-10-21 07:27:50 UTC
        assert_eq!(retry_after(&headers(&[("retry-after", "3")]), now), Some(Duration::from_secs(3)));
        assert_eq!(retry_after(&headers(&[("retry-after", "0.5")]), now), Some(Duration::from_millis(500)));
        assert_eq!(
            retry_after(&headers(&[("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT")]), now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            retry_after(&headers(&[("retry-after", "Wed, 21 Oct 2015 07:00:00 GMT")]), now),
            Some(Duration::ZERO)
        );
        assert_eq!(
            retry_after(&headers(&[("retry-after", "20"), ("retry-after-ms", "1500")]), now),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(retry_after(&headers(&[("retry-after", "soon")]), now), None);
        assert_eq!(retry_after(&headers(&[("retry-after", "-1")]), now), None);
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
    }

    #[test]
    fn backoff_is_jittered_below_a_doubling_capped_ceiling() {
        let backoff = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(300),
            max_retry_after: Duration::from_secs(2),
        };
        for _ in 0..200 {
            assert!(backoff.wait(0, None) <= Duration::from_millis(100));
            assert!(backoff.wait(1, None) <= Duration::from_millis(200));
            assert!(backoff.wait(5, None) <= Duration::from_millis(300));
            assert!(backoff.wait(40, None) <= Duration::from_millis(300));
        }
        assert_eq!(backoff.wait(0, Some(Duration::from_secs(1))), Duration::from_secs(1));
        assert_eq!(backoff.wait(0, Some(Duration::from_secs(90))), Duration::from_secs(2));
    }

    #[test]
    fn worst_case_covers_every_attempt_and_wait() {
        let backoff = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(20),
            max_retry_after: Duration::from_secs(60),
        };
        assert_eq!(max_call_duration(Duration::from_secs(120), 3, &backoff), Duration::from_secs(4 * 120 + 3 * 60));
        assert_eq!(max_call_duration(Duration::from_secs(5), 0, &backoff), Duration::from_secs(5));
    }

    #[test]
    fn error_messages_come_from_the_providers_json() {
        let status = StatusCode::BAD_REQUEST;
        assert_eq!(error_message(status, br#"{"error":{"message":"bad model","type":"x"}}"#), "bad model");
        assert_eq!(error_message(status, br#"{"error":"model 'x' not found"}"#), "model 'x' not found");
        assert_eq!(error_message(status, br#"{"detail":"nope"}"#), "nope");
        assert_eq!(error_message(status, b"plain text"), "plain text");
        assert_eq!(error_message(status, b""), "Bad Request");
        assert_eq!(error_message(status, "x".repeat(2000).as_bytes()).chars().count(), MAX_MESSAGE_CHARS + 1);
    }

    #[test]
    fn only_transient_statuses_are_retried() {
        for code in [408, 429, 500, 502, 503, 504, 529] {
            assert!(is_transient(StatusCode::from_u16(code).unwrap()), "{code}");
        }
        for code in [400, 401, 403, 404, 422, 501] {
            assert!(!is_transient(StatusCode::from_u16(code).unwrap()), "{code}");
        }
    }

    #[test]
    fn secrets_are_scrubbed_and_endpoints_checked() {
        assert_eq!(scrub("key sk-123 is bad", Some("sk-123")), "key [redacted] is bad");
        assert_eq!(scrub("nothing here", Some("sk-123")), "nothing here");
        assert_eq!(scrub("text", None), "text");
        assert_eq!(endpoint("http://h:1/v1/", "/chat/completions").unwrap().as_str(), "http://h:1/v1/chat/completions");
        assert!(matches!(endpoint("ftp://h/v1", "/x"), Err(LlmConfigError::BaseUrl { .. })));
        assert!(matches!(endpoint("not a url", "/x"), Err(LlmConfigError::BaseUrl { .. })));
        assert!(format!("{:?}", secret_header("Bearer sk-123").unwrap()).contains("Sensitive"));
    }
}
