-- The append-only logs (`task_events`, `task_messages`, `llm_calls`, `tool_calls`) lose their
-- foreign keys (issue 13). Every row is written by a statement that has just claimed, updated
-- or created the task and step it names, so the keys never caught anything; but each insert
-- paid for them with primary-key lookups of `tasks` and `steps` and a KEY SHARE lock on both
-- rows (a tuple write, and a MultiXact when siblings insert at once): on a four-step task,
-- some forty checks. Nothing deletes tasks or steps, so the cascades never ran either; a
-- future deletion of tasks must delete their log rows itself, in the store.
ALTER TABLE task_events DROP CONSTRAINT task_events_task_id_fkey;
ALTER TABLE task_events DROP CONSTRAINT task_events_step_id_fkey;
ALTER TABLE task_messages DROP CONSTRAINT task_messages_task_id_fkey;
ALTER TABLE task_messages DROP CONSTRAINT task_messages_step_id_fkey;
ALTER TABLE llm_calls DROP CONSTRAINT llm_calls_task_id_fkey;
ALTER TABLE llm_calls DROP CONSTRAINT llm_calls_step_id_fkey;
ALTER TABLE tool_calls DROP CONSTRAINT tool_calls_task_id_fkey;
ALTER TABLE tool_calls DROP CONSTRAINT tool_calls_step_id_fkey;
