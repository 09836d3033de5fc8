-- Budgets, quotas and fairness (api/src/budget).
--
-- Before every model call a worker reserves the call's worst case (prompt tokens plus the
-- output ceiling, at the model's price) against its task's `max_cost_usd` / `max_tokens`
-- and its user's daily cost quota, in one transaction of conditional updates; after the
-- call the reservation becomes the real spend in the transaction that records the call. So
-- `cost_usd + reserved_cost_usd` never passes `max_cost_usd`, even with parallel steps.

ALTER TABLE tasks
    ADD COLUMN reserved_cost_usd double precision NOT NULL DEFAULT 0 CHECK (reserved_cost_usd >= 0),
    ADD COLUMN reserved_tokens   bigint           NOT NULL DEFAULT 0 CHECK (reserved_tokens >= 0),
    -- A stable, machine-readable reason next to the human-readable `error`.
    ADD COLUMN error_code        text CHECK (error_code IS NULL OR error_code IN ('budget_exceeded')),
    -- Times a pending task found its user at the running-task cap. A deferred plan job
    -- carries the count it expects, so of several jobs for one waiting task only the newest
    -- chain of deferrals survives.
    ADD COLUMN capacity_waits    integer          NOT NULL DEFAULT 0 CHECK (capacity_waits >= 0);

-- One row per open reservation: the ledger that lets a reservation left by a worker that
-- died (or a call abandoned by a timeout) be given back. A reservation belongs to the
-- lease it was made under (a step's, or the task's planning lease); once that lease is no
-- longer held, the reservation is stale and is released.
CREATE TABLE budget_reservations (
    id          uuid PRIMARY KEY,
    task_id     uuid             NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    step_id     uuid             REFERENCES steps (id) ON DELETE CASCADE, -- NULL for planning
    lease_token uuid             NOT NULL,
    user_id     text             NOT NULL,
    -- The UTC day whose quota row holds the reservation.
    day         date             NOT NULL,
    cost_usd    double precision NOT NULL CHECK (cost_usd >= 0),
    tokens      bigint           NOT NULL CHECK (tokens >= 0),
    created_at  timestamptz      NOT NULL DEFAULT now()
);
CREATE INDEX budget_reservations_task ON budget_reservations (task_id);

-- Spend and open reservations per user per UTC day, for the daily cost quota.
CREATE TABLE user_daily_usage (
    user_id      text             NOT NULL,
    day          date             NOT NULL,
    spent_usd    double precision NOT NULL DEFAULT 0 CHECK (spent_usd >= 0),
    reserved_usd double precision NOT NULL DEFAULT 0 CHECK (reserved_usd >= 0),
    PRIMARY KEY (user_id, day)
);

-- Per-user overrides of DAILY_COST_QUOTA_USD and MAX_RUNNING_TASKS_PER_USER
-- (`orchestrator users limits set`). NULL keeps the global setting.
CREATE TABLE user_limits (
    user_id           text        PRIMARY KEY CHECK (length(user_id) BETWEEN 1 AND 200),
    daily_cost_usd    double precision CHECK (daily_cost_usd IS NULL OR daily_cost_usd >= 0),
    -- 0 lifts the cap for this user.
    max_running_tasks integer     CHECK (max_running_tasks IS NULL OR max_running_tasks >= 0),
    updated_at        timestamptz NOT NULL DEFAULT now()
);

-- The cap counts a user's planning and running tasks; waking looks for their oldest waiting one.
CREATE INDEX tasks_user_active ON tasks (user_id) WHERE status IN ('planning', 'running');
CREATE INDEX tasks_user_pending ON tasks (user_id, created_at) WHERE status = 'pending';

-- The webhook payload gains `error_code`; otherwise as in 20261121000005_webhooks.sql.
CREATE OR REPLACE FUNCTION enqueue_task_webhook() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    v_delivery uuid := gen_random_uuid();
    v_event    text := 'task.' || NEW.status;
BEGIN
    INSERT INTO webhook_deliveries (id, task_id, event, url, payload)
    VALUES (v_delivery, NEW.id, v_event, NEW.callback_url, jsonb_build_object(
        'delivery_id', v_delivery,
        'type', v_event,
        'task_id', NEW.id,
        'user_id', NEW.user_id,
        'status', NEW.status,
        'result', NEW.result,
        'error', NEW.error,
        'error_code', NEW.error_code,
        'tokens_in', NEW.tokens_in,
        'tokens_out', NEW.tokens_out,
        'cost_usd', NEW.cost_usd,
        'completed_at', to_char(NEW.completed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')))
    ON CONFLICT (task_id, event) DO NOTHING;
    RETURN NULL;
END
$$;
