//! A `postsub worker` process holding up to 100 in-flight jobs (prefetch and concurrency
//! 100) killed with SIGKILL in the middle of a Google Sheets export, then started again:
//! every submission ends up as exactly one row, the side effect neither lost nor doubled.

use std::{
    collections::HashSet,
    process::Stdio,
    time::{Duration, Instant},
};

use futures_util::future::join_all;
mod common;

use common::{bind, process_request};
use postsub::pb::{self, post_submission_client::PostSubmissionClient};
use postsub_proxy::{
    app::{Launch, Proxy, Services},
    settings::DevSettings,
};
use postsub_tasks::{
    Registry, TargetPolicy,
    google_sheets::{Endpoints, GoogleSheets},
};
use postsub_testkit::{SheetsEmulator, TestBroker, TestDatabase};
use serde_json::{Value, json};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const SUBMISSIONS: usize = 500;

fn start_worker(db: &TestDatabase, broker: &TestBroker, emulator: &SheetsEmulator) -> Child {
    Command::new(env!("CARGO_BIN_EXE_postsub"))
        .arg("worker")
        .env("DATABASE_URL", &db.url)
        .env("AMQP_URL", &broker.url)
        .env("POSTSUB_QUEUE_PREFIX", &broker.prefix)
        .env("POSTSUB_WORKER_CONCURRENCY", "100")
        .env("POSTSUB_WORKER_PREFETCH", "100")
        .env("GOOGLE_SHEETS_BASE_URL", emulator.sheets_base_url())
        .env("GOOGLE_DRIVE_BASE_URL", emulator.drive_base_url())
        .env("POSTSUB_WORKER_HTTP_ADDR", "127.0.0.1:0")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the postsub binary starts")
}

fn data_rows(emulator: &SheetsEmulator) -> Vec<Vec<Value>> {
    match emulator.spreadsheets().first() {
        Some((id, _)) => emulator
            .values(id, "Responses")
            .into_iter()
            .skip(1)
            .collect(),
        None => Vec::new(),
    }
}

async fn wait_for_rows(emulator: &SheetsEmulator, at_least: usize) {
    let start = Instant::now();
    while data_rows(emulator).len() < at_least {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "timed out waiting for {at_least} rows (have {})",
            data_rows(emulator).len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_worker_killed_mid_export_loses_and_doubles_no_row() {
    let db = TestDatabase::create("postsub").await;
    let broker = TestBroker::create();
    let emulator = SheetsEmulator::start().await;
    // Slow enough that the kill lands in the middle of the run.
    emulator.set_latency(Duration::from_millis(50));
    let settings = DevSettings::isolated(&db.url, &broker.url, &broker.prefix, &[]).unwrap();
    let backend = settings.backend().unwrap();
    backend.database.migrate().await.unwrap();
    let mut registry = Registry::with_builtins_for(TargetPolicy::dev());
    registry.replace(GoogleSheets::new(Endpoints {
        sheets_base_url: emulator.sheets_base_url(),
        drive_base_url: emulator.drive_base_url(),
    }));
    // The proxy runs here; the workers are separate processes.
    let services = Services::start(&backend, registry).await.unwrap();
    let proxy = Proxy::build(&services, &settings.proxy, Launch::Dev)
        .await
        .unwrap();
    let grpc = format!("http://{}", proxy.grpc_addr());
    let stop = CancellationToken::new();
    let proxy_task = tokio::spawn(proxy.run(stop.clone()));

    let key_dir = std::env::temp_dir().join(format!("postsub-kill-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&key_dir).unwrap();
    let key_file = emulator.write_service_account_key(&key_dir);
    let form = Uuid::new_v4();
    let config = json!({"credentials_file": key_file, "max_writes_per_minute": 1200,
                        "batch_wait": "20ms"});
    bind(
        &grpc,
        form,
        "sheet",
        "google_sheets",
        pb::Mode::Async,
        config,
    )
    .await;

    let client = PostSubmissionClient::connect(grpc.clone()).await.unwrap();
    let mut submitted = HashSet::new();
    for chunk in (0..SUBMISSIONS).collect::<Vec<_>>().chunks(25) {
        let calls = chunk.iter().map(|i| {
            let mut client = client.clone();
            let request = process_request(form, json!({"n": i}));
            submitted.insert(request.submission_id.clone());
            async move { client.process(request).await.unwrap() }
        });
        join_all(calls).await;
    }

    let mut first = start_worker(&db, &broker, &emulator);
    wait_for_rows(&emulator, 100).await;
    first.start_kill().unwrap(); // SIGKILL
    first.wait().await.unwrap();
    let at_kill = data_rows(&emulator).len();
    assert!(
        at_kill < SUBMISSIONS,
        "the kill must land mid-run (had {at_kill} rows)"
    );

    let mut second = start_worker(&db, &broker, &emulator);
    wait_for_rows(&emulator, SUBMISSIONS).await;
    // Jobs still settling could only add rows: give them a moment, then count.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rows = data_rows(&emulator);
    let ids: Vec<&str> = rows.iter().map(|row| row[0].as_str().unwrap()).collect();
    let unique: HashSet<&str> = ids.iter().copied().collect();
    assert_eq!(ids.len(), SUBMISSIONS, "exactly one row per submission");
    assert_eq!(unique.len(), SUBMISSIONS);
    assert!(unique.iter().all(|id| submitted.contains(*id)));

    second.start_kill().unwrap();
    second.wait().await.unwrap();
    stop.cancel();
    proxy_task.await.unwrap().unwrap();
    services.stop().await;
    let _ = std::fs::remove_dir_all(&key_dir);
}
