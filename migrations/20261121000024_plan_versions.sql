-- The plan as a versioned resource, and replanning (issue 15, part 2).
--
-- Every plan a task gets is recorded as a version: the planner's first plan (version 1,
-- written by the statement that saves it), each revision a replan makes after a step failed
-- for good, and each edit a user makes. A version holds the whole plan as saved (its steps
-- with their ids, so events and costs that name a step can be traced to it), who made it (the
-- planner's name, or `user:<id>`) and why (the failure a replan answers). Like the other
-- append-only logs (20261121000014), it has no foreign key: only the statements that move the
-- task write it, and nothing deletes tasks.
CREATE TABLE plan_versions (
    task_id    uuid        NOT NULL,
    version    integer     NOT NULL CHECK (version >= 1),
    -- [{id, position, title, instruction, agent, depends_on: [step id], max_attempts, required}]
    steps      jsonb       NOT NULL CHECK (jsonb_typeof(steps) = 'array'),
    created_by text        NOT NULL,
    reason     text,
    -- The steps of the version before that this one replaced, as they ended then (their
    -- status, agent and error): what a replan learnt from.
    replaced   jsonb       NOT NULL DEFAULT '[]'::jsonb CHECK (jsonb_typeof(replaced) = 'array'),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (task_id, version)
);

-- Replanning. `replan` and `max_replans` are the task's (its request's, or the deployment's
-- REPLAN_ON_FAILURE when the request says nothing), fixed at submission. `replans` counts the
-- revised plans saved; `replan_reason` is set while a replan is owed (the task is pending
-- again for its plan job) and names the failure it answers.
ALTER TABLE tasks ADD COLUMN replan boolean NOT NULL DEFAULT false,
                  ADD COLUMN max_replans integer NOT NULL DEFAULT 2 CHECK (max_replans BETWEEN 0 AND 5),
                  ADD COLUMN replans integer NOT NULL DEFAULT 0 CHECK (replans >= 0),
                  ADD COLUMN replan_reason text;

-- A task may start paused (`start: paused`): once planned it waits in `requires_action`
-- (`plan_approval`) with no step ready, its plan may be edited (PUT /tasks/{id}/plan, each
-- edit a version), and POST /tasks/{id}/start runs it.
ALTER TABLE tasks ADD COLUMN start_mode text NOT NULL DEFAULT 'running' CHECK (start_mode IN ('running', 'paused'));

-- A task none of whose steps can run any more either ends (`partial` or `failed`, as
-- 20261121000022 decides) or, when a step failed, the task replans and has replans left, goes
-- back to `pending` for its plan job, which makes a revised plan for the work that did not
-- complete. The decision is taken here, where both callers (a step failing for good, a step
-- completing after another branch failed) already hold the task's row, so a failure leads to
-- one replan or one end, never both. The ending itself is the earlier function (as
-- 20261121000023 left it), kept under another name, so whatever it decides stays in one place.
ALTER FUNCTION end_settled_task(uuid) RENAME TO end_settled_task_without_replan;

CREATE FUNCTION end_settled_task(p_task uuid) RETURNS tasks LANGUAGE plpgsql AS $$
DECLARE
    v_task tasks;
    v_reason text;
BEGIN
    -- Only a task none of whose steps can run or wait any more is settled (whatever state a
    -- step that can still move is in).
    IF NOT EXISTS (SELECT 1 FROM steps WHERE task_id = p_task
                                         AND status NOT IN ('completed', 'failed', 'skipped', 'cancelled')) THEN
        SELECT string_agg(format('step %s (%s) failed after %s attempt(s): %s', s.title, s.id, s.attempt, s.error),
                          '; ' ORDER BY s.position)
          INTO v_reason
        FROM steps s WHERE s.task_id = p_task AND s.status = 'failed';
        IF v_reason IS NOT NULL THEN
            -- A fresh planning allowance, as a retry gives: the replan is planning of its own.
            UPDATE tasks SET status = 'pending', required_action = NULL, replan_reason = v_reason, plan_attempts = 0,
                   updated_at = now()
            WHERE id = p_task AND status IN ('running', 'requires_action') AND replan AND replans < max_replans
            RETURNING * INTO v_task;
            IF FOUND THEN
                INSERT INTO task_events (task_id, kind, data)
                VALUES (p_task, 'task_replanning',
                        jsonb_build_object('reason', v_reason, 'replan', v_task.replans + 1,
                                           'max_replans', v_task.max_replans));
                RETURN v_task;
            END IF;
        END IF;
    END IF;
    RETURN end_settled_task_without_replan(p_task);
END
$$;

-- A replan that found no revised plan (the planner saw no other way, or failed): the task
-- ends as it would have without replanning, fenced by the planning lease. Returns the status
-- it ended in; NULL when the lease was lost.
CREATE FUNCTION end_unreplanned_task(p_task uuid, p_lease uuid) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    v_task tasks;
BEGIN
    UPDATE tasks SET status = 'running', lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL,
           replan_reason = NULL, updated_at = now()
    WHERE id = p_task AND status = 'planning' AND lease_token = p_lease;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    v_task := end_settled_task_without_replan(p_task);
    RETURN v_task.status;
END
$$;
