//! Helpers of the test binaries that stop or kill servers (one test per binary, so that
//! cargo runs them one after another).
#![allow(dead_code)] // each binary uses its own part of this module

use std::path::Path;

use postsub::{
    json::to_proto_struct,
    pb::{self, task_admin_client::TaskAdminClient},
};
use postsub_proxy::{app::DevStack, settings::DevSettings};
use postsub_tasks::{Registry, TargetPolicy};
use postsub_testkit::{TestBroker, TestDatabase};
use serde_json::Value;
use tokio::process::Child;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// `postsub dev` (proxy and worker, built-in kinds) on a fresh database and vhost.
pub struct Dev {
    /// The running proxy and worker.
    pub stack: DevStack,
    /// The proxy's gRPC URL.
    pub grpc: String,
    _db: TestDatabase,
    _broker: TestBroker,
}

/// Starts [`Dev`].
pub async fn start_dev() -> Dev {
    start_dev_with(&[]).await
}

/// Starts [`Dev`] with `extra` flags for `postsub dev`.
pub async fn start_dev_with(extra: &[&str]) -> Dev {
    let db = TestDatabase::create("postsub").await;
    let broker = TestBroker::create();
    let settings = DevSettings::isolated(&db.url, &broker.url, &broker.prefix, extra).unwrap();
    let stack = DevStack::start(
        &settings,
        Registry::with_builtins_for(TargetPolicy::dev()),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    let grpc = format!("http://{}", stack.grpc_addr());
    Dev {
        stack,
        grpc,
        _db: db,
        _broker: broker,
    }
}

/// A JSON object literal as a protobuf `Struct`.
pub fn object(value: Value) -> prost_types::Struct {
    let Value::Object(map) = value else {
        panic!("expected a JSON object")
    };
    to_proto_struct(map)
}

/// Binds `kind` to `form` through the admin API at `grpc`.
pub async fn bind(grpc: &str, form: Uuid, name: &str, kind: &str, mode: pb::Mode, config: Value) {
    TaskAdminClient::connect(grpc.to_owned())
        .await
        .unwrap()
        .create_binding(pb::CreateBindingRequest {
            form_id: form.to_string(),
            name: name.into(),
            kind: kind.into(),
            mode: mode.into(),
            config: Some(object(config)),
            ..Default::default()
        })
        .await
        .unwrap();
}

/// A `Process` call for a new submission of `form`.
pub fn process_request(form: Uuid, answers: Value) -> pb::ProcessRequest {
    pb::ProcessRequest {
        form_id: form.to_string(),
        submission_id: Uuid::new_v4().to_string(),
        answers: Some(object(answers)),
        submitted_at: None,
        metadata: Default::default(),
        ..Default::default()
    }
}

#[allow(unused_imports)] // each binary uses its own part of this module
pub use postsub_testkit::process::{free_port, terminate, wait_for_proxy};

/// Starts the `postsub` binary with `args` and `env`, its stderr appended to `log`.
pub fn postsub(args: &[&str], env: &[(&str, &str)], log: &Path) -> Child {
    postsub_testkit::process::spawn(env!("CARGO_BIN_EXE_postsub"), args, env, log)
}

/// Runs the `postsub` command line to its end with `env`, and without the token or AMQP_URL
/// of the environment the tests run in.
pub fn run_postsub(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_postsub"))
        .args(args)
        .env_remove("POSTSUB_TOKEN")
        .env_remove("AMQP_URL")
        .envs(env.iter().copied())
        .output()
        .expect("the postsub binary runs")
}

/// Every run of `form`, through the admin API at `grpc`.
pub async fn form_runs(grpc: &str, form: Uuid) -> Vec<pb::Run> {
    let mut admin = TaskAdminClient::connect(grpc.to_owned()).await.unwrap();
    let mut runs = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = admin
            .list_runs(pb::ListRunsRequest {
                form_id: form.to_string(),
                page_size: 1000,
                page_token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        runs.extend(page.runs);
        if page.next_page_token.is_empty() {
            return runs;
        }
        page_token = page.next_page_token;
    }
}
