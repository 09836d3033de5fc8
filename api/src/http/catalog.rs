//! `GET /agents` and `GET /tools`: what this deployment's agents are and may use.

use agents::{AgentSpec, ToolInfo};
use axum::{Json, extract::State};
use serde::Serialize;

use super::AppState;

#[derive(Debug, Serialize)]
pub struct AgentList {
    pub items: Vec<AgentSpec>,
}

#[derive(Debug, Serialize)]
pub struct ToolList {
    pub items: Vec<ToolInfo>,
}

pub async fn list_agents(State(state): State<AppState>) -> Json<AgentList> {
    Json(AgentList { items: state.agents.iter().cloned().collect() })
}

/// The tools registered here, each with the JSON Schema of its arguments.
pub async fn list_tools(State(state): State<AppState>) -> Json<ToolList> {
    Json(ToolList { items: state.tools.describe() })
}
