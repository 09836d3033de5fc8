-- Agent hints: the agents a task's plan may use (empty: any). Checked against the agent
-- catalog when the task is submitted; the planner assigns only these.
ALTER TABLE tasks ADD COLUMN agent_hints text[] NOT NULL DEFAULT '{}'
    CHECK (cardinality(agent_hints) <= 10);
