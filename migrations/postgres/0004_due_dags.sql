-- Due DAGs, version 4: the scheduler reads the DAGs whose next run is due through this index
-- (`next_run_after <= now`, in order, a batch at a time), never by a scan of every DAG row, so
-- a tick costs what is due, not what exists. Paused and inactive DAGs are not in it.

CREATE INDEX dag_next_run_after_idx ON dag (next_run_after)
    WHERE is_active AND NOT is_paused AND next_run_after IS NOT NULL;
