-- People in the loop (issue 15, part 1): tool calls that wait for a person's approval.
--
-- A step whose agent called a tool that requires approval stops `waiting` (no lease, no job,
-- no attempt charged): its checkpoint holds the turn, `tool_approvals` the calls it waits
-- for, and `tool_calls` records each with status `awaiting_approval`. Its task is
-- `requires_action` (`required_action` says which) while any of its steps waits; work on
-- other branches goes on. A decision (or the expiry of an unanswered call) readies the step
-- once none of its calls waits, and the task runs again once none of its steps waits.

ALTER TABLE tasks DROP CONSTRAINT tasks_status_check;
ALTER TABLE tasks ADD CONSTRAINT tasks_status_check
    CHECK (status IN ('pending', 'planning', 'running', 'requires_action', 'completed', 'failed', 'cancelled',
                      'partial'));
ALTER TABLE tasks ADD COLUMN required_action text
    CHECK (required_action IN ('tool_approval', 'plan_approval'));
-- What a person must do is said exactly when the task waits for one.
ALTER TABLE tasks ADD CONSTRAINT tasks_required_action_with_status
    CHECK ((status = 'requires_action') = (required_action IS NOT NULL));
-- The unfinished-task gauges count tasks that require action with the index's help too.
DROP INDEX tasks_unfinished;
CREATE INDEX tasks_unfinished ON tasks (status, created_at)
    WHERE status IN ('pending', 'planning', 'running', 'requires_action');
-- Tools whose calls wait for approval in this task, besides the deployment's and the agent's.
ALTER TABLE tasks ADD COLUMN require_approval text[] NOT NULL DEFAULT '{}'
    CHECK (cardinality(require_approval) <= 32);
-- Times the task entered requires_action: each gets its own `task.requires_action` webhook.
ALTER TABLE tasks ADD COLUMN action_requests integer NOT NULL DEFAULT 0 CHECK (action_requests >= 0);

ALTER TABLE steps DROP CONSTRAINT steps_status_check;
ALTER TABLE steps ADD CONSTRAINT steps_status_check
    CHECK (status IN ('pending', 'ready', 'running', 'waiting', 'completed', 'failed', 'skipped', 'cancelled'));

ALTER TABLE tool_calls DROP CONSTRAINT tool_calls_status_check;
ALTER TABLE tool_calls ADD CONSTRAINT tool_calls_status_check
    CHECK (status IN ('ok', 'error', 'rejected', 'cached', 'awaiting_approval', 'denied')) NOT VALID;

-- One row per call that waited for a person; its id is the `tool_calls` row that recorded the
-- request, and the `call_id` of `POST /tasks/{id}/approvals/{call_id}`.
CREATE TABLE tool_approvals (
    id           uuid PRIMARY KEY,
    task_id      uuid        NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    step_id      uuid        NOT NULL REFERENCES steps (id) ON DELETE CASCADE,
    agent        text        NOT NULL,
    -- The model's id of the call and the step's turn it was made in: what the resumed agent
    -- loop finds the decision by.
    turn         integer     NOT NULL CHECK (turn >= 1),
    tool_call_id text        NOT NULL,
    tool         text        NOT NULL,
    arguments    jsonb       NOT NULL,
    status       text        NOT NULL DEFAULT 'pending'
                 CHECK (status IN ('pending', 'approved', 'denied', 'expired', 'cancelled')),
    -- The arguments a person changed the call to, when they did.
    edited_arguments jsonb,
    reason       text        CHECK (length(reason) <= 2000),
    decided_by   text,
    requested_at timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    decided_at   timestamptz,
    CHECK ((status = 'pending') = (decided_at IS NULL)),
    UNIQUE (step_id, turn, tool_call_id)
);
CREATE INDEX tool_approvals_task ON tool_approvals (task_id, requested_at);
CREATE INDEX tool_approvals_pending_expiry ON tool_approvals (expires_at) WHERE status = 'pending';

ALTER TABLE webhook_deliveries DROP CONSTRAINT webhook_deliveries_event_check;
ALTER TABLE webhook_deliveries ADD CONSTRAINT webhook_deliveries_event_check
    CHECK (event IN ('task.completed', 'task.failed', 'task.cancelled', 'task.partial', 'task.requires_action'));
ALTER TABLE webhook_deliveries ADD COLUMN seq integer NOT NULL DEFAULT 0;
ALTER TABLE webhook_deliveries DROP CONSTRAINT webhook_deliveries_task_event_run;
ALTER TABLE webhook_deliveries ADD CONSTRAINT webhook_deliveries_task_event_run_seq UNIQUE (task_id, event, run, seq);

-- As in 20261121000022_partial_results.sql, and a task entering requires_action gets a
-- `task.requires_action` delivery each time (`seq`), with `required_action` in the payload.
CREATE OR REPLACE FUNCTION queue_task_webhook(t tasks) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF t.callback_url IS NULL OR t.status NOT IN ('completed', 'failed', 'cancelled', 'partial', 'requires_action') THEN
        RETURN;
    END IF;
    INSERT INTO webhook_deliveries (id, task_id, event, run, seq, url, payload)
    SELECT d.id, t.id, 'task.' || t.status, t.run, t.action_requests, t.callback_url, jsonb_build_object(
        'delivery_id', d.id,
        'type', 'task.' || t.status,
        'task_id', t.id,
        'user_id', t.user_id,
        'status', t.status,
        'run', t.run,
        'result', t.result,
        'error', t.error,
        'error_code', t.error_code,
        'required_action', t.required_action,
        'tokens_in', t.tokens_in,
        'tokens_out', t.tokens_out,
        'cost_usd', t.cost_usd,
        'completed_at', to_char(t.completed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))
    FROM (SELECT gen_random_uuid() AS id) d
    ON CONFLICT (task_id, event, run, seq) DO NOTHING;
END
$$;


-- As in 20261121000022_partial_results.sql; a waiting step can still run, and a task that
-- requires action is as alive as a running one.
CREATE OR REPLACE FUNCTION end_settled_task(p_task uuid) RETURNS tasks LANGUAGE plpgsql AS $$
DECLARE
    v_task tasks;
    v_result text;
    v_error text;
BEGIN
    IF EXISTS (SELECT 1 FROM steps WHERE task_id = p_task AND status IN ('pending', 'ready', 'running', 'waiting')) THEN
        RETURN v_task;
    END IF;
    SELECT string_agg(s.output, E'\n\n' ORDER BY s.position) INTO v_result
    FROM steps s
    WHERE s.task_id = p_task AND s.status = 'completed'
      AND NOT EXISTS (SELECT 1 FROM steps d WHERE d.task_id = p_task AND s.id = ANY(d.depends_on));
    SELECT string_agg(format('step %s (%s) failed after %s attempt(s): %s', s.title, s.id, s.attempt, s.error), '; '
                      ORDER BY s.position)
      INTO v_error
    FROM steps s WHERE s.task_id = p_task AND s.status = 'failed';
    UPDATE tasks SET status = CASE WHEN v_result IS NULL THEN 'failed' ELSE 'partial' END,
           result = v_result, error = coalesce(v_error, 'no step could run'),
           required_action = NULL, completed_at = now(), updated_at = now()
    WHERE id = p_task AND status IN ('running', 'requires_action')
    RETURNING * INTO v_task;
    IF FOUND THEN
        INSERT INTO task_events (task_id, kind, data)
        VALUES (p_task, CASE v_task.status WHEN 'partial' THEN 'task_partial' ELSE 'task_failed' END,
                jsonb_build_object('error', v_task.error));
        PERFORM queue_task_webhook(v_task);
    END IF;
    RETURN v_task;
END
$$;


-- As in 20261121000022_partial_results.sql, for a task that requires action on another
-- branch as for a running one.
CREATE OR REPLACE FUNCTION complete_step(p_task uuid, p_step uuid, p_lease uuid, p_output text,
                                         p_roles text[], p_contents text[])
    RETURNS TABLE (completed boolean, ready uuid[], task_completed boolean, result text,
                   waiting_task uuid, waiting_priority text, task_status text)
    LANGUAGE plpgsql ROWS 1 AS $$
#variable_conflict use_column
DECLARE
    v_ready uuid[];
    v_task tasks;
    v_waiting tasks;
BEGIN
    -- The attempt's messages, in order; written whether or not the lease still holds, as
    -- they were when the worker wrote each one as it went.
    INSERT INTO task_messages (task_id, step_id, role, content)
    SELECT p_task, p_step, x.role, x.content
    FROM unnest(p_roles, p_contents) WITH ORDINALITY AS x(role, content, n)
    ORDER BY x.n;

    -- NO KEY UPDATE conflicts with itself (sibling completions serialise) but not with the
    -- KEY SHARE locks that foreign-key checks of event and message inserts take on the row.
    PERFORM 1 FROM tasks WHERE id = p_task FOR NO KEY UPDATE;

    WITH s AS (
        UPDATE steps SET status = 'completed', output = p_output, lease_owner = NULL, lease_token = NULL,
               lease_expires_at = NULL, completed_at = now(), updated_at = now(), checkpoint = NULL
        WHERE id = p_step AND status = 'running' AND lease_token = p_lease
        RETURNING id, task_id
    )
    INSERT INTO task_events (task_id, step_id, kind) SELECT task_id, id, 'step_completed' FROM s;
    IF NOT FOUND THEN
        RETURN QUERY SELECT false, '{}'::uuid[], false, NULL::text, NULL::uuid, NULL::text, NULL::text;
        RETURN;
    END IF;

    WITH r AS (
        UPDATE steps s SET status = 'ready', updated_at = now()
        WHERE s.task_id = p_task AND s.status = 'pending' AND p_step = ANY(s.depends_on)
          -- Each dependency by primary key, in a subquery the planner cannot flatten (see
          -- 20261121000008_commit_path.sql).
          AND NOT EXISTS (SELECT 1 FROM unnest(s.depends_on) AS dep(id)
                          WHERE (SELECT d.status FROM steps d WHERE d.id = dep.id) <> 'completed')
          AND EXISTS (SELECT 1 FROM tasks WHERE id = p_task AND status IN ('running', 'requires_action'))
        RETURNING s.id, s.task_id
    ), e AS (
        INSERT INTO task_events (task_id, step_id, kind) SELECT task_id, id, 'step_ready' FROM r
    )
    SELECT coalesce(array_agg(id), '{}') INTO v_ready FROM r;

    IF cardinality(v_ready) = 0 THEN
        -- The result is the output of the last step in plan order.
        UPDATE tasks SET status = 'completed', completed_at = now(), updated_at = now(),
               result = (SELECT output FROM steps WHERE task_id = p_task ORDER BY position DESC LIMIT 1)
        WHERE id = p_task AND status IN ('running', 'requires_action')
          AND NOT EXISTS (SELECT 1 FROM steps WHERE task_id = p_task AND status <> 'completed')
        RETURNING * INTO v_task;
        IF FOUND THEN
            INSERT INTO task_events (task_id, kind) VALUES (p_task, 'task_completed');
            PERFORM queue_task_webhook(v_task);
        ELSE
            -- Another branch failed: the task ends when nothing is left to run.
            v_task := end_settled_task(p_task);
        END IF;
        IF v_task.id IS NOT NULL THEN
            -- The user's oldest task waiting for capacity, for the caller to wake: asked here
            -- rather than in a statement of its own after every task's end.
            SELECT * INTO v_waiting FROM tasks w
             WHERE w.user_id = v_task.user_id AND w.status = 'pending' AND w.capacity_waits > 0
             ORDER BY w.created_at, w.id LIMIT 1;
        END IF;
    END IF;

    RETURN QUERY SELECT true, v_ready, v_task.id IS NOT NULL, v_task.result, v_waiting.id, v_waiting.priority,
                        v_task.status;
END
$$;
