//! The tool registry: every tool of the process, with its argument schema compiled once.
//!
//! Invariants: names are unique; every registered schema compiled; [`ToolRegistry::invoke`]
//! runs a tool only after it checked that the tool exists, that the calling agent may use
//! it and that the arguments validate, and it always returns a record (rejected calls
//! included) plus the text to send back to the model. Results and error reasons in the
//! record and the reply never exceed `max_result_bytes` of text, whatever the tool returns:
//! the cut is made here, once, for every tool. Calls of a [`Tool::cpu_bound`] tool run on
//! the blocking pool, so the timeout holds for them as it does for tools that await I/O.

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};

use serde::Serialize;
use serde_json::{Value, json};

use super::{Tool, ToolContext, ToolError, ToolSettings};
use crate::{
    llm::{ToolCall, ToolDefinition},
    record::{ToolCallRecord, ToolCallStatus},
    storable,
};

/// A tool could not be registered; the process should not start.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("a tool named `{0}` is already registered")]
    Duplicate(String),
    #[error("tool `{tool}` has an invalid argument schema: {reason}")]
    InvalidSchema { tool: String, reason: String },
    #[error("tool `{tool}` is misconfigured: {reason}")]
    InvalidSettings { tool: String, reason: String },
}

/// A tool as listed by `GET /tools`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToolInfo {
    pub name: String,
    pub description: String,
    pub parameters: Value,
}

/// The outcome of one tool call: what to record and what to tell the model.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolInvocation {
    pub record: ToolCallRecord,
    /// The tool message content sent back to the model: the (possibly truncated) JSON
    /// result, or `{"error": reason}` so the model can correct itself.
    pub reply: String,
}

struct Entry {
    tool: Arc<dyn Tool>,
    validator: jsonschema::Validator,
}

/// The tools of this process, by name.
pub struct ToolRegistry {
    tools: BTreeMap<String, Entry>,
    timeout: Duration,
    max_result_bytes: usize,
}

impl std::fmt::Debug for ToolRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ToolRegistry")
            .field("tools", &self.names())
            .field("timeout", &self.timeout)
            .field("max_result_bytes", &self.max_result_bytes)
            .finish()
    }
}

impl Default for ToolRegistry {
    /// An empty registry with the default limits.
    fn default() -> Self {
        Self::new(&ToolSettings::default())
    }
}

impl ToolRegistry {
    /// An empty registry whose calls get `settings.timeout` and `settings.max_result_bytes`.
    pub fn new(settings: &ToolSettings) -> Self {
        Self { tools: BTreeMap::new(), timeout: settings.timeout, max_result_bytes: settings.max_result_bytes }
    }

    /// Adds a tool, compiling its argument schema.
    pub fn register(&mut self, tool: Arc<dyn Tool>) -> Result<(), RegistryError> {
        let name = tool.name().to_owned();
        if self.tools.contains_key(&name) {
            return Err(RegistryError::Duplicate(name));
        }
        let schema = tool.parameters();
        let validator = jsonschema::validator_for(&schema)
            .map_err(|e| RegistryError::InvalidSchema { tool: name.clone(), reason: e.to_string() })?;
        self.tools.insert(name, Entry { tool, validator });
        Ok(())
    }

    /// Names of the registered tools, sorted.
    pub fn names(&self) -> Vec<&str> {
        self.tools.keys().map(String::as_str).collect()
    }

    /// Whether a tool of this name is registered.
    pub fn contains(&self, name: &str) -> bool {
        self.tools.contains_key(name)
    }

    /// The definitions to offer a model for an agent allowed `allowed`, in that order.
    /// Allowed tools this deployment does not register are left out.
    pub fn definitions_for(&self, allowed: &[String]) -> Vec<ToolDefinition> {
        let mut seen = Vec::new();
        allowed
            .iter()
            .filter(|name| {
                let first = !seen.contains(name);
                seen.push(*name);
                first
            })
            .filter_map(|name| self.tools.get(name))
            .map(|e| ToolDefinition {
                name: e.tool.name().to_owned(),
                description: e.tool.description().to_owned(),
                parameters: e.tool.parameters(),
            })
            .collect()
    }

    /// Every registered tool, sorted by name.
    pub fn describe(&self) -> Vec<ToolInfo> {
        self.tools
            .values()
            .map(|e| ToolInfo {
                name: e.tool.name().to_owned(),
                description: e.tool.description().to_owned(),
                parameters: e.tool.parameters(),
            })
            .collect()
    }

    /// Checks and runs one call for an agent that may use `allowed`.
    pub async fn invoke(&self, allowed: &[String], call: &ToolCall, ctx: &ToolContext) -> ToolInvocation {
        let started = Instant::now();
        let entry = match self.check(allowed, call) {
            Ok(entry) => entry,
            Err(reason) => return self.finish(call, started, Outcome::Rejected(reason)),
        };
        let outcome = match tokio::time::timeout(self.timeout, run(&entry.tool, call.arguments.clone(), ctx)).await {
            Ok(Ok(result)) => Outcome::Ok(result),
            // A policy refusal is a rejection, like any other call the registry refuses.
            Ok(Err(ToolError::Denied(reason))) => Outcome::Rejected(reason),
            Ok(Err(e)) => Outcome::Error(e.to_string()),
            Err(_) => Outcome::Error(format!("timed out after {}", format_duration(self.timeout))),
        };
        self.finish(call, started, outcome)
    }

    /// Why `call` would be refused for an agent that may use `allowed` (unknown tool, not
    /// allowed, arguments against the tool's schema), without running it: what a call that
    /// waits for approval, and a person's edited arguments, are checked with.
    pub fn refusal(&self, allowed: &[String], call: &ToolCall) -> Option<String> {
        self.check(allowed, call).err()
    }

    /// The entry to run, or why the call is refused.
    fn check(&self, allowed: &[String], call: &ToolCall) -> Result<&Entry, String> {
        let usable = || {
            let names: Vec<&str> =
                allowed.iter().map(String::as_str).filter(|name| self.tools.contains_key(*name)).collect();
            if names.is_empty() { "none".to_owned() } else { names.join(", ") }
        };
        let Some(entry) = self.tools.get(&call.name) else {
            return Err(format!("unknown tool `{}`; tools you may call: {}", call.name, usable()));
        };
        if !allowed.contains(&call.name) {
            return Err(format!(
                "tool `{}` is not allowed for this agent; tools you may call: {}",
                call.name,
                usable()
            ));
        }
        let errors: Vec<String> = entry
            .validator
            .iter_errors(&call.arguments)
            .map(|e| {
                let path = e.instance_path().as_str();
                format!("{}: {e}", if path.is_empty() { "(root)" } else { path })
            })
            .collect();
        if !errors.is_empty() {
            return Err(format!("invalid arguments for `{}`: {}", call.name, errors.join("; ")));
        }
        Ok(entry)
    }

    fn finish(&self, call: &ToolCall, started: Instant, outcome: Outcome) -> ToolInvocation {
        let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
        // Whatever a tool returns (a fetched binary file included) is made storable first, so
        // the record and the reply to the model say the same thing.
        let (status, result, error) = match outcome {
            Outcome::Ok(mut value) => {
                storable::json(&mut value);
                (ToolCallStatus::Ok, Some(truncate(value, self.max_result_bytes)), None)
            }
            // Reasons can quote the arguments (a schema error shows the offending value).
            Outcome::Error(reason) => {
                (ToolCallStatus::Error, None, Some(cut(storable::string(reason), self.max_result_bytes)))
            }
            Outcome::Rejected(reason) => {
                (ToolCallStatus::Rejected, None, Some(cut(storable::string(reason), self.max_result_bytes)))
            }
        };
        let mut arguments = call.arguments.clone();
        storable::json(&mut arguments);
        let reply = match (&result, &error) {
            (Some(value), _) => value.to_string(),
            (None, reason) => json!({ "error": reason.as_deref().unwrap_or_default() }).to_string(),
        };
        if status != ToolCallStatus::Ok {
            tracing::debug!(tool = %call.name, status = status.as_str(), error = ?error, "tool call did not succeed");
        }
        ToolInvocation {
            record: ToolCallRecord {
                tool: storable::text(&call.name).into_owned(),
                arguments,
                result,
                status,
                error,
                latency_ms,
            },
            reply,
        }
    }
}

/// Runs one call: on the runtime when the tool awaits I/O, on the blocking pool when it is
/// CPU-bound. There a runtime handle drives its future, so the trait stays one `async fn`;
/// when the caller's timeout fires the blocking thread is abandoned and finishes on its own,
/// which the tool's own bounds keep short.
async fn run(tool: &Arc<dyn Tool>, arguments: Value, ctx: &ToolContext) -> Result<Value, ToolError> {
    if !tool.cpu_bound() {
        return tool.call(arguments, ctx).await;
    }
    let (tool, ctx, runtime) = (tool.clone(), ctx.clone(), tokio::runtime::Handle::current());
    tokio::task::spawn_blocking(move || runtime.block_on(tool.call(arguments, &ctx)))
        .await
        .unwrap_or_else(|e| Err(ToolError::Failed(format!("the tool stopped unexpectedly: {e}"))))
}

enum Outcome {
    Ok(Value),
    Error(String),
    Rejected(String),
}

/// `value` itself when its JSON text fits in `max_bytes`, otherwise
/// `{"truncated": true, "text": <the first max_bytes of that text, cut at a char boundary>}`.
fn truncate(value: Value, max_bytes: usize) -> Value {
    let text = value.to_string();
    if text.len() <= max_bytes {
        return value;
    }
    json!({ "truncated": true, "text": &text[..floor_char_boundary(&text, max_bytes)] })
}

/// `text` itself when it fits in `max_bytes`, otherwise its first bytes (cut at a char
/// boundary) and `…`, in `max_bytes` in all.
fn cut(mut text: String, max_bytes: usize) -> String {
    const ELLIPSIS: &str = "…";
    if text.len() <= max_bytes {
        return text;
    }
    text.truncate(floor_char_boundary(&text, max_bytes.saturating_sub(ELLIPSIS.len())));
    text.push_str(ELLIPSIS);
    text
}

/// The largest char boundary of `text` at or below `index`.
fn floor_char_boundary(text: &str, index: usize) -> usize {
    let mut index = index.min(text.len());
    while !text.is_char_boundary(index) {
        index -= 1;
    }
    index
}

/// `10s`, `1.5s` or `250ms`: how a timeout reads in an error message.
fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{}s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::Calculator;

    /// Echoes its arguments, or sleeps forever when asked to.
    struct Echo;

    #[async_trait::async_trait]
    impl Tool for Echo {
        fn name(&self) -> &str {
            "echo"
        }
        fn description(&self) -> &str {
            "Echoes its text."
        }
        fn parameters(&self) -> Value {
            json!({
                "type": "object",
                "properties": { "text": { "type": "string" }, "hang": { "type": "boolean" } },
                "required": ["text"],
                "additionalProperties": false
            })
        }
        async fn call(&self, arguments: Value, _ctx: &ToolContext) -> Result<Value, ToolError> {
            if arguments["hang"] == json!(true) {
                std::future::pending::<()>().await;
            }
            if arguments["text"] == json!("deny") {
                return Err(ToolError::Denied("not today".into()));
            }
            if arguments["text"] == json!("fail") {
                return Err(ToolError::Failed("backend down".into()));
            }
            Ok(json!({ "text": arguments["text"] }))
        }
    }

    /// Blocks its thread (no `.await`) until the test lets it go: CPU-bound work as the
    /// runtime sees it.
    struct Spin(std::sync::Mutex<Option<std::sync::mpsc::Receiver<()>>>);

    #[async_trait::async_trait]
    impl Tool for Spin {
        fn name(&self) -> &str {
            "spin"
        }
        fn description(&self) -> &str {
            "Blocks until released."
        }
        fn parameters(&self) -> Value {
            json!({ "type": "object" })
        }
        fn cpu_bound(&self) -> bool {
            true
        }
        async fn call(&self, _arguments: Value, _ctx: &ToolContext) -> Result<Value, ToolError> {
            let release = self.0.lock().unwrap().take().expect("called once");
            let _ = release.recv_timeout(Duration::from_secs(10));
            Ok(json!({ "thread": format!("{:?}", std::thread::current().id()) }))
        }
    }

    struct BadSchema;

    #[async_trait::async_trait]
    impl Tool for BadSchema {
        fn name(&self) -> &str {
            "bad"
        }
        fn description(&self) -> &str {
            "Has a broken schema."
        }
        fn parameters(&self) -> Value {
            json!({ "type": "no-such-type" })
        }
        async fn call(&self, _arguments: Value, _ctx: &ToolContext) -> Result<Value, ToolError> {
            Ok(Value::Null)
        }
    }

    fn ctx() -> ToolContext {
        ToolContext { task_id: uuid::Uuid::nil(), step_id: None, owner: "alice".into() }
    }

    fn registry(settings: &ToolSettings) -> ToolRegistry {
        let mut registry = ToolRegistry::new(settings);
        registry.register(Arc::new(Echo)).unwrap();
        registry.register(Arc::new(Calculator)).unwrap();
        registry
    }

    fn call(name: &str, arguments: Value) -> ToolCall {
        ToolCall { id: "c1".into(), name: name.into(), arguments }
    }

    fn allowed(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn duplicate_names_and_invalid_schemas_are_refused() {
        let mut registry = registry(&ToolSettings::default());
        assert!(matches!(registry.register(Arc::new(Echo)), Err(RegistryError::Duplicate(name)) if name == "echo"));
        let err = registry.register(Arc::new(BadSchema)).unwrap_err();
        assert!(matches!(&err, RegistryError::InvalidSchema { tool, .. } if tool == "bad"), "{err}");
        assert_eq!(registry.names(), ["calculator", "echo"]);
    }

    #[test]
    fn definitions_follow_the_allowed_list_and_skip_unregistered_tools() {
        let registry = registry(&ToolSettings::default());
        let defs = registry.definitions_for(&allowed(&["echo", "http_get", "calculator", "echo"]));
        let names: Vec<&str> = defs.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["echo", "calculator"]);
        assert_eq!(defs[0].parameters["required"], json!(["text"]));
        assert_eq!(registry.describe().len(), 2);
    }

    #[tokio::test]
    async fn a_valid_call_runs_and_is_recorded() {
        let registry = registry(&ToolSettings::default());
        let out = registry.invoke(&allowed(&["echo"]), &call("echo", json!({"text": "hi"})), &ctx()).await;
        assert_eq!(out.record.status, ToolCallStatus::Ok);
        assert_eq!(out.record.result, Some(json!({"text": "hi"})));
        assert_eq!(out.record.error, None);
        assert_eq!(out.reply, r#"{"text":"hi"}"#);
    }

    #[tokio::test]
    async fn unknown_and_disallowed_tools_are_rejected() {
        let registry = registry(&ToolSettings::default());
        let unknown = registry.invoke(&allowed(&["echo"]), &call("shell", json!({})), &ctx()).await;
        assert_eq!(unknown.record.status, ToolCallStatus::Rejected);
        let reason = unknown.record.error.unwrap();
        assert!(reason.contains("unknown tool `shell`") && reason.contains("you may call: echo"), "{reason}");
        assert!(unknown.reply.contains("unknown tool"), "{}", unknown.reply);

        let denied =
            registry.invoke(&allowed(&["echo"]), &call("calculator", json!({"expression": "1"})), &ctx()).await;
        assert_eq!(denied.record.status, ToolCallStatus::Rejected);
        assert!(denied.record.error.unwrap().contains("not allowed for this agent"));
    }

    #[tokio::test]
    async fn every_schema_violation_is_reported_with_its_path() {
        let registry = registry(&ToolSettings::default());
        let out = registry.invoke(&allowed(&["echo"]), &call("echo", json!({"text": 5, "extra": true})), &ctx()).await;
        assert_eq!(out.record.status, ToolCallStatus::Rejected);
        let reason = out.record.error.unwrap();
        assert!(reason.contains("/text: 5 is not of type \"string\""), "{reason}");
        assert!(reason.contains("(root): ") && reason.contains("extra"), "{reason}");
        assert!(out.reply.contains("/text"), "{}", out.reply);

        let missing = registry.invoke(&allowed(&["echo"]), &call("echo", json!({})), &ctx()).await;
        assert!(missing.record.error.unwrap().contains("\"text\" is a required property"));
    }

    #[tokio::test]
    async fn tool_errors_map_to_error_and_denials_to_rejected() {
        let registry = registry(&ToolSettings::default());
        let failed = registry.invoke(&allowed(&["echo"]), &call("echo", json!({"text": "fail"})), &ctx()).await;
        assert_eq!(failed.record.status, ToolCallStatus::Error);
        assert_eq!(failed.record.error.as_deref(), Some("backend down"));
        assert_eq!(failed.reply, r#"{"error":"backend down"}"#);

        let denied = registry.invoke(&allowed(&["echo"]), &call("echo", json!({"text": "deny"})), &ctx()).await;
        assert_eq!(denied.record.status, ToolCallStatus::Rejected);
        assert_eq!(denied.record.error.as_deref(), Some("not today"));
    }

    #[tokio::test]
    async fn a_hanging_tool_times_out() {
        let settings = ToolSettings { timeout: Duration::from_millis(50), ..ToolSettings::default() };
        let registry = registry(&settings);
        let out = registry.invoke(&allowed(&["echo"]), &call("echo", json!({"text": "x", "hang": true})), &ctx()).await;
        assert_eq!(out.record.status, ToolCallStatus::Error);
        assert_eq!(out.record.error.as_deref(), Some("timed out after 50ms"));
        assert!(out.record.latency_ms >= 50.0, "{}", out.record.latency_ms);
    }

    #[tokio::test]
    async fn large_results_are_truncated_at_a_char_boundary() {
        let settings = ToolSettings { max_result_bytes: 20, ..ToolSettings::default() };
        let registry = registry(&settings);
        let text = "é".repeat(50);
        let out = registry.invoke(&allowed(&["echo"]), &call("echo", json!({"text": text})), &ctx()).await;
        let result = out.record.result.unwrap();
        assert_eq!(result["truncated"], json!(true));
        let cut = result["text"].as_str().unwrap();
        assert!(cut.len() <= 20 && cut.starts_with("{\"text\":\"éé"), "{cut}");
        assert_eq!(out.reply, result.to_string());
    }

    /// On the current-thread runtime of `#[tokio::test]`, a blocking call that ran on the
    /// runtime would stop the timer too: the timeout firing shows it ran elsewhere.
    #[tokio::test]
    async fn a_cpu_bound_tool_runs_on_the_blocking_pool_and_still_times_out() {
        let settings = ToolSettings { timeout: Duration::from_millis(100), ..ToolSettings::default() };
        let mut registry = ToolRegistry::new(&settings);
        let (release, blocked) = std::sync::mpsc::channel();
        registry.register(Arc::new(Spin(std::sync::Mutex::new(Some(blocked))))).unwrap();
        let out = registry.invoke(&allowed(&["spin"]), &call("spin", json!({})), &ctx()).await;
        assert_eq!(out.record.status, ToolCallStatus::Error);
        assert_eq!(out.record.error.as_deref(), Some("timed out after 100ms"));
        assert!(out.record.latency_ms < 5_000.0, "{}", out.record.latency_ms);
        release.send(()).unwrap();
    }

    #[tokio::test]
    async fn long_rejection_reasons_are_cut_like_results() {
        let settings = ToolSettings { max_result_bytes: 100, ..ToolSettings::default() };
        let registry = registry(&settings);
        // The schema error quotes the 10 000-character value.
        let out = registry
            .invoke(&allowed(&["echo"]), &call("echo", json!({"text": 1, "x": "é".repeat(5000)})), &ctx())
            .await;
        assert_eq!(out.record.status, ToolCallStatus::Rejected);
        let reason = out.record.error.unwrap();
        assert!(reason.len() <= 100 && reason.ends_with('…'), "{} bytes: {reason}", reason.len());
        assert!(out.reply.len() <= 120, "{}", out.reply);
        assert_eq!(cut("short".into(), 100), "short");
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(format_duration(Duration::from_secs(10)), "10s");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format_duration(Duration::from_millis(250)), "250ms");
    }
}
