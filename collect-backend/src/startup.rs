//! [`Application`]: prepares the database, binds the listener, serves until told to stop.
//!
//! Tests and `main` start the backend the same way: `Application::build(settings)`, then
//! `run_until(shutdown)`. Binding happens in `build`, so `addr` may use port 0 and the
//! caller reads the real port from [`Application::port`].

use std::{future::Future, net::SocketAddr, time::Duration};

use anyhow::Context;
use axum::Router;
use postsub::PostSubmissionLayer;
use sqlx::{PgPool, Postgres, migrate::MigrateDatabase, postgres::PgPoolOptions};
use tokio::net::TcpListener;

use crate::{Settings, routes, settings::DatabaseUrl};

/// A backend that is bound and ready to serve.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    local_addr: SocketAddr,
    router: Router,
    pool: PgPool,
}

impl Application {
    /// Creates the database if it is missing, runs the migrations, and binds `settings.addr`.
    /// The postsub proxy is connected lazily, so it need not be up yet.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let pool = prepare_database(&settings.database_url).await?;
        let post_submission = PostSubmissionLayer::connect_lazy(&settings.postsub_url)
            .with_context(|| {
                format!(
                    "POSTSUB_URL `{}` is not a valid URL; use http://host:port",
                    settings.postsub_url
                )
            })?
            .deadline(settings.postsub_deadline());
        let listener = TcpListener::bind(settings.addr).await.with_context(|| {
            format!("cannot listen on {}; is COLLECT_ADDR free?", settings.addr)
        })?;
        let local_addr = listener.local_addr().context("reading the bound address")?;
        Ok(Self {
            listener,
            local_addr,
            router: routes::router(pool.clone(), post_submission, settings.max_body_bytes),
            pool,
        })
    }

    /// The address the API listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The port the API listens on (the real one when `addr` asked for port 0).
    pub fn port(&self) -> u16 {
        self.local_addr.port()
    }

    /// The pool of the forms database.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Serves until `shutdown` resolves, then lets in-flight requests finish and closes the
    /// database pool.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        axum::serve(self.listener, self.router)
            .with_graceful_shutdown(shutdown)
            .await
            .context("serving HTTP")?;
        self.pool.close().await;
        Ok(())
    }
}

/// Creates the database at `url` if it does not exist, connects, and runs the migrations.
pub async fn prepare_database(url: &DatabaseUrl) -> anyhow::Result<PgPool> {
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
    sqlx::migrate!("./migrations")
        .run(&pool)
        .await
        .context("running the database migrations")?;
    Ok(pool)
}
