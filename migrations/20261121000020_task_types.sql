-- Task types and the task hash (issue 14): a short name the client gives the kind of work,
-- listed and filtered in GET /tasks, and what identifies the task's work (api/src/task_hash.rs).
-- Tasks created before have neither. No index: GET /tasks filters the user's tasks, which
-- their own index finds.
ALTER TABLE tasks ADD COLUMN task_type text CHECK (task_type ~ '^[a-z0-9][a-z0-9_.-]{0,63}$'),
                  ADD COLUMN task_hash text;
