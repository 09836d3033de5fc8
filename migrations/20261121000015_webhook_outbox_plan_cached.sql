-- `queue_task_webhook` was a SQL-language function. Those are not inlined when they return
-- void or are called from PL/pgSQL, so Postgres parsed and planned its body again on every
-- call: 0.77 ms per ended task (pg_stat_statements, issue 13), though most tasks have no
-- callback and the insert writes nothing. As PL/pgSQL its plan is cached per connection,
-- and a task without a callback costs one test.
CREATE OR REPLACE FUNCTION queue_task_webhook(t tasks) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF t.callback_url IS NULL OR t.status NOT IN ('completed', 'failed', 'cancelled') THEN
        RETURN;
    END IF;
    INSERT INTO webhook_deliveries (id, task_id, event, run, url, payload)
    SELECT d.id, t.id, 'task.' || t.status, t.run, t.callback_url, jsonb_build_object(
        'delivery_id', d.id,
        'type', 'task.' || t.status,
        'task_id', t.id,
        'user_id', t.user_id,
        'status', t.status,
        'run', t.run,
        'result', t.result,
        'error', t.error,
        'error_code', t.error_code,
        'tokens_in', t.tokens_in,
        'tokens_out', t.tokens_out,
        'cost_usd', t.cost_usd,
        'completed_at', to_char(t.completed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))
    FROM (SELECT gen_random_uuid() AS id) d
    ON CONFLICT (task_id, event, run) DO NOTHING;
END
$$;
