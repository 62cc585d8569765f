//! The hot writes of the embedded backend as rows, which the [`Writer`] merges across
//! callers and writes with one fixed statement list in one round trip.
//!
//! Every statement sent to a SQLite connection is a round trip to its thread (tens of
//! microseconds here, more on a busy machine), which would cost more than the rows it
//! writes. So the jobs of `Process` calls with their runs, the run recorder's history
//! batches and the worker's acks are not statements but [`Rows`]: JSON objects, made by
//! the callers (on their own threads). The writer joins the rows of every caller waiting,
//! and writes them with [`SQL`] (begin, one statement per table and kind of write, commit)
//! as one query: a transaction is one round trip, whatever it holds.
//!
//! [`Writer`]: super::writer::Writer

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::sql_time;
use crate::{
    job::Job,
    run::{Attempt, Run},
};

/// Rows to write, each a JSON object as its statement reads it.
#[derive(Debug, Default)]
pub struct Rows {
    /// New jobs (`Process`), unless their run exists.
    pub(crate) jobs: Vec<String>,
    /// Run records inserted unless the run exists.
    pub(crate) runs_if_absent: Vec<String>,
    /// Run records inserted or overwritten.
    pub(crate) runs_upserted: Vec<String>,
    /// Attempt records.
    pub(crate) attempts: Vec<String>,
    /// Settled jobs to delete: `[id, deliveries]`.
    pub(crate) settled: Vec<String>,
}

impl Rows {
    /// Adds a job that may be taken from `visible_at` on, unless its run exists already
    /// (a repeated `Process` call).
    pub(crate) fn job(&mut self, job: &Job, visible_at: DateTime<Utc>) {
        self.jobs.push(
            json!({
                "run_id": job.run_id.simple().to_string(),
                "kind": job.kind,
                "form_id": job.submission.form_id.simple().to_string(),
                "payload": serde_json::to_string(job).expect("a job always serializes"),
                "visible_at": visible_at.timestamp_millis(),
            })
            .to_string(),
        );
    }

    /// Adds a run record, inserted unless the run exists, or inserted or overwritten.
    pub(crate) fn run(&mut self, run: &Run, overwrite: bool) {
        let row = json!({
            "run_id": run.run_id.simple().to_string(),
            "binding_id": run.binding_id.simple().to_string(),
            "form_id": run.form_id.simple().to_string(),
            "submission_id": run.submission_id.simple().to_string(),
            "kind": run.kind,
            "event": run.event.as_str(),
            "mode": run.mode.as_str(),
            "status": run.status.as_str(),
            "attempts": run.attempts,
            "output": run.output.as_ref().map(Value::to_string),
            "flags": serde_json::to_string(&run.flags).expect("flags serialize"),
            "error": run.error,
            "created_at": sql_time(run.created_at),
            "started_at": run.started_at.map(sql_time),
            "finished_at": run.finished_at.map(sql_time),
        })
        .to_string();
        if overwrite {
            self.runs_upserted.push(row);
        } else {
            self.runs_if_absent.push(row);
        }
    }

    /// Adds an attempt record.
    pub(crate) fn attempt(&mut self, attempt: &Attempt) {
        self.attempts.push(
            json!({
                "run_id": attempt.run_id.simple().to_string(),
                "attempt": attempt.attempt,
                "status": attempt.status.as_str(),
                "error": attempt.error,
                "started_at": sql_time(attempt.started_at),
                "finished_at": sql_time(attempt.finished_at),
            })
            .to_string(),
        );
    }

    /// Adds a settled job to delete: job `id`, as taken by its `deliveries`-th delivery.
    pub(crate) fn settled(&mut self, id: i64, deliveries: i64) {
        self.settled.push(format!("[{id},{deliveries}]"));
    }

    /// Whether there is nothing to write.
    pub(crate) fn is_empty(&self) -> bool {
        self.jobs.is_empty()
            && self.runs_if_absent.is_empty()
            && self.runs_upserted.is_empty()
            && self.attempts.is_empty()
            && self.settled.is_empty()
    }

    /// Adds `other`'s rows to these.
    pub(crate) fn merge(&mut self, other: Rows) {
        self.jobs.extend(other.jobs);
        self.runs_if_absent.extend(other.runs_if_absent);
        self.runs_upserted.extend(other.runs_upserted);
        self.attempts.extend(other.attempts);
        self.settled.extend(other.settled);
    }

    /// The parameters of [`SQL`], in order.
    pub(crate) fn arguments(&self) -> [String; 6] {
        let array = |rows: &[String]| format!("[{}]", rows.join(","));
        [
            array(&self.jobs),
            array(&self.runs_if_absent),
            array(&self.runs_upserted),
            array(&self.attempts),
            array(&self.settled),
            sql_time(Utc::now()),
        ]
    }
}

const RUN_COLUMNS: &str = "run_id, binding_id, form_id, submission_id, kind, mode, status,
    attempts, output, flags, error, created_at, started_at, finished_at, updated_at, event";

/// The values of a run row of `jsonb_each`, `?6` being now.
const RUN_VALUES: &str = "unhex(value ->> 'run_id'), unhex(value ->> 'binding_id'),
    unhex(value ->> 'form_id'), unhex(value ->> 'submission_id'), value ->> 'kind',
    value ->> 'mode', value ->> 'status', value ->> 'attempts', value ->> 'output',
    value ->> 'flags', value ->> 'error', value ->> 'created_at', value ->> 'started_at',
    value ->> 'finished_at', ?6, value ->> 'event'";

/// Names every parameter in each statement. sqlx binds the `?NNN` parameters of a
/// statement by number only as long as the statement names every number up to its
/// highest; a gap makes it count on, and it stops binding (leaving NULL) once past the last
/// argument. The unused common table expression costs nothing to run.
const PARAMETERS: &str = "WITH parameters AS (SELECT ?1, ?2, ?3, ?4, ?5, ?6)";

/// The statements that write [`Rows`], after `BEGIN IMMEDIATE` and before `COMMIT`, in an
/// order that keeps each write's meaning when a batch holds several of one run: a job only
/// for a run not recorded yet, inserts before overwrites (so an overwrite wins), attempts
/// after their runs. `WHERE true` keeps `ON CONFLICT` from being read as part of the
/// `SELECT`.
pub(crate) static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "{PARAMETERS} INSERT INTO jobs (run_id, kind, form_id, payload, visible_at, created_at)
            SELECT unhex(value ->> 'run_id'), value ->> 'kind', unhex(value ->> 'form_id'),
                value ->> 'payload', value ->> 'visible_at', ?6
            FROM jsonb_each(?1)
            WHERE NOT EXISTS (SELECT 1 FROM task_runs
                WHERE task_runs.run_id = unhex(value ->> 'run_id'));
        {PARAMETERS} INSERT INTO task_runs ({RUN_COLUMNS})
            SELECT {RUN_VALUES} FROM jsonb_each(?2) WHERE true
            ON CONFLICT (run_id) DO NOTHING;
        {PARAMETERS} INSERT INTO task_runs ({RUN_COLUMNS})
            SELECT {RUN_VALUES} FROM jsonb_each(?3) WHERE true
            ON CONFLICT (run_id) DO UPDATE SET status = excluded.status,
                attempts = max(task_runs.attempts, excluded.attempts),
                output = excluded.output, flags = excluded.flags, error = excluded.error,
                started_at = coalesce(excluded.started_at, task_runs.started_at),
                finished_at = excluded.finished_at, updated_at = excluded.updated_at;
        {PARAMETERS} INSERT INTO task_attempts (run_id, attempt, status, error, started_at,
                finished_at)
            SELECT unhex(value ->> 'run_id'), value ->> 'attempt', value ->> 'status',
                value ->> 'error', value ->> 'started_at', value ->> 'finished_at'
            FROM jsonb_each(?4) WHERE true
            ON CONFLICT (run_id, attempt) DO NOTHING;
        {PARAMETERS} DELETE FROM jobs WHERE state = 'ready' AND (id, deliveries) IN
            (SELECT value ->> 0, value ->> 1 FROM jsonb_each(?5));"
    )
});
