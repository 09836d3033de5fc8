-- The highest task priority a user's non-admin keys may ask for; NULL means `normal`, so
-- `high` (dispatched before everyone else's work) is granted per user by an operator
-- (`orchestrator users limits set alice --max-priority high`). Admin keys may always.
ALTER TABLE user_limits ADD COLUMN max_priority text
    CHECK (max_priority IS NULL OR max_priority IN ('normal', 'high'));

-- The key made from BOOTSTRAP_ADMIN_KEY, so that starting with another value revokes it. Such
-- a key is a password someone chose, not random bits: none of it is kept in clear, and the
-- prefix that earlier versions kept is blanked.
ALTER TABLE api_keys ADD COLUMN bootstrap boolean NOT NULL DEFAULT false;
UPDATE api_keys SET bootstrap = true, prefix = 'bootstrap'
WHERE user_id = 'admin' AND name = 'bootstrap' AND admin;
