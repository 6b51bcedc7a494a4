-- Notifications, version 12 (issue 19): what a notifier (`notify:`) is to be told, one row per
-- event of the event log and notifier, made by the scheduler that reads the event first. The
-- event was written in the transaction of the change it records, so no change goes untold;
-- the unique (event, notifier) keeps two schedulers from telling it twice.

CREATE TABLE notification (
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id         BIGINT NOT NULL,
    dag_run_id       BIGINT NOT NULL REFERENCES dag_run (id) ON DELETE CASCADE,
    -- Which notifier of the run's DAG version: `dag.0`, `task.load.1`.
    target           TEXT NOT NULL,
    event            TEXT NOT NULL CHECK (event IN ('task_failed', 'task_retry', 'task_succeeded',
                         'run_failed', 'run_succeeded', 'deadline_missed')),
    -- The channel as the DAG file gave it (secrets as references, resolved when sent).
    channel          JSONB NOT NULL,
    -- What to tell (`updraft_core::notify::Notice`).
    notice           JSONB NOT NULL,
    state            TEXT NOT NULL CHECK (state IN ('pending', 'sending', 'sent', 'failed')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  TIMESTAMPTZ NOT NULL,
    claimed_at       TIMESTAMPTZ,
    sent_at          TIMESTAMPTZ,
    -- Why the last attempt failed (never a secret: no URL, no password).
    last_error       TEXT,
    created_at       TIMESTAMPTZ NOT NULL,
    UNIQUE (event_id, target)
);

CREATE INDEX notification_due ON notification (next_attempt_at) WHERE state = 'pending';
CREATE INDEX notification_sending ON notification (claimed_at) WHERE state = 'sending';
CREATE INDEX notification_of_run ON notification (dag_run_id);

-- How far the schedulers read the event log for notifications: from here on, not the past.
CREATE TABLE notifier_cursor (
    id             INTEGER PRIMARY KEY CHECK (id = 1),
    last_event_id  BIGINT NOT NULL
);
INSERT INTO notifier_cursor (id, last_event_id) SELECT 1, COALESCE(MAX(id), 0) FROM event_log;
