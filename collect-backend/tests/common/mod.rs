//! The whole stack for end-to-end tests: `postsub dev` (proxy + worker) and the backend, each
//! on port 0, on fresh databases and a fresh RabbitMQ vhost.
#![allow(dead_code)] // each test binary uses its own part of this module

use std::time::{Duration, Instant};

use collect_backend::{Application, Settings};
use postsub::{
    json::to_proto_struct,
    pb::{self, task_admin_client::TaskAdminClient},
};
use postsub_proxy::{app::DevStack, settings::DevSettings};
use postsub_tasks::Registry;
use postsub_testkit::{TestBroker, TestDatabase};
use reqwest::StatusCode;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

pub struct Stack {
    pub backend: String,
    pub grpc: String,
    pub http: reqwest::Client,
    pub postsub: DevStack,
    _databases: (TestDatabase, TestDatabase),
    _broker: TestBroker,
}

/// Starts everything with `registry`'s task kinds; `flags` go to `postsub dev`.
pub async fn spawn_stack(registry: Registry, flags: &[&str]) -> Stack {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (postsub_db, collect_db) = (
        TestDatabase::create("postsub").await,
        TestDatabase::create("collect").await,
    );
    let broker = TestBroker::create();
    let settings = DevSettings::isolated(&postsub_db.url, &broker.url, &broker.prefix, flags)
        .expect("settings parse");
    let postsub = DevStack::start(&settings, registry, CancellationToken::new())
        .await
        .expect("postsub starts");
    let grpc = format!("http://{}", postsub.grpc_addr());
    let backend = Application::build(Settings {
        addr: "127.0.0.1:0".parse().unwrap(),
        postsub_url: grpc.clone(),
        postsub_token: None,
        postsub_ca_cert: None,
        postsub_client_cert: None,
        postsub_client_key: None,
        database_url: collect_db.url.clone().into(),
        postsub_deadline_ms: 5000,
        max_body_bytes: 64 * 1024,
    })
    .await
    .expect("backend starts");
    let backend_url = format!("http://{}", backend.local_addr());
    tokio::spawn(backend.run_until(std::future::pending()));
    Stack {
        backend: backend_url,
        grpc,
        http: reqwest::Client::new(),
        postsub,
        _databases: (postsub_db, collect_db),
        _broker: broker,
    }
}

impl Stack {
    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.backend))
            .json(&body)
            .send()
            .await
            .unwrap();
        (response.status(), response.json().await.unwrap())
    }

    pub async fn admin(&self) -> TaskAdminClient<tonic::transport::Channel> {
        TaskAdminClient::connect(self.grpc.clone()).await.unwrap()
    }

    pub async fn bind(
        &self,
        form_id: &str,
        name: &str,
        kind: &str,
        mode: pb::Mode,
        config: Value,
    ) -> pb::Binding {
        self.bind_with_options(form_id, name, kind, mode, config, None)
            .await
    }

    pub async fn bind_with_options(
        &self,
        form_id: &str,
        name: &str,
        kind: &str,
        mode: pb::Mode,
        config: Value,
        options: Option<pb::BindingOptions>,
    ) -> pb::Binding {
        let Value::Object(config) = config else {
            panic!("config must be an object")
        };
        self.admin()
            .await
            .create_binding(pb::CreateBindingRequest {
                form_id: form_id.into(),
                name: name.into(),
                kind: kind.into(),
                mode: mode.into(),
                config: Some(to_proto_struct(config)),
                options,
                ..Default::default()
            })
            .await
            .expect("binding is created")
            .into_inner()
    }

    pub async fn runs(&self, form_id: &str) -> Vec<pb::Run> {
        let mut runs = Vec::new();
        let mut page_token = String::new();
        loop {
            let page = self
                .admin()
                .await
                .list_runs(pb::ListRunsRequest {
                    form_id: form_id.into(),
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
}

/// Polls `check` until it holds or `limit` passes.
pub async fn eventually<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
