//! [`Store`]: forms and submissions in the database `COLLECT_DATABASE_URL` names, behind one
//! seam. Routes call its methods and never name a backend; below it is one module per
//! backend, each with its own migrations (`migrations/<backend>/`):
//!
//! - [`sqlite`]: one SQLite file (the default, `.collect/collect.db`), so the backend runs
//!   with nothing installed.
//! - [`postgres`]: a PostgreSQL database, created on the server if missing.
//!
//! Both keep the same two tables and answer every query the same way, down to the order of
//! [`Store::list_submissions`]; `tests/api.rs` runs the API against both.
//!
//! The seam is an enum rather than a trait object: there are two backends, both known here,
//! and an enum needs neither boxing nor `async_trait`.

/// The statements both backends make with the same SQL (SQLite takes PostgreSQL's `$1`
/// placeholders too), as methods of `$store`, whose field `pool` they use: expanded in
/// each backend's module.
macro_rules! shared_sql {
    ($store:ty) => {
        impl $store {
            /// See [`super::Store::get_form`].
            pub async fn get_form(&self, id: Uuid) -> sqlx::Result<Option<Form>> {
                sqlx::query_as("SELECT id, title, questions, created_at FROM forms WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await
            }

            /// See [`super::Store::form_exists`].
            pub async fn form_exists(&self, id: Uuid) -> sqlx::Result<bool> {
                sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM forms WHERE id = $1)")
                    .bind(id)
                    .fetch_one(&self.pool)
                    .await
            }

            /// See [`super::Store::list_submissions`]. Times are bound as the backend
            /// keeps them (`db_time`, one per backend module).
            pub async fn list_submissions(
                &self,
                form_id: Uuid,
                query: &crate::forms::SubmissionQuery,
                limit: i64,
            ) -> sqlx::Result<Vec<Submission>> {
                sqlx::query_as(
                    "SELECT id, form_id, answers, created_at, revision FROM submissions
                     WHERE form_id = $1
                     AND ($2 IS NULL OR created_at >= $2) AND ($3 IS NULL OR created_at < $3)
                     AND ($4 IS NULL OR (created_at, id) > ($4, $5))
                     ORDER BY created_at, id LIMIT $6",
                )
                .bind(form_id)
                .bind(query.since.map(db_time))
                .bind(query.until.map(db_time))
                .bind(query.after.map(|after| db_time(after.created_at)))
                .bind(query.after.map(|after| after.id))
                .bind(limit)
                .fetch_all(&self.pool)
                .await
            }

            /// See [`super::Store::replace_answers`].
            pub async fn replace_answers(
                &self,
                form_id: Uuid,
                id: Uuid,
                answers: &crate::forms::Answers,
            ) -> sqlx::Result<Option<Submission>> {
                sqlx::query_as(
                    "UPDATE submissions SET answers = $3, revision = revision + 1
                     WHERE form_id = $1 AND id = $2
                     RETURNING id, form_id, answers, created_at, revision",
                )
                .bind(form_id)
                .bind(id)
                .bind(sqlx::types::Json(answers))
                .fetch_optional(&self.pool)
                .await
            }

            /// See [`super::Store::delete_submission`].
            pub async fn delete_submission(
                &self,
                form_id: Uuid,
                id: Uuid,
            ) -> sqlx::Result<Option<Submission>> {
                sqlx::query_as(
                    "DELETE FROM submissions WHERE form_id = $1 AND id = $2
                     RETURNING id, form_id, answers, created_at, revision + 1 AS revision",
                )
                .bind(form_id)
                .bind(id)
                .fetch_optional(&self.pool)
                .await
            }
        }
    };
}
use shared_sql;

pub mod postgres;
pub mod sqlite;

use uuid::Uuid;

use crate::{
    forms::{Answers, Form, NewForm, Submission, SubmissionQuery},
    settings::{Backend, DatabaseUrl},
};

pub use self::{postgres::PostgresStore, sqlite::SqliteStore};

/// The forms database: a pool on one backend.
#[derive(Debug, Clone)]
pub enum Store {
    /// A PostgreSQL database.
    Postgres(PostgresStore),
    /// A SQLite file.
    Sqlite(SqliteStore),
}

impl Store {
    /// Opens the database `url` names, creating it (for SQLite, its directory too) if it is
    /// missing, and runs the migrations. The error says which database could not be
    /// reached, created or written.
    pub async fn open(url: &DatabaseUrl) -> anyhow::Result<Self> {
        Ok(match url.backend()? {
            Backend::Postgres => Self::Postgres(PostgresStore::open(url).await?),
            Backend::Sqlite(path) => Self::Sqlite(SqliteStore::open(path).await?),
        })
    }

    /// `"postgres"` or `"sqlite"`, for logs.
    pub fn backend(&self) -> &'static str {
        match self {
            Self::Postgres(_) => "postgres",
            Self::Sqlite(_) => "sqlite",
        }
    }

    /// Where the data is, for logs: the file for SQLite, the URL without its password for
    /// PostgreSQL.
    pub fn location(&self) -> String {
        match self {
            Self::Postgres(store) => format!("{:?}", store.url()),
            Self::Sqlite(store) => store.path().display().to_string(),
        }
    }

    /// Closes the pool, waiting for connections in use to be returned.
    pub async fn close(&self) {
        match self {
            Self::Postgres(store) => store.close().await,
            Self::Sqlite(store) => store.close().await,
        }
    }

    /// Stores a new form under a fresh id.
    pub async fn insert_form(&self, form: &NewForm) -> sqlx::Result<Form> {
        match self {
            Self::Postgres(store) => store.insert_form(form).await,
            Self::Sqlite(store) => store.insert_form(form).await,
        }
    }

    /// The form with this id, if any.
    pub async fn get_form(&self, id: Uuid) -> sqlx::Result<Option<Form>> {
        match self {
            Self::Postgres(store) => store.get_form(id).await,
            Self::Sqlite(store) => store.get_form(id).await,
        }
    }

    /// Whether a form has this id.
    pub async fn form_exists(&self, id: Uuid) -> sqlx::Result<bool> {
        match self {
            Self::Postgres(store) => store.form_exists(id).await,
            Self::Sqlite(store) => store.form_exists(id).await,
        }
    }

    /// Stores a submission to `form_id` under a fresh id; `None` if there is no such form.
    /// One statement, so a form deleted meanwhile cannot slip between a check and the
    /// insert.
    pub async fn insert_submission(
        &self,
        form_id: Uuid,
        answers: &Answers,
    ) -> sqlx::Result<Option<Submission>> {
        match self {
            Self::Postgres(store) => store.insert_submission(form_id, answers).await,
            Self::Sqlite(store) => store.insert_submission(form_id, answers).await,
        }
    }

    /// Replaces the answers of submission `id` of `form_id`, one revision up; `None` if the
    /// form has no such submission.
    pub async fn replace_answers(
        &self,
        form_id: Uuid,
        id: Uuid,
        answers: &Answers,
    ) -> sqlx::Result<Option<Submission>> {
        match self {
            Self::Postgres(store) => store.replace_answers(form_id, id, answers).await,
            Self::Sqlite(store) => store.replace_answers(form_id, id, answers).await,
        }
    }

    /// Deletes submission `id` of `form_id` and returns it as it was, its revision one up
    /// (the deletion is newer than its last edit); `None` if the form has no such
    /// submission.
    pub async fn delete_submission(
        &self,
        form_id: Uuid,
        id: Uuid,
    ) -> sqlx::Result<Option<Submission>> {
        match self {
            Self::Postgres(store) => store.delete_submission(form_id, id).await,
            Self::Sqlite(store) => store.delete_submission(form_id, id).await,
        }
    }

    /// Submissions to `form_id` that `query` selects, oldest first (ties by id), at most
    /// `limit`: keyset paging by `(created_at, id)`, so a page costs the same at any depth
    /// and a submission stored meanwhile lands on a later page, never shifts one.
    pub async fn list_submissions(
        &self,
        form_id: Uuid,
        query: &SubmissionQuery,
        limit: i64,
    ) -> sqlx::Result<Vec<Submission>> {
        match self {
            Self::Postgres(store) => store.list_submissions(form_id, query, limit).await,
            Self::Sqlite(store) => store.list_submissions(form_id, query, limit).await,
        }
    }
}
