-- Durable execution: retry backoff, per-task overrides, and the plan cache.

-- A retried step is ready again but must not run before its backoff has passed.
ALTER TABLE steps ADD COLUMN not_before timestamptz;

-- Per-task overrides of the agents' retry policy, and of plan caching.
ALTER TABLE tasks ADD COLUMN max_attempts integer CHECK (max_attempts IS NULL OR max_attempts BETWEEN 1 AND 10);
ALTER TABLE tasks ADD COLUMN use_plan_cache boolean NOT NULL DEFAULT true;

-- Plans keyed by sha256(normalised description, agent set, planner version): resubmitting
-- the same task reuses its plan without a planning call.
CREATE TABLE plan_cache (
    hash       text PRIMARY KEY,
    planner    text        NOT NULL,
    plan       jsonb       NOT NULL,
    hits       bigint      NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    used_at    timestamptz NOT NULL DEFAULT now()
);

-- The reconciler looks for work without a job by these.
CREATE INDEX tasks_stale ON tasks (status, updated_at) WHERE status IN ('pending', 'planning');
