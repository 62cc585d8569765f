//! PostgreSQL restarted while a client keeps sending `Process` calls: every call is
//! answered from the binding cache, and afterwards no run is missing from the history.
//!
//! This test restarts the local PostgreSQL cluster, so it is the only test of its binary
//! (cargo runs test binaries one after another); a guard starts the cluster again even when
//! the test fails.

use std::{process::Command, time::Duration};

mod common;

use common::{bind, process_request, start_dev};
use postsub::pb::{
    self, post_submission_client::PostSubmissionClient, task_admin_client::TaskAdminClient,
};
use postsub_testkit::WebhookReceiver;
use serde_json::json;
use uuid::Uuid;

const SUBMISSIONS: usize = 500;

/// `pg_ctlcluster <version> main <action>` for the machine's one cluster.
fn cluster(action: &str) -> bool {
    let version = std::fs::read_dir("/etc/postgresql")
        .ok()
        .and_then(|mut dirs| dirs.next())
        .and_then(|dir| dir.ok())
        .map(|dir| dir.file_name().to_string_lossy().into_owned())
        .expect("a PostgreSQL cluster under /etc/postgresql (the test drives the local server)");
    Command::new("pg_ctlcluster")
        .args(["--skip-systemctl-redirect", &version, "main", action])
        .output()
        .is_ok_and(|out| out.status.success())
}

/// Starts the cluster again when dropped, so a failing test leaves PostgreSQL running.
struct StartAgain;

impl Drop for StartAgain {
    fn drop(&mut self) {
        cluster("start");
    }
}

#[tokio::test]
async fn no_run_is_missing_after_postgresql_restarts_under_load() {
    let receiver = WebhookReceiver::start().await;
    let dev = start_dev().await;
    let grpc = dev.grpc.clone();
    let form = Uuid::new_v4();
    for (name, kind, mode, config) in [
        (
            "checks",
            "validate",
            pb::Mode::Sync,
            json!({"fields": {"n": {"type": "integer"}}}),
        ),
        (
            "hook",
            "webhook",
            pb::Mode::Async,
            json!({"url": receiver.url, "secret": receiver.secret}),
        ),
    ] {
        bind(&grpc, form, name, kind, mode, config).await;
    }
    let mut admin = TaskAdminClient::connect(grpc.clone()).await.unwrap();

    let client = PostSubmissionClient::connect(grpc.clone()).await.unwrap();
    let sending = tokio::spawn(async move {
        let mut failures = Vec::new();
        for i in 0..SUBMISSIONS {
            let request = process_request(form, json!({"n": i}));
            if let Err(status) = client.clone().process(request).await {
                failures.push(status);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        failures
    });

    tokio::time::sleep(Duration::from_secs(3)).await;
    let guard = StartAgain;
    assert!(cluster("stop"), "PostgreSQL stops");
    tokio::time::sleep(Duration::from_secs(5)).await;
    drop(guard);

    let failures = sending.await.unwrap();
    assert!(failures.is_empty(), "every call is answered: {failures:?}");

    // Every submission's two runs are in the history and finished.
    let start = std::time::Instant::now();
    loop {
        let runs = match admin
            .list_runs(pb::ListRunsRequest {
                form_id: form.to_string(),
                page_size: 1000,
                ..Default::default()
            })
            .await
        {
            Ok(page) => page.into_inner().runs,
            Err(_) => Vec::new(), // the admin API's pool may still be reconnecting
        };
        let finished = runs
            .iter()
            .filter(|r| r.status() == pb::RunStatus::Succeeded)
            .count();
        if finished == 2 * SUBMISSIONS {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "{finished} of {} runs recorded as succeeded ({} in the history)",
            2 * SUBMISSIONS,
            runs.len()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(receiver.delivery_count(), SUBMISSIONS, "each webhook once");
    dev.stack.stop().await.unwrap();
}
