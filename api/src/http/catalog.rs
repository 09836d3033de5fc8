//! `GET /agents` and `GET /tools`: what this deployment's agents are and may use.

use agents::{AgentSpec, ToolInfo};
use axum::{Json, extract::State};
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;

#[derive(Debug, Serialize, ToSchema)]
pub struct AgentList {
    #[schema(value_type = Vec<AgentDoc>)]
    pub items: Vec<AgentSpec>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ToolList {
    #[schema(value_type = Vec<ToolDoc>)]
    pub items: Vec<ToolInfo>,
}

/// The documented shape of an [`AgentSpec`]: the agents crate stays free of OpenAPI derives.
#[derive(ToSchema)]
#[schema(as = Agent)]
#[allow(dead_code)]
pub struct AgentDoc {
    /// The name plans use to assign a step to this agent.
    name: String,
    description: String,
    system_prompt: String,
    /// Names of the tools this agent may call; any other call is rejected.
    tools: Vec<String>,
    /// Model override; `null` uses the provider's default model.
    model: Option<String>,
    /// Model calls allowed in one step before the step fails.
    max_iterations: u32,
    /// How many times a failing step of this agent is tried before the task fails.
    max_attempts: u32,
    /// Tool calls after which the agent's older conversation is summarised, when the agent
    /// sets its own (`CONTEXT_COMPRESS_EVERY` otherwise); 0 never summarises.
    compress_every: Option<u32>,
    /// Tools whose calls by this agent wait for a person's approval (absent: none beyond the
    /// deployment's and the task's).
    approval: Option<Vec<String>>,
}

/// The documented shape of a [`ToolInfo`].
#[derive(ToSchema)]
#[schema(as = Tool)]
#[allow(dead_code)]
pub struct ToolDoc {
    name: String,
    description: String,
    /// The JSON Schema of the tool's arguments.
    #[schema(value_type = Object)]
    parameters: serde_json::Value,
}

/// List agents
#[utoipa::path(
    get,
    path = "/agents",
    tag = "catalog",
    responses((status = 200, description = "The agents of this deployment.", body = AgentList)),
)]
pub async fn list_agents(State(state): State<AppState>) -> Json<AgentList> {
    Json(AgentList { items: state.agents.iter().cloned().collect() })
}

/// List tools
///
/// The tools registered here, each with the JSON Schema of its arguments.
#[utoipa::path(
    get,
    path = "/tools",
    tag = "catalog",
    responses((status = 200, description = "The tools of this deployment.", body = ToolList)),
)]
pub async fn list_tools(State(state): State<AppState>) -> Json<ToolList> {
    Json(ToolList { items: state.tools.describe() })
}
