-- A task's planning claim in one round trip (issue 13). It was a transaction of six
-- statements under the per-user cap (BEGIN, read the user and their cap, the advisory lock,
-- the count, the claim, COMMIT) and of four without it. As one function it keeps the same
-- guarantee: a volatile PL/pgSQL function takes a fresh snapshot for each statement, so the
-- count made after the lock sees every claim committed by whoever held it before, and the
-- transaction-level lock is held until the call's implicit transaction commits.
--
-- p_default_cap: the cap of a user without one of their own (0: none); NULL claims with no
-- cap at all (the uncapped claim). Outcomes:
--   claimed        pending → planning, or a planning whose lease expired taken over;
--                  an attempt is counted and `task_planning` written
--   exhausted      a planning whose lease expired with no attempt left: the task failed
--                  with `attempts_exhausted` (`task_failed`, its webhook queued)
--   at_capacity    the user is at their cap: the task is marked waiting (the first wait
--                  writes `waiting_for_capacity`) and keeps no job
--   not_claimable  the task is not waiting for a plan
--   unknown        there is no such task
CREATE FUNCTION claim_planning(p_task uuid, p_owner text, p_token uuid, p_secs float8, p_default_cap integer,
                               p_default_attempts integer, p_exhausted text)
    RETURNS TABLE (outcome text, user_id text, description text, priority text, max_attempts integer,
                   use_plan_cache boolean, agent_hints text[])
    LANGUAGE plpgsql ROWS 1 AS $$
#variable_conflict use_column
DECLARE
    v_user text;
    v_pending boolean;
    v_abandoned boolean;
    v_own_cap integer;
    v_cap bigint;
    v_active bigint;
    v_claimed tasks;
    v_failed tasks;
BEGIN
    SELECT t.user_id, t.status = 'pending', t.status = 'planning' AND t.lease_expires_at < now(),
           l.max_running_tasks
      INTO v_user, v_pending, v_abandoned, v_own_cap
      FROM tasks t LEFT JOIN user_limits l ON l.user_id = t.user_id
     WHERE t.id = p_task;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'unknown', NULL::text, NULL::text, NULL::text, NULL::integer, NULL::boolean, NULL::text[];
        RETURN;
    END IF;
    IF NOT v_pending AND NOT coalesce(v_abandoned, false) THEN
        RETURN QUERY SELECT 'not_claimable', v_user, NULL::text, NULL::text, NULL::integer, NULL::boolean, NULL::text[];
        RETURN;
    END IF;

    -- A planning taken over from a dead worker is counted already: no new slot.
    v_cap := CASE WHEN p_default_cap IS NULL THEN 0 ELSE coalesce(v_own_cap, p_default_cap) END;
    IF v_cap > 0 AND v_pending THEN
        -- Two workers claiming two tasks of one user serialise here ("caps" keys the lock
        -- space, apart from any other use of advisory locks on the database).
        PERFORM pg_advisory_xact_lock(x'63617073'::integer, hashtext(v_user));
        SELECT count(*) INTO v_active FROM tasks WHERE user_id = v_user AND status IN ('planning', 'running');
        IF v_active >= v_cap THEN
            -- Touches `updated_at`, so the reconciler, which only takes up waiting tasks whose
            -- user is below the cap, also waits `RECONCILE_MIN_AGE_MS` before doing so.
            WITH w AS (
                UPDATE tasks SET capacity_waits = capacity_waits + 1, updated_at = now()
                WHERE id = p_task AND status = 'pending'
                RETURNING id
            )
            INSERT INTO task_events (task_id, kind, data)
            SELECT w.id, 'waiting_for_capacity', jsonb_build_object('running', v_active, 'max_running_tasks', v_cap)
            FROM w
            WHERE NOT EXISTS (SELECT 1 FROM task_events e WHERE e.task_id = p_task AND e.kind = 'waiting_for_capacity');
            RETURN QUERY SELECT 'at_capacity', v_user, NULL::text, NULL::text, NULL::integer, NULL::boolean, NULL::text[];
            RETURN;
        END IF;
    END IF;

    -- Every claim counts a planning attempt; a takeover with none left fails the task instead.
    -- The two updates match disjoint rows, so at most one of them writes.
    UPDATE tasks SET status = 'planning', lease_owner = p_owner, lease_token = p_token,
           lease_expires_at = now() + make_interval(secs => p_secs), plan_attempts = plan_attempts + 1,
           started_at = coalesce(started_at, now()), updated_at = now()
     WHERE id = p_task AND (status = 'pending'
                            OR (status = 'planning' AND lease_expires_at < now()
                                AND plan_attempts < coalesce(max_attempts, p_default_attempts)))
    RETURNING * INTO v_claimed;
    IF FOUND THEN
        INSERT INTO task_events (task_id, kind, data) VALUES (p_task, 'task_planning', '{}'::jsonb);
        RETURN QUERY SELECT 'claimed', v_user, v_claimed.description, v_claimed.priority, v_claimed.max_attempts,
                            v_claimed.use_plan_cache, v_claimed.agent_hints;
        RETURN;
    END IF;

    UPDATE tasks SET status = 'failed', error = p_exhausted, error_code = 'attempts_exhausted', lease_owner = NULL,
           lease_token = NULL, lease_expires_at = NULL, completed_at = now(), updated_at = now()
     WHERE id = p_task AND status = 'planning' AND lease_expires_at < now()
       AND plan_attempts >= coalesce(max_attempts, p_default_attempts)
    RETURNING * INTO v_failed;
    IF FOUND THEN
        INSERT INTO task_events (task_id, kind, data)
        VALUES (p_task, 'task_failed', jsonb_build_object('error', p_exhausted, 'code', 'attempts_exhausted'));
        PERFORM queue_task_webhook(v_failed);
        RETURN QUERY SELECT 'exhausted', v_user, NULL::text, NULL::text, NULL::integer, NULL::boolean, NULL::text[];
        RETURN;
    END IF;

    RETURN QUERY SELECT 'not_claimable', v_user, NULL::text, NULL::text, NULL::integer, NULL::boolean, NULL::text[];
END
$$;
