//! The shape of a suite file, as serde reads it. Every struct refuses unknown fields, so a
//! misspelt key is an error rather than an expectation silently left out. Values are checked
//! afterwards, in [`super::validate`].

use serde::Deserialize;
use serde_json::Value;

use super::{ContextMessage, FinalStatus, Priority};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SuiteFile {
    pub(super) name: String,
    #[serde(default)]
    pub(super) description: Option<String>,
    #[serde(default)]
    pub(super) defaults: DefaultsFile,
    pub(super) cases: Vec<CaseFile>,
}

/// Values every case takes unless it states its own.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DefaultsFile {
    pub(super) user_id: Option<String>,
    pub(super) priority: Option<Priority>,
    pub(super) max_attempts: Option<i32>,
    pub(super) timeout_secs: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CaseFile {
    pub(super) name: String,
    /// What the case is about, for people reading the suite and the report.
    #[serde(default)]
    pub(super) about: Option<String>,
    pub(super) task: TaskFile,
    #[serde(default)]
    pub(super) expect: ExpectFile,
    pub(super) repeat: Option<u32>,
    pub(super) timeout_secs: Option<u64>,
    /// Run the task once, unchecked, before the case's runs: they then warm-start from it.
    pub(super) warm_up: Option<bool>,
    /// Tools whose waiting calls the runner approves; it denies any other waiting call.
    pub(super) approve: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TaskFile {
    pub(super) description: String,
    pub(super) user_id: Option<String>,
    pub(super) metadata: Option<Value>,
    pub(super) priority: Option<Priority>,
    pub(super) max_attempts: Option<i32>,
    pub(super) max_cost_usd: Option<f64>,
    pub(super) max_tokens: Option<i64>,
    pub(super) use_plan_cache: Option<bool>,
    pub(super) context: Option<Vec<ContextMessage>>,
    pub(super) agent_hints: Option<Vec<String>>,
    pub(super) task_type: Option<String>,
    pub(super) warm_start: Option<bool>,
    pub(super) require_approval: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ExpectFile {
    pub(super) status: Option<FinalStatus>,
    pub(super) min_steps: Option<u32>,
    pub(super) max_steps: Option<u32>,
    #[serde(default)]
    pub(super) agents: Vec<String>,
    #[serde(default)]
    pub(super) tools: Vec<String>,
    #[serde(default)]
    pub(super) cached_tools: Vec<String>,
    #[serde(default)]
    pub(super) result_contains: Vec<String>,
    #[serde(default)]
    pub(super) result_matches: Vec<String>,
    pub(super) max_cost_usd: Option<f64>,
    pub(super) max_latency_ms: Option<u64>,
    pub(super) max_tokens: Option<u64>,
    pub(super) judge: Option<JudgeFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct JudgeFile {
    pub(super) rubric: String,
    pub(super) min_score: Option<f64>,
}
