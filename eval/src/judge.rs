//! LLM-as-judge: a configured model scores a task's result against a case's rubric.
//!
//! The judge is any OpenAI-compatible chat-completions server (OpenAI, Ollama, vLLM …). It
//! is asked for a JSON object `{"score": 0..1, "reason": "…"}` at temperature 0; an answer
//! that is not one, or a score outside 0..=1, is an error, never a guess. Rate limits, server
//! errors and unreachable servers are retried a few times with jittered backoff; the last
//! failure is reported as the judge's error, which fails the check (an unscored result is not
//! a passed one).

use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Attempts per verdict.
const MAX_ATTEMPTS: u32 = 3;
/// Backoff before the second attempt; doubled for each further one.
const BASE_BACKOFF: Duration = Duration::from_millis(500);
/// Longest one judge call may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest task result sent to the judge, in characters.
const MAX_RESULT_CHARS: usize = 24_000;

const SYSTEM_PROMPT: &str = "You are a strict, fair evaluator of an AI agent system's work. You are given a task, \
the system's final result and a rubric. Score how well the result satisfies the rubric, from 0 (not at all) to 1 \
(fully). Judge only against the rubric, not style preferences. Answer with a single JSON object and nothing else: \
{\"score\": <number between 0 and 1>, \"reason\": \"<one or two sentences>\"}";

/// Where the judge is and which model it uses.
#[derive(Debug, Clone)]
pub struct JudgeConfig {
    /// Base URL of the OpenAI-compatible API, e.g. `https://api.openai.com/v1`.
    pub base_url: String,
    pub model: String,
    pub api_key: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum JudgeError {
    #[error("judge request failed: {0}")]
    Http(#[from] reqwest::Error),
    #[error("the judge answered {status}: {body}")]
    Status { status: u16, body: String },
    /// The answer was not a verdict.
    #[error("unreadable judge answer: {0}")]
    Unreadable(String),
}

impl JudgeError {
    /// Whether another attempt may succeed.
    fn is_transient(&self) -> bool {
        match self {
            Self::Http(e) => e.is_connect() || e.is_timeout(),
            Self::Status { status, .. } => *status == 429 || *status >= 500,
            Self::Unreadable(_) => false,
        }
    }
}

/// A judge's score of one result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// 0 (fails the rubric) to 1 (fully meets it).
    pub score: f64,
    pub reason: String,
}

#[derive(Debug, Clone)]
pub struct Judge {
    config: JudgeConfig,
    http: reqwest::Client,
}

impl Judge {
    pub fn new(config: JudgeConfig) -> Self {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            // Building only fails when a TLS backend cannot start; this build has none.
            .unwrap_or_else(|_| reqwest::Client::new());
        Self { config, http }
    }

    pub fn config(&self) -> &JudgeConfig {
        &self.config
    }

    /// Scores `result`, the outcome of `task`, against `rubric`.
    pub async fn score(&self, task: &str, result: &str, rubric: &str) -> Result<Verdict, JudgeError> {
        let body = self.request(task, result, rubric);
        let mut attempt = 1;
        loop {
            match self.call(&body).await {
                Err(e) if e.is_transient() && attempt < MAX_ATTEMPTS => {
                    let backoff = BASE_BACKOFF * 2u32.pow(attempt - 1);
                    let jitter = rand::rng().random_range(0..=backoff.as_millis() as u64 / 2);
                    tokio::time::sleep(backoff + Duration::from_millis(jitter)).await;
                    attempt += 1;
                }
                outcome => return outcome,
            }
        }
    }

    fn request(&self, task: &str, result: &str, rubric: &str) -> Value {
        let result: String = match result.char_indices().nth(MAX_RESULT_CHARS) {
            Some((cut, _)) => format!("{}\n[… cut at {MAX_RESULT_CHARS} characters]", &result[..cut]),
            None => result.to_owned(),
        };
        let user = format!("## Task\n{task}\n\n## Result\n{result}\n\n## Rubric\n{rubric}");
        json!({
            "model": self.config.model,
            "temperature": 0,
            "messages": [
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": user},
            ],
        })
    }

    async fn call(&self, body: &Value) -> Result<Verdict, JudgeError> {
        let url = format!("{}/chat/completions", self.config.base_url.trim_end_matches('/'));
        let mut request = self.http.post(url).json(body);
        if let Some(key) = self.config.api_key.as_deref().filter(|k| !k.is_empty()) {
            request = request.bearer_auth(key);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        if status != 200 {
            let body = response.text().await.unwrap_or_default();
            return Err(JudgeError::Status { status, body: body.trim().chars().take(500).collect() });
        }
        let answer: Value = response.json().await?;
        let content = answer
            .pointer("/choices/0/message/content")
            .and_then(Value::as_str)
            .ok_or_else(|| JudgeError::Unreadable("no choices[0].message.content in the answer".into()))?;
        parse_verdict(content)
    }
}

/// The verdict in a judge's answer: a JSON object, possibly inside a code fence or prose.
pub fn parse_verdict(content: &str) -> Result<Verdict, JudgeError> {
    let unreadable =
        |why: &str| JudgeError::Unreadable(format!("{why}: {}", content.chars().take(200).collect::<String>()));
    let start = content.find('{').ok_or_else(|| unreadable("no JSON object"))?;
    let end = content.rfind('}').filter(|end| *end > start).ok_or_else(|| unreadable("no JSON object"))?;
    let object: Value = serde_json::from_str(&content[start..=end]).map_err(|_| unreadable("not JSON"))?;
    let score = match object.get("score") {
        Some(Value::Number(n)) => n.as_f64(),
        // Some models quote numbers.
        Some(Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    }
    .ok_or_else(|| unreadable("no numeric score"))?;
    if !(0.0..=1.0).contains(&score) {
        return Err(unreadable(&format!("score {score} is outside 0..=1")));
    }
    let reason = object.get("reason").and_then(Value::as_str).unwrap_or_default().to_owned();
    Ok(Verdict { score, reason })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_are_read_from_plain_fenced_or_wrapped_json() {
        let expected = Verdict { score: 0.8, reason: "Mostly right.".into() };
        assert_eq!(parse_verdict(r#"{"score": 0.8, "reason": "Mostly right."}"#).unwrap(), expected);
        assert_eq!(parse_verdict("```json\n{\"score\": 0.8, \"reason\": \"Mostly right.\"}\n```").unwrap(), expected);
        assert_eq!(parse_verdict(r#"Verdict: {"score": "0.8", "reason": "Mostly right."} done"#).unwrap(), expected);
        assert_eq!(parse_verdict(r#"{"score": 1}"#).unwrap(), Verdict { score: 1.0, reason: String::new() });
    }

    #[test]
    fn answers_without_a_valid_score_are_errors() {
        for content in [
            "The answer is good.",
            "{\"reason\": \"no score\"}",
            "{\"score\": 7}",
            "{\"score\": -0.1}",
            "{score: 1}",
            "} {",
        ] {
            let error = parse_verdict(content).expect_err(content);
            assert!(matches!(error, JudgeError::Unreadable(_)), "{content}: {error}");
        }
    }

    #[test]
    fn the_request_states_task_result_and_rubric_and_cuts_long_results() {
        let judge = Judge::new(JudgeConfig { base_url: "http://judge".into(), model: "m".into(), api_key: None });
        let long = "é".repeat(MAX_RESULT_CHARS + 10);
        let body = judge.request("Do X", &long, "Mentions X");
        assert_eq!(body["model"], "m");
        assert_eq!(body["temperature"], 0);
        let user = body["messages"][1]["content"].as_str().unwrap();
        assert!(user.starts_with("## Task\nDo X\n\n## Result\n"), "{user}");
        assert!(user.ends_with("## Rubric\nMentions X"), "{user}");
        assert!(user.contains("[… cut at 24000 characters]"));
        assert_eq!(user.matches('é').count(), MAX_RESULT_CHARS);
    }

    #[test]
    fn only_rate_limits_server_errors_and_transport_failures_are_retried() {
        assert!(JudgeError::Status { status: 429, body: String::new() }.is_transient());
        assert!(JudgeError::Status { status: 503, body: String::new() }.is_transient());
        assert!(!JudgeError::Status { status: 401, body: String::new() }.is_transient());
        assert!(!JudgeError::Unreadable(String::new()).is_transient());
    }
}
