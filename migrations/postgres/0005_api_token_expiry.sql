-- API tokens, version 5 (issue 16): a name to tell a user's tokens apart, an optional expiry,
-- and revocation one token at a time. A token past `expires_at`, or with `revoked_at` set, is
-- refused; a revoked row is kept so that listings show when it was revoked.

ALTER TABLE api_token ADD COLUMN name TEXT NOT NULL DEFAULT '';
ALTER TABLE api_token ADD COLUMN expires_at TIMESTAMPTZ;
ALTER TABLE api_token ADD COLUMN revoked_at TIMESTAMPTZ;
