-- The webhook outbox is written by the transitions that end a task, in their own statements,
-- no longer by a trigger on `tasks` (issue 13): every consequence of a transition is listed
-- in the lifecycle table (api/src/lifecycle/table.rs, `Write::QueueWebhook`) and performed by
-- the statement that performs the transition, so none of them hides in a trigger.
DROP TRIGGER tasks_enqueue_webhook ON tasks;
DROP FUNCTION enqueue_task_webhook();

-- Queues the delivery of an ended task's webhook, when it has a `callback_url`: one row per
-- (task, event, run), so a retried task that ends again is reported again. The payload is as
-- in 20261121000010_poison_work.sql. Callers pass the task row as their update returned it
-- (`RETURNING tasks.*`), so the payload shows the state the transition wrote.
CREATE FUNCTION queue_task_webhook(t tasks) RETURNS void LANGUAGE sql AS $$
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
    WHERE t.callback_url IS NOT NULL AND t.status IN ('completed', 'failed', 'cancelled')
    ON CONFLICT (task_id, event, run) DO NOTHING
$$;

-- As in 20261121000008_commit_path.sql, plus the webhook of the task it completes.
CREATE OR REPLACE FUNCTION complete_step(p_task uuid, p_step uuid, p_lease uuid, p_output text,
                                         p_roles text[], p_contents text[])
    RETURNS TABLE (completed boolean, ready uuid[], task_completed boolean, result text)
    LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_ready uuid[];
    v_task tasks;
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
               lease_expires_at = NULL, completed_at = now(), updated_at = now()
        WHERE id = p_step AND status = 'running' AND lease_token = p_lease
        RETURNING id, task_id
    )
    INSERT INTO task_events (task_id, step_id, kind) SELECT task_id, id, 'step_completed' FROM s;
    IF NOT FOUND THEN
        RETURN QUERY SELECT false, '{}'::uuid[], false, NULL::text;
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
        END IF;
    END IF;

    RETURN QUERY SELECT true, v_ready, v_task.id IS NOT NULL, v_task.result;
END
$$;
