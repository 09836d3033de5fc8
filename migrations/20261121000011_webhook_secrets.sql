-- Per-user webhook signing secrets (see api/src/webhooks/secrets.rs).
--
-- No secret is stored here: a user's secret is HMAC-SHA256(WEBHOOK_SERVER_KEY, user_id ||
-- nonce), so this table alone (a backup, a read replica, a leaked dump) signs nothing. The
-- nonce is random, so a rotation, or a user deleted and created again, never brings an old
-- secret back. A row is made the first time a user's secret is needed (shown or used to sign).
CREATE TABLE webhook_secrets (
    user_id        text        PRIMARY KEY,
    nonce          bytea       NOT NULL CHECK (length(nonce) = 32),
    -- The secret before the last rotation: it still signs, next to the current one, for
    -- 24 hours after `rotated_at`, so receivers can switch without dropping a delivery.
    previous_nonce bytea       CHECK (length(previous_nonce) = 32),
    rotated_at     timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now(),
    CHECK (previous_nonce IS NULL OR rotated_at IS NOT NULL)
);
