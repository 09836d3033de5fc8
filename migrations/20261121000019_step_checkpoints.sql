-- Resumable steps (issue 14): the agent loop's checkpoint, written with every model call and
-- tool call it records (in the same statement, fenced by the step's lease), and read by the
-- claim, so an attempt that takes a step over continues from it instead of starting again.
-- A completed step's checkpoint has served its purpose (its messages are in task_messages):
-- complete_step clears it (20261121000022_partial_results.sql).
ALTER TABLE steps ADD COLUMN checkpoint jsonb;
