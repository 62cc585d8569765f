//! `spawn_proxy()`: `postsub dev` on a fresh database and RabbitMQ vhost, with test task
//! kinds registered; and the small helpers the tests share.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use async_trait::async_trait;
use lapin::{Connection, ConnectionProperties, options::QueueDeclareOptions, types::FieldTable};
use postsub::{
    json::to_proto_struct,
    pb::{self, post_submission_client::PostSubmissionClient, task_admin_client::TaskAdminClient},
};
use postsub_proxy::{app::DevStack, settings::DevSettings};
use postsub_tasks::{ConfigError, Outcome, Registry, RunContext, Submission, TaskBase, TaskError};
use postsub_testkit::{TestBroker, TestDatabase};
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
    fn parse_config(&self, _: &Value) -> Result<(), ConfigError> {
        Ok(())
    }
    async fn run(&self, _: &(), _: &RunContext, _: &Submission) -> Result<Outcome, TaskError> {
        panic!("task bug")
    }
}

/// Fails its first `failures` attempts with a retryable error, then succeeds.
struct Flaky;

#[derive(Deserialize)]
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

#[derive(Deserialize)]
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

pub struct TestProxy {
    pub stack: DevStack,
    pub settings: DevSettings,
    pub db: TestDatabase,
    pub broker: TestBroker,
    /// The `outage` task's service: down until a test brings it up.
    pub service_up: Arc<AtomicBool>,
}

pub async fn spawn_proxy() -> TestProxy {
    spawn_proxy_with(&[]).await
}

/// [`spawn_proxy`] with `extra` flags for `postsub dev`.
pub async fn spawn_proxy_with(extra: &[&str]) -> TestProxy {
    let db = TestDatabase::create("postsub").await;
    let broker = TestBroker::create();
    let mut flags = vec!["--sync-timeout", "300ms", "--max-answers-bytes", "1024"];
    flags.extend_from_slice(extra);
    let settings = DevSettings::isolated(&db.url, &broker.url, &broker.prefix, &flags)
        .expect("settings parse");
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
        db,
        broker,
        service_up,
    }
}

/// The built-in kinds and the test kinds.
pub fn registry(service_up: Arc<AtomicBool>) -> Registry {
    let mut registry = Registry::with_builtins();
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
        eventually(&format!("run {run_id} to be {status:?}"), || async {
            self.admin()
                .await
                .get_run(pb::GetRunRequest {
                    run_id: run_id.into(),
                })
                .await
                .is_ok_and(|run| run.into_inner().status() == status)
        })
        .await;
        self.run(run_id).await
    }

    /// Messages in one of this test's queues, `<prefix>.<suffix>`, asked with a passive
    /// declare.
    /// Declares `<prefix>.<suffix>` as a durable queue of `queue_type`: an error when the
    /// queue exists with another type.
    pub async fn declare_as(&self, suffix: &str, queue_type: &str) -> Result<(), lapin::Error> {
        let connection = Connection::connect(&self.broker.url, ConnectionProperties::default())
            .await
            .unwrap();
        let channel = connection.create_channel().await.unwrap();
        let mut arguments = FieldTable::default();
        arguments.insert(
            "x-queue-type".into(),
            lapin::types::AMQPValue::LongString(queue_type.into()),
        );
        let declared = channel
            .queue_declare(
                format!("{}.{suffix}", self.broker.prefix).into(),
                QueueDeclareOptions {
                    durable: true,
                    ..QueueDeclareOptions::default()
                },
                arguments,
            )
            .await;
        let _ = connection.close(200, "declared".into()).await;
        declared.map(drop)
    }

    pub async fn queue_len(&self, suffix: &str) -> u32 {
        let connection = Connection::connect(&self.broker.url, ConnectionProperties::default())
            .await
            .unwrap();
        let channel = connection.create_channel().await.unwrap();
        let queue = channel
            .queue_declare(
                format!("{}.{suffix}", self.broker.prefix).into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        let _ = connection.close(200, "counted".into()).await;
        queue.message_count()
    }
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
