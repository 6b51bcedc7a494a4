-- Variables and connections, version 8 (issue 18): Airflow's key/value store and its
-- connections. A secret variable's value, and a connection's password and extra, are stored
-- sealed (`v1:<key id>:...`, `updraft_core::seal`), never in clear.

CREATE TABLE variable (
    key          TEXT PRIMARY KEY,
    value        TEXT NOT NULL,
    is_secret    BOOLEAN NOT NULL,
    description  TEXT NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL
);

CREATE TABLE connection (
    conn_id      TEXT PRIMARY KEY,
    conn_type    TEXT NOT NULL,
    host         TEXT,
    port         INTEGER,
    login        TEXT,
    password     TEXT,
    schema       TEXT,
    extra        TEXT,
    description  TEXT NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL
);
