//! Rows 11 and 12: the console's pages over a history of 1,000,000 runs, on PostgreSQL +
//! RabbitMQ and on the embedded backend.
//!
//! The history: 20 bindings on 5 forms (2 sync `validate`, 2 async `webhook` each), one
//! run every 2.6 s over the last 30 days (so ~33,000 in the last 24 h and ~1,400 in the
//! last hour), 1 % of them dead with a webhook error, 1 % failed sync runs, 0.5 % queued,
//! the rest succeeded. It is written with one SQL statement, not through `Process` (that
//! would take the whole benchmark's time); then a proxy (no worker, no token) serves the
//! console and each page is fetched one request at a time, after a warm-up: the median and
//! p90 of [`REQUESTS`] requests.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use postsub_proxy::{
    admin::page_key,
    app::{Launch, Proxy, Services},
    backend::Backend,
    settings::DevSettings,
    store::NewBinding,
};
use postsub_tasks::{Mode, Registry, TargetPolicy};
use postsub_testkit::{TestBroker, TestDatabase, TestSqlite};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Runs in the history.
const RUNS: i64 = 1_000_000;
/// Requests per page measured.
const REQUESTS: usize = 30;
/// Requests per page before measuring.
const WARM_UP: usize = 3;

/// The CSV export of every run: how long, how big, how much memory it took.
pub struct CsvExport {
    backend: &'static str,
    lines: usize,
    bytes: usize,
    took: Duration,
    rss_growth: u64,
}

/// One page's latencies.
pub struct PageRow {
    backend: &'static str,
    page: String,
    median: Duration,
    p90: Duration,
    bytes: usize,
}

/// What rows 11 and 12 measured: each page, and the CSV export of each backend.
pub type Rows = (Vec<PageRow>, Vec<CsvExport>);

/// The rows of both backends.
pub async fn run_console() -> anyhow::Result<Rows> {
    let (mut rows, mut exports) = (Vec::new(), Vec::new());
    let db = TestDatabase::create("bench_console").await;
    let broker = TestBroker::create();
    let settings = DevSettings::isolated(&db.url, &broker.url, &broker.prefix, &[])?;
    let (pages, export) = measure("PostgreSQL", &settings).await?;
    rows.extend(pages);
    exports.push(export);
    let file = TestSqlite::create("bench_console");
    let settings = DevSettings::embedded(&file.url, &[])?;
    let (pages, export) = measure("embedded", &settings).await?;
    rows.extend(pages);
    exports.push(export);
    Ok((rows, exports))
}

/// Streams `/ui/runs.csv` (every run), sampling this process's RSS (the proxy runs in it)
/// as the chunks come.
async fn export_csv(
    client: &reqwest::Client,
    base: &str,
    backend: &'static str,
) -> anyhow::Result<CsvExport> {
    let before = crate::usage::rss();
    let started = Instant::now();
    let mut response = client.get(format!("{base}/ui/runs.csv")).send().await?;
    anyhow::ensure!(response.status().is_success(), "{}", response.status());
    let (mut bytes, mut lines, mut peak) = (0, 0, before);
    while let Some(chunk) = response.chunk().await? {
        bytes += chunk.len();
        lines += chunk.iter().filter(|&&b| b == b'\n').count();
        peak = peak.max(crate::usage::rss());
    }
    Ok(CsvExport {
        backend,
        lines,
        bytes,
        took: started.elapsed(),
        rss_growth: peak.saturating_sub(before),
    })
}

async fn measure(
    backend_name: &'static str,
    settings: &DevSettings,
) -> anyhow::Result<(Vec<PageRow>, CsvExport)> {
    let backend = settings.backend()?;
    backend.database.migrate().await?;
    create_bindings(&backend).await?;
    let started = Instant::now();
    let key = if backend_name == "PostgreSQL" {
        fill_postgres(
            settings
                .database
                .database_url
                .as_deref()
                .unwrap_or_default(),
        )
        .await?
    } else {
        fill_sqlite(
            settings
                .database
                .database_url
                .as_deref()
                .unwrap_or_default(),
        )
        .await?
    };
    eprintln!(
        "console rows ({backend_name}): {RUNS} runs written in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let services =
        Services::start(&backend, Registry::with_builtins_for(TargetPolicy::dev())).await?;
    let proxy = Proxy::build(&services, &settings.proxy, Launch::Dev).await?;
    let base = format!("http://{}", proxy.http_addr());
    let stop = CancellationToken::new();
    let running = tokio::spawn(proxy.run(stop.clone()));
    let (form, binding) = first_binding(&services).await?;
    let pages = [
        "/ui".to_owned(),
        "/ui/forms".to_owned(),
        "/ui/runs".to_owned(),
        format!("/ui/runs?after={key}"),
        "/ui/runs?status=dead".to_owned(),
        format!("/ui/runs?form={form}&status=dead"),
        format!("/ui/runs?binding={binding}&error=503"),
        "/ui/dead".to_owned(),
    ];
    let client = reqwest::Client::new();
    let mut rows = Vec::new();
    for page in pages {
        let url = format!("{base}{page}");
        let mut times = Vec::with_capacity(REQUESTS);
        let mut bytes = 0;
        for i in 0..WARM_UP + REQUESTS {
            let start = Instant::now();
            let response = client.get(&url).send().await?;
            anyhow::ensure!(
                response.status().is_success(),
                "{page} answered {}",
                response.status()
            );
            bytes = response.bytes().await?.len();
            if i >= WARM_UP {
                times.push(start.elapsed());
            }
        }
        times.sort();
        rows.push(PageRow {
            backend: backend_name,
            page: page
                .replace(&form.to_string(), "F")
                .replace(&binding.to_string(), "B")
                .replace(&key, "KEY (the middle)"),
            median: times[times.len() / 2],
            p90: times[times.len() * 9 / 10],
            bytes,
        });
    }
    let export = export_csv(&client, &base, backend_name).await?;
    stop.cancel();
    running.await??;
    services.stop().await;
    Ok((rows, export))
}

async fn first_binding(services: &Services) -> anyhow::Result<(Uuid, Uuid)> {
    let bindings = services.store.all_bindings().await?;
    let binding = bindings
        .iter()
        .find(|b| b.kind == "webhook")
        .context("no webhook binding")?;
    Ok((binding.form_id, binding.id))
}

/// The history's statuses and errors by `i % 200`, of 200: 2 failed (sync bindings 0 and 1),
/// 2 dead and 1 queued (webhook bindings 2, 3 and 6).
const STATUS_SQL: &str = "CASE WHEN i % 200 IN (2, 3) THEN 'dead'
        WHEN i % 200 IN (0, 1) THEN 'failed' WHEN i % 200 = 6 THEN 'queued'
        ELSE 'succeeded' END";
const ERROR_SQL: &str = "CASE WHEN i % 200 IN (2, 3)
        THEN 'POST http://127.0.0.1:8099/hook answered 503 Service Unavailable: down'
        WHEN i % 200 IN (0, 1) THEN 'timed out after 2s' ELSE NULL END";

/// Bindings, through the store: 5 forms × (2 validate, 2 webhook), named `binding-00` to
/// `binding-19`; binding `n` gets the runs with `i % 20 = n` (by name), so sync bindings get
/// sync runs.
async fn create_bindings(backend: &Backend) -> anyhow::Result<()> {
    let store = backend.database.open_store().await?;
    for n in 0..20u128 {
        let webhook = n % 4 >= 2;
        let (kind, mode, config) = if webhook {
            (
                "webhook",
                Mode::Async,
                json!({"url": "http://127.0.0.1:8099/hook",
                       "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}),
            )
        } else {
            (
                "validate",
                Mode::Sync,
                json!({"fields": {"age": {"type": "number", "min": 0}}}),
            )
        };
        store
            .insert_binding(NewBinding {
                form_id: Uuid::from_u128(0xF000 + n / 4),
                name: format!("binding-{n:02}"),
                kind: kind.to_owned(),
                mode,
                config,
                enabled: true,
                options: Default::default(),
            })
            .await?;
    }
    store.close().await;
    Ok(())
}

/// The page key of the run in the middle of the history, from either backend's pool.
macro_rules! middle_key {
    ($pool:expr) => {{
        let (at, id): (DateTime<Utc>, Uuid) = sqlx::query_as(
            "SELECT created_at, run_id FROM task_runs ORDER BY created_at DESC, run_id DESC
             LIMIT 1 OFFSET $1",
        )
        .bind(RUNS / 2)
        .fetch_one($pool)
        .await?;
        Ok(page_key(at, id))
    }};
}

/// Writes the history into PostgreSQL; returns the page key of the run in the middle.
async fn fill_postgres(url: &str) -> anyhow::Result<String> {
    let pool = sqlx::PgPool::connect(url).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO task_runs (run_id, binding_id, form_id, submission_id, kind, mode, status,
            attempts, flags, error, created_at, started_at, finished_at, updated_at)
         SELECT gen_random_uuid(), b.id, b.form_id, gen_random_uuid(), b.kind, b.mode,
            {STATUS_SQL}, 1, '[]', {ERROR_SQL}, t, t, t, t
         FROM generate_series(0, {last}) AS i,
            LATERAL (SELECT now() - i * interval '2.592 seconds' AS t) AS at,
            (SELECT id, form_id, kind, mode, row_number() OVER (ORDER BY name) - 1 AS n
             FROM bindings) AS b
         WHERE b.n = i % 20",
        last = RUNS - 1
    )))
    .execute(&pool)
    .await?;
    sqlx::query("ANALYZE task_runs").execute(&pool).await?;
    let key = middle_key!(&pool);
    pool.close().await;
    key
}

/// Writes the history into the SQLite file; returns the page key of the run in the middle.
async fn fill_sqlite(url: &str) -> anyhow::Result<String> {
    let pool = sqlx::SqlitePool::connect(url).await?;
    // Times as the store writes them: RFC 3339 in UTC (here with milliseconds).
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "WITH RECURSIVE seq(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM seq WHERE i < {last}),
            b AS (SELECT id, form_id, kind, mode,
                row_number() OVER (ORDER BY name) - 1 AS n FROM bindings)
         INSERT INTO task_runs (run_id, binding_id, form_id, submission_id, kind, mode, status,
            attempts, flags, error, created_at, started_at, finished_at, updated_at)
         SELECT randomblob(16), b.id, b.form_id, randomblob(16), b.kind, b.mode, {STATUS_SQL},
            1, '[]', {ERROR_SQL}, t, t, t, t
         FROM (SELECT i, strftime('%Y-%m-%dT%H:%M:%f', 'now', '-' || (i * 2.592) || ' seconds')
                || '+00:00' AS t FROM seq) AS s
         JOIN b ON b.n = s.i % 20",
        last = RUNS - 1
    )))
    .execute(&pool)
    .await?;
    sqlx::query("ANALYZE").execute(&pool).await?;
    let key = middle_key!(&pool);
    pool.close().await;
    key
}

/// Prints rows 11 and 12.
pub fn print_console_table((rows, exports): &Rows) {
    if rows.is_empty() {
        return;
    }
    println!();
    println!("Console pages over {RUNS} runs (one request at a time, {REQUESTS} each):");
    println!(
        "| {:<12} | {:<34} | {:>9} | {:>9} | {:>8} |",
        "backend", "page", "median ms", "p90 ms", "KiB"
    );
    println!(
        "|{:-<14}|{:-<36}|{:->11}|{:->11}|{:->10}|",
        "", "", "", "", ""
    );
    for row in rows {
        println!(
            "| {:<12} | {:<34} | {:>9.1} | {:>9.1} | {:>8.1} |",
            row.backend,
            row.page,
            row.median.as_secs_f64() * 1000.0,
            row.p90.as_secs_f64() * 1000.0,
            row.bytes as f64 / 1024.0
        );
    }
    for export in exports {
        println!(
            "{}: /ui/runs.csv, every run: {} lines, {:.1} MiB in {:.1} s; RSS grew {:.1} MiB while it streamed",
            export.backend,
            export.lines,
            export.bytes as f64 / (1024.0 * 1024.0),
            export.took.as_secs_f64(),
            export.rss_growth as f64 / (1024.0 * 1024.0)
        );
    }
}
