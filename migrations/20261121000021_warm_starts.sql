-- Warm starts (issue 14): a task may ask to start each step from what the same work's last
-- run left (kept in Redis by the task hash), and a tool call answered from that run's result
-- is recorded as `cached`. The old check held 'ok', 'error' and 'rejected'; every existing
-- row satisfies the new one, so it is not re-validated (the table is a large log).
ALTER TABLE tasks ADD COLUMN warm_start boolean NOT NULL DEFAULT false;

ALTER TABLE tool_calls DROP CONSTRAINT tool_calls_status_check;
ALTER TABLE tool_calls ADD CONSTRAINT tool_calls_status_check
    CHECK (status IN ('ok', 'error', 'rejected', 'cached')) NOT VALID;
