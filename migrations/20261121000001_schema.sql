-- The whole schema of DESIGN.md. States are CHECK-constrained text columns; the Rust enums in
-- api/src/domain.rs are the only place that maps them, so the two must change together.

CREATE TABLE tasks (
    id               uuid PRIMARY KEY,
    user_id          text        NOT NULL CHECK (length(user_id) BETWEEN 1 AND 200),
    description      text        NOT NULL,
    metadata         jsonb       NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(metadata) = 'object'),
    status           text        NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'planning', 'running', 'completed', 'failed', 'cancelled')),
    priority         text        NOT NULL DEFAULT 'normal' CHECK (priority IN ('high', 'normal', 'low')),
    idempotency_key  text,
    request_hash     text,
    max_cost_usd     double precision CHECK (max_cost_usd IS NULL OR max_cost_usd >= 0),
    max_tokens       bigint      CHECK (max_tokens IS NULL OR max_tokens >= 0),
    result           text,
    error            text,
    cost_usd         double precision NOT NULL DEFAULT 0,
    tokens_in        bigint      NOT NULL DEFAULT 0,
    tokens_out       bigint      NOT NULL DEFAULT 0,
    tokens_cached    bigint      NOT NULL DEFAULT 0,
    -- Planning holds a lease like a step does, so a plan job redelivered after its worker died
    -- can take the task over once the lease has expired.
    lease_owner      text,
    lease_token      uuid,
    lease_expires_at timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    completed_at     timestamptz,
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX tasks_idempotency ON tasks (user_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX tasks_user_created ON tasks (user_id, created_at DESC, id DESC);
CREATE INDEX tasks_unfinished ON tasks (status, created_at) WHERE status IN ('pending', 'planning', 'running');

CREATE TABLE steps (
    id               uuid PRIMARY KEY,
    task_id          uuid        NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    position         integer     NOT NULL CHECK (position >= 0),
    title            text        NOT NULL,
    instruction      text        NOT NULL,
    agent            text        NOT NULL,
    depends_on       uuid[]      NOT NULL DEFAULT '{}',
    status           text        NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'ready', 'running', 'completed', 'failed', 'skipped', 'cancelled')),
    attempt          integer     NOT NULL DEFAULT 0 CHECK (attempt >= 0),
    max_attempts     integer     NOT NULL DEFAULT 3 CHECK (max_attempts >= 1),
    lease_owner      text,
    lease_token      uuid,
    lease_expires_at timestamptz,
    output           text,
    error            text,
    cost_usd         double precision NOT NULL DEFAULT 0,
    tokens_in        bigint      NOT NULL DEFAULT 0,
    tokens_out       bigint      NOT NULL DEFAULT 0,
    tokens_cached    bigint      NOT NULL DEFAULT 0,
    created_at       timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    completed_at     timestamptz,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (task_id, position)
);
CREATE INDEX steps_unfinished ON steps (status, updated_at) WHERE status IN ('ready', 'running');

CREATE TABLE tool_calls (
    id          uuid PRIMARY KEY,
    task_id     uuid        NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    step_id     uuid        REFERENCES steps (id) ON DELETE CASCADE,
    tool        text        NOT NULL,
    arguments   jsonb       NOT NULL,
    result      jsonb,
    status      text        NOT NULL CHECK (status IN ('ok', 'error', 'rejected')),
    error       text,
    latency_ms  double precision NOT NULL DEFAULT 0,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX tool_calls_task ON tool_calls (task_id, created_at);

CREATE TABLE llm_calls (
    id                uuid PRIMARY KEY,
    task_id           uuid        NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    step_id           uuid        REFERENCES steps (id) ON DELETE CASCADE, -- NULL for planning
    provider          text        NOT NULL,
    model             text        NOT NULL,
    prompt_tokens     bigint      NOT NULL CHECK (prompt_tokens >= 0),
    completion_tokens bigint      NOT NULL CHECK (completion_tokens >= 0),
    cached_tokens     bigint      NOT NULL DEFAULT 0 CHECK (cached_tokens >= 0),
    cost_usd          double precision NOT NULL DEFAULT 0 CHECK (cost_usd >= 0),
    latency_ms        double precision NOT NULL DEFAULT 0,
    created_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX llm_calls_task ON llm_calls (task_id);
CREATE INDEX llm_calls_step ON llm_calls (step_id) WHERE step_id IS NOT NULL;

-- The id is also the vector's id in the FAISS index, hence a bigint sequence.
CREATE TABLE memory_items (
    id             bigserial PRIMARY KEY,
    owner          text        NOT NULL,
    namespace      text        NOT NULL DEFAULT 'default',
    content        text        NOT NULL,
    metadata       jsonb       NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(metadata) = 'object'),
    embedding      real[]      NOT NULL,
    embedder       text        NOT NULL,
    dimension      integer     NOT NULL CHECK (dimension > 0),
    source_task_id uuid        REFERENCES tasks (id) ON DELETE SET NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    deleted_at     timestamptz
);
CREATE INDEX memory_items_owner ON memory_items (owner, namespace) WHERE deleted_at IS NULL;

CREATE TABLE task_messages (
    id         bigserial PRIMARY KEY,
    task_id    uuid        NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    step_id    uuid        REFERENCES steps (id) ON DELETE CASCADE,
    role       text        NOT NULL CHECK (role IN ('system', 'user', 'assistant', 'tool', 'summary')),
    content    text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX task_messages_task ON task_messages (task_id, id);

-- Append-only: the SSE stream replays from here and the audit trail is read from here.
CREATE TABLE task_events (
    id         bigserial PRIMARY KEY,
    task_id    uuid        NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    step_id    uuid        REFERENCES steps (id) ON DELETE CASCADE,
    kind       text        NOT NULL,
    data       jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX task_events_task ON task_events (task_id, id);
