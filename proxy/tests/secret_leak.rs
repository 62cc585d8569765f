//! A webhook's secret, shared by a sync `remote` task, followed through the whole path with
//! the real `postsub dev` (debug logs on): binding created, listed and fetched, a delivery
//! that fails into the dead letters, its retry (`runs retry-dead`) and replay, a delivery
//! that succeeds, the run history and the queues. The secret must appear nowhere but where
//! it is needed, the binding's stored config: not in a log line, a CLI or API answer, a
//! console page, a run record, an attempt or a job. The console's Overview shows the
//! figures `postsub queues --json` prints.

use std::process::Output;

mod common;

use common::{free_port, postsub, run_postsub, terminate, wait_for_proxy};
use postsub_testkit::{TestSqlite, WebhookReceiver};
use serde_json::{Value, json};
use sqlx::sqlite::SqlitePoolOptions;
use uuid::Uuid;

fn cli(server: &str, args: &[&str]) -> Output {
    let output = run_postsub(args, &[("POSTSUB_SERVER", server)]);
    assert!(
        output.status.success(),
        "postsub {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Everything a command printed.
fn said(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[tokio::test]
async fn a_webhook_secret_is_found_nowhere_but_in_its_binding() {
    let file = TestSqlite::create("leak");
    let receiver = WebhookReceiver::start().await;
    let secret = receiver.secret.clone();
    let key = secret.trim_start_matches("whsec_").to_owned();
    let grpc_addr = format!("127.0.0.1:{}", free_port());
    let http_addr = format!("127.0.0.1:{}", free_port());
    let log_path = file.path.with_extension("dev.log");
    let env = [
        ("DATABASE_URL", file.url.as_str()),
        ("POSTSUB_GRPC_ADDR", grpc_addr.as_str()),
        ("POSTSUB_HTTP_ADDR", http_addr.as_str()),
        ("RUST_LOG", "debug"),
    ];
    let mut dev = postsub(&["dev"], &env, &log_path);
    let server = format!("http://{grpc_addr}");
    wait_for_proxy(&server).await;

    let form = Uuid::new_v4().to_string();
    let config = json!({"url": receiver.url, "secret": secret}).to_string();
    let mut seen = String::new();
    let created = cli(
        &server,
        &[
            "bindings",
            "create",
            "--form",
            &form,
            "--name",
            "hook",
            "--kind",
            "webhook",
            "--mode",
            "async",
            "--config",
            &config,
            "--max-attempts",
            "2",
            "--backoff-initial",
            "100ms",
        ],
    );
    seen += &said(&created);
    let binding: Value = serde_json::from_slice(&created.stdout).unwrap();
    let id = binding["id"].as_str().unwrap().to_owned();
    assert_eq!(binding["config"]["secret"], "whsec_********");

    // A sync `remote` task signed with the same secret, answering `ok`: its config is
    // masked too, and its calls run on every submission below.
    let task = WebhookReceiver::listen("127.0.0.1:0".parse().unwrap(), &secret, false)
        .await
        .unwrap();
    task.set_answer(r#"{"status": "ok", "output": {"stored": true}}"#);
    let remote = json!({"url": task.url, "secret": secret, "settings": {"list": "a"}});
    let created = cli(
        &server,
        &[
            "bindings",
            "create",
            "--form",
            &form,
            "--name",
            "crm",
            "--kind",
            "remote",
            "--mode",
            "sync",
            "--config",
            &remote.to_string(),
        ],
    );
    seen += &said(&created);
    let remote_binding: Value = serde_json::from_slice(&created.stdout).unwrap();
    assert_eq!(remote_binding["config"]["secret"], "whsec_********");

    // Fails twice: dead; replayed, delivered. A second submission is delivered at once.
    receiver.respond_with(&[500, 500]);
    let submit = |n: u32| {
        let server = server.clone();
        let form = form.clone();
        async move {
            let mut client =
                postsub::pb::post_submission_client::PostSubmissionClient::connect(server)
                    .await
                    .unwrap();
            client
                .process(common::process_request(
                    form.parse().unwrap(),
                    json!({"n": n}),
                ))
                .await
                .unwrap();
        }
    };
    submit(1).await;
    let dead = loop {
        let runs = cli(&server, &["runs", "list", "--form", &form, "--json"]);
        let list: Value = serde_json::from_slice(&runs.stdout).unwrap();
        if list
            .as_array()
            .unwrap()
            .iter()
            .any(|run| run["status"] == "dead")
        {
            break runs;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    seen += &said(&dead);
    seen += &said(&cli(&server, &["queues", "--json"]));
    // The console's "Retry all" of the dead group, from the command line.
    let retried = cli(
        &server,
        &[
            "runs",
            "retry-dead",
            "--binding",
            &id,
            "--cause",
            "HTTP 5xx (server error)",
        ],
    );
    let answer: Value = serde_json::from_slice(&retried.stdout).unwrap();
    assert_eq!(answer, json!({"retried": 1, "skipped": 0, "failed": []}));
    assert!(
        said(&retried).contains("1 dead runs of binding"),
        "{}",
        said(&retried)
    );
    seen += &said(&retried);
    // Its dead letter is dropped by the replay: the run is no longer dead.
    seen += &said(&cli(&server, &["dlq", "replay"]));
    submit(2).await;
    let runs = loop {
        let runs = cli(&server, &["runs", "list", "--form", &form, "--json"]);
        let list: Value = serde_json::from_slice(&runs.stdout).unwrap();
        let succeeded = list
            .as_array()
            .unwrap()
            .iter()
            .filter(|run| run["kind"] == "webhook" && run["status"] == "succeeded");
        if succeeded.count() == 2 {
            break runs;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert!(
        receiver
            .deliveries()
            .iter()
            .all(|delivery| delivery.signature_ok)
    );
    seen += &said(&runs);
    for run in serde_json::from_slice::<Value>(&runs.stdout)
        .unwrap()
        .as_array()
        .unwrap()
    {
        seen += &said(&cli(
            &server,
            &["runs", "get", run["run_id"].as_str().unwrap()],
        ));
    }
    seen += &said(&cli(&server, &["bindings", "get", &id]));
    seen += &said(&cli(&server, &["bindings", "list", "--form", &form]));
    seen += &said(&cli(&server, &["kinds"]));
    let audit = cli(&server, &["audit", "list", "--json"]);
    assert!(
        said(&audit).contains("binding.create"),
        "the audit log has the binding"
    );
    seen += &said(&audit);

    // Every console page (`dev` on loopback without tokens opens it directly).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let console = |path: String| {
        let url = format!("http://{http_addr}{path}");
        async move {
            let page = reqwest::get(&url).await.unwrap();
            assert!(page.status().is_success(), "{url}: {}", page.status());
            page.text().await.unwrap()
        }
    };
    let queues: Value =
        serde_json::from_slice(&cli(&server, &["queues", "--json"]).stdout).unwrap();
    let overview = console("/ui".into()).await;
    for queue in queues.as_array().unwrap() {
        let row = format!(
            "<td>{}</td><td class=\"n\">{}</td>",
            queue["kind"].as_str().unwrap(),
            queue["ready"]
        );
        assert!(
            overview.contains(&row),
            "{row} not in the Overview: {overview}"
        );
    }
    seen += &overview;
    let mut pages: Vec<String> = [
        "/ui/live",
        "/ui/forms",
        "/ui/runs",
        "/ui/runs.csv",
        "/ui/dead",
        "/ui/bindings",
        "/ui/audit",
    ]
    .map(String::from)
    .into();
    for run in serde_json::from_slice::<Value>(&runs.stdout)
        .unwrap()
        .as_array()
        .unwrap()
    {
        pages.push(format!("/ui/runs/{}", run["run_id"].as_str().unwrap()));
        pages.push(format!(
            "/ui/submissions/{}",
            run["submission_id"].as_str().unwrap()
        ));
    }
    for path in pages {
        seen += &console(path).await;
    }
    assert!(terminate(&mut dev).await);
    seen += &std::fs::read_to_string(&log_path).unwrap();

    // What the store keeps of runs, attempts and jobs (the dead letters included).
    let pool = SqlitePoolOptions::new().connect(&file.url).await.unwrap();
    let history: Vec<(Option<String>, Option<String>, Option<String>)> =
        sqlx::query_as("SELECT CAST(input AS TEXT), error, CAST(output AS TEXT) FROM task_runs")
            .fetch_all(&pool)
            .await
            .unwrap();
    let attempts: Vec<(Option<String>,)> = sqlx::query_as("SELECT error FROM task_attempts")
        .fetch_all(&pool)
        .await
        .unwrap();
    let jobs: Vec<(String, Option<String>)> = sqlx::query_as("SELECT payload, error FROM jobs")
        .fetch_all(&pool)
        .await
        .unwrap();
    let stored_configs: Vec<String> = sqlx::query_scalar("SELECT config FROM bindings")
        .fetch_all(&pool)
        .await
        .unwrap();
    let audit_log: Vec<(Option<String>, Option<String>)> =
        sqlx::query_as("SELECT before, after FROM audit_log")
            .fetch_all(&pool)
            .await
            .unwrap();
    pool.close().await;
    seen += &format!("{audit_log:?}");
    // Two submissions, each with a webhook run and a remote one.
    assert!(history.len() == 4 && !attempts.is_empty(), "{history:?}");
    seen += &format!("{history:?}{attempts:?}{jobs:?}");

    assert!(
        !task.deliveries().is_empty() && task.deliveries().iter().all(|d| d.signature_ok),
        "the remote task was called, signed"
    );
    // The search is real: the secret is where it must be, and the log is debug-level.
    assert!(stored_configs.len() == 2 && stored_configs.iter().all(|c| c.contains(&secret)));
    assert!(seen.contains("DEBUG") && seen.contains("whsec_********"));
    assert!(!seen.contains(&secret), "the secret leaked");
    assert!(!seen.contains(&key), "the secret's key leaked");
}
