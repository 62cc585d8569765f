//! `postsub backfill` as an operator runs it: old submissions from a JSON Lines or CSV file,
//! or from the demo backend's listing after the proxy missed them, through a new binding;
//! each exactly once, however often the backfill runs.

use std::{collections::HashSet, io::Write as _, path::PathBuf, time::Duration};

use clap::Parser as _;
use postsub::pb;
use postsub_testkit::WebhookReceiver;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{
    contract,
    helpers::{Backend, TestProxy, binding, eventually, spawn_proxy},
};

contract!(
    a_backfill_from_a_file_runs_each_submission_once_and_a_rerun_skips_them,
    a_csv_backfill_types_its_cells,
    a_backfill_from_the_backend_catches_up_what_the_proxy_missed,
    a_backend_gone_mid_backfill_leaves_a_checkpoint_the_rerun_resumes_from,
);

/// The demo backend on a SQLite file, its layer pointed at a proxy that is not there (the
/// submissions it stores are the ones the proxy missed).
struct DemoBackend {
    base: String,
    stop: CancellationToken,
    serving: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl DemoBackend {
    async fn start(addr: &str, file: &postsub_testkit::TestSqlite) -> Self {
        let down = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let settings = collect_backend::Settings::try_parse_from([
            "collect-backend",
            "--addr",
            addr,
            "--postsub-url",
            &format!("http://{down}"),
            "--database-url",
            &file.url,
        ])
        .unwrap();
        let app = collect_backend::Application::build(settings).await.unwrap();
        let base = format!("http://{}", app.local_addr());
        let stop = CancellationToken::new();
        let serving = tokio::spawn(app.run_until(stop.clone().cancelled_owned()));
        Self {
            base,
            stop,
            serving,
        }
    }

    /// A new form; its id.
    async fn form(&self) -> String {
        let form: Value = reqwest::Client::new()
            .post(format!("{}/forms", self.base))
            .json(&json!({"title": "Catch-up", "questions": [{"key": "n", "type": "number"}]}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        form["id"].as_str().unwrap().to_owned()
    }

    /// Stores `count` submissions to `form`, each `{"n": i}`.
    async fn submit(&self, form: &str, count: usize) {
        let http = reqwest::Client::new();
        for n in 0..count {
            let stored: Value = http
                .post(format!("{}/forms/{form}/submit", self.base))
                .json(&json!({"answers": {"n": n}}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert!(stored["post_submission"]["error"].is_string(), "{stored}");
        }
    }

    async fn stop(self) {
        self.stop.cancel();
        self.serving.await.unwrap().unwrap();
    }
}

/// Runs `postsub --server … backfill ARGS`; success, stdout, stderr.
async fn backfill(proxy: &TestProxy, args: &[&str]) -> (bool, String, String) {
    let mut all = vec!["backfill"];
    all.extend_from_slice(args);
    proxy.cli(&all).await
}

/// A file in the temporary directory, removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn new(extension: &str, lines: &[String]) -> Self {
        let path = std::env::temp_dir().join(format!(
            "postsub-backfill-{}.{extension}",
            Uuid::new_v4().simple()
        ));
        let mut file = std::fs::File::create(&path).unwrap();
        for line in lines {
            writeln!(file, "{line}").unwrap();
        }
        TempFile(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
        let _ = std::fs::remove_file(self.0.with_extension("checkpoint"));
    }
}

/// Binds a webhook to a new form (or `form`); the binding's id.
async fn bind_hook(proxy: &TestProxy, form: Uuid, receiver: &WebhookReceiver) -> String {
    let config = json!({"url": receiver.url, "secret": receiver.secret});
    proxy
        .admin()
        .await
        .create_binding(binding(form, "sheet", "webhook", pb::Mode::Async, config))
        .await
        .unwrap()
        .into_inner()
        .id
}

fn delivered(receiver: &WebhookReceiver) -> HashSet<String> {
    receiver
        .deliveries()
        .into_iter()
        .map(|d| d.body["data"]["submission_id"].as_str().unwrap().to_owned())
        .collect()
}

async fn a_backfill_from_a_file_runs_each_submission_once_and_a_rerun_skips_them(backend: Backend) {
    let proxy = spawn_proxy(backend).await;
    let receiver = WebhookReceiver::start().await;
    let form = Uuid::new_v4();
    let hook = bind_hook(&proxy, form, &receiver).await;
    let mut lines: Vec<String> = (0..300)
        .map(|n| {
            json!({"submission_id": Uuid::new_v4(), "answers": {"n": n},
                "submitted_at": "2026-11-01T10:00:00Z"})
            .to_string()
        })
        .collect();
    // Three bad lines, at lines 11, 21 and 31.
    lines.insert(10, "{not json".into());
    lines.insert(20, json!({"answers": {}}).to_string());
    lines.insert(
        30,
        json!({"submission_id": Uuid::new_v4(), "form_id": Uuid::new_v4(), "answers": {}})
            .to_string(),
    );
    let file = TempFile::new("jsonl", &lines);
    let checkpoint = file.0.with_extension("checkpoint");
    let checkpoint = checkpoint.to_str().unwrap();

    // A dry run counts and queues nothing.
    let (_, stdout, _) = backfill(
        &proxy,
        &["--binding", &hook, "--from-file", file.path(), "--dry-run"],
    )
    .await;
    assert!(stdout.contains("303 submissions read"), "{stdout}");
    assert!(
        stdout.contains("300 runs would start, 0 already done"),
        "{stdout}"
    );

    let args = [
        "--binding",
        &hook,
        "--from-file",
        file.path(),
        "--batch",
        "40",
        "--checkpoint",
        checkpoint,
    ];
    let (ok, stdout, stderr) = backfill(&proxy, &args).await;
    assert!(!ok, "bad lines make the exit status non-zero");
    assert!(
        stdout.contains("300 runs started, 0 already done"),
        "{stdout}\n{stderr}"
    );
    assert!(stdout.contains("3 bad, 0 errors"), "{stdout}");
    assert!(stdout.contains("line 11: not a submission"), "{stdout}");
    assert!(stdout.contains("line 21: no submission_id"), "{stdout}");
    assert!(stdout.contains("line 31: form_id"), "{stdout}");
    assert!(stderr.contains("3 bad lines and 0 errors"), "{stderr}");
    eventually("300 webhooks", || async {
        delivered(&receiver).len() == 300
    })
    .await;

    // The checkpoint says the file is done: a rerun reads nothing more.
    let (_, stdout, _) = backfill(&proxy, &args).await;
    assert!(stdout.starts_with("0 submissions read"), "{stdout}");
    // Without it, the whole file again: everything is already done.
    let (_, stdout, _) = backfill(
        &proxy,
        &["--form", &form.to_string(), "--from-file", file.path()],
    )
    .await;
    assert!(
        stdout.contains("0 runs started, 300 already done"),
        "{stdout}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.deliveries().len(), 300, "no webhook went twice");

    // Bad arguments say what is wrong.
    let (ok, _, stderr) = backfill(&proxy, &["--binding", &hook]).await;
    assert!(
        !ok && stderr.contains("--from-file PATH or --from-backend URL"),
        "{stderr}"
    );
    let (ok, _, stderr) = backfill(
        &proxy,
        &[
            "--binding",
            &hook,
            "--from-file",
            file.path(),
            "--since",
            "1h",
            "--until",
            "2h",
        ],
    )
    .await;
    assert!(!ok && stderr.contains("is not before --until"), "{stderr}");
}

async fn a_csv_backfill_types_its_cells(backend: Backend) {
    let proxy = spawn_proxy(backend).await;
    let receiver = WebhookReceiver::start().await;
    let form = Uuid::new_v4();
    let hook = bind_hook(&proxy, form, &receiver).await;
    let mut rows = vec!["submission_id,submitted_at,name,age,score,member,note".to_owned()];
    rows.extend((0..1000).map(|n| {
        format!(
            "{},2026-11-0{}T10:00:00Z,Ada {n},{n},{}.5,{},{}",
            Uuid::new_v4(),
            1 + n % 9,
            n,
            n % 2 == 0,
            if n % 3 == 0 { "" } else { "\"hello, world\"" }
        )
    }));
    rows.push(format!(
        "{},2026-11-01T10:00:00Z,Bo,1,2,true,x,extra",
        Uuid::new_v4()
    ));
    let file = TempFile::new("csv", &rows);
    let (_, stdout, _) = backfill(
        &proxy,
        &[
            "--binding",
            &hook,
            "--from-file",
            file.path(),
            "--since",
            "2026-11-02T00:00:00Z",
        ],
    )
    .await;
    // Days 2 to 9 of 9: 888 rows of 1000 (112 fall on day 1); the row with an extra cell
    // is bad.
    assert!(
        stdout.contains("888 runs started") && stdout.contains("112 outside --since/--until"),
        "{stdout}"
    );
    assert!(
        stdout.contains("line 1002: 8 cells; the header has 7"),
        "{stdout}"
    );
    eventually("888 webhooks", || async {
        delivered(&receiver).len() == 888
    })
    .await;
    let one = receiver
        .deliveries()
        .into_iter()
        .find(|d| d.body["data"]["answers"]["age"] == json!(3))
        .expect("n = 3 falls on day 4");
    assert_eq!(
        one.body["data"]["answers"],
        json!({"name": "Ada 3", "age": 3, "score": 3.5, "member": false})
    );
    let other = receiver
        .deliveries()
        .into_iter()
        .find(|d| d.body["data"]["answers"]["age"] == json!(4))
        .unwrap();
    assert_eq!(other.body["data"]["answers"]["note"], "hello, world");
}

async fn a_backfill_from_the_backend_catches_up_what_the_proxy_missed(backend: Backend) {
    let proxy = spawn_proxy(backend).await;
    let receiver = WebhookReceiver::start().await;
    let file = postsub_testkit::TestSqlite::create("collect");
    let demo = DemoBackend::start("127.0.0.1:0", &file).await;
    let base = demo.base.clone();
    let form_id = demo.form().await;
    let since = chrono::Utc::now().to_rfc3339();
    demo.submit(&form_id, 120).await;
    bind_hook(&proxy, form_id.parse().unwrap(), &receiver).await;

    let (ok, stdout, stderr) = backfill(
        &proxy,
        &[
            "--form",
            &form_id,
            "--from-backend",
            &base,
            "--since",
            &since,
            "--batch",
            "50",
        ],
    )
    .await;
    assert!(ok, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("120 runs started, 0 already done"),
        "{stdout}"
    );
    eventually("120 webhooks", || async {
        delivered(&receiver).len() == 120
    })
    .await;
    // Run again (as a schedule would): nothing twice.
    let (ok, stdout, _) = backfill(&proxy, &["--form", &form_id, "--from-backend", &base]).await;
    assert!(
        ok && stdout.contains("0 runs started, 120 already done"),
        "{stdout}"
    );

    // The backend gone: the backfill stops and says so.
    demo.stop().await;
    let (ok, _, stderr) = backfill(&proxy, &["--form", &form_id, "--from-backend", &base]).await;
    assert!(
        !ok && stderr.contains("the backend did not answer"),
        "{stderr}"
    );
    assert_eq!(receiver.deliveries().len(), 120);
}

async fn a_backend_gone_mid_backfill_leaves_a_checkpoint_the_rerun_resumes_from(backend: Backend) {
    // More than two pages of the listing (500 each), so that one is still to fetch when the
    // backend goes.
    const SUBMISSIONS: usize = 1100;
    let proxy = spawn_proxy(backend).await;
    let receiver = WebhookReceiver::start().await;
    let file = postsub_testkit::TestSqlite::create("collect");
    let demo = DemoBackend::start("127.0.0.1:0", &file).await;
    let form = demo.form().await;
    demo.submit(&form, SUBMISSIONS).await;
    bind_hook(&proxy, form.parse().unwrap(), &receiver).await;
    let checkpoint = std::env::temp_dir().join(format!(
        "postsub-backfill-{}.checkpoint",
        Uuid::new_v4().simple()
    ));
    let checkpoint_arg = checkpoint.to_str().unwrap().to_owned();
    let base = demo.base.clone();
    let args = [
        "--form",
        &form,
        "--from-backend",
        &base,
        "--checkpoint",
        &checkpoint_arg,
        "--batch",
        "20",
        "--rate",
        "300",
    ];

    // The backend stops while the backfill pages through it (about 3.7 s at 300 a second).
    let (first, ()) = tokio::join!(backfill(&proxy, &args), async {
        tokio::time::sleep(Duration::from_millis(2000)).await;
        demo.stop().await;
    });
    let (ok, stdout, stderr) = first;
    assert!(!ok, "the backfill says it stopped: {stdout}");
    assert!(stderr.contains("the backend did not answer"), "{stderr}");
    let saved: Value = serde_json::from_slice(&std::fs::read(&checkpoint).unwrap()).unwrap();
    assert!(saved.to_string().contains("_"), "a cursor is kept: {saved}");
    // The last batch's runs reach the history a moment after their call answered.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let done_before = runs_of(&proxy, &form).await;
    assert!(
        (1..SUBMISSIONS).contains(&done_before),
        "stopped partway: {done_before} of {SUBMISSIONS} ({stdout})"
    );

    // The backend back on the same file and address: the rerun starts at the cursor.
    let addr = base.trim_start_matches("http://").to_owned();
    let demo = DemoBackend::start(&addr, &file).await;
    let (ok, stdout, stderr) = backfill(&proxy, &args).await;
    assert!(ok, "{stdout}\n{stderr}");
    let read: usize = stdout
        .split(" submissions read")
        .next()
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("a summary: {stdout}"));
    assert!(
        read < SUBMISSIONS,
        "the rerun starts at the cursor: it read {read} after {done_before} were done: {stdout}"
    );
    eventually("every submission's webhook", || async {
        delivered(&receiver).len() == SUBMISSIONS
    })
    .await;
    assert_eq!(receiver.deliveries().len(), SUBMISSIONS, "none twice");
    demo.stop().await;
    let _ = std::fs::remove_file(&checkpoint);
}

/// How many runs of `form` the history holds.
async fn runs_of(proxy: &TestProxy, form: &str) -> usize {
    let counts = proxy
        .admin()
        .await
        .run_stats(pb::RunStatsRequest {
            filter: Some(pb::ListRunsRequest {
                form_id: form.to_owned(),
                ..Default::default()
            }),
            by: "binding".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .counts;
    counts.iter().map(|count| count.runs as usize).sum()
}
