//! Prometheus metrics of one app instance, served by `GET /metrics`.
//!
//! Counters are bumped where things happen (HTTP middleware, task submission, the worker's
//! recorder, step and task endings); gauges that describe shared state (unfinished tasks,
//! queue depth and age) are read from Postgres and Redis when scraped, so every replica
//! reports the same truth. Each app owns its registry: no process-global recorder, so
//! several apps (tests, embedded use) never mix their numbers.

use std::{collections::HashSet, sync::Mutex, time::Duration};

use prometheus::{
    CounterVec, Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Distinct model names the model-call metrics label; later ones are counted as `other`.
const MAX_MODEL_LABELS: usize = 64;
/// Longest model name used as a label.
const MAX_MODEL_LABEL_CHARS: usize = 100;

pub struct Metrics {
    registry: Registry,
    /// The model names labelled so far: they come from the provider's answers, so a provider
    /// that made up a name per call would otherwise create series forever.
    models: Mutex<HashSet<String>>,
    pub http_requests: IntCounterVec,
    pub http_duration: HistogramVec,
    pub tasks_submitted: IntCounterVec,
    pub tasks_finished: IntCounterVec,
    pub steps_finished: IntCounterVec,
    pub llm_calls: IntCounterVec,
    pub llm_tokens: IntCounterVec,
    pub llm_cost: CounterVec,
    pub llm_latency: HistogramVec,
    pub tool_calls: IntCounterVec,
    /// Jobs set aside after `JOB_MAX_DELIVERIES` deliveries, by kind (`plan`, `step`).
    pub jobs_dead_lettered: IntCounterVec,
    pub tasks_unfinished: IntGaugeVec,
    pub queue_depth: IntGaugeVec,
    pub queue_oldest_age: prometheus::GaugeVec,
    pub rate_limited: IntCounterVec,
    pub ip_rate_limited: prometheus::IntCounter,
    pub rate_limit_unavailable: IntCounterVec,
    pub llm_rate_limit_waits: IntCounterVec,
    pub llm_rate_limit_wait_seconds: CounterVec,
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help).namespace("orchestrator"), labels)
        .expect("metric names and labels are static and valid");
    registry.register(Box::new(c.clone())).expect("each metric is registered once");
    c
}

fn histogram(registry: &Registry, name: &str, help: &str, labels: &[&str], buckets: Vec<f64>) -> HistogramVec {
    let h = HistogramVec::new(HistogramOpts::new(name, help).namespace("orchestrator").buckets(buckets), labels)
        .expect("metric names and labels are static and valid");
    registry.register(Box::new(h.clone())).expect("each metric is registered once");
    h
}

fn gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help).namespace("orchestrator"), labels)
        .expect("metric names and labels are static and valid");
    registry.register(Box::new(g.clone())).expect("each metric is registered once");
    g
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let latency = vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
        let llm_cost = CounterVec::new(
            Opts::new("llm_cost_usd_total", "Cost of model calls in USD").namespace("orchestrator"),
            &["provider", "model"],
        )
        .expect("metric names and labels are static and valid");
        registry.register(Box::new(llm_cost.clone())).expect("each metric is registered once");
        let queue_oldest_age = prometheus::GaugeVec::new(
            Opts::new("queue_oldest_job_age_seconds", "Age of the oldest queued job (dispatch lag)")
                .namespace("orchestrator"),
            &["priority"],
        )
        .expect("metric names and labels are static and valid");
        registry.register(Box::new(queue_oldest_age.clone())).expect("each metric is registered once");
        let ip_rate_limited = prometheus::IntCounter::with_opts(
            Opts::new("ip_rate_limited_total", "Requests refused by the per-IP rate limit").namespace("orchestrator"),
        )
        .expect("metric names and labels are static and valid");
        registry.register(Box::new(ip_rate_limited.clone())).expect("each metric is registered once");
        let llm_rate_limit_wait_seconds = CounterVec::new(
            Opts::new("llm_rate_limit_wait_seconds_total", "Time model calls waited for the shared provider limit")
                .namespace("orchestrator"),
            &["provider"],
        )
        .expect("metric names and labels are static and valid");
        registry.register(Box::new(llm_rate_limit_wait_seconds.clone())).expect("each metric is registered once");
        Self {
            http_requests: counter(&registry, "http_requests_total", "HTTP requests", &["method", "route", "status"]),
            http_duration: histogram(
                &registry,
                "http_request_duration_seconds",
                "HTTP request latency",
                &["method", "route"],
                latency.clone(),
            ),
            tasks_submitted: counter(&registry, "tasks_submitted_total", "Tasks accepted", &["priority"]),
            tasks_finished: counter(
                &registry,
                "tasks_finished_total",
                "Tasks that ended, by final status",
                &["status"],
            ),
            steps_finished: counter(
                &registry,
                "steps_finished_total",
                "Step attempts that ended, by outcome",
                &["agent", "status"],
            ),
            llm_calls: counter(&registry, "llm_calls_total", "Model calls", &["provider", "model"]),
            llm_tokens: counter(&registry, "llm_tokens_total", "Model tokens", &["provider", "model", "kind"]),
            llm_cost,
            llm_latency: histogram(
                &registry,
                "llm_call_duration_seconds",
                "Model call latency",
                &["provider", "model"],
                latency,
            ),
            tool_calls: counter(&registry, "tool_calls_total", "Tool calls", &["tool", "status"]),
            jobs_dead_lettered: counter(
                &registry,
                "jobs_dead_lettered_total",
                "Jobs moved to the dead-letter stream after failing on every delivery",
                &["kind"],
            ),
            tasks_unfinished: gauge(&registry, "tasks", "Tasks not yet ended, by status", &["status"]),
            queue_depth: gauge(&registry, "queue_depth", "Jobs queued or in flight", &["priority"]),
            queue_oldest_age,
            rate_limited: counter(
                &registry,
                "rate_limited_total",
                "Requests refused by the per-user rate limit",
                &["class"],
            ),
            ip_rate_limited,
            rate_limit_unavailable: counter(
                &registry,
                "rate_limit_unavailable_total",
                "Rate limit checks Redis did not answer, by what happened to the request",
                &["outcome"],
            ),
            llm_rate_limit_waits: counter(
                &registry,
                "llm_rate_limit_waits_total",
                "Model calls that waited for the shared provider limit",
                &["provider"],
            ),
            llm_rate_limit_wait_seconds,
            registry,
            models: Mutex::default(),
        }
    }

    /// `model` as a label: itself while fewer than [`MAX_MODEL_LABELS`] names were seen (and
    /// it is short), `other` after that.
    fn model_label<'a>(&self, model: &'a str) -> &'a str {
        if model.chars().count() > MAX_MODEL_LABEL_CHARS {
            return "other";
        }
        let mut models = self.models.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if models.contains(model) || (models.len() < MAX_MODEL_LABELS && models.insert(model.to_owned())) {
            model
        } else {
            "other"
        }
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metric families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buffer);
        String::from_utf8(buffer).unwrap_or_default()
    }

    /// Counts a tool call under its tool's name when it names a built-in tool, and under
    /// `unknown` otherwise: the name comes from the model, which may make up any.
    pub fn observe_tool_call(&self, tool: &str, status: agents::ToolCallStatus) {
        let tool = if agents::tools::BUILTIN_TOOL_NAMES.contains(&tool) { tool } else { "unknown" };
        self.tool_calls.with_label_values(&[tool, status.as_str()]).inc();
    }

    pub fn observe_llm_call(&self, provider: &str, model: &str, usage: &agents::Usage, cost: f64, latency: Duration) {
        let model = self.model_label(model);
        self.llm_calls.with_label_values(&[provider, model]).inc();
        for (kind, n) in
            [("in", usage.prompt_tokens), ("out", usage.completion_tokens), ("cached", usage.cached_tokens)]
        {
            self.llm_tokens.with_label_values(&[provider, model, kind]).inc_by(n);
        }
        self.llm_cost.with_label_values(&[provider, model]).inc_by(cost);
        self.llm_latency.with_label_values(&[provider, model]).observe(latency.as_secs_f64());
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_labels_are_bounded() {
        let metrics = Metrics::new();
        assert_eq!(metrics.model_label("gpt-4o-mini"), "gpt-4o-mini");
        for n in 0..MAX_MODEL_LABELS * 2 {
            metrics.model_label(&format!("made-up-{n}"));
        }
        assert_eq!(metrics.model_label("gpt-4o-mini"), "gpt-4o-mini", "a name seen before keeps its label");
        assert_eq!(metrics.model_label("yet-another"), "other");
        assert_eq!(metrics.model_label(&"x".repeat(MAX_MODEL_LABEL_CHARS + 1)), "other");
        assert_eq!(metrics.models.lock().unwrap().len(), MAX_MODEL_LABELS);
    }
}
