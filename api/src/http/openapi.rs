//! The OpenAPI 3.1 document of the API, served at `GET /openapi.json`, with Swagger UI at
//! `GET /docs` (its assets are embedded in the binary: nothing is fetched from a CDN).
//!
//! Every route of [`super::build_router`] is listed in [`ApiDoc`]; the integration test
//! `openapi` checks that the two agree and that `docs/openapi.json` is this document.

use utoipa::{
    Modify, OpenApi,
    openapi::{
        ContentBuilder, Ref, ResponseBuilder,
        path::Operation,
        security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme},
    },
};

use super::{
    admin, catalog, error::Problem, health, memory, observe, rate_limit_docs::RateLimitResponses, tasks,
    webhook_secret, workers,
};
use crate::{
    coordination::{InFlightJob, WorkerInfo},
    domain::{ApprovalStatus, EventKind, Priority, RequiredAction, StepId, StepStatus, TaskId, TaskStart, TaskStatus},
    store::{CostReport, ModelCost, StepCost, ToolCallRow, Usage},
};

/// Where the document is served.
pub const OPENAPI_PATH: &str = "/openapi.json";
/// Where Swagger UI is served.
pub const DOCS_PATH: &str = "/docs";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Agent orchestrator API",
        description = "Submit tasks that a planner splits into steps run by agents; follow them, \
                       read their cost and tool calls, and manage users' long-term memory. \
                       Errors are RFC 7807 `application/problem+json` bodies (`Problem`).",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(
        tasks::create::create_task,
        tasks::list::list_tasks,
        tasks::get::get_task,
        tasks::cancel::cancel_task,
        tasks::retry::retry_task,
        tasks::context::add_context,
        tasks::plan::get_plan,
        tasks::plan::plan_versions,
        tasks::plan_edit::edit_plan,
        tasks::start::start_task,
        tasks::follow_up::create_follow_up,
        tasks::events::task_events,
        tasks::reports::task_cost,
        tasks::reports::tool_calls,
        tasks::webhook::task_webhook,
        tasks::approvals::list_approvals,
        tasks::approvals::decide,
        webhook_secret::show,
        webhook_secret::rotate,
        memory::create,
        memory::search,
        memory::read,
        memory::remove,
        catalog::list_agents,
        catalog::list_tools,
        workers::list_workers,
        admin::dead_letters,
        health::healthz,
        health::readyz,
        observe::metrics,
    ),
    components(schemas(
        Problem,
        TaskId,
        StepId,
        TaskStatus,
        StepStatus,
        Priority,
        EventKind,
        tasks::dto::CreateTaskRequest,
        tasks::dto::FollowUpRequest,
        tasks::dto::ContextMessage,
        tasks::context::AddContextRequest,
        tasks::context::ContextResponse,
        tasks::plan::PlanResponse,
        tasks::plan::PlanStep,
        tasks::plan::ReplacedPlanStep,
        tasks::plan::PlanVersionList,
        tasks::plan_edit::EditPlanRequest,
        tasks::plan_edit::EditPlanStep,
        TaskStart,
        tasks::dto::TaskResponse,
        tasks::dto::StepResponse,
        tasks::dto::TaskListResponse,
        tasks::events::EventBody,
        tasks::reports::ToolCallList,
        tasks::webhook::WebhookReport,
        tasks::approvals::DecideRequest,
        tasks::approvals::DecisionKind,
        tasks::approvals::ApprovalResponse,
        tasks::approvals::ApprovalListResponse,
        ApprovalStatus,
        RequiredAction,
        tasks::webhook::Delivery,
        tasks::webhook::Attempt,
        webhook_secret::WebhookSecretResponse,
        CostReport,
        Usage,
        StepCost,
        ModelCost,
        ToolCallRow,
        memory::CreateMemory,
        memory::SearchMemory,
        memory::MemoryResponse,
        memory::SearchResponse,
        catalog::AgentList,
        catalog::ToolList,
        catalog::AgentDoc,
        catalog::ToolDoc,
        workers::WorkerList,
        admin::DeadLetterList,
        crate::queue::DeadLetter,
        WorkerInfo,
        InFlightJob,
        health::Health,
        health::Readiness,
        health::ReadinessChecks,
    )),
    modifiers(&BearerAuth, &RateLimitResponses),
    security(("bearer" = [])),
    tags(
        (name = "tasks", description = "Submit, follow up, follow, cancel and account for tasks."),
        (name = "webhooks", description = "The secret that signs a user's webhooks (Standard Webhooks)."),
        (name = "memory", description = "A user's long-term memory."),
        (name = "catalog", description = "The agents and tools of this deployment."),
        (name = "operations", description = "Workers, health, readiness and metrics."),
    ),
)]
pub struct ApiDoc;

/// Paths that need no key (see [`super::build_router`]).
const OPEN_PATHS: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// Declares the `bearer` scheme, exempts the open paths from it and documents the 401 of
/// every other operation.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API key from `orchestrator keys create`. Not needed when the server runs with \
                         AUTH=disabled (local use).",
                    ))
                    .build(),
            ),
        );
        let unauthorized = ResponseBuilder::new()
            .description("No valid API key: `Authorization: Bearer <key>` is missing, unknown or revoked.")
            .content(
                "application/problem+json",
                ContentBuilder::new().schema(Some(Ref::from_schema_name("Problem"))).build(),
            )
            .build();
        for (path, item) in openapi.paths.paths.iter_mut() {
            let open = OPEN_PATHS.contains(&path.as_str());
            for operation in operations(item) {
                if open {
                    operation.security = Some(vec![SecurityRequirement::default()]);
                } else {
                    operation.responses.responses.insert("401".into(), unauthorized.clone().into());
                }
            }
        }
    }
}

fn operations(item: &mut utoipa::openapi::PathItem) -> impl Iterator<Item = &mut Operation> {
    [&mut item.get, &mut item.post, &mut item.put, &mut item.patch, &mut item.delete].into_iter().flatten()
}

/// The document as served: pretty-printed JSON with object keys in sorted order, so the
/// checked-in `docs/openapi.json` is stable.
pub fn document_json() -> String {
    let value = serde_json::to_value(ApiDoc::openapi()).expect("the OpenAPI document serialises");
    let mut text = serde_json::to_string_pretty(&sorted(value)).expect("JSON serialises");
    text.push('\n');
    text
}

/// Rebuilds every object with its keys sorted (serde_json may preserve insertion order).
fn sorted(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sorted).collect()),
        other => other,
    }
}
