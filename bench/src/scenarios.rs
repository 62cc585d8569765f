//! The benchmark's rows: what each starts and drives.

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use axum::{Json, Router, http::StatusCode, routing::post};
use lapin::{
    BasicProperties, Connection, ConnectionProperties,
    options::{
        BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
        QueuePurgeOptions,
    },
    types::FieldTable,
};
use postsub::{
    PostSubmissionLayer,
    json::to_proto_struct,
    pb::{
        self,
        post_submission_client::PostSubmissionClient,
        post_submission_server::{PostSubmission, PostSubmissionServer},
        task_admin_client::TaskAdminClient,
    },
};
use postsub_proxy::{
    app::{Launch, Proxy, Services},
    job::Job,
    settings::DevSettings,
};
use postsub_tasks::{
    Registry, Submission, TargetPolicy,
    google_sheets::{Endpoints, GoogleSheets},
};
use postsub_testkit::{SheetsEmulator, TestBroker, TestDatabase, TestSqlite, WebhookReceiver};
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use uuid::Uuid;

use crate::{
    Args, Report,
    load::{Load, Measurement},
    usage::{Usage, rss},
};

/// The answers every load request carries: a realistic small form.
pub(crate) fn answers() -> Map<String, Value> {
    let Value::Object(map) = json!({
        "name": "Ada Lovelace", "email": "ada@example.org", "age": 36, "country": "GB",
        "monthly_income": 4200, "monthly_savings": 650, "has_guardian": false,
        "comments": "Looking forward to it."
    }) else {
        unreachable!("a literal object")
    };
    map
}

pub(crate) fn process_request(form: Uuid, answers: &Map<String, Value>) -> pb::ProcessRequest {
    pb::ProcessRequest {
        form_id: form.to_string(),
        submission_id: Uuid::new_v4().to_string(),
        answers: Some(to_proto_struct(answers.clone())),
        submitted_at: None,
        metadata: Default::default(),
        ..Default::default()
    }
}

/// Runs every row in order and derives the ratios.
pub async fn run_all(args: &Args) -> anyhow::Result<Report> {
    if args.embedded_only {
        return run_embedded(args).await;
    }
    let db = TestDatabase::create("postsub_bench").await;
    // Plain TCP to PostgreSQL, like the gRPC and AMQP connections here: sqlx's default
    // (`sslmode=prefer`) would run rustls over loopback, which measures TLS, not postsub. A
    // deployment chooses with DATABASE_URL's `sslmode`.
    let database_url = format!("{}?sslmode=disable", db.url);
    let broker = TestBroker::create();
    // Classic queue storage v2, for the floor and postsub alike: what RabbitMQ recommends
    // from 3.13 on (by policy) and the only storage from 4.0 on.
    if !broker.set_queue_policy("postsub-bench", r#"{"queue-version":2}"#) {
        println!("(no queue-version 2 policy: the broker's default classic queue storage is used)");
    }
    let emulator = SheetsEmulator::start().await;
    let settings = DevSettings::isolated(
        &database_url,
        &broker.url,
        &broker.prefix,
        &["--concurrency", "128", "--prefetch", "256"],
    )?;
    let backend = settings.backend()?;
    backend.database.migrate().await?;
    let mut registry = Registry::with_builtins_for(TargetPolicy::dev());
    registry.replace(GoogleSheets::new(Endpoints {
        sheets_base_url: emulator.sheets_base_url(),
        drive_base_url: emulator.drive_base_url(),
    }));
    let services = Services::start(&backend, registry).await?;
    let proxy = Proxy::build(&services, &settings.proxy, Launch::Dev).await?;
    let grpc = format!("http://{}", proxy.grpc_addr());
    let stop = CancellationToken::new();
    let proxy_task = tokio::spawn(proxy.run(stop.clone()));
    let mut report = Report {
        rows: Vec::new(),
        notes: Vec::new(),
    };

    println!("1. floor: bare tonic server");
    let floor_url = format!("http://{}", start_floor().await?);
    let floor = load_process(
        args,
        &floor_url,
        Uuid::new_v4(),
        Load::Callers(args.concurrency),
    )
    .await?;
    println!("2. Process, no bindings");
    let empty = load_process(args, &grpc, Uuid::new_v4(), Load::Callers(args.concurrency)).await?;
    println!("3. Process, 2 sync validate + 1 async webhook");
    let receiver = WebhookReceiver::start().await;
    let full_form = Uuid::new_v4();
    bind_full(&grpc, full_form, &receiver).await?;
    let full = load_process(args, &grpc, full_form, Load::Callers(args.concurrency)).await?;
    let half_rate = full.throughput() / 2.0;
    settle().await;
    // Like row 4b, row 3b starts with an empty queue.
    purge(&broker.url, &format!("{}.webhook", broker.prefix)).await?;
    println!("3b. the same at a fixed {half_rate:.0} req/s, half of row 3's maximum");
    let half = load_process(args, &grpc, full_form, Load::Rate(half_rate)).await?;
    println!("4. publish floor: raw lapin, persistent, confirmed");
    let publish = load_publish(args, &broker, Load::Callers(args.concurrency)).await?;
    println!("4b. the same at a fixed {half_rate:.0} req/s, row 3b's rate");
    let publish_half = load_publish(args, &broker, Load::Rate(half_rate)).await?;
    println!("5. submit route without and with PostSubmissionLayer");
    let (bare_route, layered_route) = load_layer(args, &grpc).await?;

    let queued = half.requests;
    println!("6. worker: draining {queued} webhook jobs");
    let stop_worker = CancellationToken::new();
    let worker = tokio::spawn(services.worker(&settings.worker)?.run(stop_worker.clone()));
    let webhooks = measure_drain(queued, || receiver.delivery_count() as u64).await;
    println!(
        "6. worker: {} google_sheets rows, emulator answering after 100 ms",
        args.sheet_rows
    );
    let sheets = sheets_rows(args, &grpc, &emulator).await?;
    let rows_per_call = emulator.appended_rows() as f64 / emulator.append_calls().max(1) as f64;
    // The soak measures the proxy alone: with the worker stopped, its jobs wait in RabbitMQ
    // instead of piling up in the webhook receiver, which lives in this process too.
    stop_worker.cancel();
    let _ = worker.await;
    println!(
        "6c. backfill: RunBindings queuing {BACKFILL_SUBMISSIONS} submissions into a webhook binding"
    );
    let backfill = backfill_rows(&grpc, &receiver).await?;
    println!(
        "6d. backfill: `postsub backfill --from-file`, {BACKFILL_SUBMISSIONS} lines of JSONL into a webhook binding"
    );
    let backfill_file = backfill_file_rows(&grpc, &receiver).await?;

    let embedded = embedded_rows_all(args).await?;

    if let Some(soak) = args.soak {
        report
            .notes
            .push(soak_memory(args, &grpc, full_form, soak).await?);
    }

    report.notes.push(format!(
        "Layer overhead: p50 +{:.2} ms, p99 +{:.2} ms over the bare route; Process alone (row 2) p50 {:.2} ms, \
         so the layer adds p50 {:.2} ms above the proxy's own latency.",
        layered_route.latency_ms(0.5) - bare_route.latency_ms(0.5),
        layered_route.latency_ms(0.99) - bare_route.latency_ms(0.99),
        empty.latency_ms(0.5),
        layered_route.latency_ms(0.5) - bare_route.latency_ms(0.5) - empty.latency_ms(0.5),
    ));
    report.notes.push(format!(
        "Row 3 at half its maximum throughput ({half_rate:.0} req/s, fixed rate): p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms.",
        half.latency_ms(0.5),
        half.latency_ms(0.99),
        half.latency_ms(0.999),
    ));
    report.notes.push(format!(
        "Async part of row 3: {:.0} jobs/s published = {:.0}% of the publish floor (row 4).",
        full.throughput(),
        full.throughput() / publish.throughput() * 100.0
    ));
    report.notes.push(format!(
        "google_sheets: {:.1} rows per values.append call ({} calls for {} rows).",
        rows_per_call,
        emulator.append_calls(),
        emulator.appended_rows()
    ));
    let floor_rate = floor.throughput();
    let full_rate = full.throughput();
    let empty_ratio = empty.throughput() / floor_rate;
    let full_ratio = full.throughput() / floor_rate;
    report.push("1. floor: bare tonic Process", floor, None);
    report.push(
        "2. Process, no bindings",
        empty,
        Some((empty_ratio, "row 1")),
    );
    report.push(
        "3. Process, 2 sync + 1 async bindings",
        full,
        Some((full_ratio, "row 1")),
    );
    report.push("3b. row 3 at half its max, fixed rate", half, None);
    report.push("4. publish floor: lapin confirmed", publish, None);
    report.push("4b. publish floor at row 3b's rate", publish_half, None);
    report.push("5a. submit route, no layer", bare_route, None);
    report.push("5b. submit route, PostSubmissionLayer", layered_route, None);
    report.push("6a. worker: webhook jobs", webhooks, None);
    report.push("6b. worker: google_sheets rows (100 ms API)", sheets, None);
    let backfill_ratio = backfill.throughput() / full_rate;
    report.push(
        "6c. backfill: RunBindings into a webhook",
        backfill,
        Some((backfill_ratio, "row 3")),
    );
    let backfill_file_ratio = backfill_file.throughput() / full_rate;
    report.push(
        "6d. backfill: the CLI from a JSONL file",
        backfill_file,
        Some((backfill_file_ratio, "row 3")),
    );
    for (process, measured, drain, drained) in embedded {
        let ratio = measured.throughput() / full_rate;
        report.push(process, measured, Some((ratio, "row 3")));
        report.push(drain, drained, None);
    }

    stop.cancel();
    proxy_task.await??;
    services.stop().await;
    Ok(report)
}

/// Rows 7 and 8 alone.
async fn run_embedded(args: &Args) -> anyhow::Result<Report> {
    let mut report = Report {
        rows: Vec::new(),
        notes: Vec::new(),
    };
    for (process, measured, drain, drained) in embedded_rows_all(args).await? {
        report.push(process, measured, None);
        report.push(drain, drained, None);
    }
    Ok(report)
}

/// The embedded rows, by `synchronous` setting: the `Process` row and the drain row.
const EMBEDDED_ROWS: [(&str, &str, &str); 2] = [
    (
        "full",
        "7a. embedded, FULL: Process 2 sync+1 async",
        "7b. embedded, FULL: worker webhook drain",
    ),
    (
        "normal",
        "8a. embedded, NORMAL: Process 2 sync+1 async",
        "8b. embedded, NORMAL: worker webhook drain",
    ),
];

/// Rows 7 and 8, each row's name with what it measured.
async fn embedded_rows_all(
    args: &Args,
) -> anyhow::Result<Vec<(&'static str, Measurement, &'static str, Measurement)>> {
    let mut rows = Vec::new();
    for (synchronous, process, drain) in EMBEDDED_ROWS {
        println!("{process}, then {drain}");
        let (measured, drained) = embedded_rows(args, synchronous).await?;
        rows.push((process, measured, drain, drained));
    }
    Ok(rows)
}

/// Rows 7 and 8: `postsub` on the embedded backend (a fresh SQLite file, `synchronous` as
/// given), with its own proxy and worker in this process: `Process` with row 3's bindings
/// at full load, then the worker draining the webhook jobs that load queued.
async fn embedded_rows(
    args: &Args,
    synchronous: &str,
) -> anyhow::Result<(Measurement, Measurement)> {
    let file = TestSqlite::create("bench");
    let settings = DevSettings::embedded(
        &file.url,
        &[
            "--sqlite-synchronous",
            synchronous,
            "--concurrency",
            "128",
            "--prefetch",
            "256",
        ],
    )?;
    let backend = settings.backend()?;
    backend.database.migrate().await?;
    let services =
        Services::start(&backend, Registry::with_builtins_for(TargetPolicy::dev())).await?;
    let proxy = Proxy::build(&services, &settings.proxy, Launch::Dev).await?;
    let grpc = format!("http://{}", proxy.grpc_addr());
    let stop = CancellationToken::new();
    let proxy_task = tokio::spawn(proxy.run(stop.clone()));
    let receiver = WebhookReceiver::start().await;
    let form = Uuid::new_v4();
    bind_full(&grpc, form, &receiver).await?;
    let process = load_process(args, &grpc, form, Load::Callers(args.concurrency)).await?;
    settle().await;
    let stop_worker = CancellationToken::new();
    let worker = tokio::spawn(services.worker(&settings.worker)?.run(stop_worker.clone()));
    let drain = measure_drain(process.requests, || receiver.delivery_count() as u64).await;
    stop_worker.cancel();
    let _ = worker.await;
    stop.cancel();
    proxy_task.await??;
    services.stop().await;
    Ok((process, drain))
}

/// The floor: a tonic server with `Process`'s signature that answers an empty reply.
#[derive(Clone, Copy)]
struct Floor;

#[tonic::async_trait]
impl PostSubmission for Floor {
    async fn process(
        &self,
        _request: tonic::Request<pb::ProcessRequest>,
    ) -> Result<tonic::Response<pb::ProcessResponse>, tonic::Status> {
        Ok(tonic::Response::new(pb::ProcessResponse::default()))
    }

    async fn run_bindings(
        &self,
        _request: tonic::Request<pb::RunBindingsRequest>,
    ) -> Result<tonic::Response<pb::RunBindingsResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented(
            "the floor answers Process only",
        ))
    }
}

async fn start_floor() -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(PostSubmissionServer::new(Floor))
            .serve_with_incoming(
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            ),
    );
    Ok(addr)
}

async fn load_process(
    args: &Args,
    url: &str,
    form: Uuid,
    load: Load,
) -> anyhow::Result<Measurement> {
    let channel = Channel::from_shared(url.to_owned())?.connect().await?;
    let client = PostSubmissionClient::new(channel);
    let answers = Arc::new(answers());
    let call = move |_| {
        let mut client = client.clone();
        let request = process_request(form, &answers);
        async move { client.process(request).await.map(drop) }
    };
    Ok(load.drive(args.duration, call).await)
}

/// Two sync `validate` bindings (7 field checks + 3 CEL rules across fields) and one async
/// `webhook`.
pub(crate) async fn bind_full(
    grpc: &str,
    form: Uuid,
    receiver: &WebhookReceiver,
) -> anyhow::Result<()> {
    let mut admin = TaskAdminClient::connect(grpc.to_owned()).await?;
    let bindings = [
        (
            "fields",
            "validate",
            pb::Mode::Sync,
            json!({"fields": {
                "name": {"required": true, "type": "string", "min_length": 1},
                "email": {"required": true, "type": "string", "pattern": "^[^@]+@[^@]+$"},
                "age": {"type": "integer", "min": 0, "max": 150},
                "country": {"one_of": ["GB", "NL", "DE", "FR"]}
            }}),
        ),
        (
            "business_rules",
            "validate",
            pb::Mode::Sync,
            json!({
                "fields": {"monthly_income": {"type": "number", "min": 0},
                           "monthly_savings": {"type": "number", "min": 0},
                           "comments": {"max_length": 2000}},
                "rules": [
                    {"name": "savings_within_income", "expr": "monthly_savings <= monthly_income"},
                    {"name": "adult_or_guardian", "expr": "age >= 18 || has_guardian"},
                    {"name": "savings_rate", "expr": "monthly_income == 0 || monthly_savings * 100 / monthly_income <= 90"}
                ]
            }),
        ),
        (
            "crm",
            "webhook",
            pb::Mode::Async,
            json!({"url": receiver.url, "secret": receiver.secret}),
        ),
    ];
    for (name, kind, mode, config) in bindings {
        let Value::Object(config) = config else {
            unreachable!("literal objects")
        };
        admin
            .create_binding(pb::CreateBindingRequest {
                form_id: form.to_string(),
                name: name.into(),
                kind: kind.into(),
                mode: mode.into(),
                config: Some(to_proto_struct(config)),
                ..Default::default()
            })
            .await
            .with_context(|| format!("binding {name}"))?;
    }
    Ok(())
}

/// Raw persistent publishes with confirms of a message the size of a real job.
async fn load_publish(args: &Args, broker: &TestBroker, load: Load) -> anyhow::Result<Measurement> {
    let connection = Connection::connect(&broker.url, ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let queue = format!("{}.publish_floor", broker.prefix);
    channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    let body = Arc::new(
        Job {
            run_id: Uuid::new_v4(),
            binding_id: Uuid::new_v4(),
            kind: "webhook".into(),
            queued_at: chrono::Utc::now(),
            attempts_before: 0,
            submission: Submission {
                form_id: Uuid::new_v4(),
                submission_id: Uuid::new_v4(),
                answers: answers(),
                submitted_at: chrono::Utc::now(),
                metadata: Default::default(),
                event: Default::default(),
                revision: 0,
            },
        }
        .encode(),
    );
    let measured = {
        let channel = channel.clone();
        let queue = queue.clone();
        let call = move |_| {
            let channel = channel.clone();
            let queue = queue.clone();
            let body = body.clone();
            async move {
                let confirm: lapin::PublisherConfirm = channel
                    .basic_publish(
                        "".into(),
                        queue.as_str().into(),
                        BasicPublishOptions::default(),
                        &body,
                        BasicProperties::default().with_delivery_mode(2),
                    )
                    .await?;
                match confirm.await? {
                    lapin::Confirmation::Ack(_) => Ok(()),
                    _ => Err(anyhow::anyhow!("the broker did not confirm a publish")),
                }
            }
        };
        load.drive(args.duration, call).await
    };
    channel
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await?;
    connection.close(200, "done".into()).await?;
    Ok(measured)
}

/// A submit route like a form backend's (no database, so only the layer differs), without
/// and with `PostSubmissionLayer` calling the proxy for a form without bindings.
async fn load_layer(args: &Args, grpc: &str) -> anyhow::Result<(Measurement, Measurement)> {
    let form = Uuid::new_v4();
    let route = move || async move {
        (
            StatusCode::CREATED,
            Json(
                json!({"id": Uuid::new_v4(), "form_id": form, "answers": answers(),
                        "created_at": "2026-11-22T10:00:00Z"}),
            ),
        )
    };
    let bare = serve_http(Router::new().route("/submit", post(route))).await?;
    let layer = PostSubmissionLayer::connect_lazy(grpc)?;
    let layered = serve_http(Router::new().route("/submit", post(route).layer(layer))).await?;
    Ok((load_http(args, bare).await, load_http(args, layered).await))
}

async fn serve_http(router: Router) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, router).await });
    Ok(addr)
}

async fn load_http(args: &Args, addr: SocketAddr) -> Measurement {
    let client = reqwest::Client::new();
    let url = format!("http://{addr}/submit");
    let body = Arc::new(json!({"answers": answers()}).to_string());
    Load::Callers(args.concurrency)
        .drive(args.duration, move |_| {
            let request = client
                .post(&url)
                .header("content-type", "application/json")
                .body(body.as_str().to_owned());
            async move {
                let response = request.send().await?.error_for_status()?;
                response.bytes().await.map(drop)
            }
        })
        .await
}

/// Empties a queue.
async fn purge(amqp_url: &str, queue: &str) -> anyhow::Result<()> {
    let connection = Connection::connect(amqp_url, ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    channel
        .queue_purge(queue.into(), QueuePurgeOptions::default())
        .await?;
    connection.close(200, "purged".into()).await?;
    Ok(())
}

/// Lets the run-history writes that a maximum-load row left queued finish, so they do not
/// count against the next row.
async fn settle() {
    tokio::time::sleep(Duration::from_secs(3)).await;
}

/// Throughput of a worker draining `total` jobs, counted by `done`.
async fn measure_drain(total: u64, done: impl Fn() -> u64) -> Measurement {
    let usage = Usage::start();
    let started = Instant::now();
    let give_up = started + Duration::from_secs(300);
    while done() < total && Instant::now() < give_up {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed();
    let (cpu, peak_rss) = usage.finish();
    Measurement::counted(
        done().min(total),
        total.saturating_sub(done()),
        elapsed,
        cpu,
        peak_rss,
    )
}

/// Submissions row 6c backfills.
const BACKFILL_SUBMISSIONS: usize = 20_000;

/// A new form with one async webhook binding to `receiver`, named `name`.
async fn webhook_binding(
    grpc: &str,
    receiver: &WebhookReceiver,
    name: &str,
) -> anyhow::Result<(Uuid, pb::Binding)> {
    let form = Uuid::new_v4();
    let config = json!({"url": receiver.url, "secret": receiver.secret});
    let Value::Object(config) = config else {
        unreachable!("a literal object")
    };
    let binding = TaskAdminClient::connect(grpc.to_owned())
        .await?
        .create_binding(pb::CreateBindingRequest {
            form_id: form.to_string(),
            name: name.into(),
            kind: "webhook".into(),
            mode: pb::Mode::Async.into(),
            config: Some(to_proto_struct(config)),
            ..Default::default()
        })
        .await?
        .into_inner();
    Ok((form, binding))
}

/// Row 6c: `RunBindings`, what `postsub backfill` calls, queuing [`BACKFILL_SUBMISSIONS`]
/// submissions into a webhook binding, 500 a call and 4 calls in flight (the CLI's
/// defaults), the worker stopped: a backfill's throughput on the proxy and the queue. The
/// requests are built before the clock starts.
async fn backfill_rows(grpc: &str, receiver: &WebhookReceiver) -> anyhow::Result<Measurement> {
    let (form, binding) = webhook_binding(grpc, receiver, "backfill").await?;
    let answers = answers();
    let batches: Vec<pb::RunBindingsRequest> = (0..BACKFILL_SUBMISSIONS / 500)
        .map(|_| pb::RunBindingsRequest {
            binding_ids: vec![binding.id.clone()],
            submissions: (0..500).map(|_| process_request(form, &answers)).collect(),
            dry_run: false,
        })
        .collect();
    let client = PostSubmissionClient::connect(grpc.to_owned()).await?;
    let usage = Usage::start();
    let started = Instant::now();
    use futures_util::StreamExt as _;
    let outcomes: Vec<u64> = futures_util::stream::iter(batches)
        .map(|batch| {
            let mut client = client.clone();
            async move {
                match client.run_bindings(batch).await {
                    Ok(reply) => reply
                        .into_inner()
                        .results
                        .iter()
                        .map(|r| u64::from(r.started))
                        .sum(),
                    Err(_) => 0,
                }
            }
        })
        .buffer_unordered(4)
        .collect()
        .await;
    let elapsed = started.elapsed();
    let (cpu, peak_rss) = usage.finish();
    let queued: u64 = outcomes.iter().sum();
    Ok(Measurement::counted(
        queued,
        BACKFILL_SUBMISSIONS as u64 - queued,
        elapsed,
        cpu,
        peak_rss,
    ))
}

/// The environment variable that makes the benchmark's executable the `postsub` command
/// line (row 6d).
pub const AS_POSTSUB_CLI: &str = "POSTSUB_BENCH_AS_CLI";

/// Row 6d: `postsub backfill --binding B --from-file F` as a process of its own (this
/// executable as the `postsub` command line), [`BACKFILL_SUBMISSIONS`] lines of JSON Lines
/// into a webhook binding with the CLI's defaults, the worker stopped; from the start of the
/// process to its exit, its CPU time and peak RSS read from `/proc` while it runs.
async fn backfill_file_rows(grpc: &str, receiver: &WebhookReceiver) -> anyhow::Result<Measurement> {
    use std::io::Write as _;

    let (form, binding) = webhook_binding(grpc, receiver, "backfill-file").await?;
    let path = std::env::temp_dir().join(format!("postsub-bench-{}.jsonl", Uuid::new_v4()));
    let mut file = std::io::BufWriter::new(std::fs::File::create(&path)?);
    let answers = Value::Object(answers());
    for _ in 0..BACKFILL_SUBMISSIONS {
        let line = json!({"submission_id": Uuid::new_v4(), "form_id": form,
                          "submitted_at": chrono::Utc::now(), "answers": answers});
        writeln!(file, "{line}")?;
    }
    file.flush()?;
    drop(file);
    let started = Instant::now();
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .env(AS_POSTSUB_CLI, "1")
        .args([
            "--server",
            grpc,
            "backfill",
            "--binding",
            &binding.id,
            "--from-file",
        ])
        .arg(&path)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id().map(|pid| pid.to_string()).unwrap_or_default();
    let (mut cpu, mut peak_rss) = (Duration::ZERO, 0);
    let output = loop {
        if let Some(used) = crate::usage::cpu_time_of(&pid) {
            cpu = used;
        }
        peak_rss = peak_rss.max(crate::usage::peak_rss_of(&pid));
        if let Some(status) = child.try_wait()? {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let elapsed = started.elapsed();
    let mut summary = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        use tokio::io::AsyncReadExt as _;
        stdout.read_to_string(&mut summary).await?;
    }
    let _ = std::fs::remove_file(&path);
    anyhow::ensure!(output.success(), "the backfill failed: {summary}");
    let queued = format!("{BACKFILL_SUBMISSIONS} runs started");
    anyhow::ensure!(
        summary.contains(&queued),
        "the backfill did not queue every line: {summary}"
    );
    Ok(Measurement::counted(
        BACKFILL_SUBMISSIONS as u64,
        0,
        elapsed,
        cpu,
        peak_rss,
    ))
}

async fn sheets_rows(
    args: &Args,
    grpc: &str,
    emulator: &SheetsEmulator,
) -> anyhow::Result<Measurement> {
    let key_dir = std::env::temp_dir().join(format!("postsub-bench-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&key_dir)?;
    let key: PathBuf = emulator.write_service_account_key(&key_dir);
    emulator.set_latency(Duration::from_millis(100));
    let form = Uuid::new_v4();
    let config = json!({"credentials_file": key, "title": "bench"});
    let Value::Object(config) = config else {
        unreachable!("a literal object")
    };
    TaskAdminClient::connect(grpc.to_owned())
        .await?
        .create_binding(pb::CreateBindingRequest {
            form_id: form.to_string(),
            name: "sheet".into(),
            kind: "google_sheets".into(),
            mode: pb::Mode::Async.into(),
            config: Some(to_proto_struct(config)),
            ..Default::default()
        })
        .await?;
    let mut client = PostSubmissionClient::connect(grpc.to_owned()).await?;
    let answers = answers();
    let usage_rows = || {
        emulator.spreadsheets().first().map_or(0, |(id, _)| {
            emulator.values(id, "Responses").len().saturating_sub(1) as u64
        })
    };
    let started = Instant::now();
    for _ in 0..args.sheet_rows {
        client.process(process_request(form, &answers)).await?;
    }
    let mut measured = measure_drain(args.sheet_rows as u64, usage_rows).await;
    // Count from the first submission: queueing them is part of the run.
    measured.elapsed = started.elapsed();
    let _ = std::fs::remove_dir_all(&key_dir);
    Ok(measured)
}

/// Row 3 for `duration`, printing RSS every 5 s.
async fn soak_memory(
    args: &Args,
    grpc: &str,
    form: Uuid,
    duration: Duration,
) -> anyhow::Result<String> {
    let soak_args = Args {
        duration,
        soak: None,
        ..args.clone()
    };
    let grpc = grpc.to_owned();
    let load = tokio::spawn(async move {
        load_process(
            &soak_args,
            &grpc,
            form,
            Load::Callers(soak_args.concurrency),
        )
        .await
    });
    let mut samples = Vec::new();
    let started = Instant::now();
    while !load.is_finished() {
        samples.push(format!(
            "{}s {:.0} MiB",
            started.elapsed().as_secs(),
            rss() as f64 / 1048576.0
        ));
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    let measured = load.await??;
    Ok(format!(
        "Soak, row 3 for {}: {:.0} req/s; RSS every 5 s: {}",
        humantime::format_duration(duration),
        measured.throughput(),
        samples.join(", ")
    ))
}
