-- Resumable steps (issue 14): the agent loop's checkpoint, written with every model call and
-- tool call it records (in the same statement, fenced by the step's lease), and read by the
-- claim, so an attempt that takes a step over continues from it instead of starting again.
-- A completed step's checkpoint has served its purpose (its messages are in task_messages):
-- complete_step clears it. Otherwise complete_step is as in
-- 20261121000018_complete_step_names_the_waiting.sql.
ALTER TABLE steps ADD COLUMN checkpoint jsonb;

CREATE OR REPLACE FUNCTION complete_step(p_task uuid, p_step uuid, p_lease uuid, p_output text,
                                         p_roles text[], p_contents text[])
    RETURNS TABLE (completed boolean, ready uuid[], task_completed boolean, result text,
                   waiting_task uuid, waiting_priority text)
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
        RETURN QUERY SELECT false, '{}'::uuid[], false, NULL::text, NULL::uuid, NULL::text;
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
            -- The user's oldest task waiting for capacity, for the caller to wake: asked here
            -- rather than in a statement of its own after every task's end.
            SELECT * INTO v_waiting FROM tasks w
             WHERE w.user_id = v_task.user_id AND w.status = 'pending' AND w.capacity_waits > 0
             ORDER BY w.created_at, w.id LIMIT 1;
        END IF;
    END IF;

    RETURN QUERY SELECT true, v_ready, v_task.id IS NOT NULL, v_task.result, v_waiting.id, v_waiting.priority;
END
$$;
