//! The PostgreSQL backend: forms and submissions in a database on a server, created there
//! if it is missing. Timestamps come from the server (`DEFAULT now()`).

use std::time::Duration;

use anyhow::Context;
use sqlx::{PgPool, Postgres, migrate::MigrateDatabase, postgres::PgPoolOptions, types::Json};
use uuid::Uuid;

use crate::{
    forms::{Answers, Form, NewForm, Submission},
    settings::DatabaseUrl,
};

super::shared_sql!(PostgresStore);

/// A time bound into a query: PostgreSQL takes it as it is.
fn db_time(at: chrono::DateTime<chrono::Utc>) -> chrono::DateTime<chrono::Utc> {
    at
}

/// A pool on the forms database of a PostgreSQL server.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
    url: DatabaseUrl,
}

impl PostgresStore {
    /// Creates the database at `url` if it does not exist, connects, and runs the
    /// migrations.
    pub async fn open(url: &DatabaseUrl) -> anyhow::Result<Self> {
        let unreachable = || {
            format!(
                "cannot reach PostgreSQL at {url:?}; check COLLECT_DATABASE_URL and that the server runs"
            )
        };
        if !Postgres::database_exists(url.expose())
            .await
            .with_context(unreachable)?
        {
            Postgres::create_database(url.expose())
                .await
                .with_context(|| format!("creating the database {url:?}"))?;
            tracing::info!(database = ?url, "created the database");
        }
        let pool = PgPoolOptions::new()
            .acquire_timeout(Duration::from_secs(5))
            .connect(url.expose())
            .await
            .with_context(unreachable)?;
        sqlx::migrate!("./migrations/postgres")
            .run(&pool)
            .await
            .context("running the database migrations")?;
        Ok(Self {
            pool,
            url: url.clone(),
        })
    }

    /// The database's URL (its `Debug` hides the password).
    pub fn url(&self) -> &DatabaseUrl {
        &self.url
    }

    /// See [`super::Store::close`].
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// See [`super::Store::insert_form`].
    pub async fn insert_form(&self, form: &NewForm) -> sqlx::Result<Form> {
        sqlx::query_as(
            "INSERT INTO forms (id, title, questions) VALUES ($1, $2, $3)
             RETURNING id, title, questions, created_at",
        )
        .bind(Uuid::new_v4())
        .bind(&form.title)
        .bind(Json(&form.questions))
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
            "INSERT INTO submissions (id, form_id, answers)
             SELECT $1, id, $3 FROM forms WHERE id = $2
             RETURNING id, form_id, answers, created_at, revision",
        )
        .bind(Uuid::new_v4())
        .bind(form_id)
        .bind(Json(answers))
        .fetch_optional(&self.pool)
        .await
    }
}
