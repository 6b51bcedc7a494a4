-- Updraft's metadata schema, version 1 (DESIGN §7), Postgres flavour.
--
-- migrations/sqlite/0001_initial.sql is the same schema for SQLite: keep every table, column,
-- constraint and index in step with it. Times are timestamptz (stored in UTC). State columns hold
-- the names of updraft-core's `as_str()`.

CREATE TABLE dag (
    dag_id                    TEXT PRIMARY KEY,
    -- The DAG file it was loaded from.
    fileloc                   TEXT NOT NULL,
    is_paused                 BOOLEAN NOT NULL,
    -- False once its file is gone or no longer defines it; its runs stay visible.
    is_active                 BOOLEAN NOT NULL,
    -- The current version: a row of dag_version (checked at commit, as both rows are written in
    -- one transaction).
    version_hash              TEXT NOT NULL,
    last_parsed_at            TIMESTAMPTZ NOT NULL,
    owner                     TEXT NOT NULL,
    description               TEXT,
    -- A JSON array of strings.
    tags                      JSONB NOT NULL,
    -- The schedule as written ("0 2 * * *", "every 15m"); NULL: manual runs only.
    schedule                  TEXT,
    timezone                  TEXT NOT NULL,
    -- Copied from the DAG so that claims can check limits in SQL (DESIGN §6).
    max_active_runs           INTEGER NOT NULL CHECK (max_active_runs >= 1),
    max_active_tasks          INTEGER NOT NULL CHECK (max_active_tasks >= 1),
    -- The next run the scheduler will create, all four set or none.
    next_logical_date         TIMESTAMPTZ,
    next_data_interval_start  TIMESTAMPTZ,
    next_data_interval_end    TIMESTAMPTZ,
    next_run_after            TIMESTAMPTZ,
    CHECK ((next_logical_date IS NULL) = (next_data_interval_start IS NULL)
       AND (next_logical_date IS NULL) = (next_data_interval_end IS NULL)
       AND (next_logical_date IS NULL) = (next_run_after IS NULL))
);

-- One row per distinct content of a DAG: runs record the version they started with.
CREATE TABLE dag_version (
    dag_id        TEXT NOT NULL REFERENCES dag (dag_id) ON DELETE CASCADE,
    version_hash  TEXT NOT NULL,
    -- The parsed DAG, serialized by the scheduler.
    serialized    JSONB NOT NULL,
    -- The YAML file as it was read, for the code view.
    source        TEXT NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (dag_id, version_hash)
);

ALTER TABLE dag ADD FOREIGN KEY (dag_id, version_hash)
    REFERENCES dag_version (dag_id, version_hash) DEFERRABLE INITIALLY DEFERRED;

CREATE TABLE backfill (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    dag_id        TEXT NOT NULL REFERENCES dag (dag_id) ON DELETE CASCADE,
    from_date     TIMESTAMPTZ NOT NULL,
    to_date       TIMESTAMPTZ NOT NULL,
    -- reprocess, max_active_runs, run_backwards.
    options       JSONB NOT NULL,
    state         TEXT NOT NULL CHECK (state IN ('running', 'paused', 'completed', 'cancelled')),
    created_by    TEXT NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL,
    completed_at  TIMESTAMPTZ,
    CHECK (from_date <= to_date)
);

CREATE INDEX backfill_dag_id_idx ON backfill (dag_id, created_at DESC);

CREATE TABLE dag_run (
    id                   BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    dag_id               TEXT NOT NULL REFERENCES dag (dag_id) ON DELETE CASCADE,
    run_id               TEXT NOT NULL,
    run_type             TEXT NOT NULL CHECK (run_type IN ('scheduled', 'manual', 'backfill')),
    logical_date         TIMESTAMPTZ NOT NULL,
    data_interval_start  TIMESTAMPTZ NOT NULL,
    data_interval_end    TIMESTAMPTZ NOT NULL,
    -- Not before this instant may it start (the end of its data interval for scheduled runs).
    run_after            TIMESTAMPTZ NOT NULL,
    state                TEXT NOT NULL CHECK (state IN ('queued', 'running', 'success', 'failed')),
    conf                 JSONB NOT NULL,
    -- The DAG version the run started with.
    version_hash         TEXT NOT NULL,
    queued_at            TIMESTAMPTZ,
    start_date           TIMESTAMPTZ,
    end_date             TIMESTAMPTZ,
    backfill_id          BIGINT REFERENCES backfill (id) ON DELETE SET NULL,
    UNIQUE (dag_id, run_id),
    FOREIGN KEY (dag_id, version_hash) REFERENCES dag_version (dag_id, version_hash),
    CHECK (data_interval_start <= data_interval_end)
);

-- Restarts, catch-up and backfill never duplicate a run; manual runs may share a date.
CREATE UNIQUE INDEX dag_run_dag_id_logical_date_key ON dag_run (dag_id, logical_date)
    WHERE run_type <> 'manual';
-- A DAG's runs newest first: the grid (last 25 runs), run lists, "last run" dots.
CREATE INDEX dag_run_dag_id_logical_date_idx ON dag_run (dag_id, logical_date DESC, id DESC);
-- Unfinished runs across DAGs (the scheduler's loop) and per DAG (max_active_runs).
CREATE INDEX dag_run_state_dag_id_idx ON dag_run (state, dag_id);
CREATE INDEX dag_run_backfill_id_idx ON dag_run (backfill_id) WHERE backfill_id IS NOT NULL;

CREATE TABLE task_instance (
    id                BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    dag_run_id        BIGINT NOT NULL REFERENCES dag_run (id) ON DELETE CASCADE,
    -- Copies of the run's, for limits and lists that need no join.
    dag_id            TEXT NOT NULL,
    run_id            TEXT NOT NULL,
    task_id           TEXT NOT NULL,
    state             TEXT NOT NULL CHECK (state IN ('none', 'scheduled', 'queued', 'running',
                          'success', 'failed', 'skipped', 'upstream_failed', 'up_for_retry',
                          'up_for_reschedule', 'removed')),
    -- Tries started so far; the running or last try has this number.
    try_number        INTEGER NOT NULL CHECK (try_number >= 0),
    -- The try number after which no retry is left (Airflow's max_tries).
    max_tries         INTEGER NOT NULL CHECK (max_tries >= 0),
    -- No foreign key: a task may name a pool that does not exist yet; it waits for it.
    pool              TEXT NOT NULL,
    pool_slots        INTEGER NOT NULL CHECK (pool_slots >= 1),
    queue             TEXT NOT NULL,
    priority_weight   INTEGER NOT NULL,
    queued_at         TIMESTAMPTZ,
    start_date        TIMESTAMPTZ,
    end_date          TIMESTAMPTZ,
    next_retry_at     TIMESTAMPTZ,
    -- The worker running the current try, and its last heartbeat for it.
    worker_id         TEXT,
    hostname          TEXT,
    heartbeat_at      TIMESTAMPTZ,
    -- The command with its templates rendered, as JSON.
    rendered_command  JSONB,
    updated_at        TIMESTAMPTZ NOT NULL,
    UNIQUE (dag_run_id, task_id)
);

-- The queue (DESIGN §6): claims take queued rows of their queues by priority_weight desc, then
-- queued time, with FOR UPDATE SKIP LOCKED. Partial, so it is only as large as the queue. Queries
-- must say `state = 'queued'` literally for the planner to use it.
CREATE INDEX task_instance_queued_idx ON task_instance (queue, priority_weight DESC, queued_at, id)
    WHERE state = 'queued';
-- Unfinished work by state (scheduling, retries, zombies) and counts per DAG and state
-- (max_active_tasks). Finished states are most rows, but nobody scans them by state.
CREATE INDEX task_instance_state_dag_id_idx ON task_instance (state, dag_id);
-- A task's history across runs (task detail, durations).
CREATE INDEX task_instance_dag_id_task_id_idx ON task_instance (dag_id, task_id);

-- One row per attempt of a task instance.
CREATE TABLE task_try (
    task_instance_id  BIGINT NOT NULL REFERENCES task_instance (id) ON DELETE CASCADE,
    try_number        INTEGER NOT NULL CHECK (try_number >= 1),
    state             TEXT NOT NULL CHECK (state IN ('none', 'scheduled', 'queued', 'running',
                          'success', 'failed', 'skipped', 'upstream_failed', 'up_for_retry',
                          'up_for_reschedule', 'removed')),
    worker_id         TEXT,
    hostname          TEXT,
    pid               INTEGER,
    start_date        TIMESTAMPTZ NOT NULL,
    end_date          TIMESTAMPTZ,
    exit_code         INTEGER,
    PRIMARY KEY (task_instance_id, try_number)
);

-- The log of a try in chunks, in order of seq (1, 2, ...). In the database so that it survives
-- the worker that wrote it and any process can read it live.
CREATE TABLE task_log (
    task_instance_id  BIGINT NOT NULL,
    try_number        INTEGER NOT NULL,
    seq               BIGINT NOT NULL CHECK (seq >= 1),
    -- Raw bytes: a chunk boundary may split a UTF-8 character.
    data              BYTEA NOT NULL,
    PRIMARY KEY (task_instance_id, try_number, seq),
    FOREIGN KEY (task_instance_id, try_number)
        REFERENCES task_try (task_instance_id, try_number) ON DELETE CASCADE
);

-- The `key=value` outputs a task instance wrote to $UPDRAFT_OUTPUT.
CREATE TABLE task_output (
    task_instance_id  BIGINT NOT NULL REFERENCES task_instance (id) ON DELETE CASCADE,
    name              TEXT NOT NULL,
    value             TEXT NOT NULL,
    PRIMARY KEY (task_instance_id, name)
);

CREATE TABLE pool (
    name         TEXT PRIMARY KEY,
    slots        INTEGER NOT NULL CHECK (slots >= 0),
    description  TEXT NOT NULL
);

INSERT INTO pool (name, slots, description) VALUES ('default_pool', 128, 'Default pool');

CREATE TABLE worker (
    id            TEXT PRIMARY KEY,
    hostname      TEXT NOT NULL,
    -- A JSON array of queue names.
    queues        JSONB NOT NULL,
    concurrency   INTEGER NOT NULL CHECK (concurrency >= 1),
    state         TEXT NOT NULL CHECK (state IN ('running', 'stopping', 'stopped')),
    started_at    TIMESTAMPTZ NOT NULL,
    heartbeat_at  TIMESTAMPTZ NOT NULL
);

CREATE TABLE scheduler (
    id            TEXT PRIMARY KEY,
    hostname      TEXT NOT NULL,
    started_at    TIMESTAMPTZ NOT NULL,
    heartbeat_at  TIMESTAMPTZ NOT NULL
);

-- The audit log: who did what, and every state change. No foreign keys: it outlives what it
-- mentions.
CREATE TABLE event_log (
    id        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at        TIMESTAMPTZ NOT NULL,
    -- A username, or the part that acted ("scheduler", "worker <id>").
    actor     TEXT NOT NULL,
    dag_id    TEXT,
    run_id    TEXT,
    task_id   TEXT,
    event     TEXT NOT NULL,
    details   JSONB NOT NULL
);

CREATE INDEX event_log_at_idx ON event_log (at DESC, id DESC);
CREATE INDEX event_log_dag_id_at_idx ON event_log (dag_id, at DESC, id DESC);

CREATE TABLE "user" (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    username       TEXT NOT NULL UNIQUE,
    -- An argon2 PHC string; the password itself is never stored.
    password_hash  TEXT NOT NULL,
    role           TEXT NOT NULL CHECK (role IN ('admin', 'viewer')),
    created_at     TIMESTAMPTZ NOT NULL
);

CREATE TABLE api_token (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id     BIGINT NOT NULL REFERENCES "user" (id) ON DELETE CASCADE,
    -- A hash of the token; the token itself is shown once and never stored.
    token_hash  TEXT NOT NULL UNIQUE,
    created_at  TIMESTAMPTZ NOT NULL
);

CREATE INDEX api_token_user_id_idx ON api_token (user_id);

-- DAG files that failed to load at the last sync, with every problem in the message.
CREATE TABLE import_error (
    filename  TEXT PRIMARY KEY,
    message   TEXT NOT NULL,
    at        TIMESTAMPTZ NOT NULL
);
