//! Agent specs: who an agent is (system prompt), what it may use (tools) and how long it
//! may loop (iteration limit). The built-in catalogue covers the roles the planner assigns.

use std::collections::BTreeMap;

use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgentSpec {
    pub name: String,
    pub description: String,
    pub system_prompt: String,
    /// Names of the tools this agent may call; any other call is rejected.
    pub tools: Vec<String>,
    /// Model override; `None` uses the provider's default model.
    pub model: Option<String>,
    /// Model calls allowed in one step before the step fails.
    pub max_iterations: u32,
}

fn builtin(name: &str, description: &str, role: &str) -> AgentSpec {
    AgentSpec {
        name: name.to_owned(),
        description: description.to_owned(),
        // The first line names the role: providers and the offline model both read it.
        system_prompt: format!(
            "You are the {name} agent of a team that carries out a larger task step by step.\n\
             {role}\n\
             Use the outputs of earlier steps when they are given. Answer with the result of \
             your step only, concisely and concretely."
        ),
        tools: Vec::new(),
        model: None,
        max_iterations: 8,
    }
}

/// The agents every deployment has.
pub fn builtin_agents() -> Vec<AgentSpec> {
    vec![
        builtin(
            "researcher",
            "Finds and gathers information relevant to the task.",
            "You gather facts, sources and prior work, and say how sure you are of each.",
        ),
        builtin(
            "analyst",
            "Analyses requirements, data and options, and plans the approach.",
            "You break problems down, weigh options and state requirements and risks.",
        ),
        builtin(
            "engineer",
            "Designs and implements software: code, APIs, fixes.",
            "You design and implement working software and explain the key decisions.",
        ),
        builtin(
            "writer",
            "Writes, summarises and documents results for people.",
            "You write clear prose: summaries, documentation and reports.",
        ),
        builtin(
            "reviewer",
            "Reviews and verifies the work of other steps.",
            "You check earlier work for errors, gaps and risks, and say what must change.",
        ),
    ]
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

    #[test]
    fn builtin_catalogue_has_the_planner_roles() {
        let catalog = AgentCatalog::builtin();
        assert_eq!(catalog.names(), ["analyst", "engineer", "researcher", "reviewer", "writer"]);
        let analyst = catalog.get("analyst").unwrap();
        assert!(analyst.system_prompt.starts_with("You are the analyst agent"));
    }
}
