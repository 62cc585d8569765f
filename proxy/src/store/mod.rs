//! The `Store` seam: everything postsub keeps in its database, behind one trait.
//!
//! Bindings (and the feed that tells the binding cache to reload), the run history (the
//! recorder's batches, the worker's claims, re-queuing), the job stored with each async
//! run, and the tasks' per-binding state. Above this seam no code names a database; below
//! it are two backends, chosen by the database URL (see [`crate::backend`]):
//!
//! - [`postgres`]: PostgreSQL (with RabbitMQ as the queue), for everything past one machine.
//! - [`sqlite`]: one SQLite file, which also holds the embedded job queue, for a first run
//!   with nothing installed and for one-machine deployments.
//!
//! Both keep the same tables and the same guarantees: idempotency by unique keys and
//! `ON CONFLICT` on the deterministic run id, never by read-then-write, and one statement
//! (or transaction) per history batch. One contract test suite runs against both.

pub mod postgres;
pub mod sqlite;

use std::collections::HashSet;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use postsub_tasks::{Event, Flag, Mode, TaskState};
use serde_json::Value;
use sqlx::types::Json;
use uuid::Uuid;

use crate::{
    auth::Scope,
    job::Job,
    options::BindingOptions,
    run::{Attempt, AttemptStatus, Run, RunStatus},
};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused the statement or could not be reached.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// A write was made, but the transaction it shared with others did not commit.
    #[error("the write was not committed: {0}")]
    NotCommitted(String),
    /// The store was closed (shutdown).
    #[error("the database is closed")]
    Closed,
}

impl StoreError {
    /// Whether a unique constraint refused the write (a binding name taken on its form).
    pub fn is_unique_violation(&self) -> bool {
        matches!(self, StoreError::Database(err)
            if err.as_database_error().is_some_and(|db| db.is_unique_violation()))
    }
}

/// Result of a store operation.
pub type StoreResult<T> = Result<T, StoreError>;

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

/// Filters of [`Store::list_runs`]; each applies when set.
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
    /// Runs of this task kind.
    pub kind: Option<String>,
    /// Runs with a flag whose field or rule is this.
    pub flag: Option<String>,
    /// Runs with a flag on this field (answer key).
    pub flag_field: Option<String>,
    /// Runs with a flag of this rule.
    pub flag_rule: Option<String>,
    /// Runs whose error contains this text, ignoring ASCII case.
    pub error_contains: Option<String>,
    /// Runs for this submission event.
    pub event: Option<Event>,
    /// Runs strictly older than this `(created_at, run_id)`: where the previous page ended.
    pub after_key: Option<(DateTime<Utc>, Uuid)>,
}

/// What [`Store::run_stats`] counts runs by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatsBy {
    /// The binding (its id).
    Binding,
    /// The task kind.
    Kind,
    /// The run's status.
    Status,
    /// The rule of a flag: runs with at least one flag of each rule.
    FlagRule,
}

impl StatsBy {
    /// Every grouping, in the order the CLI lists them.
    pub const ALL: [StatsBy; 4] = [
        StatsBy::Binding,
        StatsBy::Kind,
        StatsBy::Status,
        StatsBy::FlagRule,
    ];

    /// The name used by the CLI and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            StatsBy::Binding => "binding",
            StatsBy::Kind => "kind",
            StatsBy::Status => "status",
            StatsBy::FlagRule => "flag_rule",
        }
    }
}

impl std::str::FromStr for StatsBy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        StatsBy::ALL
            .into_iter()
            .find(|by| by.as_str() == s)
            .ok_or_else(|| {
                format!("cannot count runs by `{s}`: by binding, kind, status or flag_rule")
            })
    }
}

/// One group of [`Store::run_stats`]: its key (a binding id, kind, status or rule) and
/// how many runs it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunCount {
    /// What the runs share.
    pub key: String,
    /// How many.
    pub runs: i64,
}

/// How many runs of one binding are in one status (the console's Forms page).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct BindingStatusCount {
    /// The binding.
    pub binding_id: Uuid,
    /// The status, as stored (`queued`, `dead`, …).
    pub status: String,
    /// Runs.
    pub count: i64,
}

/// A run's error, for the console's Forms page.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct RecentError {
    /// The run's binding.
    pub binding_id: Uuid,
    /// The error.
    pub error: String,
    /// When the run was created.
    pub created_at: DateTime<Utc>,
}

/// Dead runs of one binding that failed with one error (the console's Dead letters page).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct DeadRunGroup {
    /// The binding.
    pub binding_id: Uuid,
    /// The error the runs died with.
    pub error: Option<String>,
    /// Runs.
    pub count: i64,
    /// When the newest of them was created.
    pub newest: DateTime<Utc>,
}

/// Runs created in one minute that are now in one status (the Overview's chart).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct MinuteCount {
    /// The minute, `YYYY-MM-DDTHH:MM` in UTC.
    pub minute: String,
    /// The status, as stored.
    pub status: String,
    /// Runs.
    pub count: i64,
}

/// Tells the binding cache when to reload.
#[async_trait]
pub trait ChangeFeed: Send {
    /// Returns when bindings may have changed since the last call: a change was announced,
    /// or the feed reconnected and may have missed one. An error means the feed is lost
    /// (open a new one).
    async fn changed(&mut self) -> StoreResult<()>;
}

/// postsub's database. Every method is one round trip or one transaction; none holds a
/// lock across a caller's `await`.
///
/// The tasks' per-binding state ([`TaskState`]) lives here too, so an `Arc<dyn Store>` is
/// also what tasks get as their state.
#[async_trait]
pub trait Store: TaskState + Send + Sync {
    /// Every binding, oldest first (the order results are reported in).
    async fn all_bindings(&self) -> StoreResult<Vec<Binding>>;

    /// Bindings of one form, oldest first.
    async fn form_bindings(&self, form_id: Uuid) -> StoreResult<Vec<Binding>>;

    /// One binding.
    async fn get_binding(&self, id: Uuid) -> StoreResult<Option<Binding>>;

    /// Stores a new binding. A second binding of the same name on one form is a unique
    /// violation ([`StoreError::is_unique_violation`]).
    async fn insert_binding(&self, new: NewBinding) -> StoreResult<Binding>;

    /// Writes a changed binding (all fields but the id and timestamps); `None` when it is
    /// gone.
    async fn update_binding(&self, binding: &Binding) -> StoreResult<Option<Binding>>;

    /// Deletes a binding; its runs stay in the history. False when there was none.
    async fn delete_binding(&self, id: Uuid) -> StoreResult<bool>;

    /// A feed of changes to what every process keeps in memory (bindings and API tokens),
    /// made by any process on this database.
    async fn changes(&self) -> StoreResult<Box<dyn ChangeFeed>>;

    /// Every API token (with its hash), oldest first.
    async fn tokens(&self) -> StoreResult<Vec<ApiToken>>;

    /// Stores a new token; a name taken is a unique violation.
    async fn create_token(&self, token: &NewToken) -> StoreResult<ApiToken>;

    /// Deletes the token `name`; false when there was none.
    async fn revoke_token(&self, name: &str) -> StoreResult<bool>;

    /// Adds an entry to the audit log.
    async fn record_audit(&self, entry: &NewAuditEntry) -> StoreResult<()>;

    /// Audit entries at or after `since` and older than entry `before_id`, newest first,
    /// at most `limit`.
    async fn audit_entries(
        &self,
        since: Option<DateTime<Utc>>,
        before_id: Option<i64>,
        limit: i64,
    ) -> StoreResult<Vec<AuditEntry>>;

    /// Records when tokens were last used.
    async fn touch_tokens(&self, used: &[(String, DateTime<Utc>)]) -> StoreResult<()>;

    /// Writes a batch of the run history at once (one statement or one transaction): run
    /// records, each inserted or upserted as its [`RunWrite`] says, and attempt records,
    /// which refer to runs of the same batch or older ones. A run may appear only once.
    /// Writing a batch again (retried after an error) changes nothing more.
    async fn write_history(
        &self,
        runs: &[(Run, RunWrite)],
        attempts: &[Attempt],
    ) -> StoreResult<()>;

    /// Marks a run `running` for a new attempt and returns the attempt number, or `None`
    /// when the run may not start: it already finished, or another worker holds it. A
    /// redelivered job may take over a `running` run, since the worker that held it is
    /// gone. Stores `job` as the run's input when it has none yet.
    async fn claim_run(&self, run: &Run, job: &Job, redelivered: bool) -> StoreResult<Option<i32>>;

    /// [`Store::claim_run`] for the runs of jobs delivered for the first time, one answer
    /// per claim in order, in one round trip where the backend can (the worker's
    /// [`crate::claimer`] batches them). A run may appear only once.
    async fn claim_runs(&self, claims: &[(Run, Job)]) -> StoreResult<Vec<Option<i32>>> {
        // At once, not one after another: a backend that groups concurrent writes (SQLite's
        // writer) commits them together.
        futures_util::future::join_all(
            claims
                .iter()
                .map(|(run, job)| self.claim_run(run, job, false)),
        )
        .await
        .into_iter()
        .collect()
    }

    /// Marks a run `expired` with `error` instead of starting it, when [`Store::claim_run`]
    /// could have started it; false when it may not be taken.
    async fn expire_run(
        &self,
        run: &Run,
        job: &Job,
        redelivered: bool,
        error: &str,
    ) -> StoreResult<bool>;

    /// Puts the given async runs that are in one of `from` back to `queued` for a new
    /// round, and returns those it changed with their attempt counts.
    async fn requeue_runs(
        &self,
        run_ids: &[Uuid],
        from: &[RunStatus],
    ) -> StoreResult<Vec<(Uuid, i32)>>;

    /// Sets runs that [`Store::requeue_runs`] queued, but whose job could not be queued,
    /// back to `status`; a run a worker took meanwhile is left alone.
    async fn unqueue_runs(&self, run_ids: &[Uuid], status: RunStatus) -> StoreResult<()>;

    /// The job stored with an async run when a worker first took it, so `postsub runs
    /// retry` can queue it again; `None` for sync runs and runs no worker took yet.
    async fn run_input(&self, run_id: Uuid) -> StoreResult<Option<Job>>;

    /// One run.
    async fn get_run(&self, run_id: Uuid) -> StoreResult<Option<Run>>;

    /// Every attempt of a run, oldest first. A sync run that succeeded has no attempt row
    /// (the run row holds all of it), so its one attempt is derived from the run.
    async fn run_attempts(&self, run: &Run) -> StoreResult<Vec<Attempt>>;

    /// Runs matching `filter`, newest first, at most `limit`.
    async fn list_runs(&self, filter: &RunFilter, limit: i64) -> StoreResult<Vec<Run>>;

    /// Which of `run_ids` have a run in the history (in any status).
    async fn existing_runs(&self, run_ids: &[Uuid]) -> StoreResult<HashSet<Uuid>>;

    /// The runs `filter` selects (paging aside), counted per `by`, largest groups first.
    async fn run_stats(&self, filter: &RunFilter, by: StatsBy) -> StoreResult<Vec<RunCount>>;

    /// Runs created at or after `since`, counted per binding and status.
    async fn runs_by_binding(&self, since: DateTime<Utc>) -> StoreResult<Vec<BindingStatusCount>>;

    /// Runs of any age still `queued`, `running` or `dead`, counted per binding and status.
    async fn unfinished_by_binding(&self) -> StoreResult<Vec<BindingStatusCount>>;

    /// Errors of runs created at or after `since` that failed, died, expired or wait for a
    /// retry, newest first, at most `limit`: each binding's last error, in one statement.
    async fn recent_errors(
        &self,
        since: DateTime<Utc>,
        limit: i64,
    ) -> StoreResult<Vec<RecentError>>;

    /// Dead runs counted per binding and error, largest groups first, at most `limit`.
    async fn dead_run_groups(&self, limit: i64) -> StoreResult<Vec<DeadRunGroup>>;

    /// Runs created at or after `since`, counted per minute of creation and status.
    async fn runs_per_minute(&self, since: DateTime<Utc>) -> StoreResult<Vec<MinuteCount>>;

    /// Answers when the database does (readiness).
    async fn ping(&self) -> StoreResult<()>;

    /// Closes the connections, after the last write.
    async fn close(&self);
}

/// How a worker takes a run: to start it ([`Store::claim_run`]) or to mark it expired
/// instead ([`Store::expire_run`]).
#[derive(Clone, Copy)]
pub(crate) enum Take {
    Claim,
    Expire,
}

/// The statement that takes a run, the same on both backends but for the clock: `now` is
/// the SQL for the current time (`now()` on PostgreSQL, a bound `$11` on SQLite), `event`
/// the parameter of the run's event (`$11` on PostgreSQL, `$12` on SQLite). Binds $1–$7
/// the run's columns up to `created_at`, $8 whether the job was redelivered, $9 the job
/// (stored as the run's input when it has none yet), $10 the error; returns the attempts.
pub(crate) fn take_run_sql(take: Take, now: &str, event: &str) -> String {
    let (status, attempts, time_column, update) = match take {
        Take::Claim => (
            "running",
            1,
            "started_at",
            format!("attempts = task_runs.attempts + 1, started_at = {now}, finished_at = NULL"),
        ),
        Take::Expire => ("expired", 0, "finished_at", format!("finished_at = {now}")),
    };
    // Who may take a run: nobody has yet (`queued`), or the worker that held it is gone (a
    // redelivered job finds it `running`).
    format!(
        "INSERT INTO task_runs (run_id, binding_id, form_id, submission_id, kind, mode, status,
            attempts, created_at, {time_column}, input, error, updated_at, event)
         VALUES ($1, $2, $3, $4, $5, $6, '{status}', {attempts}, $7, {now}, $9, $10, {now},
            {event})
         ON CONFLICT (run_id) DO UPDATE SET status = '{status}', {update}, error = $10,
            input = coalesce(task_runs.input, excluded.input), updated_at = {now}
         WHERE task_runs.status = 'queued' OR (task_runs.status = 'running' AND $8)
         RETURNING attempts"
    )
}

/// The reads both backends make with the same SQL (SQLite takes PostgreSQL's `$1`
/// placeholders too), as functions over a pool of type `$pool`: expanded in each
/// backend's module, whose `Store` methods call them.
macro_rules! shared_reads {
    ($pool:ty, $db:ty) => {
        /// See [`Store::existing_runs`].
        async fn read_existing_runs(
            pool: &$pool,
            run_ids: &[uuid::Uuid],
        ) -> sqlx::Result<std::collections::HashSet<uuid::Uuid>> {
            let mut found = std::collections::HashSet::new();
            // Within every backend's limit of bound parameters.
            for chunk in run_ids.chunks(1000) {
                let mut query: sqlx::QueryBuilder<$db> =
                    sqlx::QueryBuilder::new("SELECT run_id FROM task_runs WHERE run_id IN (");
                let mut list = query.separated(", ");
                for run_id in chunk {
                    list.push_bind(*run_id);
                }
                query.push(")");
                let rows: Vec<(uuid::Uuid,)> = query.build_query_as().fetch_all(pool).await?;
                found.extend(rows.into_iter().map(|(run_id,)| run_id));
            }
            Ok(found)
        }

        /// See [`Store::run_stats`].
        async fn read_run_stats(
            pool: &$pool,
            filter: &$crate::store::RunFilter,
            by: $crate::store::StatsBy,
        ) -> sqlx::Result<Vec<$crate::store::RunCount>> {
            let mut query = $crate::store::run_stats_query::<$db>(filter, by);
            Ok(if by == $crate::store::StatsBy::Binding {
                let rows: Vec<(uuid::Uuid, i64)> = query.build_query_as().fetch_all(pool).await?;
                rows.into_iter()
                    .map(|(key, runs)| $crate::store::RunCount {
                        key: key.to_string(),
                        runs,
                    })
                    .collect()
            } else {
                let rows: Vec<(String, i64)> = query.build_query_as().fetch_all(pool).await?;
                rows.into_iter()
                    .map(|(key, runs)| $crate::store::RunCount { key, runs })
                    .collect()
            })
        }

        /// Every binding, or a form's, oldest first (the order results are reported in).
        async fn read_bindings(
            pool: &$pool,
            form_id: Option<uuid::Uuid>,
        ) -> sqlx::Result<Vec<$crate::store::Binding>> {
            let rows: Vec<$crate::store::BindingRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {} FROM bindings WHERE $1 IS NULL OR form_id = $1 ORDER BY created_at, id",
                $crate::store::BINDING_COLUMNS
            )))
            .bind(form_id)
            .fetch_all(pool)
            .await?;
            Ok(rows.into_iter().map(Into::into).collect())
        }

        async fn read_binding(
            pool: &$pool,
            id: uuid::Uuid,
        ) -> sqlx::Result<Option<$crate::store::Binding>> {
            let row: Option<$crate::store::BindingRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {} FROM bindings WHERE id = $1",
                $crate::store::BINDING_COLUMNS
            )))
            .bind(id)
            .fetch_optional(pool)
            .await?;
            Ok(row.map(Into::into))
        }

        async fn read_audit(
            pool: &$pool,
            since: Option<chrono::DateTime<chrono::Utc>>,
            before_id: Option<i64>,
            limit: i64,
        ) -> sqlx::Result<Vec<$crate::store::AuditEntry>> {
            sqlx::query_as(
                "SELECT id, at, actor, action, target, before, after FROM audit_log
                 WHERE ($1 IS NULL OR at >= $1) AND ($2 IS NULL OR id < $2)
                 ORDER BY id DESC LIMIT $3",
            )
            .bind(since)
            .bind(before_id)
            .bind(limit)
            .fetch_all(pool)
            .await
        }

        async fn read_tokens(pool: &$pool) -> sqlx::Result<Vec<$crate::store::ApiToken>> {
            let rows: Vec<$crate::store::TokenRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {} FROM api_tokens ORDER BY created_at, name",
                $crate::store::TOKEN_COLUMNS
            )))
            .fetch_all(pool)
            .await?;
            rows.into_iter().map(TryFrom::try_from).collect()
        }

        async fn read_run_input(
            pool: &$pool,
            run_id: uuid::Uuid,
        ) -> sqlx::Result<Option<$crate::job::Job>> {
            let input: Option<Option<sqlx::types::Json<$crate::job::Job>>> =
                sqlx::query_scalar("SELECT input FROM task_runs WHERE run_id = $1")
                    .bind(run_id)
                    .fetch_optional(pool)
                    .await?;
            Ok(input.flatten().map(|job| job.0))
        }

        async fn read_run(pool: &$pool, run_id: uuid::Uuid) -> sqlx::Result<Option<$crate::run::Run>> {
            let row: Option<$crate::store::RunRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {} FROM task_runs WHERE run_id = $1",
                $crate::store::RUN_COLUMNS
            )))
            .bind(run_id)
            .fetch_optional(pool)
            .await?;
            Ok(row.map(Into::into))
        }

        async fn read_attempts(
            pool: &$pool,
            run: &$crate::run::Run,
        ) -> sqlx::Result<Vec<$crate::run::Attempt>> {
            let rows: Vec<$crate::store::AttemptRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {} FROM task_attempts WHERE run_id = $1 ORDER BY attempt",
                $crate::store::ATTEMPT_COLUMNS
            )))
            .bind(run.run_id)
            .fetch_all(pool)
            .await?;
            Ok($crate::store::attempts_of(run, rows))
        }

        // `GROUP BY status, binding_id`, not the other way round: SQLite would then read
        // the whole binding index in order instead of the rows the WHERE picks (1,000,000
        // runs: 2 s instead of 30 ms).
        async fn read_runs_by_binding(
            pool: &$pool,
            since: chrono::DateTime<chrono::Utc>,
        ) -> sqlx::Result<Vec<$crate::store::BindingStatusCount>> {
            sqlx::query_as(
                "SELECT binding_id, status, count(*) AS count FROM task_runs
                 WHERE created_at >= $1 GROUP BY status, binding_id",
            )
            .bind(since)
            .fetch_all(pool)
            .await
        }

        async fn read_unfinished_by_binding(
            pool: &$pool,
        ) -> sqlx::Result<Vec<$crate::store::BindingStatusCount>> {
            sqlx::query_as(
                "SELECT binding_id, status, count(*) AS count FROM task_runs
                 WHERE status IN ('queued', 'running', 'dead') GROUP BY status, binding_id",
            )
            .fetch_all(pool)
            .await
        }

        async fn read_recent_errors(
            pool: &$pool,
            since: chrono::DateTime<chrono::Utc>,
            limit: i64,
        ) -> sqlx::Result<Vec<$crate::store::RecentError>> {
            // By status first, so both databases search the status index.
            sqlx::query_as(
                "SELECT binding_id, error, created_at FROM task_runs
                 WHERE status IN ('queued', 'failed', 'dead', 'expired') AND created_at >= $1
                    AND error IS NOT NULL
                 ORDER BY created_at DESC LIMIT $2",
            )
            .bind(since)
            .bind(limit)
            .fetch_all(pool)
            .await
        }

        async fn read_dead_run_groups(
            pool: &$pool,
            limit: i64,
        ) -> sqlx::Result<Vec<$crate::store::DeadRunGroup>> {
            sqlx::query_as(
                "SELECT binding_id, error, count(*) AS count, max(created_at) AS newest
                 FROM task_runs WHERE status = 'dead'
                 GROUP BY binding_id, error ORDER BY count(*) DESC LIMIT $1",
            )
            .bind(limit)
            .fetch_all(pool)
            .await
        }

        async fn read_state(
            pool: &$pool,
            binding_id: uuid::Uuid,
            key: &str,
        ) -> sqlx::Result<Option<serde_json::Value>> {
            let value: Option<sqlx::types::Json<serde_json::Value>> = sqlx::query_scalar(
                "SELECT value FROM task_state WHERE binding_id = $1 AND key = $2",
            )
            .bind(binding_id)
            .bind(key)
            .fetch_optional(pool)
            .await?;
            Ok(value.map(|v| v.0))
        }
    };
}
use shared_reads;

// Row types shared by both backends: sqlx decodes them from either.

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

fn mode_from_column(mode: &str) -> Mode {
    // The column's CHECK constraint allows only the two modes.
    if mode == "sync" {
        Mode::Sync
    } else {
        Mode::Async
    }
}

impl From<BindingRow> for Binding {
    fn from(row: BindingRow) -> Self {
        Binding {
            id: row.id,
            form_id: row.form_id,
            name: row.name,
            kind: row.kind,
            mode: mode_from_column(&row.mode),
            config: row.config.0,
            enabled: row.enabled,
            options: row.options.0,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

/// An API token as stored: never the token itself, only its SHA-256.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiToken {
    /// Unique name, to list and revoke it by.
    pub name: String,
    /// What it may do.
    pub scope: Scope,
    /// SHA-256 of the token.
    pub hash: Vec<u8>,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// When a proxy last saw it (written every few seconds, not per call).
    pub last_used_at: Option<DateTime<Utc>>,
}

/// A token to store.
#[derive(Debug, Clone)]
pub struct NewToken {
    /// Unique name.
    pub name: String,
    /// What it may do.
    pub scope: Scope,
    /// SHA-256 of the token.
    pub hash: [u8; 32],
}

/// A change to record in the audit log.
#[derive(Debug, Clone)]
pub struct NewAuditEntry {
    /// Who: the token's name, `POSTSUB_ADMIN_TOKEN`, or `anonymous` without tokens.
    pub actor: String,
    /// What: `binding.create`, `token.revoke`, `dlq.replay`, ...
    pub action: String,
    /// On what: a binding or run id, a token name, a filter.
    pub target: String,
    /// The target before the change, secrets masked.
    pub before: Option<Value>,
    /// The target after it, secrets masked.
    pub after: Option<Value>,
}

/// An entry of the audit log.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct AuditEntry {
    /// Increasing: the order entries were written in.
    pub id: i64,
    /// When.
    pub at: DateTime<Utc>,
    /// Who.
    pub actor: String,
    /// What.
    pub action: String,
    /// On what.
    pub target: String,
    /// Before, masked.
    pub before: Option<Value>,
    /// After, masked.
    pub after: Option<Value>,
}

/// The insert of [`Store::record_audit`], in either backend's dialect.
fn insert_audit_query<'a, DB>(entry: NewAuditEntry) -> sqlx::QueryBuilder<DB>
where
    DB: sqlx::Database,
    String: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    Option<Value>: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    DateTime<Utc>: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    let mut query = sqlx::QueryBuilder::new(
        "INSERT INTO audit_log (at, actor, action, target, before, after) VALUES (",
    );
    query
        .separated(", ")
        .push_bind(Utc::now())
        .push_bind(entry.actor)
        .push_bind(entry.action)
        .push_bind(entry.target)
        .push_bind(entry.before)
        .push_bind(entry.after);
    query.push(")");
    query
}

const TOKEN_COLUMNS: &str = "name, scope, hash, created_at, last_used_at";

#[derive(sqlx::FromRow)]
struct TokenRow {
    name: String,
    scope: String,
    hash: Vec<u8>,
    created_at: DateTime<Utc>,
    last_used_at: Option<DateTime<Utc>>,
}

impl TryFrom<TokenRow> for ApiToken {
    type Error = sqlx::Error;

    fn try_from(row: TokenRow) -> Result<Self, Self::Error> {
        Ok(ApiToken {
            scope: row
                .scope
                .parse()
                .map_err(|err: String| sqlx::Error::Decode(err.into()))?,
            name: row.name,
            hash: row.hash,
            created_at: row.created_at,
            last_used_at: row.last_used_at,
        })
    }
}

const BINDING_COLUMNS: &str =
    "id, form_id, name, kind, mode, config, enabled, options, created_at, updated_at";

#[derive(sqlx::FromRow)]
struct RunRow {
    run_id: Uuid,
    binding_id: Uuid,
    form_id: Uuid,
    submission_id: Uuid,
    kind: String,
    event: String,
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
            // The column's CHECK constraint allows only the three events.
            event: row.event.parse().unwrap_or_default(),
            mode: mode_from_column(&row.mode),
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

const RUN_COLUMNS: &str = "run_id, binding_id, form_id, submission_id, kind, event, mode, \
    status, attempts, output, flags, error, created_at, started_at, finished_at, updated_at";

#[derive(sqlx::FromRow)]
struct AttemptRow {
    run_id: Uuid,
    attempt: i32,
    status: String,
    error: Option<String>,
    started_at: DateTime<Utc>,
    finished_at: DateTime<Utc>,
}

const ATTEMPT_COLUMNS: &str = "run_id, attempt, status, error, started_at, finished_at";

/// The attempts of `run` from its rows, oldest first; for a sync run that succeeded, which
/// has none, the one attempt its row describes.
fn attempts_of(run: &Run, rows: Vec<AttemptRow>) -> Vec<Attempt> {
    if rows.is_empty()
        && run.mode == Mode::Sync
        && run.status == RunStatus::Succeeded
        && let (Some(started_at), Some(finished_at)) = (run.started_at, run.finished_at)
    {
        return vec![Attempt {
            run_id: run.run_id,
            attempt: 1,
            status: AttemptStatus::Succeeded,
            error: None,
            started_at,
            finished_at,
        }];
    }
    rows.into_iter()
        .map(|row| Attempt {
            run_id: row.run_id,
            attempt: row.attempt,
            // The column's CHECK constraint allows only the four statuses.
            status: AttemptStatus::from_name(&row.status).unwrap_or(AttemptStatus::Failed),
            error: row.error,
            started_at: row.started_at,
            finished_at: row.finished_at,
        })
        .collect()
}

/// The `SELECT` of [`Store::list_runs`], in either backend's dialect (the builder writes
/// each one's placeholders).
fn list_runs_query<'a, DB>(filter: &RunFilter, limit: i64) -> sqlx::QueryBuilder<DB>
where
    DB: sqlx::Database,
    Uuid: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    &'a str: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    String: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    DateTime<Utc>: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    i64: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    let mut query =
        sqlx::QueryBuilder::new(format!("SELECT {RUN_COLUMNS} FROM task_runs WHERE 1 = 1"));
    push_run_filter(&mut query, filter);
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
    query
}

/// The SQL of a JSON array's elements, their `field` and their `rule`, in `DB`'s dialect,
/// for a flags column (a JSON array of `{field, rule, message}`) and an alias.
fn flag_sql<DB: sqlx::Database>(column: &str, alias: &str) -> (String, String, String) {
    if DB::NAME == "SQLite" {
        (
            format!("json_each({column}) AS {alias}"),
            format!("json_extract({alias}.value, '$.field')"),
            format!("json_extract({alias}.value, '$.rule')"),
        )
    } else {
        (
            format!("jsonb_array_elements({column}) AS {alias}"),
            format!("{alias}.value ->> 'field'"),
            format!("{alias}.value ->> 'rule'"),
        )
    }
}

/// ` AND …` for each filter of `filter` but paging, on `task_runs`.
fn push_run_filter<'a, DB>(query: &mut sqlx::QueryBuilder<DB>, filter: &RunFilter)
where
    DB: sqlx::Database,
    Uuid: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    &'a str: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    String: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    DateTime<Utc>: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
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
    if let Some(kind) = &filter.kind {
        query.push(" AND kind = ").push_bind(kind.clone());
    }
    if let Some(event) = filter.event {
        query.push(" AND event = ").push_bind(event.as_str());
    }
    if filter.flag.is_some() || filter.flag_field.is_some() || filter.flag_rule.is_some() {
        // `flags <> '[]'` lets the partial index of flagged runs serve; one flag must
        // match every flag filter.
        let (each, field, rule) = flag_sql::<DB>("task_runs.flags", "g");
        query.push(format!(
            " AND flags <> '[]' AND EXISTS (SELECT 1 FROM {each} WHERE 1 = 1"
        ));
        if let Some(flag) = &filter.flag {
            query
                .push(format!(" AND ({field} = "))
                .push_bind(flag.clone())
                .push(format!(" OR {rule} = "))
                .push_bind(flag.clone())
                .push(")");
        }
        if let Some(flag_field) = &filter.flag_field {
            query
                .push(format!(" AND {field} = "))
                .push_bind(flag_field.clone());
        }
        if let Some(flag_rule) = &filter.flag_rule {
            query
                .push(format!(" AND {rule} = "))
                .push_bind(flag_rule.clone());
        }
        query.push(")");
    }
    if let Some(text) = &filter.error_contains {
        let pattern = format!(
            "%{}%",
            text.to_ascii_lowercase()
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
        );
        query
            .push(" AND lower(error) LIKE ")
            .push_bind(pattern)
            .push(" ESCAPE '\\'");
    }
    if let Some(after) = filter.created_after {
        query.push(" AND created_at >= ").push_bind(after);
    }
    if let Some(before) = filter.created_before {
        query.push(" AND created_at < ").push_bind(before);
    }
}

/// The `SELECT` of [`Store::run_stats`]: rows of (key, runs), the key a binding id for
/// [`StatsBy::Binding`] and text otherwise.
pub(crate) fn run_stats_query<'a, DB>(filter: &RunFilter, by: StatsBy) -> sqlx::QueryBuilder<DB>
where
    DB: sqlx::Database,
    Uuid: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    &'a str: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    String: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    DateTime<Utc>: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    let (key, from, count) = match by {
        StatsBy::Binding => ("binding_id".to_owned(), "task_runs".to_owned(), "count(*)"),
        StatsBy::Kind => ("kind".to_owned(), "task_runs".to_owned(), "count(*)"),
        StatsBy::Status => ("status".to_owned(), "task_runs".to_owned(), "count(*)"),
        StatsBy::FlagRule => {
            let (each, _, rule) = flag_sql::<DB>("task_runs.flags", "f");
            (rule, format!("task_runs, {each}"), "count(DISTINCT run_id)")
        }
    };
    let mut query = sqlx::QueryBuilder::new(format!(
        "SELECT {key} AS key, {count} AS runs FROM {from} WHERE 1 = 1"
    ));
    if by == StatsBy::FlagRule {
        query.push(" AND flags <> '[]'");
    }
    push_run_filter(&mut query, filter);
    query.push(" GROUP BY 1 ORDER BY 2 DESC, 1");
    query
}

/// Where a database's schema stands against the migrations of this build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Schema {
    /// Not migrated at all.
    Empty,
    /// Migrated by an older postsub: some migrations are pending.
    Behind,
    /// Every migration applied.
    Current,
}

impl Schema {
    /// Whether `postsub migrate` has work to do.
    fn is_behind(self) -> bool {
        self != Schema::Current
    }
}

/// Compares the versions applied to a database (`what`, for messages) with those
/// `migrator` knows, refusing a database it must not touch: one whose migrations are not
/// postsub's, or one migrated by a newer postsub.
fn check_schema(
    applied: &[i64],
    migrator: &sqlx::migrate::Migrator,
    what: &str,
) -> anyhow::Result<Schema> {
    let known: std::collections::HashSet<i64> = migrator.iter().map(|m| m.version).collect();
    let unknown: Vec<i64> = applied
        .iter()
        .copied()
        .filter(|v| !known.contains(v))
        .collect();
    if let Some(newest) = unknown.iter().max() {
        if unknown.len() == applied.len() {
            anyhow::bail!(
                "{what} is not a postsub database (it holds migrations postsub does not know); \
                 refusing to change it: point DATABASE_URL at another database"
            );
        }
        anyhow::bail!(
            "{what} was migrated by a newer postsub (migration {newest}); refusing to use it: \
             run that version of postsub, or point DATABASE_URL at another database"
        );
    }
    Ok(if applied.is_empty() {
        Schema::Empty
    } else if applied.len() < known.len() {
        Schema::Behind
    } else {
        Schema::Current
    })
}
