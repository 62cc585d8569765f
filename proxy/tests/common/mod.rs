//! Helpers of the test binaries that stop or kill servers (one test per binary, so that
//! cargo runs them one after another).
#![allow(dead_code)] // each binary uses its own part of this module

use postsub::{
    json::to_proto_struct,
    pb::{self, task_admin_client::TaskAdminClient},
};
use postsub_proxy::{app::DevStack, settings::DevSettings};
use postsub_tasks::Registry;
use postsub_testkit::{TestBroker, TestDatabase};
use serde_json::Value;
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
    let db = TestDatabase::create("postsub").await;
    let broker = TestBroker::create();
    let settings = DevSettings::isolated(&db.url, &broker.url, &broker.prefix, &[]).unwrap();
    let stack = DevStack::start(
        &settings,
        Registry::with_builtins(),
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
    }
}
