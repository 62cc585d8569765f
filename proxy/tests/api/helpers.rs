//! `spawn_proxy(backend)`: `postsub dev` on a fresh PostgreSQL database and RabbitMQ vhost,
//! or on a fresh SQLite file (the embedded backend), with test task kinds registered;
//! [`contract!`], which runs a test against both; and the small helpers the tests share.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use async_trait::async_trait;
use postsub::{
    json::to_proto_struct,
    pb::{self, post_submission_client::PostSubmissionClient, task_admin_client::TaskAdminClient},
};
use postsub_proxy::{app::DevStack, settings::DevSettings};
use postsub_tasks::{
    ConfigError, Outcome, Registry, RunContext, Submission, TargetPolicy, TaskBase, TaskError,
};
use postsub_testkit::{TestBroker, TestDatabase, TestSqlite};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tonic::{Code, transport::Channel};
use uuid::Uuid;

/// A sync task that never returns.
struct Hang;

#[async_trait]
impl TaskBase for Hang {
    type Config = ();
    fn kind(&self) -> &'static str {
        "hang"
    }
    fn description(&self) -> &'static str {
        "never returns"
    }
    fn config_schema(&self) -> Value {
        json!({"type": "object"})
    }
    fn parse_config(&self, _: &Value) -> Result<(), ConfigError> {
        Ok(())
    }
    async fn run(&self, _: &(), _: &RunContext, _: &Submission) -> Result<Outcome, TaskError> {
        std::future::pending().await
    }
}

/// A sync task that panics.
struct Panic;

#[async_trait]
impl TaskBase for Panic {
    type Config = ();
    fn kind(&self) -> &'static str {
        "panic"
    }
    fn description(&self) -> &'static str {
        "panics"
    }
    fn config_schema(&self) -> Value {
        json!({"type": "object"})
    }
    fn parse_config(&self, _: &Value) -> Result<(), ConfigError> {
        Ok(())
    }
    async fn run(&self, _: &(), _: &RunContext, _: &Submission) -> Result<Outcome, TaskError> {
        panic!("task bug")
    }
}

/// Fails its first `failures` attempts with a retryable error, then succeeds.
struct Flaky;

#[derive(Deserialize, schemars::JsonSchema)]
struct FlakyConfig {
    failures: u32,
}

#[async_trait]
impl TaskBase for Flaky {
    type Config = FlakyConfig;
    fn kind(&self) -> &'static str {
        "flaky"
    }
    fn description(&self) -> &'static str {
        "fails its first attempts, then succeeds"
    }
    fn config_schema(&self) -> Value {
        postsub_tasks::schema_for::<Self::Config>()
    }
    fn parse_config(&self, config: &Value) -> Result<FlakyConfig, ConfigError> {
        ConfigError::parse(config)
    }
    async fn run(
        &self,
        config: &FlakyConfig,
        context: &RunContext,
        _: &Submission,
    ) -> Result<Outcome, TaskError> {
        if context.attempt <= config.failures {
            return Err(TaskError::retryable(format!(
                "flaky failure on attempt {}",
                context.attempt
            )));
        }
        Ok(Outcome {
            output: json!({"attempt": context.attempt}),
            flags: Vec::new(),
        })
    }
}

/// Fails while the test's outside service is down (retryably, or fatally when the binding
/// says `{"fatal": true}`), succeeds once the test brings it up.
struct Outage {
    up: Arc<AtomicBool>,
}

#[derive(Deserialize, schemars::JsonSchema)]
struct OutageConfig {
    #[serde(default)]
    fatal: bool,
}

#[async_trait]
impl TaskBase for Outage {
    type Config = OutageConfig;
    fn kind(&self) -> &'static str {
        "outage"
    }
    fn description(&self) -> &'static str {
        "fails until the service is up"
    }
    fn config_schema(&self) -> Value {
        postsub_tasks::schema_for::<Self::Config>()
    }
    fn parse_config(&self, config: &Value) -> Result<OutageConfig, ConfigError> {
        ConfigError::parse(config)
    }
    async fn run(
        &self,
        config: &OutageConfig,
        _: &RunContext,
        _: &Submission,
    ) -> Result<Outcome, TaskError> {
        match (self.up.load(Ordering::SeqCst), config.fatal) {
            (true, _) => Ok(Outcome::default()),
            (false, false) => Err(TaskError::retryable("the service is down")),
            (false, true) => Err(TaskError::fatal("the service refuses this request")),
        }
    }
}

/// The backends a contract test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// PostgreSQL and RabbitMQ.
    Postgres,
    /// One SQLite file.
    Embedded,
}

/// Generates, for each `async fn name(backend: Backend)`, a module `name` with the tests
/// `postgres` and `embedded` that run it against each backend.
#[macro_export]
macro_rules! contract {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                #[tokio::test]
                async fn postgres() {
                    super::$name($crate::helpers::Backend::Postgres).await
                }

                #[tokio::test]
                async fn embedded() {
                    super::$name($crate::helpers::Backend::Embedded).await
                }
            }
        )+
    };
}

/// What a test proxy runs on, removed when the test ends.
pub enum Resources {
    /// Its own PostgreSQL database and RabbitMQ vhost.
    Postgres(TestDatabase, TestBroker),
    /// Its own SQLite file.
    Embedded(TestSqlite),
}

impl Resources {
    /// Fresh resources of `backend`.
    pub async fn create(backend: Backend) -> Self {
        match backend {
            Backend::Postgres => {
                Resources::Postgres(TestDatabase::create("postsub").await, TestBroker::create())
            }
            Backend::Embedded => Resources::Embedded(TestSqlite::create("postsub")),
        }
    }

    /// `postsub dev` settings on these resources, listening on ports the OS picks.
    pub fn settings(&self, extra: &[&str]) -> DevSettings {
        match self {
            Resources::Postgres(db, broker) => {
                DevSettings::isolated(&db.url, &broker.url, &broker.prefix, extra)
            }
            Resources::Embedded(file) => DevSettings::embedded(&file.url, extra),
        }
        .expect("settings parse")
    }
}

pub struct TestProxy {
    pub stack: DevStack,
    pub settings: DevSettings,
    pub resources: Resources,
    /// The `outage` task's service: down until a test brings it up.
    pub service_up: Arc<AtomicBool>,
}

pub async fn spawn_proxy(backend: Backend) -> TestProxy {
    spawn_proxy_with(backend, &[]).await
}

/// [`spawn_proxy`] with `extra` flags for `postsub dev`.
pub async fn spawn_proxy_with(backend: Backend, extra: &[&str]) -> TestProxy {
    let resources = Resources::create(backend).await;
    let mut flags = vec!["--sync-timeout", "300ms", "--max-answers-bytes", "1024"];
    flags.extend_from_slice(extra);
    let settings = resources.settings(&flags);
    let service_up = Arc::new(AtomicBool::new(false));
    let stack = DevStack::start(
        &settings,
        registry(service_up.clone()),
        CancellationToken::new(),
    )
    .await
    .expect("postsub starts");
    TestProxy {
        stack,
        settings,
        resources,
        service_up,
    }
}

/// The built-in kinds and the test kinds.
pub fn registry(service_up: Arc<AtomicBool>) -> Registry {
    let mut registry = Registry::with_builtins_for(TargetPolicy::dev());
    registry
        .register(Hang)
        .register(Panic)
        .register(Flaky)
        .register(Outage { up: service_up });
    registry
}

impl TestProxy {
    pub fn url(&self) -> String {
        format!("http://{}", self.stack.grpc_addr())
    }

    pub async fn admin(&self) -> TaskAdminClient<Channel> {
        TaskAdminClient::connect(self.url()).await.unwrap()
    }

    pub async fn process_client(&self) -> PostSubmissionClient<Channel> {
        PostSubmissionClient::connect(self.url()).await.unwrap()
    }

    /// Submits `answers` to `form` and returns the run ids of the queued jobs.
    pub async fn submit(&self, form: Uuid, answers: Value) -> Vec<String> {
        self.process_client()
            .await
            .process(process(form, answers))
            .await
            .unwrap()
            .into_inner()
            .jobs
            .into_iter()
            .map(|job| job.run_id)
            .collect()
    }

    /// Runs the `postsub` command line against this proxy (`--server` set, no token): its
    /// success, stdout and stderr. Not std's blocking `output()`: the proxy answering it
    /// runs on the test's runtime.
    pub async fn cli(&self, args: &[&str]) -> (bool, String, String) {
        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_postsub"))
            .args(["--server", &self.url()])
            .args(args)
            .env_remove("POSTSUB_TOKEN")
            .output()
            .await
            .unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    /// One run, with its attempt history.
    pub async fn run(&self, run_id: &str) -> pb::Run {
        self.admin()
            .await
            .get_run(pb::GetRunRequest {
                run_id: run_id.into(),
            })
            .await
            .unwrap()
            .into_inner()
    }

    /// Waits until the run is in `status`, then returns it.
    pub async fn run_in(&self, run_id: &str, status: pb::RunStatus) -> pb::Run {
        run_in(&self.url(), run_id, status).await
    }

    /// What the queue holds of `kind`.
    pub async fn queue(&self, kind: &str) -> pb::QueueStats {
        self.admin()
            .await
            .list_queues(pb::ListQueuesRequest {})
            .await
            .unwrap()
            .into_inner()
            .queues
            .into_iter()
            .find(|queue| queue.kind == kind)
            .unwrap_or_else(|| panic!("no queue of kind {kind}"))
    }

    /// Dead letters of `kind`.
    pub async fn dead_letters(&self, kind: &str) -> u64 {
        self.queue(kind).await.dead
    }
}

/// Waits until the run is in `status` at the admin API at `url`, then returns it.
pub async fn run_in(url: &str, run_id: &str, status: pb::RunStatus) -> pb::Run {
    let mut admin = TaskAdminClient::connect(url.to_owned()).await.unwrap();
    let get = pb::GetRunRequest {
        run_id: run_id.into(),
    };
    eventually(&format!("run {run_id} to be {status:?}"), || {
        let (mut admin, get) = (admin.clone(), get.clone());
        async move {
            admin
                .get_run(get)
                .await
                .is_ok_and(|run| run.into_inner().status() == status)
        }
    })
    .await;
    admin.get_run(get).await.unwrap().into_inner()
}

pub fn object(value: Value) -> prost_types::Struct {
    let Value::Object(map) = value else {
        panic!("expected a JSON object")
    };
    to_proto_struct(map)
}

pub fn binding(
    form_id: Uuid,
    name: &str,
    kind: &str,
    mode: pb::Mode,
    config: Value,
) -> pb::CreateBindingRequest {
    pb::CreateBindingRequest {
        form_id: form_id.to_string(),
        name: name.into(),
        kind: kind.into(),
        mode: mode.into(),
        config: Some(object(config)),
        enabled: None,
        options: None,
    }
}

/// Options with short waits, so retries in tests take milliseconds.
pub fn quick_retries(max_attempts: u32) -> pb::BindingOptions {
    pb::BindingOptions {
        max_attempts: Some(max_attempts),
        backoff_initial: "100ms".into(),
        backoff_max: "1s".into(),
        ..Default::default()
    }
}

pub fn process(form_id: Uuid, answers: Value) -> pb::ProcessRequest {
    pb::ProcessRequest {
        form_id: form_id.to_string(),
        submission_id: Uuid::new_v4().to_string(),
        answers: Some(object(answers)),
        submitted_at: None,
        metadata: Default::default(),
        ..Default::default()
    }
}

pub fn assert_status<T: std::fmt::Debug>(result: Result<T, tonic::Status>, code: Code, text: &str) {
    let status = result.expect_err("the call must fail");
    assert_eq!(status.code(), code, "{status:?}");
    assert!(
        status.message().contains(text),
        "`{}` does not contain `{text}`",
        status.message()
    );
}

/// Polls `check` until it holds; fails the test after 20 s.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What the proxy at `http_addr` says at `/metrics`.
pub async fn metrics(http_addr: std::net::SocketAddr) -> String {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::get(format!("http://{http_addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}
