//! No webhook into the private network, tried with the real `serve` and `worker` binaries on
//! one SQLite file: bindings to the cloud metadata address, to a database port on `[::1]`,
//! to a private address or to loopback written as a number are refused when created; a
//! hostname that resolves to loopback passes creation and is refused when the worker
//! connects, as a dead run naming the rule, never retried; with the range allowed
//! (`POSTSUB_ALLOW_TARGETS`) the same webhook is delivered.

use std::{path::Path, process::Output, time::Duration};

mod common;

use common::{
    form_runs, free_port, postsub, process_request, run_postsub, terminate, wait_for_proxy,
};
use postsub::pb::{self, post_submission_client::PostSubmissionClient};
use postsub_testkit::{TestSqlite, WebhookReceiver};
use serde_json::json;
use tokio::process::Child;
use uuid::Uuid;

/// `postsub serve` and `postsub worker` on `file`, allowing `allow` (if any); returns
/// them and the proxy's URL.
async fn start(file: &TestSqlite, allow: Option<&str>, round: &str) -> (Child, Child, String) {
    let grpc_addr = format!("127.0.0.1:{}", free_port());
    let mut env = vec![
        ("DATABASE_URL", file.url.as_str()),
        ("POSTSUB_GRPC_ADDR", grpc_addr.as_str()),
        ("POSTSUB_HTTP_ADDR", "127.0.0.1:0"),
        ("POSTSUB_WORKER_HTTP_ADDR", "127.0.0.1:0"),
        // This test is about targets, not tokens.
        ("POSTSUB_NO_AUTH", "true"),
    ];
    if let Some(allow) = allow {
        env.push(("POSTSUB_ALLOW_TARGETS", allow));
    }
    let log = |name: &str| file.path.with_extension(format!("{round}.{name}.log"));
    let serve = postsub(&["serve"], &env, &log("serve"));
    let worker = postsub(&["worker"], &env, &log("worker"));
    let server = format!("http://{grpc_addr}");
    wait_for_proxy(&server).await;
    (serve, worker, server)
}

/// `postsub bindings create` of a webhook to `url` for `form`.
fn create_webhook(server: &str, form: Uuid, name: &str, url: &str, secret: &str) -> Output {
    let config = json!({"url": url, "secret": secret}).to_string();
    let form = form.to_string();
    let args = [
        "bindings",
        "create",
        "--form",
        &form,
        "--name",
        name,
        "--kind",
        "webhook",
        "--mode",
        "async",
        "--config",
        &config,
        "--max-attempts",
        "3",
        "--backoff-initial",
        "100ms",
    ];
    run_postsub(&args, &[("POSTSUB_SERVER", server)])
}

/// The machine's own name: a hostname, not an address, that resolves to loopback here.
async fn own_hostname() -> String {
    let name = std::fs::read_to_string(Path::new("/proc/sys/kernel/hostname"))
        .expect("the hostname")
        .trim()
        .to_owned();
    let resolved: Vec<_> = tokio::net::lookup_host((name.as_str(), 80))
        .await
        .expect("the machine's hostname resolves")
        .collect();
    assert!(
        resolved.iter().all(|addr| addr.ip().is_loopback()),
        "this test needs the machine's hostname ({name}) to resolve to loopback, as \
         /etc/hosts makes it on Debian; it resolves to {resolved:?}"
    );
    name
}

async fn submit(server: &str, form: Uuid) {
    PostSubmissionClient::connect(server.to_owned())
        .await
        .unwrap()
        .process(process_request(form, json!({"a": 1})))
        .await
        .unwrap();
}

#[tokio::test]
async fn webhooks_into_the_private_network_are_refused_unless_allowed() {
    let file = TestSqlite::create("targets");
    let migrated = postsub(
        &["migrate"],
        &[("DATABASE_URL", &file.url)],
        &file.path.with_extension("migrate.log"),
    )
    .wait()
    .await
    .unwrap();
    assert!(migrated.success());
    let receiver = WebhookReceiver::start().await;
    let port = receiver
        .url
        .split(':')
        .nth(2)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let (mut serve, mut worker, server) = start(&file, None, "strict").await;

    let form = Uuid::new_v4();
    for (url, rule) in [
        (
            "http://169.254.169.254/latest/meta-data/".to_owned(),
            "169.254.0.0/16 (link-local, cloud metadata)",
        ),
        ("http://[::1]:5432/".to_owned(), "::1/128 (loopback)"),
        (
            "http://10.0.0.7/hook".to_owned(),
            "10.0.0.0/8 (private network)",
        ),
        (
            format!("http://2130706433:{port}/hook"),
            "127.0.0.0/8 (loopback)",
        ),
        (
            format!("http://localhost:{port}/hook"),
            "127.0.0.0/8 (loopback)",
        ),
    ] {
        let created = create_webhook(&server, form, "refused", &url, &receiver.secret);
        let error = String::from_utf8_lossy(&created.stderr);
        assert!(!created.status.success(), "{url} was accepted");
        assert!(
            error.contains(&format!("is in {rule}, which bindings may not call"))
                && error.contains("POSTSUB_ALLOW_TARGETS"),
            "{url}: {error}"
        );
    }

    // A name passes creation; the address it resolves to is refused when the worker connects.
    let host = own_hostname().await;
    let by_name = format!("http://{host}:{port}/hook");
    let created = create_webhook(&server, form, "by-name", &by_name, &receiver.secret);
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    submit(&server, form).await;
    let dead = loop {
        let runs = form_runs(&server, form).await;
        if let Some(run) = runs.iter().find(|run| run.status() == pb::RunStatus::Dead) {
            break run.clone();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        dead.attempts, 1,
        "a refused target is not retried: {dead:?}"
    );
    assert!(
        dead.error.contains(&format!(
            "{host} (resolves to 127.0.0.1) is in 127.0.0.0/8 (loopback)"
        )),
        "{}",
        dead.error
    );
    assert!(receiver.deliveries().is_empty());
    assert!(terminate(&mut serve).await && terminate(&mut worker).await);

    // With loopback allowed, the same binding delivers a new submission, as does one to
    // 127.0.0.1 itself.
    let (mut serve, mut worker, server) = start(&file, Some("127.0.0.0/8,::1"), "allowed").await;
    let other = Uuid::new_v4();
    let created = create_webhook(&server, other, "allowed", &receiver.url, &receiver.secret);
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    submit(&server, other).await;
    submit(&server, form).await;
    let started = std::time::Instant::now();
    while receiver.deliveries().len() < 2 {
        assert!(started.elapsed() < Duration::from_secs(30), "not delivered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(terminate(&mut serve).await && terminate(&mut worker).await);
}
