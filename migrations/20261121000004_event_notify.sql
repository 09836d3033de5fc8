-- Live events (GET /tasks/{id}/events): a wake-up per insert, and a commit-safe order.

-- The transaction that wrote each event. Sequence ids are taken before commit, so a row with a
-- lower id can become visible after one with a higher id; a reader that only moved forward by id
-- would skip it. Streams instead read in (xact_id, id) order and only rows of transactions older
-- than every transaction still running (pg_snapshot_xmin), which no later commit can precede.
-- Existing rows all get this migration's transaction id and keep their id order.
ALTER TABLE task_events ADD COLUMN xact_id xid8 NOT NULL DEFAULT pg_current_xact_id();

-- One notification per task per statement, `<task id>:<highest new event id>`, delivered at
-- commit. It is only a wake-up: listeners read the rows themselves, so a lost or merged
-- notification loses nothing.
CREATE FUNCTION notify_task_events() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('task_events', task_id::text || ':' || max(id)) FROM new_rows GROUP BY task_id;
    RETURN NULL;
END
$$;

CREATE TRIGGER task_events_notify AFTER INSERT ON task_events REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION notify_task_events();
