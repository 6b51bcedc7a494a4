-- Rate limits, version 10 (issue 19): at most so many tries start per period, for a task (its
-- limit is in its DAG) or for a pool (here). The queue counts the tries started in the window
-- through the task instances whose last try started in it: by task, and by pool.

ALTER TABLE pool ADD COLUMN rate_limit TEXT;

DROP INDEX task_instance_dag_id_task_id_idx;
CREATE INDEX task_instance_dag_id_task_id_idx ON task_instance (dag_id, task_id, start_date);
CREATE INDEX task_instance_pool_start_date_idx ON task_instance (pool, start_date);
