//! The whole stack for end-to-end tests: `postsub dev` (proxy + worker) and the backend, each
//! on port 0, on fresh PostgreSQL databases and a fresh RabbitMQ queue prefix, or on fresh
//! SQLite files (the embedded backend).
#![allow(dead_code)] // each test binary uses its own part of this module

use std::time::{Duration, Instant};

use collect_backend::{Application, Settings};
use postsub::{
    json::to_proto_struct,
    pb::{self, task_admin_client::TaskAdminClient},
};
use postsub_proxy::{app::DevStack, settings::DevSettings};
use postsub_tasks::Registry;
use postsub_testkit::{SheetsEmulator, TestBroker, TestDatabase, sqlite::TestSqlite};
use reqwest::StatusCode;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

pub struct Stack {
    pub backend: String,
    pub grpc: String,
    pub http: reqwest::Client,
    pub postsub: DevStack,
    _resources: Resources,
}

/// Which backends a stack runs on.
#[derive(Debug, Clone, Copy)]
pub enum On {
    /// PostgreSQL and RabbitMQ (the demo backend on PostgreSQL too).
    Servers,
    /// postsub's embedded backend and the demo backend's SQLite, one file each.
    Embedded,
}

/// What a stack's databases and queues live in, dropped with it.
enum Resources {
    Servers(TestDatabase, TestDatabase, TestBroker),
    Embedded(TestSqlite, TestSqlite),
}

/// Starts everything on PostgreSQL and RabbitMQ with `registry`'s task kinds; `flags` go
/// to `postsub dev`.
pub async fn spawn_stack(registry: Registry, flags: &[&str]) -> Stack {
    spawn_stack_on(On::Servers, registry, flags).await
}

/// Starts everything on `on` with `registry`'s task kinds; `flags` go to `postsub dev`.
pub async fn spawn_stack_on(on: On, registry: Registry, flags: &[&str]) -> Stack {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let resources = match on {
        On::Servers => Resources::Servers(
            TestDatabase::create("postsub").await,
            TestDatabase::create("collect").await,
            TestBroker::create(),
        ),
        On::Embedded => {
            Resources::Embedded(TestSqlite::create("postsub"), TestSqlite::create("collect"))
        }
    };
    let (settings, collect_url) = match &resources {
        Resources::Servers(postsub_db, collect_db, broker) => (
            DevSettings::isolated(&postsub_db.url, &broker.url, &broker.prefix, flags),
            collect_db.url.clone(),
        ),
        Resources::Embedded(postsub_db, collect_db) => (
            DevSettings::embedded(&postsub_db.url, flags),
            collect_db.url.clone(),
        ),
    };
    let settings = settings.expect("settings parse");
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
        database_url: collect_url.into(),
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
        _resources: resources,
    }
}

/// A stack whose `google_sheets` kind talks to a Sheets emulator, with the emulator's
/// service-account key in a file.
pub struct SheetsStack {
    pub stack: Stack,
    pub emulator: SheetsEmulator,
    pub key_file: String,
    _key_dir: TempDir,
}

/// A directory removed on drop.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Starts a stack on `on` whose `google_sheets` kind talks to a fresh emulator; the other
/// kinds may call local addresses (the tests' receivers).
pub async fn spawn_with_sheets(on: On, flags: &[&str]) -> SheetsStack {
    let emulator = SheetsEmulator::start().await;
    let mut registry = Registry::with_builtins_for(postsub_tasks::TargetPolicy::dev());
    registry.replace(postsub_tasks::google_sheets::GoogleSheets::new(
        postsub_tasks::google_sheets::Endpoints {
            sheets_base_url: emulator.sheets_base_url(),
            drive_base_url: emulator.drive_base_url(),
        },
    ));
    let stack = spawn_stack_on(on, registry, flags).await;
    let dir =
        std::env::temp_dir().join(format!("postsub-sheets-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let key_file = emulator
        .write_service_account_key(&dir)
        .display()
        .to_string();
    SheetsStack {
        stack,
        emulator,
        key_file,
        _key_dir: TempDir(dir),
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
