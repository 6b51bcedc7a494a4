-- Worker names, version 6, SQLite flavour: the same as migrations/postgres/0006_worker_names.sql.
-- SQLite cannot change a CHECK constraint in place: the table is made again.

CREATE TABLE worker_v6 (
    id            TEXT PRIMARY KEY,
    hostname      TEXT NOT NULL,
    queues        TEXT NOT NULL CHECK (json_valid(queues)),
    concurrency   INTEGER NOT NULL CHECK (concurrency >= 1),
    state         TEXT NOT NULL CHECK (state IN ('running', 'stopping', 'stopped', 'lost')),
    started_at    TEXT NOT NULL,
    heartbeat_at  TEXT NOT NULL,
    pid           INTEGER
) STRICT;

INSERT INTO worker_v6 (id, hostname, queues, concurrency, state, started_at, heartbeat_at)
    SELECT id, hostname, queues, concurrency, state, started_at, heartbeat_at FROM worker;

DROP TABLE worker;

ALTER TABLE worker_v6 RENAME TO worker;
