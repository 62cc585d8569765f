//! The PostgreSQL store: bindings, the run history and task state over a pool.
//!
//! Binding changes are announced by a trigger (`NOTIFY postsub_bindings`) and followed with
//! `LISTEN`. A history batch is one statement (`UNNEST` of column arrays) over a connection
//! held from batch to batch. Idempotency lives in the SQL (`ON CONFLICT` on the
//! deterministic run id), never in a read-then-write.

use std::{
    collections::{HashMap, HashSet},
    sync::LazyLock,
    time::Duration,
};

use anyhow::Context as _;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use postsub_tasks::{StateError, TaskState};
use serde_json::Value;
use sqlx::{
    PgPool, Postgres,
    migrate::{MigrateDatabase, Migrator},
    pool::PoolConnection,
    postgres::{PgListener, PgPoolOptions},
    types::Json,
};
use tokio::sync::Mutex;
use uuid::Uuid;

use super::{
    ApiToken, AuditEntry, BINDING_COLUMNS, Binding, BindingRow, BindingStatusCount, ChangeFeed,
    DeadRunGroup, MinuteCount, NewAuditEntry, NewBinding, NewToken, RecentError, RunCount,
    RunFilter, RunRow, RunWrite, StatsBy, Store, StoreResult, TOKEN_COLUMNS, Take, TokenRow,
    check_schema, insert_audit_query, list_runs_query, take_run_sql,
};
use crate::{
    job::Job,
    queue::rabbitmq::outbox::Outbox,
    run::{Attempt, Run, RunStatus},
};

static MIGRATOR: Migrator = sqlx::migrate!("../migrations/postgres");

super::shared_reads!(PgPool, sqlx::Postgres);

/// Runs per minute of creation and status (`Store::runs_per_minute`).
const MINUTE_SQL: &str = "SELECT to_char(date_trunc('minute', created_at AT TIME ZONE 'UTC'),
        'YYYY-MM-DD\"T\"HH24:MI') AS minute, status, count(*) AS count
    FROM task_runs WHERE created_at >= $1 GROUP BY 1, 2 ORDER BY 1";

/// The channels the `bindings_changed` and `api_tokens_changed` triggers notify.
const CHANNELS: [&str; 2] = ["postsub_bindings", "postsub_tokens"];

/// postsub's PostgreSQL database.
pub struct PgStore {
    pool: PgPool,
    /// The run recorder's connection, held from batch to batch: taking one from the pool
    /// for every batch would cost a round trip more each time (sqlx pings a connection
    /// before handing it out). Only the recorder's one writer task uses it.
    history: Mutex<Option<PoolConnection<Postgres>>>,
}

impl PgStore {
    /// Creates the database if it does not exist and applies every pending migration.
    pub async fn migrate(database_url: &str) -> anyhow::Result<()> {
        if !Postgres::database_exists(database_url)
            .await
            .context("cannot reach PostgreSQL (DATABASE_URL)")?
        {
            Postgres::create_database(database_url)
                .await
                .context("creating the database")?;
            tracing::info!("created the database");
        }
        let pool = connect(database_url).await?;
        check_schema(&applied_migrations(&pool).await?, &MIGRATOR, "the database")?;
        MIGRATOR.run(&pool).await.context("applying migrations")?;
        pool.close().await;
        Ok(())
    }

    /// Connects to a migrated database, so `serve` and `worker` say what to do instead of
    /// failing on the first query.
    pub async fn connect_migrated(database_url: &str) -> anyhow::Result<Self> {
        let pool = connect(database_url).await?;
        if check_schema(&applied_migrations(&pool).await?, &MIGRATOR, "the database")?.is_behind() {
            anyhow::bail!(
                "the database has no postsub schema, or an older one: run `postsub migrate` first"
            );
        }
        Ok(Self {
            pool,
            history: Mutex::new(None),
        })
    }

    /// The outbox in this database, where jobs wait while RabbitMQ is away.
    pub fn outbox(&self) -> Outbox {
        Outbox::new(self.pool.clone())
    }
}

/// Connects a pool, failing fast when PostgreSQL does not answer.
async fn connect(database_url: &str) -> anyhow::Result<PgPool> {
    PgPoolOptions::new()
        // The run recorder holds one of them.
        .max_connections(17)
        .acquire_timeout(Duration::from_secs(5))
        .connect(database_url)
        .await
        .context("cannot connect to PostgreSQL (DATABASE_URL)")
}

/// The migrations applied to the database; empty when none ever were.
async fn applied_migrations(pool: &PgPool) -> anyhow::Result<Vec<i64>> {
    let exists: Option<String> = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations')::text")
        .fetch_one(pool)
        .await
        .context("reading the schema version")?;
    if exists.is_none() {
        return Ok(Vec::new());
    }
    sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
        .fetch_all(pool)
        .await
        .context("reading the schema version")
}

/// [`ChangeFeed`] over `LISTEN postsub_bindings` and `postsub_tokens`.
struct Listener(PgListener);

#[async_trait]
impl ChangeFeed for Listener {
    async fn changed(&mut self) -> StoreResult<()> {
        match self.0.try_recv().await? {
            // One reload covers every change queued so far.
            Some(_) => while self.0.next_buffered().is_some() {},
            // The connection dropped; the listener reconnects on the next call, and
            // notifications sent meanwhile are lost: the caller reloads.
            None => tracing::info!("change listener reconnecting"),
        }
        Ok(())
    }
}

/// The statements that take a run, built once.
static CLAIM_SQL: LazyLock<String> = LazyLock::new(|| take_run_sql(Take::Claim, "now()", "$11"));
static EXPIRE_SQL: LazyLock<String> = LazyLock::new(|| take_run_sql(Take::Expire, "now()", "$11"));

/// [`CLAIM_SQL`] for many runs of first deliveries at once (a first delivery never takes
/// over a `running` run), from column arrays; returns the runs it took.
const CLAIM_MANY_SQL: &str = "
    INSERT INTO task_runs (run_id, binding_id, form_id, submission_id, kind, mode, status,
        attempts, created_at, started_at, input, updated_at, event)
    SELECT run_id, binding_id, form_id, submission_id, kind, mode, 'running', 1, created_at,
        now(), input, now(), event
    FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::text[], $6::text[],
        $7::timestamptz[], $8::jsonb[], $9::text[])
        AS c(run_id, binding_id, form_id, submission_id, kind, mode, created_at, input, event)
    ON CONFLICT (run_id) DO UPDATE SET status = 'running', attempts = task_runs.attempts + 1,
        started_at = now(), finished_at = NULL, error = NULL,
        input = coalesce(task_runs.input, excluded.input), updated_at = now()
    WHERE task_runs.status = 'queued'
    RETURNING run_id, attempts";

impl PgStore {
    /// Runs one of the statements that take a run, with their shared parameters.
    async fn take_run(
        &self,
        sql: &'static str,
        run: &Run,
        job: &Job,
        redelivered: bool,
        error: Option<&str>,
    ) -> StoreResult<Option<i32>> {
        Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
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
            .bind(run.event.as_str())
            .fetch_optional(&self.pool)
            .await?)
    }
}

/// The history batch statements: runs and their attempts from column arrays, in one round
/// trip; `[without attempts, with attempts]`. A batch without attempts (the proxy's: sync
/// results and queued jobs) takes the statement without the attempts insert, which cost
/// PostgreSQL ~110 µs of CPU per batch even with nothing to insert (BENCHMARKS.md).
static HISTORY_SQL: LazyLock<[String; 2]> =
    LazyLock::new(|| [history_sql(false), history_sql(true)]);

fn history_sql(with_attempts: bool) -> String {
    const COLUMNS: &str = "run_id, binding_id, form_id, submission_id, kind, mode, status,
        attempts, output, flags, error, created_at, started_at, finished_at";
    const VALUES: &str = "run_id, binding_id, form_id, submission_id, kind, mode, status,
        attempts, output::jsonb, flags::jsonb, error, created_at, started_at, finished_at,
        event";
    let runs = format!(
        "WITH r AS (
            SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::text[],
                $6::text[], $7::text[], $8::int4[], $9::text[], $10::text[], $11::text[],
                $12::timestamptz[], $13::timestamptz[], $14::timestamptz[], $15::bool[],
                $16::text[])
            AS r({COLUMNS}, overwrite, event)
         ),
         inserted AS (
            INSERT INTO task_runs ({COLUMNS}, event) SELECT {VALUES} FROM r WHERE NOT overwrite
            ON CONFLICT (run_id) DO NOTHING
         )"
    );
    let upsert = format!(
        "INSERT INTO task_runs ({COLUMNS}, event) SELECT {VALUES} FROM r WHERE overwrite
         ON CONFLICT (run_id) DO UPDATE SET status = EXCLUDED.status,
            attempts = GREATEST(task_runs.attempts, EXCLUDED.attempts),
            output = EXCLUDED.output, flags = EXCLUDED.flags, error = EXCLUDED.error,
            started_at = COALESCE(EXCLUDED.started_at, task_runs.started_at),
            finished_at = EXCLUDED.finished_at, updated_at = now()"
    );
    if !with_attempts {
        return format!("{runs} {upsert}");
    }
    format!(
        "{runs},
         upserted AS ({upsert})
         INSERT INTO task_attempts (run_id, attempt, status, error, started_at, finished_at)
         SELECT * FROM UNNEST($17::uuid[], $18::int4[], $19::text[], $20::text[],
            $21::timestamptz[], $22::timestamptz[])
         ON CONFLICT (run_id, attempt) DO NOTHING"
    )
}

#[async_trait]
impl Store for PgStore {
    async fn all_bindings(&self) -> StoreResult<Vec<Binding>> {
        Ok(read_bindings(&self.pool, None).await?)
    }

    async fn form_bindings(&self, form_id: Uuid) -> StoreResult<Vec<Binding>> {
        Ok(read_bindings(&self.pool, Some(form_id)).await?)
    }

    async fn get_binding(&self, id: Uuid) -> StoreResult<Option<Binding>> {
        Ok(read_binding(&self.pool, id).await?)
    }

    async fn insert_binding(&self, new: NewBinding) -> StoreResult<Binding> {
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
        .fetch_one(&self.pool)
        .await?;
        Ok(row.into())
    }

    async fn update_binding(&self, binding: &Binding) -> StoreResult<Option<Binding>> {
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
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(Binding::from))
    }

    async fn delete_binding(&self, id: Uuid) -> StoreResult<bool> {
        let result = sqlx::query("DELETE FROM bindings WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(result.rows_affected() == 1)
    }

    async fn changes(&self) -> StoreResult<Box<dyn ChangeFeed>> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen_all(CHANNELS).await?;
        Ok(Box::new(Listener(listener)))
    }

    async fn tokens(&self) -> StoreResult<Vec<ApiToken>> {
        Ok(read_tokens(&self.pool).await?)
    }

    async fn create_token(&self, token: &NewToken) -> StoreResult<ApiToken> {
        let row: TokenRow = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "INSERT INTO api_tokens (name, scope, hash, created_at) VALUES ($1, $2, $3, $4)
             RETURNING {TOKEN_COLUMNS}"
        )))
        .bind(&token.name)
        .bind(token.scope.as_str())
        .bind(&token.hash[..])
        .bind(Utc::now())
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_into()?)
    }

    async fn revoke_token(&self, name: &str) -> StoreResult<bool> {
        let result = sqlx::query("DELETE FROM api_tokens WHERE name = $1")
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(result.rows_affected() == 1)
    }

    async fn record_audit(&self, entry: &NewAuditEntry) -> StoreResult<()> {
        insert_audit_query::<Postgres>(entry.clone())
            .build()
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn audit_entries(
        &self,
        since: Option<DateTime<Utc>>,
        before_id: Option<i64>,
        limit: i64,
    ) -> StoreResult<Vec<AuditEntry>> {
        Ok(read_audit(&self.pool, since, before_id, limit).await?)
    }

    async fn touch_tokens(&self, used: &[(String, DateTime<Utc>)]) -> StoreResult<()> {
        let (names, times): (Vec<&str>, Vec<DateTime<Utc>>) =
            used.iter().map(|(name, at)| (name.as_str(), *at)).unzip();
        sqlx::query(
            "UPDATE api_tokens SET last_used_at = used.at
             FROM UNNEST($1::text[], $2::timestamptz[]) AS used (name, at)
             WHERE api_tokens.name = used.name",
        )
        .bind(names)
        .bind(times)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn write_history(
        &self,
        runs: &[(Run, RunWrite)],
        attempts: &[Attempt],
    ) -> StoreResult<()> {
        if runs.is_empty() && attempts.is_empty() {
            return Ok(());
        }
        let mut held = self.history.lock().await;
        let connection = match &mut *held {
            Some(connection) => connection,
            None => held.insert(self.pool.acquire().await?),
        };
        // Rows in run-id order, in every statement that writes several runs: two batches
        // that lock the same runs in different orders deadlock (a claim batch against the
        // proxy's history batch did, under load).
        let mut runs: Vec<&(Run, RunWrite)> = runs.iter().collect();
        runs.sort_unstable_by_key(|(run, _)| run.run_id);
        let mut attempts: Vec<&Attempt> = attempts.iter().collect();
        attempts.sort_unstable_by_key(|attempt| (attempt.run_id, attempt.attempt));
        let all = || runs.iter().map(|(run, _)| run);
        let with_attempts = !attempts.is_empty();
        let sql = &HISTORY_SQL[usize::from(with_attempts)];
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
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
            .bind(all().map(|r| r.event.as_str()).collect::<Vec<_>>());
        if with_attempts {
            query = query
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
                .bind(attempts.iter().map(|a| a.finished_at).collect::<Vec<_>>());
        }
        let written = query.execute(&mut **connection).await;
        if written.is_err() {
            // The connection may be what broke: the retry takes a fresh one.
            if let Some(mut broken) = held.take() {
                broken.close_on_drop();
            }
        }
        written?;
        Ok(())
    }

    async fn claim_run(&self, run: &Run, job: &Job, redelivered: bool) -> StoreResult<Option<i32>> {
        self.take_run(&CLAIM_SQL, run, job, redelivered, None).await
    }

    async fn claim_runs(&self, claims: &[(Run, Job)]) -> StoreResult<Vec<Option<i32>>> {
        // In run-id order, as the history batches (see write_history).
        let mut sorted: Vec<&(Run, Job)> = claims.iter().collect();
        sorted.sort_unstable_by_key(|(run, _)| run.run_id);
        let runs = || sorted.iter().map(|(run, _)| run);
        let taken: HashMap<Uuid, i32> = sqlx::query_as(CLAIM_MANY_SQL)
            .bind(runs().map(|r| r.run_id).collect::<Vec<_>>())
            .bind(runs().map(|r| r.binding_id).collect::<Vec<_>>())
            .bind(runs().map(|r| r.form_id).collect::<Vec<_>>())
            .bind(runs().map(|r| r.submission_id).collect::<Vec<_>>())
            .bind(runs().map(|r| r.kind.as_str()).collect::<Vec<_>>())
            .bind(runs().map(|r| r.mode.as_str()).collect::<Vec<_>>())
            .bind(runs().map(|r| r.created_at).collect::<Vec<_>>())
            .bind(sorted.iter().map(|(_, job)| Json(job)).collect::<Vec<_>>())
            .bind(runs().map(|r| r.event.as_str()).collect::<Vec<_>>())
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .collect();
        Ok(claims
            .iter()
            .map(|(run, _)| taken.get(&run.run_id).copied())
            .collect())
    }

    async fn expire_run(
        &self,
        run: &Run,
        job: &Job,
        redelivered: bool,
        error: &str,
    ) -> StoreResult<bool> {
        let taken = self
            .take_run(&EXPIRE_SQL, run, job, redelivered, Some(error))
            .await?;
        Ok(taken.is_some())
    }

    async fn requeue_runs(
        &self,
        run_ids: &[Uuid],
        from: &[RunStatus],
    ) -> StoreResult<Vec<(Uuid, i32)>> {
        Ok(sqlx::query_as(
            "UPDATE task_runs SET status = 'queued', finished_at = NULL, updated_at = now()
             WHERE run_id = ANY($1) AND mode = 'async' AND status = ANY($2)
             RETURNING run_id, attempts",
        )
        .bind(run_ids)
        .bind(from.iter().map(|s| s.as_str()).collect::<Vec<_>>())
        .fetch_all(&self.pool)
        .await?)
    }

    async fn unqueue_runs(&self, run_ids: &[Uuid], status: RunStatus) -> StoreResult<()> {
        sqlx::query(
            "UPDATE task_runs SET status = $2, finished_at = now(), updated_at = now()
             WHERE run_id = ANY($1) AND status = 'queued'",
        )
        .bind(run_ids)
        .bind(status.as_str())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn run_input(&self, run_id: Uuid) -> StoreResult<Option<Job>> {
        Ok(read_run_input(&self.pool, run_id).await?)
    }

    async fn get_run(&self, run_id: Uuid) -> StoreResult<Option<Run>> {
        Ok(read_run(&self.pool, run_id).await?)
    }

    async fn run_attempts(&self, run: &Run) -> StoreResult<Vec<Attempt>> {
        Ok(read_attempts(&self.pool, run).await?)
    }

    async fn list_runs(&self, filter: &RunFilter, limit: i64) -> StoreResult<Vec<Run>> {
        let mut query = list_runs_query::<Postgres>(filter, limit);
        let rows: Vec<RunRow> = query.build_query_as().fetch_all(&self.pool).await?;
        Ok(rows.into_iter().map(Run::from).collect())
    }

    async fn existing_runs(&self, run_ids: &[Uuid]) -> StoreResult<HashSet<Uuid>> {
        Ok(read_existing_runs(&self.pool, run_ids).await?)
    }

    async fn run_stats(&self, filter: &RunFilter, by: StatsBy) -> StoreResult<Vec<RunCount>> {
        Ok(read_run_stats(&self.pool, filter, by).await?)
    }

    async fn runs_by_binding(&self, since: DateTime<Utc>) -> StoreResult<Vec<BindingStatusCount>> {
        Ok(read_runs_by_binding(&self.pool, since).await?)
    }

    async fn unfinished_by_binding(&self) -> StoreResult<Vec<BindingStatusCount>> {
        Ok(read_unfinished_by_binding(&self.pool).await?)
    }

    async fn recent_errors(
        &self,
        since: DateTime<Utc>,
        limit: i64,
    ) -> StoreResult<Vec<RecentError>> {
        Ok(read_recent_errors(&self.pool, since, limit).await?)
    }

    async fn dead_run_groups(&self, limit: i64) -> StoreResult<Vec<DeadRunGroup>> {
        Ok(read_dead_run_groups(&self.pool, limit).await?)
    }

    async fn runs_per_minute(&self, since: DateTime<Utc>) -> StoreResult<Vec<MinuteCount>> {
        Ok(sqlx::query_as(MINUTE_SQL)
            .bind(since)
            .fetch_all(&self.pool)
            .await?)
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn close(&self) {
        drop(self.history.lock().await.take());
        self.pool.close().await;
    }
}

fn unavailable(err: sqlx::Error) -> StateError {
    StateError(err.to_string())
}

/// Task state in `task_state`, by primary key.
#[async_trait]
impl TaskState for PgStore {
    async fn get(&self, binding_id: Uuid, key: &str) -> Result<Option<Value>, StateError> {
        read_state(&self.pool, binding_id, key)
            .await
            .map_err(unavailable)
    }

    async fn put_if_absent(
        &self,
        binding_id: Uuid,
        key: &str,
        value: Value,
    ) -> Result<Value, StateError> {
        // The no-op update makes RETURNING yield the stored row when the key exists.
        let stored: Json<Value> = sqlx::query_scalar(
            "INSERT INTO task_state (binding_id, key, value) VALUES ($1, $2, $3)
             ON CONFLICT (binding_id, key) DO UPDATE SET key = task_state.key
             RETURNING value",
        )
        .bind(binding_id)
        .bind(key)
        .bind(Json(value))
        .fetch_one(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(stored.0)
    }

    async fn put(&self, binding_id: Uuid, key: &str, value: Value) -> Result<(), StateError> {
        sqlx::query(
            "INSERT INTO task_state (binding_id, key, value) VALUES ($1, $2, $3)
             ON CONFLICT (binding_id, key) DO UPDATE SET value = excluded.value",
        )
        .bind(binding_id)
        .bind(key)
        .bind(Json(value))
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(())
    }
}
