-- Long-term memory support (memory/src/long_term).

-- Identifies this database to the FAISS snapshots each process keeps on disk: a snapshot records
-- the store_id it mirrors, so one written against another database (a reused data directory, a
-- recreated database) is never loaded in place of a rebuild.
CREATE TABLE memory_store (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    store_id  uuid    NOT NULL DEFAULT gen_random_uuid()
);
INSERT INTO memory_store DEFAULT VALUES;

-- Catch-up: every process polls for deletions made by the others since its last poll.
CREATE INDEX memory_items_deleted_at ON memory_items (deleted_at) WHERE deleted_at IS NOT NULL;

-- Exact search fallback and metadata filters (`metadata @> $filter`) without scanning an owner's rows.
CREATE INDEX memory_items_metadata ON memory_items USING gin (metadata jsonb_path_ops) WHERE deleted_at IS NULL;
