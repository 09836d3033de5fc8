//! The task hash: what identifies a task's work, so that the same work can be recognised
//! when it comes again (`task_hash` on every task; the key of warm starts).
//!
//! sha256 over the user, the task type, the normalised description (whitespace collapsed),
//! the context messages, the agent hints, and a fingerprint of the deployment's agents (every
//! spec: prompt, tools, model, limits) and planner version: anything that could change what
//! the task does changes the hash. The user is part of it, as in the plan cache, so that one
//! tenant's hash never finds another's work.

use agents::AgentCatalog;
use sha2::{Digest, Sha256};

use crate::store::NewTask;

/// Hashes tasks for one deployment: its agents and planner are hashed once.
#[derive(Debug, Clone)]
pub struct TaskHasher {
    deployment: [u8; 32],
}

impl TaskHasher {
    pub fn new(agents: &AgentCatalog, planner_version: &str) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(planner_version.as_bytes());
        hasher.update([0u8]);
        // The catalogue iterates in name order, so equal catalogues hash alike.
        for spec in agents.iter() {
            hasher.update(serde_json::to_vec(spec).unwrap_or_default());
            hasher.update([0u8]);
        }
        Self { deployment: hasher.finalize().into() }
    }

    /// The hash of `task`'s work, as 64 hex digits.
    pub fn hash(&self, task: &NewTask) -> String {
        let mut hasher = Sha256::new();
        hasher.update(self.deployment);
        // Each part ends with a NUL, which none of them can contain (stored text is free of
        // NULs), so parts cannot run together.
        let mut part = |text: &str| {
            hasher.update(text.as_bytes());
            hasher.update([0u8]);
        };
        part(&task.user_id);
        part(task.task_type.as_deref().unwrap_or(""));
        part(&task.description.split_whitespace().collect::<Vec<_>>().join(" "));
        part(&task.context.len().to_string());
        for (role, content) in &task.context {
            part(role);
            part(content);
        }
        let mut hints = task.agent_hints.clone();
        hints.sort_unstable();
        part(&hints.join(","));
        hex::encode(hasher.finalize())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::TaskId;

    fn task(description: &str) -> NewTask {
        NewTask {
            id: TaskId::new(),
            user_id: "ann".into(),
            description: description.into(),
            metadata: serde_json::json!({"anything": "else"}),
            priority: Default::default(),
            max_cost_usd: None,
            max_tokens: None,
            idempotency_key: None,
            request_hash: String::new(),
            max_attempts: None,
            use_plan_cache: true,
            context: Vec::new(),
            callback_url: None,
            agent_hints: Vec::new(),
            task_type: Some("report".into()),
            task_hash: String::new(),
            warm_start: false,
            replan: false,
            max_replans: 2,
            start: Default::default(),
            require_approval: Vec::new(),
            follows: None,
        }
    }

    #[test]
    fn the_same_work_hashes_alike_and_anything_that_changes_it_changes_the_hash() {
        let hasher = TaskHasher::new(&AgentCatalog::builtin(), "heuristic-1");
        let base = hasher.hash(&task("Write  a\n report."));
        assert_eq!(base.len(), 64);
        // Whitespace, the id, metadata, budgets and priority are not the work.
        let mut same = task(" Write a report. ");
        same.max_cost_usd = Some(1.0);
        same.metadata = serde_json::json!({});
        assert_eq!(hasher.hash(&same), base);

        let mut other_type = task("Write a report.");
        other_type.task_type = None;
        let mut other_user = task("Write a report.");
        other_user.user_id = "bob".into();
        let mut with_context = task("Write a report.");
        with_context.context = vec![("user".into(), "Be brief.".into())];
        let mut hinted = task("Write a report.");
        hinted.agent_hints = vec!["writer".into()];
        for changed in [other_type, other_user, with_context, hinted, task("Write a memo.")] {
            assert_ne!(hasher.hash(&changed), base, "{changed:?}");
        }
        let other_planner = TaskHasher::new(&AgentCatalog::builtin(), "llm-1");
        assert_ne!(other_planner.hash(&task("Write a report.")), base);
    }
}
