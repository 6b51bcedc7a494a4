-- Updraft's metadata schema, version 1 (DESIGN §7), SQLite flavour.
--
-- The same schema as migrations/postgres/0001_initial.sql (its comments explain the columns);
-- keep every table, column, constraint and index in step with it. Differences of type only:
--   times     TEXT in one fixed format, UTC with microseconds: 2024-01-31T02:00:00.000000Z
--             (written by updraft-metadata from chrono values, never by datetime('now')), so
--             text order is time order;
--   booleans  INTEGER 0/1;  JSON  TEXT holding valid JSON;  bytes  BLOB;
--   ids       INTEGER PRIMARY KEY AUTOINCREMENT (never reused, like an identity column).
-- Tables are STRICT, so a value of the wrong type is an error, not a silent conversion.

CREATE TABLE dag (
    dag_id                    TEXT PRIMARY KEY,
    fileloc                   TEXT NOT NULL,
    is_paused                 INTEGER NOT NULL CHECK (is_paused IN (0, 1)),
    is_active                 INTEGER NOT NULL CHECK (is_active IN (0, 1)),
    version_hash              TEXT NOT NULL,
    last_parsed_at            TEXT NOT NULL,
    owner                     TEXT NOT NULL,
    description               TEXT,
    tags                      TEXT NOT NULL CHECK (json_valid(tags)),
    schedule                  TEXT,
    timezone                  TEXT NOT NULL,
    max_active_runs           INTEGER NOT NULL CHECK (max_active_runs >= 1),
    max_active_tasks          INTEGER NOT NULL CHECK (max_active_tasks >= 1),
    next_logical_date         TEXT,
    next_data_interval_start  TEXT,
    next_data_interval_end    TEXT,
    next_run_after            TEXT,
    FOREIGN KEY (dag_id, version_hash)
        REFERENCES dag_version (dag_id, version_hash) DEFERRABLE INITIALLY DEFERRED,
    CHECK ((next_logical_date IS NULL) = (next_data_interval_start IS NULL)
       AND (next_logical_date IS NULL) = (next_data_interval_end IS NULL)
       AND (next_logical_date IS NULL) = (next_run_after IS NULL))
) STRICT;

CREATE TABLE dag_version (
    dag_id        TEXT NOT NULL REFERENCES dag (dag_id) ON DELETE CASCADE,
    version_hash  TEXT NOT NULL,
    serialized    TEXT NOT NULL CHECK (json_valid(serialized)),
    source        TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    PRIMARY KEY (dag_id, version_hash)
) STRICT;

CREATE TABLE backfill (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    dag_id        TEXT NOT NULL REFERENCES dag (dag_id) ON DELETE CASCADE,
    from_date     TEXT NOT NULL,
    to_date       TEXT NOT NULL,
    options       TEXT NOT NULL CHECK (json_valid(options)),
    state         TEXT NOT NULL CHECK (state IN ('running', 'paused', 'completed', 'cancelled')),
    created_by    TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    completed_at  TEXT,
    CHECK (from_date <= to_date)
) STRICT;

CREATE INDEX backfill_dag_id_idx ON backfill (dag_id, created_at DESC);

CREATE TABLE dag_run (
    id                   INTEGER PRIMARY KEY AUTOINCREMENT,
    dag_id               TEXT NOT NULL REFERENCES dag (dag_id) ON DELETE CASCADE,
    run_id               TEXT NOT NULL,
    run_type             TEXT NOT NULL CHECK (run_type IN ('scheduled', 'manual', 'backfill')),
    logical_date         TEXT NOT NULL,
    data_interval_start  TEXT NOT NULL,
    data_interval_end    TEXT NOT NULL,
    run_after            TEXT NOT NULL,
    state                TEXT NOT NULL CHECK (state IN ('queued', 'running', 'success', 'failed')),
    conf                 TEXT NOT NULL CHECK (json_valid(conf)),
    version_hash         TEXT NOT NULL,
    queued_at            TEXT,
    start_date           TEXT,
    end_date             TEXT,
    backfill_id          INTEGER REFERENCES backfill (id) ON DELETE SET NULL,
    UNIQUE (dag_id, run_id),
    FOREIGN KEY (dag_id, version_hash) REFERENCES dag_version (dag_id, version_hash),
    CHECK (data_interval_start <= data_interval_end)
) STRICT;

CREATE UNIQUE INDEX dag_run_dag_id_logical_date_key ON dag_run (dag_id, logical_date)
    WHERE run_type <> 'manual';
CREATE INDEX dag_run_dag_id_logical_date_idx ON dag_run (dag_id, logical_date DESC, id DESC);
CREATE INDEX dag_run_state_dag_id_idx ON dag_run (state, dag_id);
CREATE INDEX dag_run_backfill_id_idx ON dag_run (backfill_id) WHERE backfill_id IS NOT NULL;

CREATE TABLE task_instance (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    dag_run_id        INTEGER NOT NULL REFERENCES dag_run (id) ON DELETE CASCADE,
    dag_id            TEXT NOT NULL,
    run_id            TEXT NOT NULL,
    task_id           TEXT NOT NULL,
    state             TEXT NOT NULL CHECK (state IN ('none', 'scheduled', 'queued', 'running',
                          'success', 'failed', 'skipped', 'upstream_failed', 'up_for_retry',
                          'up_for_reschedule', 'removed')),
    try_number        INTEGER NOT NULL CHECK (try_number >= 0),
    max_tries         INTEGER NOT NULL CHECK (max_tries >= 0),
    pool              TEXT NOT NULL,
    pool_slots        INTEGER NOT NULL CHECK (pool_slots >= 1),
    queue             TEXT NOT NULL,
    priority_weight   INTEGER NOT NULL,
    queued_at         TEXT,
    start_date        TEXT,
    end_date          TEXT,
    next_retry_at     TEXT,
    worker_id         TEXT,
    hostname          TEXT,
    heartbeat_at      TEXT,
    rendered_command  TEXT CHECK (json_valid(rendered_command)),
    updated_at        TEXT NOT NULL,
    UNIQUE (dag_run_id, task_id)
) STRICT;

CREATE INDEX task_instance_queued_idx ON task_instance (queue, priority_weight DESC, queued_at, id)
    WHERE state = 'queued';
CREATE INDEX task_instance_state_dag_id_idx ON task_instance (state, dag_id);
CREATE INDEX task_instance_dag_id_task_id_idx ON task_instance (dag_id, task_id);

CREATE TABLE task_try (
    task_instance_id  INTEGER NOT NULL REFERENCES task_instance (id) ON DELETE CASCADE,
    try_number        INTEGER NOT NULL CHECK (try_number >= 1),
    state             TEXT NOT NULL CHECK (state IN ('none', 'scheduled', 'queued', 'running',
                          'success', 'failed', 'skipped', 'upstream_failed', 'up_for_retry',
                          'up_for_reschedule', 'removed')),
    worker_id         TEXT,
    hostname          TEXT,
    pid               INTEGER,
    start_date        TEXT NOT NULL,
    end_date          TEXT,
    exit_code         INTEGER,
    PRIMARY KEY (task_instance_id, try_number)
) STRICT;

CREATE TABLE task_log (
    task_instance_id  INTEGER NOT NULL,
    try_number        INTEGER NOT NULL,
    seq               INTEGER NOT NULL CHECK (seq >= 1),
    data              BLOB NOT NULL,
    PRIMARY KEY (task_instance_id, try_number, seq),
    FOREIGN KEY (task_instance_id, try_number)
        REFERENCES task_try (task_instance_id, try_number) ON DELETE CASCADE
) STRICT;

CREATE TABLE task_output (
    task_instance_id  INTEGER NOT NULL REFERENCES task_instance (id) ON DELETE CASCADE,
    name              TEXT NOT NULL,
    value             TEXT NOT NULL,
    PRIMARY KEY (task_instance_id, name)
) STRICT;

CREATE TABLE pool (
    name         TEXT PRIMARY KEY,
    slots        INTEGER NOT NULL CHECK (slots >= 0),
    description  TEXT NOT NULL
) STRICT;

INSERT INTO pool (name, slots, description) VALUES ('default_pool', 128, 'Default pool');

CREATE TABLE worker (
    id            TEXT PRIMARY KEY,
    hostname      TEXT NOT NULL,
    queues        TEXT NOT NULL CHECK (json_valid(queues)),
    concurrency   INTEGER NOT NULL CHECK (concurrency >= 1),
    state         TEXT NOT NULL CHECK (state IN ('running', 'stopping', 'stopped')),
    started_at    TEXT NOT NULL,
    heartbeat_at  TEXT NOT NULL
) STRICT;

CREATE TABLE scheduler (
    id            TEXT PRIMARY KEY,
    hostname      TEXT NOT NULL,
    started_at    TEXT NOT NULL,
    heartbeat_at  TEXT NOT NULL
) STRICT;

CREATE TABLE event_log (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    at        TEXT NOT NULL,
    actor     TEXT NOT NULL,
    dag_id    TEXT,
    run_id    TEXT,
    task_id   TEXT,
    event     TEXT NOT NULL,
    details   TEXT NOT NULL CHECK (json_valid(details))
) STRICT;

CREATE INDEX event_log_at_idx ON event_log (at DESC, id DESC);
CREATE INDEX event_log_dag_id_at_idx ON event_log (dag_id, at DESC, id DESC);

CREATE TABLE "user" (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    username       TEXT NOT NULL UNIQUE,
    password_hash  TEXT NOT NULL,
    role           TEXT NOT NULL CHECK (role IN ('admin', 'viewer')),
    created_at     TEXT NOT NULL
) STRICT;

CREATE TABLE api_token (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id     INTEGER NOT NULL REFERENCES "user" (id) ON DELETE CASCADE,
    token_hash  TEXT NOT NULL UNIQUE,
    created_at  TEXT NOT NULL
) STRICT;

CREATE INDEX api_token_user_id_idx ON api_token (user_id);

CREATE TABLE import_error (
    filename  TEXT PRIMARY KEY,
    message   TEXT NOT NULL,
    at        TEXT NOT NULL
) STRICT;
