-- Retries and dead letters.

-- Per-binding options (max_attempts, backoff_initial, backoff_max, timeout, delay,
-- expires_after), only the ones set: an option left out takes its default.
ALTER TABLE bindings ADD COLUMN options jsonb NOT NULL DEFAULT '{}';

-- `dead`: an async run that used up its attempts or hit an error no retry can fix; its job
-- is in the kind's dead-letter queue. `expired`: a job that could not start in time.
ALTER TABLE task_runs DROP CONSTRAINT task_runs_status_check;
ALTER TABLE task_runs ADD CONSTRAINT task_runs_status_check
    CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'dead', 'expired'));

-- The job message of an async run (submission included), so `postsub runs retry` can queue
-- it again. Written when the run is first queued or claimed, never changed afterwards.
ALTER TABLE task_runs ADD COLUMN input jsonb;

-- One row per attempt of a run: when it ran, how it ended, why it failed.
CREATE TABLE task_attempts (
    run_id       uuid NOT NULL REFERENCES task_runs (run_id) ON DELETE CASCADE,
    attempt      integer NOT NULL CHECK (attempt > 0),
    status       text NOT NULL CHECK (status IN ('succeeded', 'failed', 'timed_out', 'panicked')),
    error        text,
    started_at   timestamptz NOT NULL,
    finished_at  timestamptz NOT NULL,
    PRIMARY KEY (run_id, attempt)
);
