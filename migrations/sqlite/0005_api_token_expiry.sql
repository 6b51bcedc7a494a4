-- API tokens, version 5, SQLite flavour: the same as migrations/postgres/0005_api_token_expiry.sql
-- (its comment explains the columns), with the type differences of 0001_initial.sql.

ALTER TABLE api_token ADD COLUMN name TEXT NOT NULL DEFAULT '';
ALTER TABLE api_token ADD COLUMN expires_at TEXT;
ALTER TABLE api_token ADD COLUMN revoked_at TEXT;
