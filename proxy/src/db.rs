//! The proxy's database: connecting, creating and migrating it.

use std::time::Duration;

use anyhow::{Context as _, bail};
use sqlx::{
    PgPool, Postgres,
    migrate::{MigrateDatabase, Migrator},
    postgres::PgPoolOptions,
};

static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

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
    MIGRATOR.run(&pool).await.context("applying migrations")?;
    pool.close().await;
    Ok(())
}

/// Connects a pool, failing fast when PostgreSQL does not answer.
pub async fn connect(database_url: &str) -> anyhow::Result<PgPool> {
    PgPoolOptions::new()
        // The run recorder holds one of them.
        .max_connections(17)
        .acquire_timeout(Duration::from_secs(5))
        .connect(database_url)
        .await
        .context("cannot connect to PostgreSQL (DATABASE_URL)")
}

/// Connects and checks the schema is there, so `serve` and `worker` say what to do instead
/// of failing on the first query.
pub async fn connect_migrated(database_url: &str) -> anyhow::Result<PgPool> {
    let pool = connect(database_url).await?;
    let ready: Option<String> = sqlx::query_scalar("SELECT to_regclass('task_runs')::text")
        .fetch_one(&pool)
        .await
        .context("checking the schema")?;
    if ready.is_none() {
        bail!("the database has no postsub schema: run `postsub migrate` first");
    }
    Ok(pool)
}
