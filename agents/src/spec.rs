//! Agent specs: who an agent is (system prompt), what it may use (tools), which model it
//! talks to and how long it may loop (iteration limit). The built-in catalogue covers the
//! roles the planner assigns; an agents file (TOML) adds agents or replaces built-ins.
//!
//! Invariants of every spec in a catalogue: the name matches `[a-z0-9_-]{1,64}`, the system
//! prompt is not blank, `max_iterations` is in 1..=50, `max_attempts` in 1..=10, and every
//! tool is either registered in this process or a built-in tool this deployment disabled
//! (allowed, but never offered to the model).

use std::{collections::BTreeMap, path::Path};

use serde::{Deserialize, Serialize};

use crate::tools::BUILTIN_TOOL_NAMES;

/// Model calls per step when a spec names no limit.
pub const DEFAULT_MAX_ITERATIONS: u32 = 8;
/// Attempts per step when a spec names none.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
const MAX_ITERATIONS: std::ops::RangeInclusive<u32> = 1..=50;
const MAX_ATTEMPTS: std::ops::RangeInclusive<u32> = 1..=10;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgentSpec {
    pub name: String,
    pub description: String,
    /// Opens with "You are the <name> agent" for the built-ins; the offline model reads
    /// the name from there.
    pub system_prompt: String,
    /// Names of the tools this agent may call; any other call is rejected.
    pub tools: Vec<String>,
    /// Model override; `None` uses the provider's default model.
    pub model: Option<String>,
    /// Model calls allowed in one step before the step fails.
    pub max_iterations: u32,
    /// How many times a failing step of this agent is tried before the task fails.
    pub max_attempts: u32,
    /// Tool calls after which the older conversation is summarised, overriding the
    /// deployment's `CONTEXT_COMPRESS_EVERY`; 0 never summarises. `None` keeps the default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compress_every: Option<u32>,
    /// Tools of this agent whose calls wait for a person's approval before they run (see
    /// [`crate::approval`]), besides the deployment's and the task's.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub approval: Vec<String>,
}

fn builtin(name: &str, description: &str, role: &str, tools: &[&str]) -> AgentSpec {
    AgentSpec {
        name: name.to_owned(),
        description: description.to_owned(),
        // The first line names the role: providers and the offline model both read it.
        system_prompt: format!(
            "You are the {name} agent of a team that carries out a larger task step by step.\n\
             {role}\n\
             Use the outputs of earlier steps when they are given, and call your tools when \
             they help; a tool error tells you what to fix. Answer with the result of your \
             step only, concisely and concretely."
        ),
        tools: tools.iter().map(|t| (*t).to_owned()).collect(),
        model: None,
        max_iterations: DEFAULT_MAX_ITERATIONS,
        max_attempts: DEFAULT_MAX_ATTEMPTS,
        compress_every: None,
        approval: Vec::new(),
    }
}

/// The agents every deployment has.
pub fn builtin_agents() -> Vec<AgentSpec> {
    vec![
        builtin(
            "researcher",
            "Finds and gathers information relevant to the task.",
            "You gather facts, sources and prior work, and say how sure you are of each.",
            &["memory_search", "memory_store", "http_get", "current_time", "json_extract"],
        ),
        builtin(
            "analyst",
            "Analyses requirements, data and options, and plans the approach.",
            "You break problems down, weigh options and state requirements and risks.",
            &["calculator", "memory_search", "json_extract", "current_time"],
        ),
        builtin(
            "engineer",
            "Designs and implements software: code, APIs, fixes.",
            "You design and implement working software and explain the key decisions.",
            &["calculator", "json_extract", "current_time", "memory_search"],
        ),
        builtin(
            "writer",
            "Writes, summarises and documents results for people.",
            "You write clear prose: summaries, documentation and reports.",
            &["memory_search", "current_time"],
        ),
        builtin(
            "reviewer",
            "Reviews and verifies the work of other steps.",
            "You check earlier work for errors, gaps and risks, and say what must change.",
            &["calculator", "memory_search", "json_extract"],
        ),
    ]
}

/// Why an agents file was refused. Every variant names the file and, where it applies, the
/// agent, so the operator can fix it.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("cannot read the agents file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the agents file {path} is not valid TOML for agents: {source}")]
    Parse {
        path: String,
        #[source]
        source: Box<toml::de::Error>,
    },
    #[error("agents file {path}: agent name `{name}` must be 1 to 64 characters of a-z, 0-9, `_` or `-`")]
    InvalidName { path: String, name: String },
    #[error("agents file {path}: agent `{agent}` is declared twice")]
    Duplicate { path: String, agent: String },
    #[error("agents file {path}: agent `{agent}` has a blank system_prompt")]
    BlankPrompt { path: String, agent: String },
    #[error("agents file {path}: agent `{agent}` has max_iterations = {value}; it must be between 1 and 50")]
    MaxIterations { path: String, agent: String, value: u32 },
    #[error("agents file {path}: agent `{agent}` has max_attempts = {value}; it must be between 1 and 10")]
    MaxAttempts { path: String, agent: String, value: u32 },
    #[error("agents file {path}: agent `{agent}` names unknown tool `{tool}`")]
    UnknownTool { path: String, agent: String, tool: String },
    #[error("agents file {path}: agent `{agent}` requires approval of `{tool}`, which is not one of its tools")]
    ApprovalOfUnusedTool { path: String, agent: String, tool: String },
}

/// The file format: `[[agent]]` tables.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentsFile {
    #[serde(default)]
    agent: Vec<AgentEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentEntry {
    name: String,
    #[serde(default)]
    description: String,
    system_prompt: String,
    #[serde(default)]
    tools: Vec<String>,
    model: Option<String>,
    #[serde(default = "default_max_iterations")]
    max_iterations: u32,
    #[serde(default = "default_max_attempts")]
    max_attempts: u32,
    compress_every: Option<u32>,
    #[serde(default)]
    approval: Vec<String>,
}

fn default_max_iterations() -> u32 {
    DEFAULT_MAX_ITERATIONS
}

fn default_max_attempts() -> u32 {
    DEFAULT_MAX_ATTEMPTS
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

impl AgentEntry {
    fn into_spec(self, path: &str, registered_tools: &[&str]) -> Result<AgentSpec, CatalogError> {
        let agent = self.name.clone();
        if !valid_name(&self.name) {
            return Err(CatalogError::InvalidName { path: path.to_owned(), name: self.name });
        }
        if self.system_prompt.trim().is_empty() {
            return Err(CatalogError::BlankPrompt { path: path.to_owned(), agent });
        }
        if !MAX_ITERATIONS.contains(&self.max_iterations) {
            return Err(CatalogError::MaxIterations { path: path.to_owned(), agent, value: self.max_iterations });
        }
        if !MAX_ATTEMPTS.contains(&self.max_attempts) {
            return Err(CatalogError::MaxAttempts { path: path.to_owned(), agent, value: self.max_attempts });
        }
        let known = |tool: &str| registered_tools.contains(&tool) || BUILTIN_TOOL_NAMES.contains(&tool);
        if let Some(tool) = self.tools.iter().find(|t| !known(t)) {
            return Err(CatalogError::UnknownTool { path: path.to_owned(), agent, tool: tool.clone() });
        }
        // Approval of a tool the agent cannot call would never be asked: a typo, refused.
        if let Some(tool) = self.approval.iter().find(|t| !self.tools.contains(t)) {
            return Err(CatalogError::ApprovalOfUnusedTool { path: path.to_owned(), agent, tool: tool.clone() });
        }
        Ok(AgentSpec {
            name: self.name,
            description: self.description,
            system_prompt: self.system_prompt,
            tools: self.tools,
            model: self.model.filter(|m| !m.trim().is_empty()),
            max_iterations: self.max_iterations,
            max_attempts: self.max_attempts,
            compress_every: self.compress_every,
            approval: self.approval,
        })
    }
}

/// The agents known to this process, by name.
#[derive(Debug, Clone)]
pub struct AgentCatalog {
    agents: BTreeMap<String, AgentSpec>,
}

impl AgentCatalog {
    pub fn builtin() -> Self {
        Self::from_specs(builtin_agents())
    }

    pub fn from_specs(specs: impl IntoIterator<Item = AgentSpec>) -> Self {
        Self { agents: specs.into_iter().map(|s| (s.name.clone(), s)).collect() }
    }

    /// The built-in agents plus those of the agents file at `path`; a file agent with a
    /// built-in's name replaces it. `registered_tools` are the names in this process's tool
    /// registry ([`crate::tools::ToolRegistry::names`]). Reads the file synchronously: call
    /// it at start-up, not on the async runtime's hot path.
    pub fn load(path: &Path, registered_tools: &[&str]) -> Result<Self, CatalogError> {
        let display = path.display().to_string();
        let text =
            std::fs::read_to_string(path).map_err(|source| CatalogError::Read { path: display.clone(), source })?;
        Self::from_toml(&text, &display, registered_tools)
    }

    /// [`AgentCatalog::load`] from TOML text; `path` only names the source in errors.
    pub fn from_toml(text: &str, path: &str, registered_tools: &[&str]) -> Result<Self, CatalogError> {
        let file: AgentsFile =
            toml::from_str(text).map_err(|e| CatalogError::Parse { path: path.to_owned(), source: Box::new(e) })?;
        let mut catalog = Self::builtin();
        let mut declared: Vec<String> = Vec::new();
        for entry in file.agent {
            if declared.contains(&entry.name) {
                return Err(CatalogError::Duplicate { path: path.to_owned(), agent: entry.name });
            }
            declared.push(entry.name.clone());
            let spec = entry.into_spec(path, registered_tools)?;
            catalog.agents.insert(spec.name.clone(), spec);
        }
        Ok(catalog)
    }

    pub fn get(&self, name: &str) -> Option<&AgentSpec> {
        self.agents.get(name)
    }

    pub fn names(&self) -> Vec<&str> {
        self.agents.keys().map(String::as_str).collect()
    }

    pub fn iter(&self) -> impl Iterator<Item = &AgentSpec> {
        self.agents.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REGISTERED: &[&str] = &["calculator", "current_time", "json_extract"];

    fn load(text: &str) -> Result<AgentCatalog, CatalogError> {
        AgentCatalog::from_toml(text, "agents.toml", REGISTERED)
    }

    #[test]
    fn builtin_catalogue_has_the_planner_roles() {
        let catalog = AgentCatalog::builtin();
        assert_eq!(catalog.names(), ["analyst", "engineer", "researcher", "reviewer", "writer"]);
        for spec in catalog.iter() {
            assert!(spec.system_prompt.starts_with(&format!("You are the {} agent", spec.name)));
            assert!(spec.tools.iter().all(|t| BUILTIN_TOOL_NAMES.contains(&t.as_str())), "{}", spec.name);
            assert_eq!((spec.max_iterations, spec.max_attempts), (8, 3));
        }
        assert_eq!(catalog.get("writer").unwrap().tools, ["memory_search", "current_time"]);
    }

    #[test]
    fn a_file_adds_agents_and_overrides_builtins() {
        let catalog = load(
            r#"
            [[agent]]
            name = "translator"
            description = "Translates text."
            system_prompt = "You are the translator agent."
            tools = ["calculator"]
            model = "gpt-4o-mini"
            max_iterations = 6
            max_attempts = 2

            [[agent]]
            name = "writer"
            system_prompt = "You are the writer agent, terse."
            "#,
        )
        .unwrap();
        let translator = catalog.get("translator").unwrap();
        assert_eq!(translator.tools, ["calculator"]);
        assert_eq!(translator.model.as_deref(), Some("gpt-4o-mini"));
        assert_eq!((translator.max_iterations, translator.max_attempts), (6, 2));
        let writer = catalog.get("writer").unwrap();
        assert_eq!(writer.system_prompt, "You are the writer agent, terse.");
        assert!(writer.tools.is_empty());
        assert_eq!((writer.max_iterations, writer.max_attempts), (DEFAULT_MAX_ITERATIONS, DEFAULT_MAX_ATTEMPTS));
        assert_eq!(catalog.names().len(), 6);
    }

    #[test]
    fn a_disabled_builtin_tool_is_allowed_but_an_unknown_tool_is_not() {
        let ok = load("[[agent]]\nname = \"web\"\nsystem_prompt = \"p\"\ntools = [\"http_get\", \"memory_store\"]\n");
        assert_eq!(ok.unwrap().get("web").unwrap().tools, ["http_get", "memory_store"]);

        let err = load("[[agent]]\nname = \"web\"\nsystem_prompt = \"p\"\ntools = [\"shell\"]\n").unwrap_err();
        assert!(matches!(&err, CatalogError::UnknownTool { agent, tool, .. } if agent == "web" && tool == "shell"));
        assert_eq!(err.to_string(), "agents file agents.toml: agent `web` names unknown tool `shell`");

        let err = load(
            "[[agent]]\nname = \"web\"\nsystem_prompt = \"p\"\ntools = [\"http_get\"]\napproval = [\"calculator\"]\n",
        )
        .unwrap_err();
        assert!(matches!(&err, CatalogError::ApprovalOfUnusedTool { tool, .. } if tool == "calculator"));
        let ok = load(
            "[[agent]]\nname = \"web\"\nsystem_prompt = \"p\"\ntools = [\"http_get\"]\napproval = [\"http_get\"]\n",
        )
        .unwrap();
        assert_eq!(ok.get("web").unwrap().approval, ["http_get"]);
    }

    #[test]
    fn invalid_entries_are_refused_with_the_agent_named() {
        let cases = [
            ("name = \"Bad Name\"\nsystem_prompt = \"p\"", "agent name `Bad Name`"),
            ("name = \"\"\nsystem_prompt = \"p\"", "agent name ``"),
            ("name = \"a\"\nsystem_prompt = \"  \"", "agent `a` has a blank system_prompt"),
            ("name = \"a\"\nsystem_prompt = \"p\"\nmax_iterations = 0", "max_iterations = 0"),
            ("name = \"a\"\nsystem_prompt = \"p\"\nmax_iterations = 51", "max_iterations = 51"),
            ("name = \"a\"\nsystem_prompt = \"p\"\nmax_attempts = 0", "max_attempts = 0"),
            ("name = \"a\"\nsystem_prompt = \"p\"\ntemperature = 1", "unknown field `temperature`"),
            ("name = \"a\"", "missing field `system_prompt`"),
        ];
        for (body, needle) in cases {
            let err = load(&format!("[[agent]]\n{body}\n")).unwrap_err().to_string();
            assert!(err.contains(needle), "{body}: {err}");
        }
        let twice = "[[agent]]\nname = \"a\"\nsystem_prompt = \"p\"\n[[agent]]\nname = \"a\"\nsystem_prompt = \"q\"\n";
        assert!(matches!(load(twice), Err(CatalogError::Duplicate { agent, .. }) if agent == "a"));
    }

    #[test]
    fn load_reads_a_file_and_names_a_missing_one() {
        let dir = std::env::temp_dir().join(format!("agents-spec-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("agents.toml");
        std::fs::write(&path, "[[agent]]\nname = \"x\"\nsystem_prompt = \"You are the x agent.\"\n").unwrap();
        assert!(AgentCatalog::load(&path, REGISTERED).unwrap().get("x").is_some());
        let missing = AgentCatalog::load(&dir.join("nope.toml"), REGISTERED).unwrap_err();
        assert!(matches!(missing, CatalogError::Read { .. }) && missing.to_string().contains("nope.toml"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn specs_serialise_for_the_api() {
        let spec = AgentCatalog::builtin().get("reviewer").unwrap().clone();
        let json = serde_json::to_value(&spec).unwrap();
        assert_eq!(json["name"], "reviewer");
        assert_eq!(json["max_attempts"], 3);
        assert_eq!(json["tools"], serde_json::json!(["calculator", "memory_search", "json_extract"]));
    }
}
