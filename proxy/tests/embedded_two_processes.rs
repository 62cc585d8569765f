//! `postsub serve` and `postsub worker` as two processes on one SQLite file, under load:
//! the two writers take turns on SQLite's lock, and no `SQLITE_BUSY` reaches a caller, the
//! run history or the logs as an error.

use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use futures_util::{StreamExt, stream};
mod common;

use common::{bind, form_runs, free_port, postsub, process_request, terminate, wait_for_proxy};
use postsub::pb::{self, post_submission_client::PostSubmissionClient};
use postsub_testkit::{TestSqlite, WebhookReceiver};
use serde_json::json;
use uuid::Uuid;

const SUBMISSIONS: usize = 3000;
const CALLERS: usize = 32;

#[tokio::test]
async fn serve_and_worker_on_one_file_under_load_never_surface_sqlite_busy() {
    let file = TestSqlite::create("shared");
    let (serve_log, worker_log, migrate_log) = (
        file.path.with_extension("serve.log"),
        file.path.with_extension("worker.log"),
        file.path.with_extension("migrate.log"),
    );
    let receiver = WebhookReceiver::start().await;
    let grpc_addr = format!("127.0.0.1:{}", free_port());
    let env = [
        ("DATABASE_URL", file.url.as_str()),
        ("POSTSUB_GRPC_ADDR", grpc_addr.as_str()),
        ("POSTSUB_HTTP_ADDR", "127.0.0.1:0"),
        ("POSTSUB_WORKER_HTTP_ADDR", "127.0.0.1:0"),
        // This test is about the file's lock, not about tokens or webhook targets.
        ("POSTSUB_NO_AUTH", "true"),
        ("POSTSUB_ALLOW_TARGETS", "127.0.0.0/8"),
    ];
    let migrated = postsub(&["migrate"], &env, &migrate_log)
        .wait()
        .await
        .unwrap();
    assert!(migrated.success(), "postsub migrate on a new file");
    let mut serve = postsub(&["serve"], &env, &serve_log);
    let mut worker = postsub(&["worker"], &env, &worker_log);
    let grpc = format!("http://{grpc_addr}");
    wait_for_proxy(&grpc).await;

    let form = Uuid::new_v4();
    let checks = json!({"fields": {"n": {"type": "integer", "min": 0}},
                        "rules": [{"name": "small", "expr": "n < 1000000"}]});
    bind(&grpc, form, "checks", "validate", pb::Mode::Sync, checks).await;
    bind(&grpc, form, "more", "validate", pb::Mode::Sync, json!({})).await;
    let hook = json!({"url": receiver.url, "secret": receiver.secret});
    bind(&grpc, form, "hook", "webhook", pb::Mode::Async, hook).await;

    // The load, while the worker drains the same file.
    let client = PostSubmissionClient::connect(grpc.clone()).await.unwrap();
    let started = Instant::now();
    let failures: Vec<String> = stream::iter(0..SUBMISSIONS)
        .map(|i| {
            let mut client = client.clone();
            async move {
                match client.process(process_request(form, json!({"n": i}))).await {
                    Ok(reply) if reply.get_ref().jobs.len() == 1 => None,
                    Ok(reply) => Some(format!("no job queued: {reply:?}")),
                    Err(status) => Some(status.to_string()),
                }
            }
        })
        .buffer_unordered(CALLERS)
        .filter_map(|failure| async move { failure })
        .collect()
        .await;
    assert!(failures.is_empty(), "every call is answered: {failures:?}");
    eprintln!("{SUBMISSIONS} calls in {:?}", started.elapsed());

    let start = Instant::now();
    loop {
        let ids: HashSet<String> = receiver.deliveries().into_iter().map(|d| d.id).collect();
        if ids.len() == SUBMISSIONS {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "only {} of {SUBMISSIONS} jobs delivered",
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    let runs = form_runs(&grpc, form).await;
    assert_eq!(runs.len(), 3 * SUBMISSIONS, "three runs per submission");
    let troubled: Vec<&pb::Run> = runs
        .iter()
        .filter(|run| run.status() != pb::RunStatus::Succeeded || !run.error.is_empty())
        .collect();
    assert!(
        troubled.is_empty(),
        "runs that did not simply succeed: {troubled:?}"
    );

    assert!(terminate(&mut serve).await, "serve exits cleanly");
    assert!(terminate(&mut worker).await, "worker exits cleanly");
    for log in [&serve_log, &worker_log] {
        let text = std::fs::read_to_string(log).unwrap();
        let errors: Vec<&str> = text.lines().filter(|line| line.contains("ERROR")).collect();
        assert!(errors.is_empty(), "{}: {errors:#?}", log.display());
        // Waits past busy_timeout are retried and logged as warnings; say how many.
        let retried = text.lines().filter(|line| line.contains("locked")).count();
        eprintln!("{}: {retried} lock waits retried", log.display());
    }
}
