-- The embedded backend: postsub's tables (those of migrations/postgres) in SQLite types, and
-- the job queue in the same file. UUIDs are 16-byte BLOBs, JSON is TEXT, timestamps are
-- RFC 3339 TEXT in UTC written by postsub (so text order is time order), booleans INTEGER.

-- Bindings: which task kind runs for which form, how, with what config.
CREATE TABLE bindings (
    id          BLOB PRIMARY KEY,
    form_id     BLOB NOT NULL,
    name        TEXT NOT NULL,
    kind        TEXT NOT NULL,
    mode        TEXT NOT NULL CHECK (mode IN ('sync', 'async')),
    config      TEXT NOT NULL,
    enabled     INTEGER NOT NULL DEFAULT 1,
    -- Per-binding options, only the ones set (see migrations/postgres, 3).
    options     TEXT NOT NULL DEFAULT '{}',
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    UNIQUE (form_id, name)
);

CREATE INDEX bindings_form_id ON bindings (form_id, created_at);

-- Every process on the file keeps bindings in memory and polls this counter, which the
-- triggers bump on every change, to know when to reload (PostgreSQL uses NOTIFY instead).
CREATE TABLE changes (
    topic    TEXT PRIMARY KEY,
    version  INTEGER NOT NULL
);
INSERT INTO changes (topic, version) VALUES ('bindings', 0);

CREATE TRIGGER bindings_inserted AFTER INSERT ON bindings BEGIN
    UPDATE changes SET version = version + 1 WHERE topic = 'bindings';
END;
CREATE TRIGGER bindings_updated AFTER UPDATE ON bindings BEGIN
    UPDATE changes SET version = version + 1 WHERE topic = 'bindings';
END;
CREATE TRIGGER bindings_deleted AFTER DELETE ON bindings BEGIN
    UPDATE changes SET version = version + 1 WHERE topic = 'bindings';
END;

-- Run history: one row per (submission, binding), sync and async alike. binding_id has no
-- foreign key on purpose: the history outlives a deleted binding.
CREATE TABLE task_runs (
    run_id         BLOB PRIMARY KEY,
    binding_id     BLOB NOT NULL,
    form_id        BLOB NOT NULL,
    submission_id  BLOB NOT NULL,
    kind           TEXT NOT NULL,
    mode           TEXT NOT NULL CHECK (mode IN ('sync', 'async')),
    status         TEXT NOT NULL
        CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'dead', 'expired')),
    attempts       INTEGER NOT NULL DEFAULT 0,
    output         TEXT,
    flags          TEXT NOT NULL DEFAULT '[]',
    error          TEXT,
    created_at     TEXT NOT NULL,
    started_at     TEXT,
    finished_at    TEXT,
    updated_at     TEXT NOT NULL,
    -- The job of an async run, so `postsub runs retry` can queue it again.
    input          TEXT
);

CREATE INDEX task_runs_created ON task_runs (created_at DESC, run_id DESC);
CREATE INDEX task_runs_form ON task_runs (form_id, created_at DESC);
CREATE INDEX task_runs_submission ON task_runs (submission_id);
CREATE INDEX task_runs_binding ON task_runs (binding_id, created_at DESC);
CREATE INDEX task_runs_status ON task_runs (status, created_at DESC);

-- One row per attempt of a run: when it ran, how it ended, why it failed.
CREATE TABLE task_attempts (
    run_id       BLOB NOT NULL REFERENCES task_runs (run_id) ON DELETE CASCADE,
    attempt      INTEGER NOT NULL CHECK (attempt > 0),
    status       TEXT NOT NULL CHECK (status IN ('succeeded', 'failed', 'timed_out', 'panicked')),
    error        TEXT,
    started_at   TEXT NOT NULL,
    finished_at  TEXT NOT NULL,
    PRIMARY KEY (run_id, attempt)
);

-- Durable state tasks keep per binding (say, the spreadsheet a google_sheets binding made).
CREATE TABLE task_state (
    binding_id  BLOB NOT NULL,
    key         TEXT NOT NULL,
    value       TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (binding_id, key)
);

-- The job queue: a lease queue. A job may be taken once `visible_at` (milliseconds since
-- the epoch) has passed: delays and retry backoff are a later visible_at. Taking it sets
-- lease_owner and pushes visible_at to the lease's expiry, which the owner keeps pushing
-- while it runs the job; a job whose owner died becomes visible again when that lease
-- runs out. `dead` jobs (dead letters) keep why and after how many attempts.
CREATE TABLE jobs (
    id           INTEGER PRIMARY KEY,
    run_id       BLOB NOT NULL,
    kind         TEXT NOT NULL,
    form_id      BLOB NOT NULL,
    -- The job message, JSON (the same as on RabbitMQ).
    payload      TEXT NOT NULL,
    state        TEXT NOT NULL DEFAULT 'ready' CHECK (state IN ('ready', 'dead')),
    visible_at   INTEGER NOT NULL,
    lease_owner  TEXT,
    -- Times taken since it was queued; above 1, the job is redelivered.
    deliveries   INTEGER NOT NULL DEFAULT 0,
    attempts     INTEGER NOT NULL DEFAULT 0,
    error        TEXT,
    created_at   TEXT NOT NULL
);

CREATE INDEX jobs_ready ON jobs (visible_at, id) WHERE state = 'ready';
CREATE INDEX jobs_dead ON jobs (kind, id) WHERE state = 'dead';
