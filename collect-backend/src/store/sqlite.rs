//! The SQLite backend: forms and submissions in one file (WAL mode, foreign keys on), with
//! the PostgreSQL tables in SQLite types: UUIDs as 16-byte BLOBs, JSON as TEXT, timestamps
//! as RFC 3339 TEXT in UTC.
//!
//! Timestamps are made here, never by SQL: SQLite's `CURRENT_TIMESTAMP` has another format,
//! and sqlx writes a `DateTime<Utc>` with as many fractional digits as it needs, so that
//! `…:05Z` would sort after `…:05.1Z`. Here every timestamp has six digits (PostgreSQL's
//! precision), so text order is time order and `ORDER BY created_at` is right.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context;
use chrono::{DateTime, SecondsFormat, Utc};
use sqlx::{
    SqlitePool,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions},
    types::Json,
};
use uuid::Uuid;

use crate::forms::{Answers, Form, NewForm, Submission};

/// How long a statement waits for another connection's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

super::shared_sql!(SqliteStore);

/// A pool on the forms database file.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    path: PathBuf,
}

impl SqliteStore {
    /// Creates the file and its directory if they are missing, turns on WAL, checks the
    /// file can be written, and runs the migrations. Every error names the file.
    pub async fn open(path: PathBuf) -> anyhow::Result<Self> {
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| {
                format!(
                    "cannot create the directory {} for the SQLite database {}; check \
                     COLLECT_DATABASE_URL",
                    dir.display(),
                    path.display()
                )
            })?;
        }
        let cannot_write = || {
            format!(
                "cannot open or write the SQLite database {} (is it a SQLite file, and are it \
                 and its directory writable?); check COLLECT_DATABASE_URL",
                path.display()
            )
        };
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        let pool = SqlitePoolOptions::new()
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await
            .with_context(cannot_write)?;
        // A file opened read-only would otherwise only fail on the first submission.
        pool.begin_with("BEGIN IMMEDIATE")
            .await
            .with_context(cannot_write)?
            .rollback()
            .await
            .with_context(cannot_write)?;
        sqlx::migrate!("./migrations/sqlite")
            .run(&pool)
            .await
            .with_context(|| format!("running the database migrations on {}", path.display()))?;
        Ok(Self { pool, path })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// See [`super::Store::close`].
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// See [`super::Store::insert_form`].
    pub async fn insert_form(&self, form: &NewForm) -> sqlx::Result<Form> {
        sqlx::query_as(
            "INSERT INTO forms (id, title, questions, created_at) VALUES (?1, ?2, ?3, ?4)
             RETURNING id, title, questions, created_at",
        )
        .bind(Uuid::new_v4())
        .bind(&form.title)
        .bind(Json(&form.questions))
        .bind(now())
        .fetch_one(&self.pool)
        .await
    }

    /// See [`super::Store::insert_submission`].
    pub async fn insert_submission(
        &self,
        form_id: Uuid,
        answers: &Answers,
    ) -> sqlx::Result<Option<Submission>> {
        sqlx::query_as(
            "INSERT INTO submissions (id, form_id, answers, created_at)
             SELECT ?1, id, ?3, ?4 FROM forms WHERE id = ?2
             RETURNING id, form_id, answers, created_at, revision",
        )
        .bind(Uuid::new_v4())
        .bind(form_id)
        .bind(Json(answers))
        .bind(now())
        .fetch_optional(&self.pool)
        .await
    }
}

/// The current time as the tables keep it.
fn now() -> String {
    timestamp(Utc::now())
}

/// A time bound into a query, as the tables keep it.
fn db_time(at: DateTime<Utc>) -> String {
    timestamp(at)
}

/// A time as the tables keep it: RFC 3339 in UTC with exactly six fractional digits (see the
/// module docs).
fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn timestamps_have_a_fixed_width_so_text_order_is_time_order() {
        let at = |nanos| timestamp(Utc.timestamp_opt(1_800_000_000, nanos).unwrap());
        let times = [at(0), at(100_000_000), at(100_001_000), at(999_999_000)];
        assert!(times.windows(2).all(|w| w[0] < w[1]), "{times:?}");
        assert!(times.iter().all(|t| t.len() == times[0].len()));
        assert_eq!(
            now()
                .parse::<DateTime<Utc>>()
                .unwrap()
                .timestamp_subsec_nanos()
                % 1000,
            0
        );
    }
}
