//! Evaluation suites: YAML files of cases, each a task to submit and what its outcome must
//! satisfy (`docs/eval.md` documents every field).
//!
//! A suite is read in two steps: serde reads the file's shape, refusing unknown fields so a
//! misspelt expectation never passes silently, then [`validate`] checks values and
//! cross-field rules and builds the [`Suite`] the runner uses. Every error names the file,
//! the case (by name when it has one) and the field.

mod file;
mod validate;

use std::{path::Path, time::Duration};

use regex::Regex;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The user tasks belong to when neither the case nor the suite names one.
pub const DEFAULT_USER_ID: &str = "eval";
/// Minimum judge score when a rubric gives none.
pub const DEFAULT_MIN_SCORE: f64 = 0.7;

#[derive(Debug, thiserror::Error)]
pub enum SuiteError {
    #[error("cannot read the suite {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The file is not YAML, or not of a suite's shape (an unknown field, a wrong type).
    #[error("{path}: {location}{message}")]
    Shape { path: String, location: String, message: String },
    /// A value breaks a rule: `location` names the case and field.
    #[error("{path}: {location}: {problem}")]
    Invalid { path: String, location: String, problem: String },
}

/// Dispatch priority of a task, as `POST /tasks` takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    High,
    Normal,
    Low,
}

/// A task's final state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FinalStatus {
    Completed,
    Failed,
    Cancelled,
    /// Some steps failed, and a final step completed.
    Partial,
}

impl FinalStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::Partial => "partial",
        }
    }
}

/// Who speaks in a context message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Assistant,
    System,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ContextMessage {
    pub role: Role,
    pub content: String,
}

/// A validated suite.
#[derive(Debug, Clone)]
pub struct Suite {
    pub name: String,
    pub description: Option<String>,
    pub cases: Vec<Case>,
}

impl Suite {
    /// Runs of all cases together (each case runs `repeat` times).
    pub fn runs(&self) -> usize {
        self.cases.iter().map(|c| c.repeat as usize).sum()
    }
}

#[derive(Debug, Clone)]
pub struct Case {
    pub name: String,
    pub about: Option<String>,
    pub task: TaskSpec,
    pub expect: Expectations,
    /// How many times the case is run; each run is checked and reported on its own.
    pub repeat: u32,
    /// Longest wait for the task to end; `None` takes the command line's.
    pub timeout: Option<Duration>,
    /// The task is run once, unchecked and without a warm start, before the case's runs, so
    /// that they find what it left (`warm_start`).
    pub warm_up: bool,
    /// While the task waits for a person, the runner approves its waiting calls of these
    /// tools and denies the others, as a reviewer would.
    pub approve: Vec<String>,
}

/// The `POST /tasks` body of a case.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskSpec {
    pub description: String,
    /// The suite's or case's `user_id`; `None` leaves it to the server (the API key's user)
    /// or, without a key, to [`DEFAULT_USER_ID`].
    pub user_id: Option<String>,
    pub metadata: Option<Value>,
    pub priority: Option<Priority>,
    pub max_attempts: Option<i32>,
    pub max_cost_usd: Option<f64>,
    pub max_tokens: Option<i64>,
    /// Off unless the case turns it on: each run then plans afresh, so repeated runs measure
    /// the planner too instead of reusing the first run's plan.
    pub use_plan_cache: bool,
    pub context: Vec<ContextMessage>,
    /// The only agents the plan may use (`agent_hints` of `POST /tasks`); empty: any.
    pub agent_hints: Vec<String>,
    /// The kind of work (`task_type`): a typed task's steps leave warm contexts.
    pub task_type: Option<String>,
    /// Start each step from what the last run of the same work left.
    pub warm_start: bool,
    /// Tools whose calls wait for a person's approval (`require_approval`); the case's
    /// `approve` list when the task names none.
    pub require_approval: Vec<String>,
}

impl TaskSpec {
    /// The request body; absent options are left out so the server's defaults apply. With an
    /// API key and no `user_id`, the key names the user; without either, [`DEFAULT_USER_ID`].
    pub fn body(&self, with_api_key: bool) -> Value {
        let mut body = json!({
            "description": self.description,
            "use_plan_cache": self.use_plan_cache,
        });
        match (&self.user_id, with_api_key) {
            (Some(user), _) => body["user_id"] = json!(user),
            (None, false) => body["user_id"] = json!(DEFAULT_USER_ID),
            (None, true) => {}
        }
        let mut set = |name: &str, value: Option<Value>| {
            if let Some(value) = value {
                body[name] = value;
            }
        };
        set("metadata", self.metadata.clone());
        set("agent_hints", (!self.agent_hints.is_empty()).then(|| json!(self.agent_hints)));
        set("priority", self.priority.map(|p| json!(p)));
        set("max_attempts", self.max_attempts.map(Value::from));
        set("max_cost_usd", self.max_cost_usd.map(Value::from));
        set("max_tokens", self.max_tokens.map(Value::from));
        set("context", (!self.context.is_empty()).then(|| json!(self.context)));
        set("task_type", self.task_type.as_ref().map(|t| json!(t)));
        set("warm_start", self.warm_start.then_some(json!(true)));
        set("require_approval", (!self.require_approval.is_empty()).then(|| json!(self.require_approval)));
        body
    }
}

/// What a finished run must satisfy; every field left out of the file checks nothing,
/// except `status`, which is `completed` unless stated.
#[derive(Debug, Clone)]
pub struct Expectations {
    pub status: FinalStatus,
    pub min_steps: Option<u32>,
    pub max_steps: Option<u32>,
    /// Each of these agents ran at least one step.
    pub agents: Vec<String>,
    /// Each of these tools was called at least once with success.
    pub tools: Vec<String>,
    /// Each of these tools was answered at least once from a warm start (status `cached`).
    pub cached_tools: Vec<String>,
    /// Each string appears in the result, ignoring case.
    pub result_contains: Vec<String>,
    /// Each pattern matches somewhere in the result.
    pub result_matches: Vec<Regex>,
    pub max_cost_usd: Option<f64>,
    pub max_latency_ms: Option<u64>,
    /// Prompt plus completion tokens of the whole task.
    pub max_tokens: Option<u64>,
    pub judge: Option<Rubric>,
}

/// An LLM-as-judge criterion: the judge scores the result 0..=1 against `text`.
#[derive(Debug, Clone, PartialEq)]
pub struct Rubric {
    pub text: String,
    pub min_score: f64,
}

/// Reads and validates the suite at `path`.
pub fn load(path: &Path) -> Result<Suite, SuiteError> {
    let display = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| SuiteError::Read { path: display.clone(), source })?;
    parse(&text, &display)
}

/// Parses and validates a suite's text; `path` names it in errors.
pub fn parse(text: &str, path: &str) -> Result<Suite, SuiteError> {
    // The YAML error starts with the path to the fault (`cases[2].expect: unknown field …`)
    // and ends with its line and column; the path is rewritten to name the case.
    let file: file::SuiteFile = serde_norway::from_str(text).map_err(|error| {
        let message = error.to_string();
        let (location, message) = match message.split_once(": ") {
            Some((at, rest)) if at.starts_with("cases[") => {
                (format!("{}: ", locate(at, &case_names(text))), rest.to_owned())
            }
            _ => (String::new(), message),
        };
        SuiteError::Shape { path: path.to_owned(), location, message }
    })?;
    validate::validate(file).map_err(|(location, problem)| SuiteError::Invalid {
        path: path.to_owned(),
        location,
        problem,
    })
}

/// The `name` of each case, by index, read leniently so a shape error can still name its case.
fn case_names(text: &str) -> Vec<Option<String>> {
    let Ok(value) = serde_norway::from_str::<serde_norway::Value>(text) else { return Vec::new() };
    let Some(cases) = value.get("cases").and_then(|c| c.as_sequence()) else { return Vec::new() };
    cases.iter().map(|c| c.get("name").and_then(|n| n.as_str()).map(str::to_owned)).collect()
}

/// `cases[2].expect.agents` → `case "calc" (cases[2]), expect.agents`.
fn locate(path: &str, names: &[Option<String>]) -> String {
    let Some(rest) = path.strip_prefix("cases[") else { return path.to_owned() };
    let Some((index, field)) = rest.split_once(']') else { return path.to_owned() };
    let field = field.trim_start_matches('.');
    let case = match index.parse::<usize>().ok().and_then(|i| names.get(i)).cloned().flatten() {
        Some(name) => format!("case {name:?} (cases[{index}])"),
        None => format!("cases[{index}]"),
    };
    if field.is_empty() { case } else { format!("{case}, {field}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "name: s\ncases:\n  - name: one\n    task:\n      description: Write docs\n";

    fn error(text: &str) -> String {
        parse(text, "s.yaml").expect_err("the suite is refused").to_string()
    }

    #[test]
    fn a_minimal_case_expects_completion_and_takes_the_defaults() {
        let suite = parse(MINIMAL, "s.yaml").unwrap();
        let case = &suite.cases[0];
        assert_eq!(case.expect.status, FinalStatus::Completed);
        assert_eq!((case.repeat, case.timeout), (1, None));
        assert_eq!(
            case.task.body(false),
            json!({"user_id": "eval", "description": "Write docs", "use_plan_cache": false})
        );
        assert_eq!(case.task.body(true), json!({"description": "Write docs", "use_plan_cache": false}));
    }

    #[test]
    fn every_field_is_read() {
        let text = r#"
name: full
description: all fields
defaults: {user_id: eval-bot, priority: low, max_attempts: 2, timeout_secs: 30}
cases:
  - name: all
    about: every field
    repeat: 3
    timeout_secs: 9
    task:
      description: Compute 2 + 2.
      metadata: {team: qa}
      priority: high
      max_cost_usd: 0.5
      max_tokens: 1000
      use_plan_cache: true
      context:
        - {role: system, content: Be brief.}
    expect:
      status: failed
      min_steps: 1
      max_steps: 2
      agents: [analyst]
      tools: [calculator]
      result_contains: ["4"]
      result_matches: ["^Compute"]
      max_cost_usd: 0.01
      max_latency_ms: 5000
      max_tokens: 900
      judge: {rubric: Says four., min_score: 0.5}
  - name: defaults
    task: {description: Write docs}
"#;
        let suite = parse(text, "s.yaml").unwrap();
        assert_eq!((suite.name.as_str(), suite.runs()), ("full", 4));
        let all = &suite.cases[0];
        assert_eq!((all.repeat, all.timeout), (3, Some(Duration::from_secs(9))));
        assert_eq!(
            all.task.body(false),
            json!({
                "user_id": "eval-bot", "description": "Compute 2 + 2.", "metadata": {"team": "qa"},
                "priority": "high", "max_attempts": 2, "max_cost_usd": 0.5, "max_tokens": 1000,
                "use_plan_cache": true, "context": [{"role": "system", "content": "Be brief."}]
            })
        );
        let e = &all.expect;
        assert_eq!(e.status, FinalStatus::Failed);
        assert_eq!(
            (e.min_steps, e.max_steps, e.max_latency_ms, e.max_tokens),
            (Some(1), Some(2), Some(5000), Some(900))
        );
        assert_eq!(
            (e.agents.as_slice(), e.tools.as_slice()),
            (&["analyst".to_owned()][..], &["calculator".to_owned()][..])
        );
        assert!(e.result_matches[0].is_match("Compute 2 + 2"));
        assert_eq!(e.judge, Some(Rubric { text: "Says four.".into(), min_score: 0.5 }));
        let defaults = &suite.cases[1];
        assert_eq!(defaults.task.priority, Some(Priority::Low));
        assert_eq!(defaults.timeout, Some(Duration::from_secs(30)));
        assert_eq!(defaults.task.user_id.as_deref(), Some("eval-bot"));
    }

    #[test]
    fn unknown_fields_are_refused_naming_the_case_and_the_field() {
        let text = "name: s\ncases:\n  - name: ok\n    task: {description: x}\n  - name: typo\n    task: {description: x}\n    expect: {max_step: 2}\n";
        let message = error(text);
        assert!(message.starts_with("s.yaml: case \"typo\" (cases[1]), expect: "), "{message}");
        assert!(message.contains("unknown field `max_step`"), "{message}");
        assert!(message.contains("line 7"), "the line is named: {message}");
        let message = error("name: s\ncases: []\nextra: 1\n");
        assert!(message.contains("unknown field `extra`"), "{message}");
    }

    #[test]
    fn wrong_types_and_missing_fields_are_refused() {
        let message = error("name: s\ncases:\n  - name: a\n    task: {description: x}\n    expect: {status: done}\n");
        assert!(
            message.contains("case \"a\" (cases[0]), expect.status: ") && message.contains("unknown variant `done`"),
            "{message}"
        );
        let message = error("name: s\ncases:\n  - name: a\n    task: {user_id: u}\n");
        assert!(
            message.contains("case \"a\" (cases[0]), task: ") && message.contains("missing field `description`"),
            "{message}"
        );
        assert!(error("not: [valid").contains("s.yaml: "));
    }

    #[test]
    fn values_breaking_the_rules_are_refused_with_their_case_and_field() {
        let case = |body: &str| format!("name: s\ncases:\n  - name: c\n    task: {{description: x}}\n{body}");
        for (body, field, problem) in [
            ("    expect: {min_steps: 3, max_steps: 2}\n", "expect.min_steps", "more than expect.max_steps"),
            ("    expect: {max_steps: 0}\n", "expect.max_steps", "at least 1"),
            ("    expect: {agents: [writer, writer]}\n", "expect.agents", "listed twice"),
            ("    expect: {tools: ['']}\n", "expect.tools", "blank"),
            ("    expect: {result_contains: ['']}\n", "expect.result_contains[0]", "empty"),
            ("    expect: {result_matches: ['ok', '(']}\n", "expect.result_matches[1]", "not a valid regex"),
            ("    expect: {max_cost_usd: -1}\n", "expect.max_cost_usd", "non-negative"),
            ("    expect: {judge: {rubric: ' '}}\n", "expect.judge.rubric", "blank"),
            ("    expect: {judge: {rubric: r, min_score: 1.5}}\n", "expect.judge.min_score", "between 0 and 1"),
            ("    repeat: 0\n", "repeat", "between 1 and 100"),
            ("    timeout_secs: 0\n", "timeout_secs", "between 1 and"),
            ("    warm_up: true\n", "warm_up", "needs task.task_type"),
            ("    expect: {cached_tools: ['']}\n", "expect.cached_tools", "blank"),
        ] {
            let message = error(&case(body));
            assert!(message.starts_with(&format!("s.yaml: case \"c\" (cases[0]), {field}: ")), "{body} → {message}");
            assert!(message.contains(problem), "{body} → {message}");
        }
        for (task, field) in [
            ("{description: ' '}", "task.description"),
            ("{description: x, metadata: [1]}", "task.metadata"),
            ("{description: x, max_attempts: 11}", "task.max_attempts"),
            ("{description: x, user_id: ''}", "task.user_id"),
            ("{description: x, max_tokens: -5}", "task.max_tokens"),
        ] {
            let message = error(&format!("name: s\ncases:\n  - name: c\n    task: {task}\n"));
            assert!(message.starts_with(&format!("s.yaml: case \"c\" (cases[0]), {field}: ")), "{task} → {message}");
        }
    }

    #[test]
    fn suite_level_rules() {
        assert!(error("name: s\ncases: []\n").contains("s.yaml: cases: a suite needs at least one case"));
        assert!(error("name: ' '\ncases: []\n").contains("s.yaml: name: must not be blank"));
        let twice = "name: s\ncases:\n  - {name: a, task: {description: x}}\n  - {name: a, task: {description: y}}\n";
        assert!(error(twice).contains("case \"a\" (cases[1]), name: another case has the same name"));
        let bad_default = "name: s\ndefaults: {max_attempts: 0}\ncases:\n  - {name: a, task: {description: x}}\n";
        assert!(error(bad_default).contains("s.yaml: defaults.max_attempts: must be between 1 and 10"));
    }

    #[test]
    fn a_missing_file_names_its_path() {
        let message = load(Path::new("/nonexistent/suite.yaml")).unwrap_err().to_string();
        assert!(message.starts_with("cannot read the suite /nonexistent/suite.yaml: "), "{message}");
    }

    #[test]
    fn the_shipped_suites_are_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("suites");
        for name in ["smoke.yaml", "general.yaml"] {
            let suite = load(&dir.join(name)).unwrap_or_else(|e| panic!("{e}"));
            assert!(suite.cases.len() >= 5, "{name}");
        }
    }
}
