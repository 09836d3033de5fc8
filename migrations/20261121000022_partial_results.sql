-- Partial results (issue 14): a step that fails for good skips only the steps that depend on
-- it, and independent branches run to the end. A task ends when none of its steps can run
-- any more: `completed` when every step completed, `partial` when some failed or were skipped
-- but a step nothing depends on (a result) completed, `failed` otherwise (the final step, or
-- every branch, failed). A partial task's result is the outputs of its completed final steps
-- in plan order; its error names each failed step.

ALTER TABLE tasks DROP CONSTRAINT tasks_status_check;
ALTER TABLE tasks ADD CONSTRAINT tasks_status_check
    CHECK (status IN ('pending', 'planning', 'running', 'completed', 'failed', 'cancelled', 'partial'));
ALTER TABLE tasks DROP CONSTRAINT tasks_error_code_check;
ALTER TABLE tasks ADD CONSTRAINT tasks_error_code_check
    CHECK (error_code IS NULL OR error_code IN ('budget_exceeded', 'attempts_exhausted', 'dead_lettered',
                                                'required_step_failed'));
-- A plan may mark a step required: its failure fails the task at once, as every failure did.
ALTER TABLE steps ADD COLUMN required boolean NOT NULL DEFAULT false;
ALTER TABLE webhook_deliveries DROP CONSTRAINT webhook_deliveries_event_check;
ALTER TABLE webhook_deliveries ADD CONSTRAINT webhook_deliveries_event_check
    CHECK (event IN ('task.completed', 'task.failed', 'task.cancelled', 'task.partial'));

CREATE OR REPLACE FUNCTION queue_task_webhook(t tasks) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF t.callback_url IS NULL OR t.status NOT IN ('completed', 'failed', 'cancelled', 'partial') THEN
        RETURN;
    END IF;
    INSERT INTO webhook_deliveries (id, task_id, event, run, url, payload)
    SELECT d.id, t.id, 'task.' || t.status, t.run, t.callback_url, jsonb_build_object(
        'delivery_id', d.id,
        'type', 'task.' || t.status,
        'task_id', t.id,
        'user_id', t.user_id,
        'status', t.status,
        'run', t.run,
        'result', t.result,
        'error', t.error,
        'error_code', t.error_code,
        'tokens_in', t.tokens_in,
        'tokens_out', t.tokens_out,
        'cost_usd', t.cost_usd,
        'completed_at', to_char(t.completed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))
    FROM (SELECT gen_random_uuid() AS id) d
    ON CONFLICT (task_id, event, run) DO NOTHING;
END
$$;

-- Ends a running task none of whose steps can run any more (the caller holds the task's row
-- and has just failed or completed the last one that could): `partial` or `failed`, as above,
-- with its event and webhook. Returns the ended task; NULL fields when it did not end.
CREATE FUNCTION end_settled_task(p_task uuid) RETURNS tasks LANGUAGE plpgsql AS $$
DECLARE
    v_task tasks;
    v_result text;
    v_error text;
BEGIN
    IF EXISTS (SELECT 1 FROM steps WHERE task_id = p_task AND status IN ('pending', 'ready', 'running')) THEN
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
           completed_at = now(), updated_at = now()
    WHERE id = p_task AND status = 'running'
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

-- complete_step ends a task whose other branches failed (above) and answers the status the
-- task ended in; it also clears the completed step's checkpoint (20261121000019). Otherwise
-- as in 20261121000018_complete_step_names_the_waiting.sql.
DROP FUNCTION complete_step(uuid, uuid, uuid, text, text[], text[]);

CREATE FUNCTION complete_step(p_task uuid, p_step uuid, p_lease uuid, p_output text,
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
          AND EXISTS (SELECT 1 FROM tasks WHERE id = p_task AND status = 'running')
        RETURNING s.id, s.task_id
    ), e AS (
        INSERT INTO task_events (task_id, step_id, kind) SELECT task_id, id, 'step_ready' FROM r
    )
    SELECT coalesce(array_agg(id), '{}') INTO v_ready FROM r;

    IF cardinality(v_ready) = 0 THEN
        -- The result is the output of the last step in plan order.
        UPDATE tasks SET status = 'completed', completed_at = now(), updated_at = now(),
               result = (SELECT output FROM steps WHERE task_id = p_task ORDER BY position DESC LIMIT 1)
        WHERE id = p_task AND status = 'running'
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
