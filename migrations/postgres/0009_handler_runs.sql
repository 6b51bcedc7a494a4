-- Handler runs, version 9 (issue 19): what a handler (`on_success`, `on_retry`, `on_failure`)
-- did once its try (or, for a DAG's handler, its run) had ended and been recorded. A handler
-- runs after the state it reacts to is stored, as a process of its own, so its row comes
-- later and never changes a state.

CREATE TABLE handler_run (
    id                BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    dag_run_id        BIGINT NOT NULL REFERENCES dag_run (id) ON DELETE CASCADE,
    -- Both set for a task's handler, both null for its DAG's.
    task_instance_id  BIGINT,
    try_number        INTEGER,
    handler           TEXT NOT NULL CHECK (handler IN ('on_success', 'on_retry', 'on_failure')),
    start_date        TIMESTAMPTZ NOT NULL,
    end_date          TIMESTAMPTZ NOT NULL,
    -- How its process ended, in words ("exited with code 0", "timed out after 5m").
    ending            TEXT NOT NULL,
    -- Its output (stdout and stderr), masked, cut at 64 KiB.
    log               BYTEA NOT NULL,
    CHECK ((task_instance_id IS NULL) = (try_number IS NULL)),
    FOREIGN KEY (task_instance_id, try_number)
        REFERENCES task_try (task_instance_id, try_number) ON DELETE CASCADE
);

CREATE INDEX handler_run_of_try ON handler_run (task_instance_id, try_number);
CREATE INDEX handler_run_of_run ON handler_run (dag_run_id);
