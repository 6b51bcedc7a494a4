-- The scheduler's loop duration, version 3: each scheduler records, with its heartbeat, how
-- long its latest complete loop (one tick) took, so that `/metrics` can show it from any
-- process. Microseconds; NULL until a loop has completed.

ALTER TABLE scheduler ADD COLUMN last_loop_micros BIGINT;
