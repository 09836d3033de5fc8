-- Poison work ends, re-drive, and one Redis shared by several deployments (issue 12).

-- 1. Planning attempts. A claim of a task's planning (the first, or a takeover of a planning
-- whose lease expired) counts one; a takeover with none left fails the task with
-- `attempts_exhausted` instead of planning again, so a task whose planning kills its worker
-- cannot loop forever. Steps already count every claim in `steps.attempt`.
ALTER TABLE tasks ADD COLUMN plan_attempts integer NOT NULL DEFAULT 0 CHECK (plan_attempts >= 0);

ALTER TABLE tasks DROP CONSTRAINT tasks_error_code_check;
ALTER TABLE tasks ADD CONSTRAINT tasks_error_code_check
    CHECK (error_code IS NULL OR error_code IN ('budget_exceeded', 'attempts_exhausted', 'dead_lettered'));

-- 2. Re-drive. `run` counts the times a task was started: 1, then one more per
-- `POST /tasks/{id}/retry`. A webhook is enqueued once per (task, event, run), so a retried
-- task that fails again is reported again.
ALTER TABLE tasks ADD COLUMN run integer NOT NULL DEFAULT 1 CHECK (run >= 1);
ALTER TABLE webhook_deliveries ADD COLUMN run integer NOT NULL DEFAULT 1;
ALTER TABLE webhook_deliveries DROP CONSTRAINT webhook_deliveries_task_id_event_key;
ALTER TABLE webhook_deliveries ADD CONSTRAINT webhook_deliveries_task_event_run UNIQUE (task_id, event, run);

-- As in 20261121000007_budgets.sql, plus the run (in the row and the payload).
CREATE OR REPLACE FUNCTION enqueue_task_webhook() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    v_delivery uuid := gen_random_uuid();
    v_event    text := 'task.' || NEW.status;
BEGIN
    INSERT INTO webhook_deliveries (id, task_id, event, run, url, payload)
    VALUES (v_delivery, NEW.id, v_event, NEW.run, NEW.callback_url, jsonb_build_object(
        'delivery_id', v_delivery,
        'type', v_event,
        'task_id', NEW.id,
        'user_id', NEW.user_id,
        'status', NEW.status,
        'run', NEW.run,
        'result', NEW.result,
        'error', NEW.error,
        'error_code', NEW.error_code,
        'tokens_in', NEW.tokens_in,
        'tokens_out', NEW.tokens_out,
        'cost_usd', NEW.cost_usd,
        'completed_at', to_char(NEW.completed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')))
    ON CONFLICT (task_id, event, run) DO NOTHING;
    RETURN NULL;
END
$$;

-- 3. The identity of this database. Dispatch keys in Redis carry it, so two deployments
-- with different databases never share streams even when they share a Redis and a prefix.
CREATE TABLE deployment (
    singleton  boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
    id         uuid        NOT NULL DEFAULT gen_random_uuid(),
    created_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO deployment DEFAULT VALUES;
