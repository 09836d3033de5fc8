-- Webhooks: a task may name a callback URL; when it ends, its summary is POSTed there.
--
-- The outbox is `webhook_deliveries`: one row per (task, event), written by a trigger in the
-- very transaction that ends the task, whichever code path ends it (a completed last step,
-- a failed planning or step, a cancellation). So no ending is ever missed and none is
-- enqueued twice. Senders in the workers claim due rows with FOR UPDATE SKIP LOCKED and a
-- lease (see api/src/webhooks); every attempt they make is a `webhook_attempts` row.

ALTER TABLE tasks ADD COLUMN callback_url text
    CHECK (callback_url IS NULL OR length(callback_url) BETWEEN 1 AND 2000);

CREATE TABLE webhook_deliveries (
    -- Also the `Webhook-Id` header and the payload's `delivery_id`: stable across retries,
    -- so receivers can drop a delivery they already processed.
    id              uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    task_id         uuid        NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    event           text        NOT NULL CHECK (event IN ('task.completed', 'task.failed', 'task.cancelled')),
    url             text        NOT NULL,
    -- The task summary as it was when the task ended; every attempt sends the same body.
    payload         jsonb       NOT NULL,
    status          text        NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    -- Attempts started; a claim counts one before sending.
    attempts        integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    -- When a pending row is due: the next retry, or the end of the current claim's lease.
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    -- The current claim; the sender's final write is fenced by it.
    lease_token     uuid,
    last_status     integer,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    UNIQUE (task_id, event)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';

CREATE TABLE webhook_attempts (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    delivery_id uuid        NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    attempt     integer     NOT NULL CHECK (attempt >= 1),
    -- The receiver's answer, or why there was none (refused address, timeout, connection).
    http_status integer,
    error       text,
    latency_ms  double precision NOT NULL CHECK (latency_ms >= 0),
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (delivery_id, attempt),
    CHECK (http_status IS NOT NULL OR error IS NOT NULL)
);

CREATE FUNCTION enqueue_task_webhook() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    -- Prefixed: plpgsql would confuse a variable named like a column in ON CONFLICT.
    v_delivery uuid := gen_random_uuid();
    v_event    text := 'task.' || NEW.status;
BEGIN
    INSERT INTO webhook_deliveries (id, task_id, event, url, payload)
    VALUES (v_delivery, NEW.id, v_event, NEW.callback_url, jsonb_build_object(
        'delivery_id', v_delivery,
        'type', v_event,
        'task_id', NEW.id,
        'user_id', NEW.user_id,
        'status', NEW.status,
        'result', NEW.result,
        'error', NEW.error,
        'tokens_in', NEW.tokens_in,
        'tokens_out', NEW.tokens_out,
        'cost_usd', NEW.cost_usd,
        -- RFC 3339 in UTC whatever the session's time zone.
        'completed_at', to_char(NEW.completed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')))
    ON CONFLICT (task_id, event) DO NOTHING;
    RETURN NULL;
END
$$;

-- `UPDATE OF status` and the WHEN clause keep the trigger off the hot path: cost updates and
-- non-terminal transitions never call the function.
CREATE TRIGGER tasks_enqueue_webhook AFTER UPDATE OF status ON tasks FOR EACH ROW
    WHEN (NEW.status IN ('completed', 'failed', 'cancelled')
          AND OLD.status IS DISTINCT FROM NEW.status
          AND NEW.callback_url IS NOT NULL)
    EXECUTE FUNCTION enqueue_task_webhook();
