-- Web UI sessions, version 2, SQLite flavour: the same as migrations/postgres/0002_sessions.sql
-- (its comments explain the columns), with the type differences of 0001_initial.sql.

CREATE TABLE session (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    token_hash  TEXT NOT NULL UNIQUE,
    user_id     INTEGER NOT NULL REFERENCES "user" (id) ON DELETE CASCADE,
    csrf_token  TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    expires_at  TEXT NOT NULL,
    CHECK (created_at <= expires_at)
) STRICT;

CREATE INDEX session_user_id_idx ON session (user_id);
CREATE INDEX session_expires_at_idx ON session (expires_at);
