-- Worker names, version 6.
-- `pid`: the process holding a worker's name. One live process per name: a second is refused
-- with this process's host and pid, and a process that starts on the same host after the
-- holder died takes the name over without waiting for it to look lost.
-- `lost`: a worker whose tries a scheduler reaped as zombies is shown lost from then on (until
-- it heartbeats again), not only once its heartbeat is old.

ALTER TABLE worker ADD COLUMN pid INTEGER;

ALTER TABLE worker DROP CONSTRAINT worker_state_check;

ALTER TABLE worker ADD CONSTRAINT worker_state_check
    CHECK (state IN ('running', 'stopping', 'stopped', 'lost'));
