-- API keys. Only a SHA-256 of each key is kept: keys are 192 random bits, so a fast hash is
-- as safe as a slow one and lets every request be checked with one indexed lookup.
CREATE TABLE api_keys (
    id           uuid PRIMARY KEY,
    user_id      text        NOT NULL CHECK (length(user_id) BETWEEN 1 AND 200),
    name         text        NOT NULL DEFAULT '' CHECK (length(name) <= 200),
    -- The key's first characters, so a listing can tell keys apart without revealing them.
    prefix       text        NOT NULL,
    key_hash     bytea       NOT NULL UNIQUE CHECK (length(key_hash) = 32),
    admin        boolean     NOT NULL DEFAULT false,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at   timestamptz
);
CREATE INDEX api_keys_user ON api_keys (user_id, created_at);
