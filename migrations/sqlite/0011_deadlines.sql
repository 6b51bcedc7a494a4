-- Deadlines, version 11 (issue 19): when a run or a task instance missed its deadline (set
-- once, by compare-and-set, with its `deadline_missed` event), and when a task instance first
-- started since it was created or cleared (a task's `after_start` deadline counts from there;
-- `start_date` is its last try's).

ALTER TABLE dag_run ADD COLUMN deadline_missed_at TEXT;
ALTER TABLE task_instance ADD COLUMN deadline_missed_at TEXT;
ALTER TABLE task_instance ADD COLUMN first_start_date TEXT;
