-- Due DAGs, version 4, SQLite flavour: the same as migrations/postgres/0004_due_dags.sql (its
-- comment explains the index).

CREATE INDEX dag_next_run_after_idx ON dag (next_run_after)
    WHERE is_active AND NOT is_paused AND next_run_after IS NOT NULL;
