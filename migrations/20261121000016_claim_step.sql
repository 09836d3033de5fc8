-- A step's claim, one step at a time by primary key (issue 13). The batched claim was one
-- `UPDATE steps … FROM unnest(…) j, tasks t`, and on a young database (no statistics yet, or
-- stale ones) the planner started from the running tasks and scanned every unfinished step
-- for each (`steps_unfinished`): 3.1 ms per batch against 0.4 ms by key, on 78 of 106 batches
-- of a benchmark run. Called once per step inside one statement (see
-- api/src/store/postgres/steps.rs), each call can only look the step up by its key and its
-- task by its key, whatever the statistics say.
--
-- Which steps may be claimed: a ready one whose backoff is over, or a takeover of one whose
-- lease expired with an attempt left (with none left, the caller fails it). Its task must be
-- running. A claim charges an attempt, takes the lease and writes `step_started`.
CREATE FUNCTION claim_step(p_step uuid, p_owner text, p_token uuid, p_secs float8, p_tag text)
    RETURNS TABLE (id uuid, task_id uuid, title text, instruction text, agent text, depends_on uuid[],
                   attempt integer, max_attempts integer, lease_token uuid)
    LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH c AS (
        UPDATE steps s SET status = 'running', attempt = s.attempt + 1, lease_owner = p_owner,
               lease_token = p_token, lease_expires_at = now() + make_interval(secs => p_secs), not_before = NULL,
               started_at = coalesce(s.started_at, now()), updated_at = now()
        WHERE s.id = p_step
          AND ((s.status = 'ready' AND (s.not_before IS NULL OR s.not_before <= now()))
               OR (s.status = 'running' AND s.lease_expires_at < now() AND s.attempt < s.max_attempts))
          AND (SELECT t.status FROM tasks t WHERE t.id = s.task_id) = 'running'
        RETURNING s.id, s.task_id, s.title, s.instruction, s.agent, s.depends_on, s.attempt, s.max_attempts,
                  s.lease_token
    ), e AS (
        INSERT INTO task_events (task_id, step_id, kind, data)
        SELECT c.task_id, c.id, 'step_started', jsonb_build_object('attempt', c.attempt, 'worker', p_tag) FROM c
    )
    SELECT c.id, c.task_id, c.title, c.instruction, c.agent, c.depends_on, c.attempt, c.max_attempts, c.lease_token
    FROM c;
END
$$;
