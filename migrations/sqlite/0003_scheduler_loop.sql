-- The scheduler's loop duration, version 3, SQLite flavour: the same as
-- migrations/postgres/0003_scheduler_loop.sql (its comment explains the column).

ALTER TABLE scheduler ADD COLUMN last_loop_micros INTEGER;
