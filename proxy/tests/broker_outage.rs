//! RabbitMQ stopped for 20 s while a client keeps sending `Process` calls: every call is
//! answered, and every async job runs, exactly once; the operator gets one signed
//! `outbox.growing` alert.
//!
//! This test stops the local RabbitMQ node's application (`rabbitmqctl stop_app`), so it is
//! the only test of its binary: cargo runs test binaries one after another, and a guard
//! starts the broker again even when the test fails.

use std::{
    collections::HashMap,
    process::Command,
    time::{Duration, Instant},
};

mod common;

use common::{bind, process_request, start_dev_with};
use postsub::pb::{self, post_submission_client::PostSubmissionClient};
use postsub_testkit::WebhookReceiver;
use serde_json::json;
use uuid::Uuid;

const SUBMISSIONS: usize = 1000;
const OUTAGE: Duration = Duration::from_secs(20);

fn rabbitmqctl(args: &[&str]) {
    let status = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .expect("rabbitmqctl runs (the test drives the local RabbitMQ)")
        .status;
    assert!(status.success(), "rabbitmqctl {args:?} failed");
}

/// Starts the broker's application again when dropped, so a failing test leaves RabbitMQ
/// running for the tests after it.
struct StartAgain;

impl Drop for StartAgain {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl").arg("start_app").output();
        let _ = Command::new("rabbitmqctl")
            .args(["await_startup", "--timeout", "60"])
            .output();
    }
}

#[tokio::test]
async fn process_answers_and_no_job_is_lost_or_doubled_while_rabbitmq_is_down() {
    let receiver = WebhookReceiver::start().await;
    let operator = WebhookReceiver::start().await;
    // The proxy looks at the outbox every 2 s (a quarter of the backlog age).
    let dev = start_dev_with(&[
        "--alert-webhook",
        &operator.url,
        "--alert-secret",
        &operator.secret,
        "--alert-group-wait",
        "1s",
        "--alert-interval",
        "1h",
        "--alert-backlog-age",
        "8s",
    ])
    .await;
    let grpc = dev.grpc.clone();
    let form = Uuid::new_v4();
    let hook = json!({"url": receiver.url, "secret": receiver.secret});
    bind(&grpc, form, "hook", "webhook", pb::Mode::Async, hook).await;

    // The client: 1,000 submissions, one every 30 ms, so the outage falls in the middle.
    let client = PostSubmissionClient::connect(grpc).await.unwrap();
    let sending = tokio::spawn(async move {
        let mut failures = Vec::new();
        for i in 0..SUBMISSIONS {
            let request = process_request(form, json!({"n": i}));
            if let Err(status) = client.clone().process(request).await {
                failures.push(status);
            }
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        failures
    });

    tokio::time::sleep(Duration::from_secs(4)).await;
    let guard = StartAgain;
    rabbitmqctl(&["stop_app"]);
    let stopped_at = Instant::now();
    tokio::time::sleep(OUTAGE).await;
    drop(guard); // start_app, await_startup
    eprintln!("RabbitMQ was down for {:?}", stopped_at.elapsed());

    let failures = sending.await.unwrap();
    assert!(failures.is_empty(), "every call is answered: {failures:?}");

    let start = Instant::now();
    loop {
        let mut per_submission: HashMap<String, usize> = HashMap::new();
        for delivery in receiver.deliveries() {
            let id = delivery.body["data"]["submission_id"]
                .as_str()
                .unwrap()
                .to_owned();
            *per_submission.entry(id).or_default() += 1;
        }
        if per_submission.len() == SUBMISSIONS {
            // Let anything still settling arrive before counting repeats.
            tokio::time::sleep(Duration::from_secs(2)).await;
            let deliveries = receiver.delivery_count();
            assert_eq!(deliveries, SUBMISSIONS, "each job ran exactly once");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "only {} of {SUBMISSIONS} submissions delivered",
            per_submission.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let alerts = operator.deliveries();
    let outbox: Vec<_> = alerts
        .iter()
        .filter(|alert| alert.body["type"] == "outbox.growing")
        .collect();
    assert_eq!(
        outbox.len(),
        1,
        "one outbox alert for the outage: {alerts:?}"
    );
    assert!(outbox[0].signature_ok);
    assert!(
        outbox[0].body["size"].as_u64().unwrap() > 0,
        "{}",
        outbox[0].body
    );
    dev.stack.stop().await.unwrap();
}
