//! Start-up and shutdown: the shared parts, the proxy's servers and the worker, built the
//! same way by `main` and by the tests (listeners bound here, so port 0 works).

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context as _;
use axum::{Json, Router, extract::State, http::StatusCode, response::Redirect, routing::get};
use postsub::pb::{
    FILE_DESCRIPTOR_SET, post_submission_server::PostSubmissionServer,
    task_admin_server::TaskAdminServer,
};
use postsub_tasks::Registry;
use serde_json::json;
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;

use crate::{
    admin::Admin,
    alerts::{AlertSettings, AlertTask, Alerts, watch_queue},
    auth::{RequireTokenLayer, TokenCache, TokenCacheTask},
    backend::Backend,
    bindings::BindingCache,
    console::Console,
    dispatch::{DispatchLimits, Dispatcher},
    follow::{Followed, follow_changes},
    queue::JobQueue,
    recorder::{Recorder, RecorderTask},
    settings::{DevSettings, ProxySettings, WorkerSettings},
    store::Store,
    worker::{Worker, WorkerLimits},
};

/// Records the recorder may hold before callers wait.
const RECORDER_CAPACITY: usize = 10_000;
/// How long shutdown waits for the recorder to write what it holds.
const RECORDER_FLUSH_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a proxy without authentication says so.
const NO_AUTH_WARNING: Duration = Duration::from_secs(60);

/// What the proxy and the worker share: store, job queue, task kinds, binding cache,
/// tokens, recorder.
pub struct Services {
    /// The store.
    pub store: Arc<dyn Store>,
    /// The job queue.
    pub queue: Arc<dyn JobQueue>,
    /// Task kinds.
    pub registry: Registry,
    /// Bindings in memory, kept fresh until shutdown.
    pub cache: BindingCache,
    /// API tokens in memory, kept fresh until shutdown.
    pub tokens: TokenCache,
    token_task: TokenCacheTask,
    /// The batching run-history writer.
    pub recorder: Recorder,
    recorder_task: RecorderTask,
    /// Where alerts go (nowhere until [`Services::with_alerts`]).
    pub alerts: Alerts,
    alert_task: Option<AlertTask>,
    follower: JoinHandle<()>,
    stop_following: CancellationToken,
}

impl Services {
    /// Opens the backend (its database already migrated) and starts the cache and the
    /// recorder.
    pub async fn start(backend: &Backend, registry: Registry) -> anyhow::Result<Self> {
        registry.check()?;
        crate::telemetry::prometheus();
        let kinds: Vec<String> = registry.kinds().map(|k| k.kind().to_owned()).collect();
        // Proxy and worker must know the same kinds: saying them makes a mismatch plain.
        tracing::info!("task kinds: {}", kinds.join(", "));
        let opened = backend.open(kinds, RECORDER_CAPACITY).await?;
        let cache = BindingCache::load(opened.store.clone(), registry.clone())
            .await
            .context("loading bindings")?;
        let tokens = TokenCache::load(opened.store.clone())
            .await
            .context("loading API tokens")?;
        let token_task = tokens.start_flushing();
        let stop_following = CancellationToken::new();
        let followed = Followed {
            bindings: cache.clone(),
            tokens: tokens.clone(),
        };
        let follower = tokio::spawn(follow_changes(
            opened.store.clone(),
            followed,
            stop_following.clone(),
        ));
        Ok(Self {
            store: opened.store,
            queue: opened.queue,
            registry,
            cache,
            tokens,
            token_task,
            recorder: opened.recorder,
            recorder_task: opened.recorder_task,
            alerts: Alerts::disabled(),
            alert_task: None,
            follower,
            stop_following,
        })
    }

    /// Sends alerts where `settings` say (see [`crate::alerts`]).
    pub fn with_alerts(mut self, settings: &AlertSettings) -> anyhow::Result<Self> {
        let (alerts, task) = Alerts::start(settings)?;
        self.alerts = alerts;
        self.alert_task = task;
        Ok(self)
    }

    /// Writes what the recorder holds, sends the last alerts and closes the queue and the
    /// store. Call after the proxy and worker stopped.
    pub async fn stop(self) {
        if let Some(alerts) = self.alert_task {
            alerts.finish().await;
        }
        self.stop_following.cancel();
        let _ = self.follower.await;
        self.token_task.finish().await;
        drop(self.recorder);
        if !self.recorder_task.finish(RECORDER_FLUSH_TIMEOUT).await {
            tracing::error!("the run recorder did not finish writing in time");
        }
        self.queue.close().await;
        self.store.close().await;
    }

    /// A worker over these services.
    pub fn worker(&self, settings: &WorkerSettings) -> anyhow::Result<Worker> {
        Ok(Worker::new(
            self.queue.clone(),
            self.store.clone(),
            self.cache.clone(),
            self.recorder.clone(),
            self.store.clone(),
            WorkerLimits {
                prefetch: settings.prefetch,
                concurrency: settings.concurrency,
                task_timeout: settings.task_timeout,
                drain_timeout: settings.drain_timeout,
            },
            self.alerts.clone(),
        ))
    }

    /// The HTTP server of a worker process: `/healthz`, `/readyz`, `/metrics`, until
    /// `shutdown`.
    pub async fn serve_worker_http(
        &self,
        addr: SocketAddr,
        shutdown: CancellationToken,
    ) -> anyhow::Result<JoinHandle<()>> {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} (worker HTTP)"))?;
        let routes = health_routes(self.store.clone());
        Ok(tokio::spawn(async move {
            let _ = axum::serve(listener, routes)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await;
        }))
    }
}

/// The proxy: gRPC (PostSubmission, TaskAdmin, health, reflection) and HTTP health.
pub struct Proxy {
    /// The gRPC server, TLS set when configured.
    server: tonic::transport::Server,
    /// Whether gRPC is served over TLS, and whether client certificates are required.
    tls: Option<bool>,
    grpc: TcpListener,
    http: TcpListener,
    dispatcher: Dispatcher,
    admin: Admin,
    queue: Arc<dyn JobQueue>,
    store: Arc<dyn Store>,
    registry: Registry,
    recorder: Recorder,
    alerts: Alerts,
    max_answers_bytes: usize,
    auth: Auth,
}

/// Whether the proxy asks for tokens.
enum Auth {
    /// Every call needs a token of its method's scope.
    Required(RequireTokenLayer),
    /// `postsub dev` on a loopback address with no token made yet: a first run.
    OffForDev,
    /// `--no-auth`.
    Off,
}

/// Who starts the proxy, which decides whether it may run without tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Launch {
    /// `postsub serve`: tokens, unless `--no-auth`.
    Serve,
    /// `postsub dev`: on a loopback address, no token needed until one is made.
    Dev,
}

impl Auth {
    /// Decided once at start-up: tokens are required when any is stored or
    /// `POSTSUB_ADMIN_TOKEN` is set; with none, `serve` (and `dev` on an address others can
    /// reach) refuses to start, `dev` on loopback runs open.
    fn choose(
        settings: &ProxySettings,
        tokens: &TokenCache,
        launch: Launch,
        grpc_addr: SocketAddr,
    ) -> anyhow::Result<Self> {
        if settings.no_auth {
            return Ok(Auth::Off);
        }
        let bootstrap = settings.admin_token.as_ref().map(|token| token.expose());
        if !tokens.is_empty() || bootstrap.is_some() {
            return Ok(Auth::Required(RequireTokenLayer::new(
                tokens.clone(),
                bootstrap,
            )));
        }
        if launch == Launch::Dev && grpc_addr.ip().is_loopback() {
            return Ok(Auth::OffForDev);
        }
        anyhow::bail!(
            "no API token exists, and without one nobody could call this proxy. Create one with \
             `postsub tokens create --name NAME --scope admin` (same DATABASE_URL), or set \
             POSTSUB_ADMIN_TOKEN; `--no-auth` runs without tokens, for a network where only \
             trusted callers can reach {grpc_addr}"
        )
    }
}

impl Proxy {
    /// Binds both listeners and connects to the queue, if it answers. Fails when `launch`
    /// may not run without tokens and none exists (see [`Launch`]).
    pub async fn build(
        services: &Services,
        settings: &ProxySettings,
        launch: Launch,
    ) -> anyhow::Result<Self> {
        // A queue away at start-up is an outage like any other: RabbitMQ's jobs wait in the
        // outbox and the relay publishes them once the broker answers.
        if let Err(err) = services.queue.connect().await {
            tracing::warn!(error = %err,
                "the job queue is not answering; jobs are kept until it does");
        }
        // Certificates are read and parsed before anything listens: a bad file is a
        // start-up error, not a failure of every call.
        let mut server = tonic::transport::Server::builder();
        if let Some(tls) = settings.server_tls()? {
            server = server
                .tls_config(tls)
                .context("POSTSUB_TLS_CERT, POSTSUB_TLS_KEY or POSTSUB_TLS_CLIENT_CA")?;
        }
        let tls = settings
            .tls_cert
            .is_some()
            .then_some(settings.tls_client_ca.is_some());
        let grpc = TcpListener::bind(settings.grpc_addr)
            .await
            .with_context(|| format!("cannot listen on {} (gRPC)", settings.grpc_addr))?;
        let http = TcpListener::bind(settings.http_addr)
            .await
            .with_context(|| format!("cannot listen on {} (HTTP)", settings.http_addr))?;
        let auth = Auth::choose(
            settings,
            &services.tokens,
            launch,
            grpc.local_addr()
                .context("the gRPC listener has no address")?,
        )?;
        let dispatcher = Dispatcher::new(
            services.cache.clone(),
            services.queue.clone(),
            services.recorder.clone(),
            services.store.clone(),
            DispatchLimits {
                max_answers_bytes: settings.max_answers_bytes,
                max_answers_depth: settings.max_answers_depth,
                max_answers_keys: settings.max_answers_keys,
                sync_timeout: settings.sync_timeout,
            },
        );
        let admin = Admin::new(
            services.store.clone(),
            services.registry.clone(),
            services.cache.clone(),
            services.queue.clone(),
        );
        Ok(Self {
            server,
            tls,
            grpc,
            http,
            dispatcher,
            admin,
            queue: services.queue.clone(),
            store: services.store.clone(),
            registry: services.registry.clone(),
            recorder: services.recorder.clone(),
            alerts: services.alerts.clone(),
            max_answers_bytes: settings.max_answers_bytes,
            auth,
        })
    }

    /// Address of the gRPC server.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc.local_addr().expect("bound listener")
    }

    /// Address of the HTTP server.
    pub fn http_addr(&self) -> SocketAddr {
        self.http.local_addr().expect("bound listener")
    }

    /// Serves until `shutdown`, then finishes the calls in flight.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let (health, health_service) = tonic_health::server::health_reporter();
        health
            .set_serving::<PostSubmissionServer<Dispatcher>>()
            .await;
        health.set_serving::<TaskAdminServer<Admin>>().await;
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        // Both reflection versions: grpcurl and older clients still ask v1alpha.
        let reflection_v1 = reflection().build_v1()?;
        let reflection_v1alpha = reflection().build_v1alpha()?;
        // Decoding stops well before memory is at risk; the precise answers limit, with a
        // readable message, is the dispatcher's.
        let max_message = self.max_answers_bytes.saturating_mul(2).max(64 * 1024);
        let require_token = match self.auth {
            Auth::Required(layer) => {
                tracing::info!("every gRPC call needs a token (health checks excepted)");
                layer
            }
            Auth::OffForDev => {
                tracing::warn!(
                    "no token needed: `postsub dev` on a loopback address with no API token \
                     made; once one exists (`postsub tokens create`), the next start asks for it"
                );
                RequireTokenLayer::disabled()
            }
            Auth::Off => {
                tokio::spawn(warn_without_auth(shutdown.clone()));
                RequireTokenLayer::disabled()
            }
        };
        let console = Console::new(
            self.admin.clone(),
            self.store.clone(),
            self.queue.clone(),
            self.registry,
            require_token.authenticator(),
        );
        match self.tls {
            Some(true) => tracing::info!("gRPC over TLS; clients must show a certificate"),
            Some(false) => tracing::info!("gRPC over TLS"),
            None => {}
        }
        let grpc = self
            .server
            .layer(require_token)
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(
                PostSubmissionServer::new(self.dispatcher).max_decoding_message_size(max_message),
            )
            .add_service(TaskAdminServer::new(self.admin))
            .serve_with_incoming_shutdown(
                // Without TCP_NODELAY, replies written in several small pieces wait for the
                // peer's delayed ACK (40 ms).
                TcpIncoming::from(self.grpc).with_nodelay(Some(true)),
                shutdown.clone().cancelled_owned(),
            );
        let routes = health_routes(self.store)
            .nest("/ui", console.routes())
            .route("/ui/", get(|| async { Redirect::permanent("/ui") }));
        let http = axum::serve(self.http, routes)
            .with_graceful_shutdown(shutdown.clone().cancelled_owned());
        // The relay stops with the servers; what it has not published stays in the outbox
        // for the next proxy to start.
        let relay = self.queue.relay(shutdown.clone());
        let watch = watch_queue(
            self.queue.clone(),
            self.recorder,
            self.alerts,
            shutdown.clone(),
        );
        tracing::info!("postsub proxy serving");
        let (grpc, http, (), ()) = tokio::join!(grpc, http, relay, watch);
        grpc.context("gRPC server failed")?;
        http.context("HTTP server failed")?;
        Ok(())
    }
}

/// Warns every minute until `shutdown` that anyone who reaches the proxy may call it.
async fn warn_without_auth(shutdown: CancellationToken) {
    let mut every = tokio::time::interval(NO_AUTH_WARNING);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = every.tick() => tracing::warn!(
                "--no-auth: this proxy answers every call without a token; anyone who can \
                 reach it can read submissions and change bindings"
            ),
        }
    }
}

/// A running `postsub dev`: migrated database, proxy and worker in this process.
pub struct DevStack {
    grpc_addr: SocketAddr,
    http_addr: SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl DevStack {
    /// Migrates, starts the proxy and a worker, and returns once both listen.
    pub async fn start(
        settings: &DevSettings,
        registry: Registry,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let backend = settings.backend()?;
        backend.database.migrate().await?;
        let services = Services::start(&backend, registry)
            .await?
            .with_alerts(&settings.alerts)?;
        let proxy = Proxy::build(&services, &settings.proxy, Launch::Dev).await?;
        let (grpc_addr, http_addr) = (proxy.grpc_addr(), proxy.http_addr());
        let worker = services.worker(&settings.worker)?;
        let stop = shutdown.clone();
        let task = tokio::spawn(async move {
            let worker = tokio::spawn(worker.run(stop.clone()));
            let served = proxy.run(stop).await;
            let _ = worker.await;
            services.stop().await;
            served
        });
        Ok(Self {
            grpc_addr,
            http_addr,
            shutdown,
            task,
        })
    }

    /// Address of the gRPC server.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// Address of the HTTP server.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Waits until the shutdown token is cancelled and everything has stopped.
    pub async fn wait(self) -> anyhow::Result<()> {
        self.task.await.context("the dev stack panicked")?
    }

    /// Cancels the shutdown token and waits until everything has stopped.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.wait().await
    }
}

fn health_routes(store: Arc<dyn Store>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route(
            "/metrics",
            get(|| async { crate::telemetry::prometheus().render() }),
        )
        .with_state(store)
}

/// Ready when the database answers (RabbitMQ outages are survived per call).
async fn ready(State(store): State<Arc<dyn Store>>) -> (StatusCode, Json<serde_json::Value>) {
    match store.ping().await {
        Ok(_) => (StatusCode::OK, Json(json!({"status": "ready"}))),
        Err(err) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "unavailable", "error": format!("database: {err}")})),
        ),
    }
}
