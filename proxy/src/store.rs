//! PostgreSQL storage of bindings and the run history: functions over a pool.
//!
//! Idempotency lives in the SQL (`ON CONFLICT` on the deterministic run id), never in a
//! read-then-write.

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use postsub_tasks::{Flag, Mode};
use serde_json::Value;
use sqlx::{PgConnection, PgPool, Postgres, QueryBuilder, types::Json};
use uuid::Uuid;

use crate::{
    job::Job,
    options::BindingOptions,
    run::{Attempt, AttemptStatus, Run, RunStatus},
};

/// A task bound to a form, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Binding {
    /// Binding id.
    pub id: Uuid,
    /// The form whose submissions run the task.
    pub form_id: Uuid,
    /// Unique per form; shown in results.
    pub name: String,
    /// Task kind in the registry.
    pub kind: String,
    /// Inline or queued.
    pub mode: Mode,
    /// Kind-specific config, checked by the kind before it is stored.
    pub config: Value,
    /// Disabled bindings are kept but do not run.
    pub enabled: bool,
    /// Retries, timeout and scheduling.
    pub options: BindingOptions,
    /// When created.
    pub created_at: DateTime<Utc>,
    /// When last changed.
    pub updated_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct BindingRow {
    id: Uuid,
    form_id: Uuid,
    name: String,
    kind: String,
    mode: String,
    config: Json<Value>,
    enabled: bool,
    options: Json<BindingOptions>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<BindingRow> for Binding {
    fn from(row: BindingRow) -> Self {
        Binding {
            id: row.id,
            form_id: row.form_id,
            name: row.name,
            kind: row.kind,
            // The column's CHECK constraint allows only the two modes.
            mode: if row.mode == "sync" {
                Mode::Sync
            } else {
                Mode::Async
            },
            config: row.config.0,
            enabled: row.enabled,
            options: row.options.0,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

const BINDING_COLUMNS: &str =
    "id, form_id, name, kind, mode, config, enabled, options, created_at, updated_at";

/// Every binding, oldest first (the order results are reported in).
pub async fn all_bindings(pool: &PgPool) -> sqlx::Result<Vec<Binding>> {
    let rows: Vec<BindingRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {BINDING_COLUMNS} FROM bindings ORDER BY created_at, id"
    )))
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(Binding::from).collect())
}

/// Bindings of one form, oldest first.
pub async fn form_bindings(pool: &PgPool, form_id: Uuid) -> sqlx::Result<Vec<Binding>> {
    let rows: Vec<BindingRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {BINDING_COLUMNS} FROM bindings WHERE form_id = $1 ORDER BY created_at, id"
    )))
    .bind(form_id)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(Binding::from).collect())
}

/// One binding.
pub async fn get_binding(pool: &PgPool, id: Uuid) -> sqlx::Result<Option<Binding>> {
    let row: Option<BindingRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {BINDING_COLUMNS} FROM bindings WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(Binding::from))
}

/// What a new binding consists of.
#[derive(Debug, Clone)]
pub struct NewBinding {
    /// See [`Binding::form_id`].
    pub form_id: Uuid,
    /// See [`Binding::name`].
    pub name: String,
    /// See [`Binding::kind`].
    pub kind: String,
    /// See [`Binding::mode`].
    pub mode: Mode,
    /// See [`Binding::config`].
    pub config: Value,
    /// See [`Binding::enabled`].
    pub enabled: bool,
    /// See [`Binding::options`].
    pub options: BindingOptions,
}

/// Stores a new binding. A second binding of the same name on one form is a unique
/// violation (`bindings_form_id_name_key`).
pub async fn insert_binding(pool: &PgPool, new: NewBinding) -> sqlx::Result<Binding> {
    let row: BindingRow = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO bindings (id, form_id, name, kind, mode, config, enabled, options)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {BINDING_COLUMNS}"
    )))
    .bind(Uuid::new_v4())
    .bind(new.form_id)
    .bind(new.name)
    .bind(new.kind)
    .bind(new.mode.as_str())
    .bind(Json(new.config))
    .bind(new.enabled)
    .bind(Json(new.options))
    .fetch_one(pool)
    .await?;
    Ok(row.into())
}

/// Writes a changed binding (all fields but the id and timestamps).
pub async fn update_binding(pool: &PgPool, binding: &Binding) -> sqlx::Result<Option<Binding>> {
    let row: Option<BindingRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE bindings SET name = $2, mode = $3, config = $4, enabled = $5, options = $6,
            updated_at = now()
         WHERE id = $1 RETURNING {BINDING_COLUMNS}"
    )))
    .bind(binding.id)
    .bind(&binding.name)
    .bind(binding.mode.as_str())
    .bind(Json(&binding.config))
    .bind(binding.enabled)
    .bind(Json(binding.options))
    .fetch_optional(pool)
    .await?;
    Ok(row.map(Binding::from))
}

/// Deletes a binding; its runs stay in the history. False when there was none.
pub async fn delete_binding(pool: &PgPool, id: Uuid) -> sqlx::Result<bool> {
    let result = sqlx::query("DELETE FROM bindings WHERE id = $1")
        .bind(id)
        .execute(pool)
        .await?;
    Ok(result.rows_affected() == 1)
}

/// How a batch of run records is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunWrite {
    /// Insert unless the run exists: a `queued` record must never overwrite what a worker
    /// already wrote about the same run.
    InsertIfAbsent,
    /// Insert or overwrite the run's state (the attempt count never goes down, the stored
    /// job never changes).
    Upsert,
}

/// Writes a batch of the run history in one statement (one round trip, its own
/// transaction): run records, each inserted or upserted as its [`RunWrite`] says, and
/// attempt records, which refer to runs of the same batch or older ones. A run may appear
/// only once. Writing a batch again (retried after an error) changes nothing more.
pub async fn write_history(
    conn: &mut PgConnection,
    runs: &[(Run, RunWrite)],
    attempts: &[Attempt],
) -> sqlx::Result<()> {
    if runs.is_empty() && attempts.is_empty() {
        return Ok(());
    }
    static SQL: LazyLock<String> = LazyLock::new(|| {
        const COLUMNS: &str = "run_id, binding_id, form_id, submission_id, kind, mode, status,
        attempts, output, flags, error, created_at, started_at, finished_at";
        const VALUES: &str = "run_id, binding_id, form_id, submission_id, kind, mode, status,
        attempts, output::jsonb, flags::jsonb, error, created_at, started_at, finished_at";
        format!(
            "WITH r AS (
            SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::text[],
                $6::text[], $7::text[], $8::int4[], $9::text[], $10::text[], $11::text[],
                $12::timestamptz[], $13::timestamptz[], $14::timestamptz[], $15::bool[])
            AS r({COLUMNS}, overwrite)
         ),
         inserted AS (
            INSERT INTO task_runs ({COLUMNS}) SELECT {VALUES} FROM r WHERE NOT overwrite
            ON CONFLICT (run_id) DO NOTHING
         ),
         upserted AS (
            INSERT INTO task_runs ({COLUMNS}) SELECT {VALUES} FROM r WHERE overwrite
            ON CONFLICT (run_id) DO UPDATE SET status = EXCLUDED.status,
                attempts = GREATEST(task_runs.attempts, EXCLUDED.attempts),
                output = EXCLUDED.output, flags = EXCLUDED.flags, error = EXCLUDED.error,
                started_at = COALESCE(EXCLUDED.started_at, task_runs.started_at),
                finished_at = EXCLUDED.finished_at, updated_at = now()
         )
         INSERT INTO task_attempts (run_id, attempt, status, error, started_at, finished_at)
         SELECT * FROM UNNEST($16::uuid[], $17::int4[], $18::text[], $19::text[],
            $20::timestamptz[], $21::timestamptz[])
         ON CONFLICT (run_id, attempt) DO NOTHING"
        )
    });
    let all = || runs.iter().map(|(run, _)| run);
    sqlx::query(sqlx::AssertSqlSafe(SQL.as_str()))
        .bind(all().map(|r| r.run_id).collect::<Vec<_>>())
        .bind(all().map(|r| r.binding_id).collect::<Vec<_>>())
        .bind(all().map(|r| r.form_id).collect::<Vec<_>>())
        .bind(all().map(|r| r.submission_id).collect::<Vec<_>>())
        .bind(all().map(|r| r.kind.as_str()).collect::<Vec<_>>())
        .bind(all().map(|r| r.mode.as_str()).collect::<Vec<_>>())
        .bind(all().map(|r| r.status.as_str()).collect::<Vec<_>>())
        .bind(all().map(|r| r.attempts).collect::<Vec<_>>())
        .bind(
            all()
                .map(|r| r.output.as_ref().map(Value::to_string))
                .collect::<Vec<_>>(),
        )
        .bind(
            all()
                .map(|r| serde_json::to_string(&r.flags).expect("flags serialize"))
                .collect::<Vec<_>>(),
        )
        .bind(all().map(|r| r.error.as_deref()).collect::<Vec<_>>())
        .bind(all().map(|r| r.created_at).collect::<Vec<_>>())
        .bind(all().map(|r| r.started_at).collect::<Vec<_>>())
        .bind(all().map(|r| r.finished_at).collect::<Vec<_>>())
        .bind(
            runs.iter()
                .map(|(_, write)| *write == RunWrite::Upsert)
                .collect::<Vec<_>>(),
        )
        .bind(attempts.iter().map(|a| a.run_id).collect::<Vec<_>>())
        .bind(attempts.iter().map(|a| a.attempt).collect::<Vec<_>>())
        .bind(
            attempts
                .iter()
                .map(|a| a.status.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            attempts
                .iter()
                .map(|a| a.error.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(attempts.iter().map(|a| a.started_at).collect::<Vec<_>>())
        .bind(attempts.iter().map(|a| a.finished_at).collect::<Vec<_>>())
        .execute(conn)
        .await?;
    Ok(())
}

/// Marks a run `running` for a new attempt and returns the attempt number, or `None` when
/// the run may not start: it already finished, or another worker holds it. A redelivered
/// message may take over a `running` run, since the worker that held it is gone. Stores
/// `job` as the run's input when it has none yet.
pub async fn claim_run(
    pool: &PgPool,
    run: &Run,
    job: &Job,
    redelivered: bool,
) -> sqlx::Result<Option<i32>> {
    let sql = format!(
        "INSERT INTO task_runs (run_id, binding_id, form_id, submission_id, kind, mode, status,
            attempts, created_at, started_at, input, error)
         VALUES ($1, $2, $3, $4, $5, $6, 'running', 1, $7, now(), $9, $10)
         ON CONFLICT (run_id) DO UPDATE SET status = 'running',
            attempts = task_runs.attempts + 1, started_at = now(), finished_at = NULL,
            error = $10, input = COALESCE(task_runs.input, EXCLUDED.input), updated_at = now()
         WHERE {TAKEABLE}
         RETURNING attempts"
    );
    take_run(pool, sql, run, job, redelivered, None).await
}

/// Marks a run `expired` with `error` instead of starting it, when [`claim_run`] could have
/// started it; false when it may not be taken.
pub async fn expire_run(
    pool: &PgPool,
    run: &Run,
    job: &Job,
    redelivered: bool,
    error: &str,
) -> sqlx::Result<bool> {
    let sql = format!(
        "INSERT INTO task_runs (run_id, binding_id, form_id, submission_id, kind, mode, status,
            attempts, created_at, finished_at, input, error)
         VALUES ($1, $2, $3, $4, $5, $6, 'expired', 0, $7, now(), $9, $10)
         ON CONFLICT (run_id) DO UPDATE SET status = 'expired', finished_at = now(),
            error = $10, input = COALESCE(task_runs.input, EXCLUDED.input), updated_at = now()
         WHERE {TAKEABLE}
         RETURNING attempts"
    );
    let taken = take_run(pool, sql, run, job, redelivered, Some(error)).await?;
    Ok(taken.is_some())
}

/// Who may take a run ($8: the message was redelivered): nobody has yet (`queued`), or the
/// worker that held it is gone (a redelivered message finds it `running`).
const TAKEABLE: &str = "task_runs.status = 'queued' OR (task_runs.status = 'running' AND $8)";

/// Runs one of the statements that take a run, with their shared parameters.
async fn take_run(
    pool: &PgPool,
    sql: String,
    run: &Run,
    job: &Job,
    redelivered: bool,
    error: Option<&str>,
) -> sqlx::Result<Option<i32>> {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .bind(run.run_id)
        .bind(run.binding_id)
        .bind(run.form_id)
        .bind(run.submission_id)
        .bind(&run.kind)
        .bind(run.mode.as_str())
        .bind(run.created_at)
        .bind(redelivered)
        .bind(Json(job))
        .bind(error)
        .fetch_optional(pool)
        .await
}

/// Puts the given async runs that are in one of `from` back to `queued` for a new round,
/// and returns those it changed with their attempt counts.
pub async fn requeue_runs(
    pool: &PgPool,
    run_ids: &[Uuid],
    from: &[RunStatus],
) -> sqlx::Result<Vec<(Uuid, i32)>> {
    sqlx::query_as(
        "UPDATE task_runs SET status = 'queued', finished_at = NULL, updated_at = now()
         WHERE run_id = ANY($1) AND mode = 'async' AND status = ANY($2)
         RETURNING run_id, attempts",
    )
    .bind(run_ids)
    .bind(from.iter().map(|s| s.as_str()).collect::<Vec<_>>())
    .fetch_all(pool)
    .await
}

/// Sets runs that [`requeue_runs`] queued, but whose job could not be published, back to
/// `status`; a run a worker took meanwhile is left alone.
pub async fn unqueue_runs(pool: &PgPool, run_ids: &[Uuid], status: RunStatus) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE task_runs SET status = $2, finished_at = now(), updated_at = now()
         WHERE run_id = ANY($1) AND status = 'queued'",
    )
    .bind(run_ids)
    .bind(status.as_str())
    .execute(pool)
    .await?;
    Ok(())
}

/// The job stored with an async run when a worker first took it ([`claim_run`],
/// [`expire_run`]), so `postsub runs retry` can queue it again; `None` for sync runs and runs
/// no worker took yet (only runs a worker finished can be retried).
pub async fn run_input(pool: &PgPool, run_id: Uuid) -> sqlx::Result<Option<Job>> {
    let input: Option<Option<Json<Job>>> =
        sqlx::query_scalar("SELECT input FROM task_runs WHERE run_id = $1")
            .bind(run_id)
            .fetch_optional(pool)
            .await?;
    Ok(input.flatten().map(|job| job.0))
}

#[derive(sqlx::FromRow)]
struct AttemptRow {
    run_id: Uuid,
    attempt: i32,
    status: String,
    error: Option<String>,
    started_at: DateTime<Utc>,
    finished_at: DateTime<Utc>,
}

/// Every attempt of a run, oldest first.
///
/// A sync run that succeeded has no attempt row (the dispatcher writes none: the run row
/// holds all of it), so its one attempt is derived from the run.
pub async fn run_attempts(pool: &PgPool, run: &Run) -> sqlx::Result<Vec<Attempt>> {
    let rows: Vec<AttemptRow> = sqlx::query_as(
        "SELECT run_id, attempt, status, error, started_at, finished_at FROM task_attempts
         WHERE run_id = $1 ORDER BY attempt",
    )
    .bind(run.run_id)
    .fetch_all(pool)
    .await?;
    if rows.is_empty()
        && run.mode == Mode::Sync
        && run.status == RunStatus::Succeeded
        && let (Some(started_at), Some(finished_at)) = (run.started_at, run.finished_at)
    {
        return Ok(vec![Attempt {
            run_id: run.run_id,
            attempt: 1,
            status: AttemptStatus::Succeeded,
            error: None,
            started_at,
            finished_at,
        }]);
    }
    Ok(rows
        .into_iter()
        .map(|row| Attempt {
            run_id: row.run_id,
            attempt: row.attempt,
            // The column's CHECK constraint allows only the four statuses.
            status: AttemptStatus::from_name(&row.status).unwrap_or(AttemptStatus::Failed),
            error: row.error,
            started_at: row.started_at,
            finished_at: row.finished_at,
        })
        .collect())
}

#[derive(sqlx::FromRow)]
struct RunRow {
    run_id: Uuid,
    binding_id: Uuid,
    form_id: Uuid,
    submission_id: Uuid,
    kind: String,
    mode: String,
    status: String,
    attempts: i32,
    output: Option<Json<Value>>,
    flags: Json<Vec<Flag>>,
    error: Option<String>,
    created_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    updated_at: DateTime<Utc>,
}

impl From<RunRow> for Run {
    fn from(row: RunRow) -> Self {
        Run {
            run_id: row.run_id,
            binding_id: row.binding_id,
            form_id: row.form_id,
            submission_id: row.submission_id,
            kind: row.kind,
            mode: if row.mode == "sync" {
                Mode::Sync
            } else {
                Mode::Async
            },
            status: row.status.parse().unwrap_or(RunStatus::Failed),
            attempts: row.attempts,
            output: row.output.map(|j| j.0),
            flags: row.flags.0,
            error: row.error,
            created_at: row.created_at,
            started_at: row.started_at,
            finished_at: row.finished_at,
            updated_at: Some(row.updated_at),
        }
    }
}

const RUN_COLUMNS: &str = "run_id, binding_id, form_id, submission_id, kind, mode, status, \
    attempts, output, flags, error, created_at, started_at, finished_at, updated_at";

/// One run.
pub async fn get_run(pool: &PgPool, run_id: Uuid) -> sqlx::Result<Option<Run>> {
    let row: Option<RunRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {RUN_COLUMNS} FROM task_runs WHERE run_id = $1"
    )))
    .bind(run_id)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(Run::from))
}

/// Filters of [`list_runs`]; each applies when set.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    /// Runs of this form.
    pub form_id: Option<Uuid>,
    /// Runs of this submission.
    pub submission_id: Option<Uuid>,
    /// Runs of this binding.
    pub binding_id: Option<Uuid>,
    /// Runs in this status.
    pub status: Option<RunStatus>,
    /// Runs created at or after.
    pub created_after: Option<DateTime<Utc>>,
    /// Runs created before.
    pub created_before: Option<DateTime<Utc>>,
    /// Runs strictly older than this `(created_at, run_id)`: where the previous page ended.
    pub after_key: Option<(DateTime<Utc>, Uuid)>,
}

/// Runs matching `filter`, newest first, at most `limit`.
pub async fn list_runs(pool: &PgPool, filter: &RunFilter, limit: i64) -> sqlx::Result<Vec<Run>> {
    let mut query: QueryBuilder<Postgres> =
        QueryBuilder::new(format!("SELECT {RUN_COLUMNS} FROM task_runs WHERE true"));
    if let Some(form_id) = filter.form_id {
        query.push(" AND form_id = ").push_bind(form_id);
    }
    if let Some(submission_id) = filter.submission_id {
        query.push(" AND submission_id = ").push_bind(submission_id);
    }
    if let Some(binding_id) = filter.binding_id {
        query.push(" AND binding_id = ").push_bind(binding_id);
    }
    if let Some(status) = filter.status {
        query.push(" AND status = ").push_bind(status.as_str());
    }
    if let Some(after) = filter.created_after {
        query.push(" AND created_at >= ").push_bind(after);
    }
    if let Some(before) = filter.created_before {
        query.push(" AND created_at < ").push_bind(before);
    }
    if let Some((created_at, run_id)) = filter.after_key {
        query
            .push(" AND (created_at, run_id) < (")
            .push_bind(created_at)
            .push(", ")
            .push_bind(run_id)
            .push(")");
    }
    query
        .push(" ORDER BY created_at DESC, run_id DESC LIMIT ")
        .push_bind(limit);
    let rows: Vec<RunRow> = query.build_query_as().fetch_all(pool).await?;
    Ok(rows.into_iter().map(Run::from).collect())
}
