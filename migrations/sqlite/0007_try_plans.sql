-- Try plans, version 7. A queued task instance now carries its try's plan (the rendered
-- command, timeout, kill grace, skip codes and retry policy) in `rendered_command`, and a
-- worker reads no DAG. Task instances queued by an earlier version hold a bare rendered
-- command: they go back to `scheduled`, and the scheduler plans and queues them again.
UPDATE task_instance
SET state = 'scheduled', queued_at = NULL, rendered_command = NULL
WHERE state = 'queued';
