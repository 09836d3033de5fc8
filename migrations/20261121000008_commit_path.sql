-- The commit path of the hot transitions.
--
-- 1. Event wake-ups move out of the database: the application notifies after commit
-- (api/src/store/postgres/notify.rs).
--
-- A NOTIFY inside a transaction takes a database-wide lock when the transaction commits and
-- holds it until the commit record is flushed, so every transaction that wrote an event
-- (nearly every transition) committed one after another, one WAL flush each: measured here,
-- 16 clients inserting rows went from ~4 600 to ~420 commits/s once the insert notified.
-- Listeners read the rows themselves in (xact_id, id) order (migration event_notify), so the
-- order and completeness of event streams never depended on the notification.
DROP TRIGGER task_events_notify ON task_events;
DROP FUNCTION notify_task_events();

-- 2. A step's completion in one round trip. The statements are those the worker used to send one
-- by one inside a transaction (api/src/store/postgres/execution.rs, complete_step), in the same
-- order and with the same conditions: the task row is locked first, so sibling steps finishing
-- at the same moment serialise, and because a PL/pgSQL statement under READ COMMITTED takes a
-- fresh snapshot, the check for ready dependants sees every sibling that committed before the
-- lock was granted. The task row lock is now held for the server-side work only, not for four
-- client round trips. Apart from the attempt's messages, nothing is written unless the fenced
-- update matches.
CREATE FUNCTION complete_step(p_task uuid, p_step uuid, p_lease uuid, p_output text,
                              p_roles text[], p_contents text[])
    RETURNS TABLE (completed boolean, ready uuid[], task_completed boolean, result text)
    LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_ready uuid[];
    v_done boolean;
    v_result text;
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
          -- Each dependency by primary key, in a subquery the planner cannot flatten:
          -- `d.id = ANY(s.depends_on)` (or a join) got sequential scans of all steps while the
          -- table's statistics were stale. A missing dependency does not hold a step back,
          -- as before.
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
        WITH t AS (
            UPDATE tasks SET status = 'completed', completed_at = now(), updated_at = now(),
                   result = (SELECT output FROM steps WHERE task_id = p_task ORDER BY position DESC LIMIT 1)
            WHERE id = p_task AND status = 'running'
              AND NOT EXISTS (SELECT 1 FROM steps WHERE task_id = p_task AND status <> 'completed')
            RETURNING id, tasks.result
        ), e AS (
            INSERT INTO task_events (task_id, kind) SELECT id, 'task_completed' FROM t
        )
        SELECT true, t.result INTO v_done, v_result FROM t;
    END IF;

    RETURN QUERY SELECT true, v_ready, coalesce(v_done, false), v_result;
END
$$;
