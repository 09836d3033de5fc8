-- Follow-ups (issue 15): `POST /tasks/{id}/follow-ups` creates a task that continues an ended
-- one. `parent_task_id` is the task it follows up; `thread_id` is the first task of the thread
-- (the parent's thread).
--
-- A task that starts a thread (every task of `POST /tasks`, and every task created before this
-- migration) stores NULL in both: its thread is itself, and the API answers
-- `thread_id = coalesce(thread_id, id)`. So the existing rows are valid as they are and need no
-- rewrite, and the hot path (`POST /tasks`, thousands a second) writes no extra index entry:
-- only follow-ups enter the partial index below.
--
-- No foreign keys, as for the append-only logs (migration 14): the handler checks that the
-- parent exists and that the caller may see it, nothing deletes tasks, and a foreign key would
-- queue a trigger event for every inserted task, root tasks included.
ALTER TABLE tasks ADD COLUMN parent_task_id uuid,
                  ADD COLUMN thread_id uuid;
-- A follow-up has both, a thread's first task neither. Every existing row has neither, so the
-- check is not validated against them (a scan of the whole table for nothing).
ALTER TABLE tasks ADD CONSTRAINT tasks_thread_shape
    CHECK ((parent_task_id IS NULL) = (thread_id IS NULL) AND thread_id IS DISTINCT FROM id) NOT VALID;

-- `GET /tasks?thread_id=` reads the thread's root by primary key and its follow-ups from here,
-- in the list's order (newest first).
CREATE INDEX tasks_thread ON tasks (thread_id, created_at DESC, id DESC) WHERE thread_id IS NOT NULL;
