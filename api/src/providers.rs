//! Builds what the agents run on from the settings: the model client, the price table, the
//! planner, the tool registry and the agent catalogue. Errors name the setting at fault.

use std::{sync::Arc, time::Duration};

use agents::{
    AgentCatalog, LlmClient, PriceTable, ToolRegistry, ToolSettings,
    llm::{AnthropicClient, AnthropicConfig, OfflineModel, OpenAiClient, OpenAiConfig},
};
use anyhow::Context;
use planner::{HeuristicPlanner, LlmPlanner, PlanLimits};

use memory::{Embedder, HashingEmbedder, OpenAiEmbedder, OpenAiEmbedderConfig};

use crate::config::{EmbedderKind, LlmProvider, PlannerKind, Settings};

/// The embedder of long-term memory.
pub fn embedder(s: &Settings) -> anyhow::Result<Arc<dyn Embedder>> {
    Ok(match s.embedder {
        EmbedderKind::Hashing => Arc::new(HashingEmbedder::new(s.embedding_dim).context("EMBEDDING_DIM")?),
        EmbedderKind::Openai => {
            let mut config =
                OpenAiEmbedderConfig::new(s.embedding_base_url.clone(), s.embedding_model.clone(), s.embedding_dim);
            config.api_key = s.embedding_api_key.as_ref().map(|k| k.expose().to_owned());
            Arc::new(OpenAiEmbedder::new(config).context("embedding settings")?)
        }
    })
}

/// The model client of the configured provider.
pub fn llm_client(s: &Settings) -> anyhow::Result<Arc<dyn LlmClient>> {
    let timeout = Duration::from_secs(s.llm_timeout_secs);
    Ok(match s.llm_provider {
        LlmProvider::Offline => Arc::new(OfflineModel::new(Duration::from_millis(s.offline_llm_delay_ms))),
        LlmProvider::Openai => {
            let base = s.llm_base_url.clone().unwrap_or_else(|| OpenAiConfig::DEFAULT_BASE_URL.to_owned());
            let mut config = OpenAiConfig::new(base, s.llm_model.clone().unwrap_or_else(|| "gpt-4o-mini".into()));
            config.api_key = s.llm_api_key.as_ref().map(|k| k.expose().to_owned());
            config.timeout = timeout;
            config.max_retries = s.llm_max_retries;
            config.max_tokens = s.llm_max_tokens;
            Arc::new(OpenAiClient::new(config).context("LLM settings")?)
        }
        LlmProvider::Anthropic => {
            let model = s.llm_model.clone().unwrap_or_else(|| "claude-3-5-haiku-latest".into());
            let mut config = AnthropicConfig::new(s.llm_api_key.as_ref().map(|k| k.expose().to_owned()), model);
            if let Some(base) = &s.llm_base_url {
                config.base_url = base.clone();
            }
            config.timeout = timeout;
            config.max_retries = s.llm_max_retries;
            if let Some(max) = s.llm_max_tokens {
                config.max_tokens = max;
            }
            Arc::new(AnthropicClient::new(config).context("LLM settings")?)
        }
    })
}

pub fn price_table(s: &Settings) -> anyhow::Result<PriceTable> {
    match &s.llm_prices_file {
        Some(path) => PriceTable::load_file(path).with_context(|| format!("LLM_PRICES_FILE {}", path.display())),
        None => Ok(PriceTable::builtin()),
    }
}

pub fn tool_settings(s: &Settings) -> ToolSettings {
    let mut tools = ToolSettings {
        timeout: Duration::from_secs(s.tool_timeout_secs),
        max_result_bytes: s.tool_max_result_bytes,
        ..ToolSettings::default()
    };
    tools.http.allowed_hosts =
        s.http_get_allowed_hosts.iter().map(|h| h.trim().to_owned()).filter(|h| !h.is_empty()).collect();
    tools
}

pub fn agent_catalog(s: &Settings, tools: &ToolRegistry) -> anyhow::Result<AgentCatalog> {
    match &s.agents_file {
        Some(path) => {
            AgentCatalog::load(path, &tools.names()).with_context(|| format!("AGENTS_FILE {}", path.display()))
        }
        None => Ok(AgentCatalog::builtin()),
    }
}

/// The planner a task gets: the model's when one is configured, the heuristic otherwise.
pub enum TaskPlanner {
    Heuristic(HeuristicPlanner),
    Llm(LlmPlanner),
}

/// Whether the deployment plans with its model.
fn plans_with_llm(s: &Settings) -> bool {
    match s.planner {
        PlannerKind::Heuristic => false,
        PlannerKind::Llm => true,
        // The offline model never calls submit_plan: asking it would only add two calls
        // before the same heuristic plan.
        PlannerKind::Auto => s.llm_provider != LlmProvider::Offline,
    }
}

/// The version of the planner the deployment's tasks get (what `TaskPlanner::version`
/// answers), known without building it: the API's task hashes include it.
pub fn planner_version(s: &Settings) -> &'static str {
    if plans_with_llm(s) { planner::LLM_PLANNER_VERSION } else { planner::HEURISTIC_PLANNER_VERSION }
}

impl TaskPlanner {
    pub fn new(s: &Settings, llm: Arc<dyn LlmClient>, agents: &AgentCatalog, limits: PlanLimits) -> Self {
        let heuristic = HeuristicPlanner::new(limits);
        if plans_with_llm(s) {
            let described = agents.iter().map(|a| (a.name.clone(), a.description.clone())).collect();
            Self::Llm(LlmPlanner::new(llm, described, limits, heuristic))
        } else {
            Self::Heuristic(heuristic)
        }
    }

    pub fn version(&self) -> &str {
        use planner::Planner;
        match self {
            Self::Heuristic(p) => p.version(),
            Self::Llm(p) => p.version(),
        }
    }
}
