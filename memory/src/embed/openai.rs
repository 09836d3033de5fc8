//! An embedder for OpenAI-compatible embedding APIs (OpenAI, Azure-style proxies, Ollama,
//! vLLM, llama.cpp…): `POST {base_url}/embeddings` with `{model, input: [...]}`.
//!
//! Invariants:
//! - every returned vector has the configured dimension, checked against each response, so
//!   a model swapped behind the same URL is detected instead of corrupting the index;
//! - inputs are sent in batches of at most `batch_size`, and results come back in input order
//!   whatever order the server lists them in;
//! - 429, 5xx, timeouts and connection failures are retried with exponential backoff and
//!   jitter, never sooner than the server's `Retry-After`, up to `max_retries`; any other 4xx
//!   fails at once with [`MemoryError::EmbeddingRejected`];
//! - the API key is never logged: it only goes into the `Authorization` header, and `Debug`
//!   redacts it.
//!
//! Blank texts are not sent (the API rejects empty inputs): they embed to the zero vector,
//! like [`crate::HashingEmbedder`] does.

use std::fmt;
use std::time::{Duration, SystemTime};

use rand::Rng;
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};

use crate::embed::Embedder;
use crate::error::MemoryError;

/// Inputs per request when none is configured; OpenAI accepts up to 2048, but smaller
/// batches keep each retry cheap and stay under proxies' body limits.
pub const DEFAULT_BATCH_SIZE: usize = 64;

/// Longest part of an error body quoted in an error.
const MAX_ERROR_BODY: usize = 500;

/// Configuration of an [`OpenAiEmbedder`].
#[derive(Clone)]
pub struct OpenAiEmbedderConfig {
    /// The API root, e.g. `https://api.openai.com/v1` or `http://localhost:11434/v1`.
    pub base_url: String,
    /// Sent as a bearer token when set; never logged.
    pub api_key: Option<String>,
    /// The model name, e.g. `text-embedding-3-small`.
    pub model: String,
    /// The vector size the model returns; every response is checked against it.
    pub dimension: usize,
    /// Also send `dimensions` in each request, for models that can shorten their vectors
    /// (OpenAI's text-embedding-3 family); leave off for servers that reject the field.
    pub request_dimensions: bool,
    /// Inputs per request.
    pub batch_size: usize,
    /// Timeout of one HTTP request.
    pub timeout: Duration,
    /// Retries after the first attempt, for retryable failures only.
    pub max_retries: u32,
    /// Backoff before the first retry; doubled for each further one.
    pub initial_backoff: Duration,
    /// Ceiling of the computed backoff.
    pub max_backoff: Duration,
    /// A `Retry-After` longer than this fails the call instead of stalling it.
    pub max_retry_after: Duration,
}

impl OpenAiEmbedderConfig {
    /// A configuration with the default batching, timeout and retry policy.
    pub fn new(base_url: impl Into<String>, model: impl Into<String>, dimension: usize) -> Self {
        Self {
            base_url: base_url.into(),
            api_key: None,
            model: model.into(),
            dimension,
            request_dimensions: false,
            batch_size: DEFAULT_BATCH_SIZE,
            timeout: Duration::from_secs(30),
            max_retries: 5,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

impl fmt::Debug for OpenAiEmbedderConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenAiEmbedderConfig")
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("model", &self.model)
            .field("dimension", &self.dimension)
            .field("request_dimensions", &self.request_dimensions)
            .field("batch_size", &self.batch_size)
            .field("timeout", &self.timeout)
            .field("max_retries", &self.max_retries)
            .field("initial_backoff", &self.initial_backoff)
            .field("max_backoff", &self.max_backoff)
            .field("max_retry_after", &self.max_retry_after)
            .finish()
    }
}

/// Embeds through an OpenAI-compatible `/embeddings` endpoint.
#[derive(Debug, Clone)]
pub struct OpenAiEmbedder {
    config: OpenAiEmbedderConfig,
    endpoint: url::Url,
    client: reqwest::Client,
    name: String,
}

#[derive(Serialize)]
struct EmbeddingRequest<'a> {
    model: &'a str,
    input: &'a [&'a str],
    encoding_format: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    dimensions: Option<usize>,
}

#[derive(Deserialize)]
struct EmbeddingResponse {
    data: Vec<EmbeddingData>,
}

#[derive(Deserialize)]
struct EmbeddingData {
    embedding: Vec<f32>,
    index: usize,
}

/// How one attempt failed.
enum AttemptError {
    /// Worth retrying after at least `retry_after`, if given.
    Retryable { reason: String, retry_after: Option<Duration> },
    /// Retrying the same request cannot help.
    Fatal(MemoryError),
}

impl OpenAiEmbedder {
    /// Checks the configuration and builds the HTTP client.
    pub fn new(config: OpenAiEmbedderConfig) -> Result<Self, MemoryError> {
        if config.model.trim().is_empty() {
            return Err(MemoryError::InvalidConfig("the embedding model name is empty".into()));
        }
        if config.dimension == 0 {
            return Err(MemoryError::InvalidDimension(0));
        }
        if config.batch_size == 0 {
            return Err(MemoryError::InvalidConfig("the embedding batch size must be positive".into()));
        }
        let endpoint = url::Url::parse(&format!("{}/embeddings", config.base_url.trim_end_matches('/')))
            .map_err(|e| MemoryError::InvalidConfig(format!("embedding base URL {:?}: {e}", config.base_url)))?;
        if !matches!(endpoint.scheme(), "http" | "https") {
            return Err(MemoryError::InvalidConfig(format!("embedding base URL {:?} is not http(s)", config.base_url)));
        }
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .build()
            .map_err(|e| MemoryError::InvalidConfig(format!("cannot build the HTTP client: {e}")))?;
        let name = format!("openai:{}:{}", config.model, config.dimension);
        Ok(Self { config, endpoint, client, name })
    }

    /// Embeds one batch, retrying what is worth retrying.
    async fn embed_batch(&self, inputs: &[&str]) -> Result<Vec<Vec<f32>>, MemoryError> {
        let request = EmbeddingRequest {
            model: &self.config.model,
            input: inputs,
            encoding_format: "float",
            dimensions: self.config.request_dimensions.then_some(self.config.dimension),
        };
        let mut retries = 0;
        loop {
            let (reason, retry_after) = match self.attempt(&request).await {
                Ok(vectors) => return Ok(vectors),
                Err(AttemptError::Fatal(error)) => return Err(error),
                Err(AttemptError::Retryable { reason, retry_after }) => (reason, retry_after),
            };
            if retries >= self.config.max_retries {
                return Err(MemoryError::Backend(format!(
                    "{} failed after {} attempts: {reason}",
                    self.endpoint,
                    retries + 1
                )));
            }
            if let Some(wait) = retry_after.filter(|wait| *wait > self.config.max_retry_after) {
                return Err(MemoryError::Backend(format!(
                    "{} asks to retry after {wait:?}, longer than the allowed {:?}: {reason}",
                    self.endpoint, self.config.max_retry_after
                )));
            }
            retries += 1;
            let jitter = rand::rng().random_range(0.5..=1.0);
            let delay = backoff(retries, self.config.initial_backoff, self.config.max_backoff, jitter)
                .max(retry_after.unwrap_or_default());
            tracing::warn!(endpoint = %self.endpoint, retry = retries, ?delay, %reason, "embedding request failed, retrying");
            tokio::time::sleep(delay).await;
        }
    }

    /// One HTTP round trip.
    async fn attempt(&self, request: &EmbeddingRequest<'_>) -> Result<Vec<Vec<f32>>, AttemptError> {
        let mut builder = self.client.post(self.endpoint.clone()).json(request);
        if let Some(key) = &self.config.api_key {
            builder = builder.bearer_auth(key);
        }
        let response = builder
            .send()
            .await
            .map_err(|e| AttemptError::Retryable { reason: format!("request failed: {e}"), retry_after: None })?;
        let status = response.status();
        if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            let retry_after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| parse_retry_after(value, SystemTime::now()));
            let body = response.text().await.unwrap_or_default();
            return Err(AttemptError::Retryable {
                reason: format!("status {status}: {}", error_message(&body)),
                retry_after,
            });
        }
        let body = response.bytes().await.map_err(|e| AttemptError::Retryable {
            reason: format!("reading the body failed: {e}"),
            retry_after: None,
        })?;
        if !status.is_success() {
            let message = error_message(&String::from_utf8_lossy(&body));
            return Err(AttemptError::Fatal(MemoryError::EmbeddingRejected { status: status.as_u16(), message }));
        }
        let parsed: EmbeddingResponse = serde_json::from_slice(&body).map_err(|e| {
            AttemptError::Fatal(MemoryError::Backend(format!("{} returned an unexpected body: {e}", self.endpoint)))
        })?;
        self.order(parsed, request.input.len()).map_err(AttemptError::Fatal)
    }

    /// Puts the vectors of a response in input order, checking count and dimension.
    fn order(&self, response: EmbeddingResponse, expected: usize) -> Result<Vec<Vec<f32>>, MemoryError> {
        if response.data.len() != expected {
            return Err(MemoryError::Backend(format!(
                "{} returned {} embeddings for {expected} inputs",
                self.endpoint,
                response.data.len()
            )));
        }
        let mut ordered: Vec<Option<Vec<f32>>> = vec![None; expected];
        for item in response.data {
            if item.embedding.len() != self.config.dimension {
                return Err(MemoryError::DimensionMismatch {
                    expected: self.config.dimension,
                    actual: item.embedding.len(),
                });
            }
            match ordered.get_mut(item.index) {
                Some(slot @ None) => *slot = Some(item.embedding),
                _ => {
                    return Err(MemoryError::Backend(format!(
                        "{} returned a missing or duplicate index {}",
                        self.endpoint, item.index
                    )));
                }
            }
        }
        // Every slot is filled: `expected` distinct indices below `expected`.
        Ok(ordered.into_iter().flatten().collect())
    }
}

#[async_trait::async_trait]
impl Embedder for OpenAiEmbedder {
    fn name(&self) -> &str {
        &self.name
    }

    fn dimension(&self) -> usize {
        self.config.dimension
    }

    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, MemoryError> {
        let mut vectors = vec![vec![0.0; self.config.dimension]; texts.len()];
        let to_send: Vec<(usize, &str)> =
            texts.iter().enumerate().filter(|(_, t)| !t.trim().is_empty()).map(|(i, t)| (i, t.as_str())).collect();
        for batch in to_send.chunks(self.config.batch_size) {
            let inputs: Vec<&str> = batch.iter().map(|(_, text)| *text).collect();
            let embedded = self.embed_batch(&inputs).await?;
            for ((position, _), vector) in batch.iter().zip(embedded) {
                vectors[*position] = vector;
            }
        }
        Ok(vectors)
    }
}

/// The backoff before retry number `retry` (1-based): `initial * 2^(retry-1)`, capped at
/// `max`, scaled by `jitter` (in 0..=1) so that clients that failed together spread out.
pub fn backoff(retry: u32, initial: Duration, max: Duration, jitter: f64) -> Duration {
    let exponential = initial.saturating_mul(2u32.saturating_pow(retry.saturating_sub(1)));
    exponential.min(max).mul_f64(jitter.clamp(0.0, 1.0))
}

/// Parses a `Retry-After` value: delay seconds, or an HTTP date (a date in the past means
/// "now").
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let when = SystemTime::from(date.with_timezone(&chrono::Utc));
    Some(when.duration_since(now).unwrap_or_default())
}

/// The `error.message` of an OpenAI-style error body, or the start of the body.
fn error_message(body: &str) -> String {
    let from_json = serde_json::from_str::<serde_json::Value>(body).ok().and_then(|json| {
        json.pointer("/error/message").or_else(|| json.get("error")).and_then(|m| m.as_str()).map(str::to_owned)
    });
    from_json.unwrap_or_else(|| body.chars().take(MAX_ERROR_BODY).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_ceiling() {
        let ms = Duration::from_millis;
        assert_eq!(backoff(1, ms(100), ms(1000), 1.0), ms(100));
        assert_eq!(backoff(2, ms(100), ms(1000), 1.0), ms(200));
        assert_eq!(backoff(4, ms(100), ms(1000), 1.0), ms(800));
        assert_eq!(backoff(5, ms(100), ms(1000), 1.0), ms(1000));
        assert_eq!(backoff(60, ms(100), ms(1000), 1.0), ms(1000), "no overflow");
        assert_eq!(backoff(2, ms(100), ms(1000), 0.5), ms(100));
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:49:47 GMT", now), Some(Duration::from_secs(10)));
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:40:00 GMT", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-3", now), None);
    }

    #[test]
    fn error_messages_come_from_the_openai_shape_or_the_body() {
        assert_eq!(error_message(r#"{"error":{"message":"bad model","type":"invalid_request_error"}}"#), "bad model");
        assert_eq!(error_message(r#"{"error":"plain"}"#), "plain");
        assert_eq!(error_message("oops"), "oops");
        assert_eq!(error_message(&"x".repeat(2000)).len(), MAX_ERROR_BODY);
    }

    #[test]
    fn name_debug_and_validation() {
        let mut config = OpenAiEmbedderConfig::new("http://127.0.0.1:9/v1/", "text-embedding-3-small", 1536);
        config.api_key = Some("sk-secret-value".into());
        let embedder = OpenAiEmbedder::new(config.clone()).expect("valid");
        assert_eq!(embedder.name(), "openai:text-embedding-3-small:1536");
        assert_eq!(embedder.endpoint.as_str(), "http://127.0.0.1:9/v1/embeddings");
        for debug in [format!("{config:?}"), format!("{embedder:?}")] {
            assert!(!debug.contains("sk-secret-value") && debug.contains("<redacted>"), "{debug}");
        }
        for bad in [
            OpenAiEmbedderConfig { model: " ".into(), ..config.clone() },
            OpenAiEmbedderConfig { dimension: 0, ..config.clone() },
            OpenAiEmbedderConfig { batch_size: 0, ..config.clone() },
            OpenAiEmbedderConfig { base_url: "ftp://x".into(), ..config.clone() },
            OpenAiEmbedderConfig { base_url: "not a url".into(), ..config.clone() },
        ] {
            assert!(OpenAiEmbedder::new(bad).is_err());
        }
    }
}
