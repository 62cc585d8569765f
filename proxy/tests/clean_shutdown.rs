//! A clean SIGTERM of `postsub dev`, after it has queued and run a job, logs no error, on
//! either backend: RabbitMQ's channels are closed before their connections, so lapin has
//! nothing to complain about.

use std::time::{Duration, Instant};

mod common;

use common::{bind, free_port, postsub, process_request, terminate, wait_for_proxy};
use postsub::pb::{self, post_submission_client::PostSubmissionClient};
use postsub_testkit::{TestBroker, TestDatabase, TestSqlite, WebhookReceiver};
use serde_json::json;
use uuid::Uuid;

/// Runs `postsub dev` with `env`, has it deliver one webhook, stops it with SIGTERM, and
/// returns its log.
async fn dev_delivers_one_job_and_stops(env: &[(&str, &str)], log: &std::path::Path) -> String {
    let receiver = WebhookReceiver::start().await;
    let grpc_addr = format!("127.0.0.1:{}", free_port());
    let mut env = env.to_vec();
    env.extend([
        ("POSTSUB_GRPC_ADDR", grpc_addr.as_str()),
        ("POSTSUB_HTTP_ADDR", "127.0.0.1:0"),
    ]);
    let mut dev = postsub(&["dev"], &env, log);
    let grpc = format!("http://{grpc_addr}");
    wait_for_proxy(&grpc).await;
    let form = Uuid::new_v4();
    let hook = json!({"url": receiver.url, "secret": receiver.secret});
    bind(&grpc, form, "hook", "webhook", pb::Mode::Async, hook).await;
    PostSubmissionClient::connect(grpc)
        .await
        .unwrap()
        .process(process_request(form, json!({"a": 1})))
        .await
        .unwrap();
    let start = Instant::now();
    while receiver.deliveries().is_empty() {
        assert!(start.elapsed() < Duration::from_secs(30), "no delivery");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(terminate(&mut dev).await, "dev exits cleanly");
    std::fs::read_to_string(log).unwrap()
}

fn no_errors(log: &str) {
    let errors: Vec<&str> = log.lines().filter(|l| l.contains("ERROR")).collect();
    assert!(errors.is_empty(), "{errors:#?}");
    assert!(log.contains("shutting down"), "{log}");
}

#[tokio::test]
async fn a_sigterm_of_dev_on_postgres_and_rabbitmq_logs_no_error() {
    let db = TestDatabase::create("shutdown").await;
    let broker = TestBroker::create();
    let file = TestSqlite::create("shutdown-logs");
    let log = file.path.with_extension("dev.log");
    let env = [
        ("DATABASE_URL", db.url.as_str()),
        ("AMQP_URL", broker.url.as_str()),
        ("POSTSUB_QUEUE_PREFIX", broker.prefix.as_str()),
    ];
    no_errors(&dev_delivers_one_job_and_stops(&env, &log).await);
}

#[tokio::test]
async fn a_sigterm_of_dev_on_the_embedded_backend_logs_no_error() {
    let file = TestSqlite::create("shutdown");
    let log = file.path.with_extension("dev.log");
    let env = [("DATABASE_URL", file.url.as_str())];
    no_errors(&dev_delivers_one_job_and_stops(&env, &log).await);
}
