//! `postsub dev` on the embedded backend, SIGKILLed while 500 webhook jobs are queued or in
//! flight, then started again on the same file: every job is delivered and every run ends
//! `succeeded` once in the history.

use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use futures_util::future::join_all;
mod common;

use common::{bind, form_runs, free_port, postsub, process_request, wait_for_proxy};
use postsub::pb::{self, post_submission_client::PostSubmissionClient};
use postsub_testkit::{TestSqlite, WebhookReceiver};
use serde_json::json;
use uuid::Uuid;

const JOBS: usize = 500;

fn delivered(receiver: &WebhookReceiver) -> HashSet<String> {
    receiver.deliveries().into_iter().map(|d| d.id).collect()
}

async fn wait_for_deliveries(receiver: &WebhookReceiver, at_least: usize, within: Duration) {
    let start = Instant::now();
    while delivered(receiver).len() < at_least {
        assert!(
            start.elapsed() < within,
            "timed out waiting for {at_least} deliveries (have {})",
            delivered(receiver).len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn embedded_dev_killed_with_jobs_queued_and_in_flight_loses_none() {
    let file = TestSqlite::create("crash");
    let log = file.path.with_extension("log");
    let receiver = WebhookReceiver::start().await;
    // Slow enough that the kill lands with jobs in flight and more queued.
    receiver.set_latency(Duration::from_millis(100));
    let grpc_addr = format!("127.0.0.1:{}", free_port());
    let env = [
        ("DATABASE_URL", file.url.as_str()),
        ("POSTSUB_GRPC_ADDR", grpc_addr.as_str()),
        ("POSTSUB_HTTP_ADDR", "127.0.0.1:0"),
    ];
    let grpc = format!("http://{grpc_addr}");
    let mut dev = postsub(&["dev"], &env, &log);
    wait_for_proxy(&grpc).await;
    let form = Uuid::new_v4();
    let hook = json!({"url": receiver.url, "secret": receiver.secret});
    bind(&grpc, form, "hook", "webhook", pb::Mode::Async, hook).await;

    let client = PostSubmissionClient::connect(grpc.clone()).await.unwrap();
    let mut queued = HashSet::new();
    for chunk in (0..JOBS).collect::<Vec<_>>().chunks(25) {
        let calls = chunk.iter().map(|i| {
            let mut client = client.clone();
            let request = process_request(form, json!({"n": i}));
            async move { client.process(request).await.unwrap().into_inner() }
        });
        for reply in join_all(calls).await {
            queued.insert(reply.jobs[0].run_id.clone());
        }
    }
    assert_eq!(queued.len(), JOBS);

    wait_for_deliveries(&receiver, 50, Duration::from_secs(60)).await;
    dev.start_kill().unwrap(); // SIGKILL
    dev.wait().await.unwrap();
    let at_kill = delivered(&receiver).len();
    assert!(
        at_kill < JOBS,
        "the kill must land mid-run ({at_kill} delivered)"
    );
    eprintln!("killed with {at_kill} of {JOBS} jobs delivered");

    // Started again: the jobs the dead process held come back when their leases run out.
    let mut dev = postsub(&["dev"], &env, &log);
    wait_for_proxy(&grpc).await;
    wait_for_deliveries(&receiver, JOBS, Duration::from_secs(120)).await;
    // Let anything still settling finish before reading the history.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let ids = delivered(&receiver);
    assert_eq!(ids, queued, "every job delivered, nothing else");
    let repeats = receiver.delivery_count() - ids.len();
    eprintln!(
        "{repeats} deliveries repeated (at least once: the receiver drops repeats by webhook-id)"
    );

    let runs = form_runs(&grpc, form).await;
    assert_eq!(runs.len(), JOBS, "one run per job");
    let succeeded: HashSet<String> = runs
        .iter()
        .filter(|run| run.status() == pb::RunStatus::Succeeded)
        .map(|run| run.run_id.clone())
        .collect();
    assert_eq!(succeeded, queued, "each webhook-id once, as succeeded");

    assert!(common::terminate(&mut dev).await, "a clean exit");
}
