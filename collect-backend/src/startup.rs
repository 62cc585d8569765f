//! [`Application`]: prepares the database, binds the listener, serves until told to stop.
//!
//! Tests and `main` start the backend the same way: `Application::build(settings)`, then
//! `run_until(shutdown)`. Binding happens in `build`, so `addr` may use port 0 and the
//! caller reads the real port from [`Application::port`].

use std::{future::Future, net::SocketAddr};

use anyhow::Context;
use axum::Router;
use postsub::{ClientTls, PostSubmissionLayer};
use tokio::net::TcpListener;

use crate::{Settings, routes, store::Store};

/// A backend that is bound and ready to serve.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    local_addr: SocketAddr,
    router: Router,
    store: Store,
}

impl Application {
    /// Opens the database (SQLite or PostgreSQL, by `settings.database_url`), creating it if
    /// it is missing, runs the migrations, and binds `settings.addr`. The postsub proxy is
    /// connected lazily, so it need not be up yet.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let store = Store::open(&settings.database_url).await?;
        let mut post_submission = PostSubmissionLayer::connect_lazy(&settings.postsub_url)
            .with_context(|| {
                format!(
                    "POSTSUB_URL `{}` is not a valid URL; use http://host:port or https://host:port",
                    settings.postsub_url
                )
            })?
            .deadline(settings.postsub_deadline());
        let identity = settings
            .postsub_client_cert
            .as_deref()
            .zip(settings.postsub_client_key.as_deref());
        if settings.postsub_ca_cert.is_some() || identity.is_some() {
            let tls = ClientTls::from_pem_files(settings.postsub_ca_cert.as_deref(), identity)
                .and_then(|tls| post_submission.tls(tls));
            post_submission = tls.context(
                "the TLS settings for the proxy (POSTSUB_CA_CERT, POSTSUB_CLIENT_CERT, \
                 POSTSUB_CLIENT_KEY)",
            )?;
        }
        if let Some(token) = &settings.postsub_token {
            post_submission = post_submission
                .bearer_token(token.expose())
                .context("POSTSUB_TOKEN holds characters an HTTP header cannot carry")?;
        }
        let listener = TcpListener::bind(settings.addr).await.with_context(|| {
            format!("cannot listen on {}; is COLLECT_ADDR free?", settings.addr)
        })?;
        let local_addr = listener.local_addr().context("reading the bound address")?;
        Ok(Self {
            listener,
            local_addr,
            router: routes::router(store.clone(), post_submission, settings.max_body_bytes),
            store,
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

    /// The forms database (its [`Store::backend`] and [`Store::location`] go in the startup
    /// log).
    pub fn store(&self) -> &Store {
        &self.store
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
        self.store.close().await;
        Ok(())
    }
}
