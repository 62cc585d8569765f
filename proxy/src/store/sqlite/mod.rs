//! The embedded store: postsub's tables in one SQLite file, which also holds the embedded
//! job queue ([`crate::queue::embedded`]).
//!
//! The file is in WAL mode, so readers never wait for the writer. Every write goes through
//! this process's one write connection ([`writer::Writer`]: group commit, `BEGIN
//! IMMEDIATE`); reads use a small pool of their own. Several processes may open the same
//! file (`serve` and `worker` on one machine): their writers take turns on SQLite's lock,
//! and binding changes reach each of them through a version counter that triggers bump and
//! every process polls.
//!
//! The tables are PostgreSQL's in SQLite types: UUIDs as 16-byte BLOBs, JSON as TEXT,
//! timestamps as RFC 3339 TEXT in UTC (always written by [`sql_time`], so they sort as
//! text), booleans as INTEGER. There is no outbox: a job and its run are committed
//! together, in this file, so there is nothing to relay.

pub mod rows;
pub mod writer;

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
    sync::{Arc, LazyLock, Mutex},
    time::Duration,
};

use anyhow::Context as _;
use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use postsub_tasks::{StateError, TaskState};
use serde_json::Value;
use sqlx::{
    Connection as _, Sqlite, SqliteConnection, SqlitePool,
    migrate::Migrator,
    sqlite::{SqliteConnectOptions, SqlitePoolOptions, SqliteSynchronous},
    types::Json,
};
use uuid::Uuid;

use self::{
    rows::Rows,
    writer::{LOCK_POLL, Writer, WriterTask},
};
use super::{
    ApiToken, AuditEntry, BINDING_COLUMNS, Binding, BindingRow, BindingStatusCount, ChangeFeed,
    DeadRunGroup, MinuteCount, NewAuditEntry, NewBinding, NewToken, RecentError, RunCount,
    RunFilter, RunRow, RunWrite, Schema, StatsBy, Store, StoreError, StoreResult, TOKEN_COLUMNS,
    Take, TokenRow, check_schema, insert_audit_query, list_runs_query, take_run_sql,
};
use crate::{
    job::Job,
    run::{Attempt, Run, RunStatus},
};

static MIGRATOR: Migrator = sqlx::migrate!("../migrations/sqlite");

super::shared_reads!(SqlitePool, sqlx::Sqlite);

/// Runs per minute of creation and status (`Store::runs_per_minute`): times are stored as
/// RFC 3339 text in UTC, so the minute is the first 16 characters.
const MINUTE_SQL: &str = "SELECT substr(created_at, 1, 16) AS minute, status, count(*) AS count
    FROM task_runs WHERE created_at >= $1 GROUP BY 1, 2 ORDER BY 1";

/// How often a process looks for binding changes another process made.
const CHANGE_POLL: Duration = Duration::from_millis(250);
/// Read connections.
const READERS: u32 = 4;
/// How long a connection waits for another process's write lock (the writer: in short
/// polls, see [`writer::LOCK_POLL`]) before the writer backs off, logging why.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the file is and how hard a commit holds on to the disk.
#[derive(Debug, Clone)]
pub struct SqliteSettings {
    /// The database file.
    pub path: PathBuf,
    /// `FULL`: a commit survives a power cut; `NORMAL`: it survives a crash of postsub,
    /// and a power cut may lose the last commits (WAL mode stays consistent).
    pub synchronous: SqliteSynchronous,
}

/// A timestamp as the embedded tables keep it: RFC 3339 in UTC, as sqlx writes it too, so
/// that text order is time order.
pub(crate) fn sql_time(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::AutoSi, false)
}

/// The file's connections: the writer task and the read pool.
pub(crate) struct Db {
    pub(crate) writer: Writer,
    pub(crate) readers: SqlitePool,
    writer_task: Mutex<Option<WriterTask>>,
}

/// postsub's SQLite database.
#[derive(Clone)]
pub struct SqliteStore {
    db: Arc<Db>,
    path: PathBuf,
}

fn options(settings: &SqliteSettings) -> SqliteConnectOptions {
    SqliteConnectOptions::new()
        .filename(&settings.path)
        .foreign_keys(true)
        .busy_timeout(BUSY_TIMEOUT)
        .synchronous(settings.synchronous)
        .pragma("temp_store", "memory")
        .pragma("cache_size", "-32768")
}

impl SqliteStore {
    /// Creates the file (and its directory) if missing, turns on WAL and applies every
    /// pending migration. A file that is not a SQLite database, holds another program's
    /// tables or was migrated by a newer postsub is refused, never overwritten.
    pub async fn migrate(settings: &SqliteSettings) -> anyhow::Result<()> {
        let path = &settings.path;
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| {
                format!(
                    "cannot create the directory {} for the database {}",
                    dir.display(),
                    path.display()
                )
            })?;
        }
        let mut connection =
            SqliteConnection::connect_with(&options(settings).create_if_missing(true))
                .await
                .map_err(|err| cannot_open(path, err))?;
        let applied = applied_migrations(&mut connection, path).await?;
        if check_schema(&applied, &MIGRATOR, &describe(path))? == Schema::Empty
            && has_tables(&mut connection).await?
        {
            anyhow::bail!(
                "{} is not a postsub database (it holds tables of another program); refusing to \
                 change it: point DATABASE_URL at another file",
                describe(path)
            );
        }
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode = WAL")
            .fetch_one(&mut connection)
            .await
            .with_context(|| format!("turning on WAL mode for {}", path.display()))?;
        if !mode.eq_ignore_ascii_case("wal") {
            anyhow::bail!(
                "{} cannot use WAL mode (it stays in {mode})",
                path.display()
            );
        }
        MIGRATOR
            .run(&mut connection)
            .await
            .with_context(|| format!("applying migrations to {}", path.display()))?;
        connection.close().await?;
        Ok(())
    }

    /// Opens a migrated file: the writer task and the read pool.
    pub async fn open(settings: &SqliteSettings) -> anyhow::Result<Self> {
        let path = &settings.path;
        if !path.exists() {
            anyhow::bail!(
                "{} does not exist: run `postsub migrate` first (`postsub dev` migrates by itself)",
                describe(path)
            );
        }
        let options = options(settings).create_if_missing(false);
        let mut writer = SqliteConnection::connect_with(&options.clone().busy_timeout(LOCK_POLL))
            .await
            .map_err(|err| cannot_open(path, err))?;
        let applied = applied_migrations(&mut writer, path).await?;
        if check_schema(&applied, &MIGRATOR, &describe(path))?.is_behind() {
            anyhow::bail!(
                "{} has no postsub schema, or an older one: run `postsub migrate` first",
                describe(path)
            );
        }
        let readers = SqlitePoolOptions::new()
            .max_connections(READERS)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await
            .map_err(|err| cannot_open(path, err))?;
        let (writer, task) = Writer::start(writer).context("starting the SQLite writer thread")?;
        Ok(Self {
            db: Arc::new(Db {
                writer,
                readers,
                writer_task: Mutex::new(Some(task)),
            }),
            path: path.clone(),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The connections, for the embedded queue in the same file.
    pub(crate) fn db(&self) -> Arc<Db> {
        self.db.clone()
    }
}

fn describe(path: &Path) -> String {
    format!("the database file {}", path.display())
}

/// Why a file did not open, in words that say what to do.
fn cannot_open(path: &Path, err: sqlx::Error) -> anyhow::Error {
    let code = err.as_database_error().and_then(|db| db.code());
    match code.as_deref() {
        // SQLITE_NOTADB
        Some("26") => anyhow::anyhow!(
            "{} is not a SQLite database; refusing to change it: point DATABASE_URL at \
             another file",
            path.display()
        ),
        // SQLITE_CANTOPEN
        Some("14") => anyhow::anyhow!(
            "cannot open or create the database file {} (are it and its directory \
             writable?)",
            path.display()
        ),
        _ => anyhow::Error::new(err).context(format!("cannot open {}", describe(path))),
    }
}

/// The migrations applied to the file; empty when none ever were. A file that is not a
/// SQLite database fails here, on its first read.
async fn applied_migrations(
    connection: &mut SqliteConnection,
    path: &Path,
) -> anyhow::Result<Vec<i64>> {
    let exists: Option<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
    )
    .fetch_optional(&mut *connection)
    .await
    .with_context(|| {
        format!(
            "{} is not a SQLite database, or cannot be read; refusing to change it",
            path.display()
        )
    })?;
    if exists.is_none() {
        return Ok(Vec::new());
    }
    sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
        .fetch_all(&mut *connection)
        .await
        .with_context(|| format!("reading the schema version of {}", path.display()))
}

async fn has_tables(connection: &mut SqliteConnection) -> anyhow::Result<bool> {
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
    )
    .fetch_one(connection)
    .await?;
    Ok(tables > 0)
}

/// Bindings or tokens changed when the counters their triggers bump move.
struct VersionPoll {
    readers: SqlitePool,
    seen: i64,
}

async fn changes_version(readers: &SqlitePool) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT sum(version) FROM changes")
        .fetch_one(readers)
        .await
}

#[async_trait]
impl ChangeFeed for VersionPoll {
    async fn changed(&mut self) -> StoreResult<()> {
        loop {
            let version = changes_version(&self.readers).await?;
            if version != self.seen {
                self.seen = version;
                return Ok(());
            }
            tokio::time::sleep(CHANGE_POLL).await;
        }
    }
}

/// A list of UUIDs as the JSON array `json_each` reads (`unhex` turns each back into 16
/// bytes).
pub(crate) fn uuid_list(ids: &[Uuid]) -> String {
    Value::from(
        ids.iter()
            .map(|id| id.simple().to_string())
            .collect::<Vec<_>>(),
    )
    .to_string()
}

/// The statements that take a run, built once.
static CLAIM_SQL: LazyLock<String> = LazyLock::new(|| take_run_sql(Take::Claim, "$11", "$12"));
static EXPIRE_SQL: LazyLock<String> = LazyLock::new(|| take_run_sql(Take::Expire, "$11", "$12"));

impl SqliteStore {
    /// Runs one of the statements that take a run, with their shared parameters.
    async fn take_run(
        &self,
        sql: &'static str,
        run: &Run,
        job: &Job,
        redelivered: bool,
        error: Option<&str>,
    ) -> StoreResult<Option<i32>> {
        let (run, input, error) = (run.clone(), Json(job.clone()), error.map(str::to_owned));
        let now = sql_time(Utc::now());
        self.db
            .writer
            .write(move |connection| {
                Box::pin(async move {
                    sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                        .bind(run.run_id)
                        .bind(run.binding_id)
                        .bind(run.form_id)
                        .bind(run.submission_id)
                        .bind(&run.kind)
                        .bind(run.mode.as_str())
                        .bind(sql_time(run.created_at))
                        .bind(redelivered)
                        .bind(input)
                        .bind(error)
                        .bind(now)
                        .bind(run.event.as_str())
                        .fetch_optional(connection)
                        .await
                })
            })
            .await
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn all_bindings(&self) -> StoreResult<Vec<Binding>> {
        Ok(read_bindings(&self.db.readers, None).await?)
    }

    async fn form_bindings(&self, form_id: Uuid) -> StoreResult<Vec<Binding>> {
        Ok(read_bindings(&self.db.readers, Some(form_id)).await?)
    }

    async fn get_binding(&self, id: Uuid) -> StoreResult<Option<Binding>> {
        Ok(read_binding(&self.db.readers, id).await?)
    }

    async fn insert_binding(&self, new: NewBinding) -> StoreResult<Binding> {
        let now = sql_time(Utc::now());
        let row: BindingRow = self
            .db
            .writer
            .write(move |connection| {
                Box::pin(async move {
                    sqlx::query_as(sqlx::AssertSqlSafe(format!(
                        "INSERT INTO bindings (id, form_id, name, kind, mode, config, enabled,
                            options, created_at, updated_at)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9)
                         RETURNING {BINDING_COLUMNS}"
                    )))
                    .bind(Uuid::new_v4())
                    .bind(new.form_id)
                    .bind(new.name)
                    .bind(new.kind)
                    .bind(new.mode.as_str())
                    .bind(Json(new.config))
                    .bind(new.enabled)
                    .bind(Json(new.options))
                    .bind(now)
                    .fetch_one(connection)
                    .await
                })
            })
            .await?;
        Ok(row.into())
    }

    async fn update_binding(&self, binding: &Binding) -> StoreResult<Option<Binding>> {
        let binding = binding.clone();
        let now = sql_time(Utc::now());
        let row: Option<BindingRow> = self
            .db
            .writer
            .write(move |connection| {
                Box::pin(async move {
                    sqlx::query_as(sqlx::AssertSqlSafe(format!(
                        "UPDATE bindings SET name = ?2, mode = ?3, config = ?4, enabled = ?5,
                            options = ?6, updated_at = ?7
                         WHERE id = ?1 RETURNING {BINDING_COLUMNS}"
                    )))
                    .bind(binding.id)
                    .bind(&binding.name)
                    .bind(binding.mode.as_str())
                    .bind(Json(&binding.config))
                    .bind(binding.enabled)
                    .bind(Json(binding.options))
                    .bind(now)
                    .fetch_optional(connection)
                    .await
                })
            })
            .await?;
        Ok(row.map(Binding::from))
    }

    async fn delete_binding(&self, id: Uuid) -> StoreResult<bool> {
        let deleted = self
            .db
            .writer
            .write(move |connection| {
                Box::pin(async move {
                    sqlx::query("DELETE FROM bindings WHERE id = ?1")
                        .bind(id)
                        .execute(connection)
                        .await
                })
            })
            .await?;
        Ok(deleted.rows_affected() == 1)
    }

    async fn changes(&self) -> StoreResult<Box<dyn ChangeFeed>> {
        let readers = self.db.readers.clone();
        let seen = changes_version(&readers).await?;
        Ok(Box::new(VersionPoll { readers, seen }))
    }

    async fn tokens(&self) -> StoreResult<Vec<ApiToken>> {
        Ok(read_tokens(&self.db.readers).await?)
    }

    async fn create_token(&self, token: &NewToken) -> StoreResult<ApiToken> {
        let token = token.clone();
        let row: TokenRow = self
            .db
            .writer
            .write(move |connection| {
                Box::pin(async move {
                    sqlx::query_as(sqlx::AssertSqlSafe(format!(
                        "INSERT INTO api_tokens (name, scope, hash, created_at)
                         VALUES ($1, $2, $3, $4) RETURNING {TOKEN_COLUMNS}"
                    )))
                    .bind(&token.name)
                    .bind(token.scope.as_str())
                    .bind(&token.hash[..])
                    .bind(sql_time(Utc::now()))
                    .fetch_one(connection)
                    .await
                })
            })
            .await?;
        Ok(row.try_into()?)
    }

    async fn revoke_token(&self, name: &str) -> StoreResult<bool> {
        let name = name.to_owned();
        let deleted = self
            .db
            .writer
            .write(move |connection| {
                Box::pin(async move {
                    sqlx::query("DELETE FROM api_tokens WHERE name = $1")
                        .bind(name)
                        .execute(connection)
                        .await
                })
            })
            .await?;
        Ok(deleted.rows_affected() == 1)
    }

    async fn record_audit(&self, entry: &NewAuditEntry) -> StoreResult<()> {
        let entry = entry.clone();
        self.db
            .writer
            .write(move |connection| {
                Box::pin(async move {
                    insert_audit_query::<Sqlite>(entry)
                        .build()
                        .execute(connection)
                        .await
                })
            })
            .await?;
        Ok(())
    }

    async fn audit_entries(
        &self,
        since: Option<DateTime<Utc>>,
        before_id: Option<i64>,
        limit: i64,
    ) -> StoreResult<Vec<AuditEntry>> {
        Ok(read_audit(&self.db.readers, since, before_id, limit).await?)
    }

    async fn touch_tokens(&self, used: &[(String, DateTime<Utc>)]) -> StoreResult<()> {
        let used = Value::from(
            used.iter()
                .map(|(name, at)| serde_json::json!([name, sql_time(*at)]))
                .collect::<Vec<_>>(),
        )
        .to_string();
        self.db
            .writer
            .write(move |connection| {
                Box::pin(async move {
                    sqlx::query(
                        "UPDATE api_tokens SET last_used_at = used.value ->> 1
                         FROM json_each($1) AS used
                         WHERE api_tokens.name = used.value ->> 0",
                    )
                    .bind(used)
                    .execute(connection)
                    .await
                })
            })
            .await?;
        Ok(())
    }

    async fn write_history(
        &self,
        runs: &[(Run, RunWrite)],
        attempts: &[Attempt],
    ) -> StoreResult<()> {
        let mut rows = Rows::default();
        for (run, write) in runs {
            rows.run(run, *write == RunWrite::Upsert);
        }
        for attempt in attempts {
            rows.attempt(attempt);
        }
        self.db.writer.write_rows(rows).await
    }

    async fn claim_run(&self, run: &Run, job: &Job, redelivered: bool) -> StoreResult<Option<i32>> {
        self.take_run(&CLAIM_SQL, run, job, redelivered, None).await
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
        let ids = uuid_list(run_ids);
        let from = Value::from(from.iter().map(|s| s.as_str()).collect::<Vec<_>>()).to_string();
        let now = sql_time(Utc::now());
        self.db
            .writer
            .write(move |connection| {
                Box::pin(async move {
                    sqlx::query_as(
                        "UPDATE task_runs SET status = 'queued', finished_at = NULL, updated_at = ?3
                         WHERE run_id IN (SELECT unhex(value) FROM json_each(?1))
                            AND mode = 'async'
                            AND status IN (SELECT value FROM json_each(?2))
                         RETURNING run_id, attempts",
                    )
                    .bind(ids)
                    .bind(from)
                    .bind(now)
                    .fetch_all(connection)
                    .await
                })
            })
            .await
    }

    async fn unqueue_runs(&self, run_ids: &[Uuid], status: RunStatus) -> StoreResult<()> {
        let ids = uuid_list(run_ids);
        let now = sql_time(Utc::now());
        self.db
            .writer
            .write(move |connection| {
                Box::pin(async move {
                    sqlx::query(
                        "UPDATE task_runs SET status = ?2, finished_at = ?3, updated_at = ?3
                         WHERE run_id IN (SELECT unhex(value) FROM json_each(?1))
                            AND status = 'queued'",
                    )
                    .bind(ids)
                    .bind(status.as_str())
                    .bind(now)
                    .execute(connection)
                    .await
                    .map(drop)
                })
            })
            .await
    }

    async fn run_input(&self, run_id: Uuid) -> StoreResult<Option<Job>> {
        Ok(read_run_input(&self.db.readers, run_id).await?)
    }

    async fn get_run(&self, run_id: Uuid) -> StoreResult<Option<Run>> {
        Ok(read_run(&self.db.readers, run_id).await?)
    }

    async fn run_attempts(&self, run: &Run) -> StoreResult<Vec<Attempt>> {
        Ok(read_attempts(&self.db.readers, run).await?)
    }

    async fn list_runs(&self, filter: &RunFilter, limit: i64) -> StoreResult<Vec<Run>> {
        let mut query = list_runs_query::<Sqlite>(filter, limit);
        let rows: Vec<RunRow> = query.build_query_as().fetch_all(&self.db.readers).await?;
        Ok(rows.into_iter().map(Run::from).collect())
    }

    async fn existing_runs(&self, run_ids: &[Uuid]) -> StoreResult<HashSet<Uuid>> {
        Ok(read_existing_runs(&self.db.readers, run_ids).await?)
    }

    async fn run_stats(&self, filter: &RunFilter, by: StatsBy) -> StoreResult<Vec<RunCount>> {
        Ok(read_run_stats(&self.db.readers, filter, by).await?)
    }

    async fn runs_by_binding(&self, since: DateTime<Utc>) -> StoreResult<Vec<BindingStatusCount>> {
        Ok(read_runs_by_binding(&self.db.readers, since).await?)
    }

    async fn unfinished_by_binding(&self) -> StoreResult<Vec<BindingStatusCount>> {
        Ok(read_unfinished_by_binding(&self.db.readers).await?)
    }

    async fn recent_errors(
        &self,
        since: DateTime<Utc>,
        limit: i64,
    ) -> StoreResult<Vec<RecentError>> {
        Ok(read_recent_errors(&self.db.readers, since, limit).await?)
    }

    async fn dead_run_groups(&self, limit: i64) -> StoreResult<Vec<DeadRunGroup>> {
        Ok(read_dead_run_groups(&self.db.readers, limit).await?)
    }

    async fn runs_per_minute(&self, since: DateTime<Utc>) -> StoreResult<Vec<MinuteCount>> {
        Ok(sqlx::query_as(MINUTE_SQL)
            .bind(since)
            .fetch_all(&self.db.readers)
            .await?)
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.db.readers).await?;
        Ok(())
    }

    async fn close(&self) {
        let task = self
            .db
            .writer_task
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(task) = task {
            task.finish().await;
        }
        self.db.readers.close().await;
    }
}

fn unavailable(err: StoreError) -> StateError {
    StateError(err.to_string())
}

/// Task state in `task_state`, by primary key.
#[async_trait]
impl TaskState for SqliteStore {
    async fn get(&self, binding_id: Uuid, key: &str) -> Result<Option<Value>, StateError> {
        read_state(&self.db.readers, binding_id, key)
            .await
            .map_err(|err| unavailable(err.into()))
    }

    async fn put_if_absent(
        &self,
        binding_id: Uuid,
        key: &str,
        value: Value,
    ) -> Result<Value, StateError> {
        let key = key.to_owned();
        let now = sql_time(Utc::now());
        // The no-op update makes RETURNING yield the stored row when the key exists.
        let stored: Json<Value> = self
            .db
            .writer
            .write(move |connection| {
                Box::pin(async move {
                    sqlx::query_scalar(
                        "INSERT INTO task_state (binding_id, key, value, created_at)
                         VALUES (?1, ?2, ?3, ?4)
                         ON CONFLICT (binding_id, key) DO UPDATE SET key = task_state.key
                         RETURNING value",
                    )
                    .bind(binding_id)
                    .bind(key)
                    .bind(Json(value))
                    .bind(now)
                    .fetch_one(connection)
                    .await
                })
            })
            .await
            .map_err(unavailable)?;
        Ok(stored.0)
    }

    async fn put(&self, binding_id: Uuid, key: &str, value: Value) -> Result<(), StateError> {
        let key = key.to_owned();
        let now = sql_time(Utc::now());
        self.db
            .writer
            .write(move |connection| {
                Box::pin(async move {
                    sqlx::query(
                        "INSERT INTO task_state (binding_id, key, value, created_at)
                         VALUES (?1, ?2, ?3, ?4)
                         ON CONFLICT (binding_id, key) DO UPDATE SET value = excluded.value",
                    )
                    .bind(binding_id)
                    .bind(key)
                    .bind(Json(value))
                    .bind(now)
                    .execute(connection)
                    .await
                    .map(drop)
                })
            })
            .await
            .map_err(unavailable)
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;

    #[test]
    fn timestamps_sort_as_text_across_precisions() {
        // Whole seconds, milliseconds, microseconds and nanoseconds print with 0, 3, 6 or 9
        // digits; the offset's `+` sorts before any digit, so text order stays time order.
        let base = DateTime::parse_from_rfc3339("2026-12-02T05:15:29Z")
            .unwrap()
            .to_utc();
        let times: Vec<DateTime<Utc>> = [
            0,
            1,
            100_000,
            100_000_000,
            123_000_000,
            123_400_000,
            999_999_999,
        ]
        .into_iter()
        .map(|nanos| base + TimeDelta::nanoseconds(nanos))
        .chain([base + TimeDelta::seconds(1)])
        .collect();
        let texts: Vec<String> = times.iter().copied().map(sql_time).collect();
        let mut sorted = texts.clone();
        sorted.sort();
        assert_eq!(texts, sorted, "{texts:?}");
        assert_eq!(texts[0], "2026-12-02T05:15:29+00:00");
    }
}
