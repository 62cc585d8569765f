//! Rows 9 and 10: the whole system as it is deployed. The proxy and the worker each run in
//! their own process (this binary started again with `--role`), PostgreSQL and RabbitMQ (or
//! the embedded backend's one file) as they run here, and this process is the load generator
//! and the webhook receiver. Each row reports the CPU time per submission of every process,
//! read from `/proc`, so the cost of the async path shows where it is paid.

use std::{
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use postsub::pb::post_submission_client::PostSubmissionClient;
use postsub_proxy::{
    app::{Launch, Proxy, Services},
    settings::DevSettings,
};
use postsub_tasks::{Registry, TargetPolicy};
use postsub_testkit::{TestBroker, TestDatabase, TestSqlite, WebhookReceiver};
use tokio::{
    io::{AsyncBufReadExt as _, BufReader},
    process::{Child, Command},
};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use uuid::Uuid;

use crate::{
    Args,
    load::{Load, Measurement},
    scenarios::{answers, bind_full, process_request},
    usage::{cpu_time_of, cpu_time_of_command},
};

/// The worker's flags in every row of the benchmark.
const WORKER_FLAGS: [&str; 4] = ["--concurrency", "128", "--prefetch", "256"];

/// Jobs queued with the worker stopped for the drain row.
const BACKLOG: u64 = 20_000;

/// The fixed rate of the third row of each backend, as in the issue that asked for it.
const FIXED_RATE: f64 = 250.0;

/// A part of postsub that this benchmark runs as a process of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// `postsub serve`: the gRPC and HTTP listeners; prints its gRPC address on stdout.
    Proxy,
    /// `postsub worker`.
    Worker,
}

/// Where a role's process finds its backend: PostgreSQL and RabbitMQ, or one SQLite file.
#[derive(Debug, Clone)]
pub struct SystemBackend {
    /// A PostgreSQL URL, or the embedded backend's file.
    pub database_url: String,
    /// RabbitMQ's URL and this run's queue prefix; none on the embedded backend.
    pub broker: Option<(String, String)>,
}

impl SystemBackend {
    fn settings(&self) -> anyhow::Result<DevSettings> {
        Ok(match &self.broker {
            Some((amqp_url, prefix)) => {
                DevSettings::isolated(&self.database_url, amqp_url, prefix, &WORKER_FLAGS)?
            }
            None => DevSettings::embedded(&self.database_url, &WORKER_FLAGS)?,
        })
    }

    /// The flags that give a role's process this backend (see [`crate::Args`]).
    fn flags(&self) -> Vec<String> {
        let mut flags = vec!["--role-database-url".to_owned(), self.database_url.clone()];
        if let Some((amqp_url, prefix)) = &self.broker {
            flags.extend([
                "--role-amqp-url".to_owned(),
                amqp_url.clone(),
                "--role-queue-prefix".to_owned(),
                prefix.clone(),
            ]);
        }
        flags
    }
}

/// The body of a role's process: runs the proxy or the worker until SIGTERM.
pub async fn run_role(role: Role, backend: SystemBackend) -> anyhow::Result<()> {
    let settings = backend.settings()?;
    let services = Services::start(
        &settings.backend()?,
        Registry::with_builtins_for(TargetPolicy::dev()),
    )
    .await?;
    let stop = CancellationToken::new();
    tokio::spawn({
        let stop = stop.clone();
        async move {
            crate::interrupted().await;
            stop.cancel();
        }
    });
    match role {
        Role::Proxy => {
            let proxy = Proxy::build(&services, &settings.proxy, Launch::Dev).await?;
            println!("{}", proxy.grpc_addr());
            proxy.run(stop).await?;
        }
        Role::Worker => services.worker(&settings.worker)?.run(stop).await,
    }
    services.stop().await;
    Ok(())
}

/// A role's running process.
struct RoleProcess {
    child: Child,
    pid: String,
}

impl RoleProcess {
    /// Starts `role` on `backend`; the proxy's gRPC URL once it listens.
    async fn start(role: Role, backend: &SystemBackend) -> anyhow::Result<(Self, Option<String>)> {
        let role_name = match role {
            Role::Proxy => "proxy",
            Role::Worker => "worker",
        };
        let mut child = Command::new(std::env::current_exe()?)
            .args(["--role", role_name])
            .args(backend.flags())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting the {role_name} process"))?;
        let pid = child
            .id()
            .context("a started process has a pid")?
            .to_string();
        let grpc = match role {
            Role::Proxy => {
                let stdout = child.stdout.take().context("the proxy's stdout")?;
                let mut line = String::new();
                BufReader::new(stdout).read_line(&mut line).await?;
                anyhow::ensure!(
                    !line.is_empty(),
                    "the proxy process exited before listening"
                );
                Some(format!("http://{}", line.trim()))
            }
            Role::Worker => None,
        };
        Ok((Self { child, pid }, grpc))
    }

    fn cpu(&self) -> Duration {
        cpu_time_of(&self.pid).unwrap_or_default()
    }

    /// SIGTERM, then waits for the process to drain and exit.
    async fn stop(mut self) -> anyhow::Result<()> {
        std::process::Command::new("kill")
            .args(["-TERM", &self.pid])
            .status()?;
        tokio::time::timeout(Duration::from_secs(60), self.child.wait())
            .await
            .context("a role process did not stop within 60 s")??;
        Ok(())
    }
}

/// CPU time of each part of the system.
#[derive(Debug, Clone, Copy, Default)]
pub struct PartsCpu {
    pub proxy: Duration,
    pub worker: Duration,
    pub postgres: Duration,
    pub rabbitmq: Duration,
    /// This process: the load generator and the webhook receiver.
    pub load: Duration,
}

impl PartsCpu {
    fn since(self, earlier: Self) -> Self {
        Self {
            proxy: self.proxy.saturating_sub(earlier.proxy),
            worker: self.worker.saturating_sub(earlier.worker),
            postgres: self.postgres.saturating_sub(earlier.postgres),
            rabbitmq: self.rabbitmq.saturating_sub(earlier.rabbitmq),
            load: self.load.saturating_sub(earlier.load),
        }
    }

    /// postsub's whole cost: everything but the load generator and the receiver.
    pub fn system(&self) -> Duration {
        self.proxy + self.worker + self.postgres + self.rabbitmq
    }
}

/// One whole-system row.
pub struct SystemRow {
    pub name: String,
    /// The `Process` calls (none for the drain row: its latency histogram is empty).
    pub process: Measurement,
    /// Webhook deliveries in the row's window.
    pub delivered: u64,
    /// What each part spent in the window.
    pub cpu: PartsCpu,
    /// Submissions (or jobs, for the drain row) the CPU is divided by.
    pub units: u64,
}

/// The running system: proxy and worker processes, the receiver, a bound form.
struct System {
    backend: SystemBackend,
    proxy: RoleProcess,
    worker: Option<RoleProcess>,
    client: PostSubmissionClient<Channel>,
    receiver: WebhookReceiver,
    form: Uuid,
    /// Submissions sent so far, so a row can wait for the worker to deliver them all.
    submitted: u64,
}

impl System {
    async fn start(backend: SystemBackend) -> anyhow::Result<Self> {
        backend.settings()?.backend()?.database.migrate().await?;
        let (proxy, grpc) = RoleProcess::start(Role::Proxy, &backend).await?;
        let grpc = grpc.context("the proxy's address")?;
        let (worker, _) = RoleProcess::start(Role::Worker, &backend).await?;
        let receiver = WebhookReceiver::start().await;
        let form = Uuid::new_v4();
        bind_full(&grpc, form, &receiver).await?;
        let channel = Channel::from_shared(grpc.clone())?.connect().await?;
        Ok(Self {
            backend,
            proxy,
            worker: Some(worker),
            client: PostSubmissionClient::new(channel),
            receiver,
            form,
            submitted: 0,
        })
    }

    fn cpu(&self) -> PartsCpu {
        PartsCpu {
            proxy: self.proxy.cpu(),
            worker: self
                .worker
                .as_ref()
                .map(RoleProcess::cpu)
                .unwrap_or_default(),
            postgres: cpu_time_of_command("postgres"),
            rabbitmq: cpu_time_of_command("beam.smp"),
            load: cpu_time_of("self").unwrap_or_default(),
        }
    }

    /// `Process` under `load` with the worker running, for `duration`.
    async fn row(&mut self, name: String, load: Load, duration: Duration) -> SystemRow {
        let before = self.cpu();
        let delivered_before = self.receiver.delivery_count() as u64;
        let client = self.client.clone();
        let answers = Arc::new(answers());
        let form = self.form;
        let call = move |_| {
            let mut client = client.clone();
            let request = process_request(form, &answers);
            async move { client.process(request).await.map(drop) }
        };
        let process = load.drive(duration, call).await;
        let cpu = self.cpu().since(before);
        self.submitted += process.requests;
        let units = process.requests;
        SystemRow {
            name,
            delivered: self.receiver.delivery_count() as u64 - delivered_before,
            process,
            cpu,
            units,
        }
    }

    /// Waits until the worker delivered every submission so far, then lets the run
    /// history's writes finish, so the next row starts on a quiet system.
    async fn catch_up(&self) {
        let give_up = Instant::now() + Duration::from_secs(300);
        while (self.receiver.delivery_count() as u64) < self.submitted && Instant::now() < give_up {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
    }

    /// The worker's drain of [`BACKLOG`] jobs queued while it was stopped.
    async fn drain_row(&mut self, name: String) -> anyhow::Result<SystemRow> {
        if let Some(worker) = self.worker.take() {
            worker.stop().await?;
        }
        self.submit(BACKLOG, 64).await?;
        // The proxy's history writes finish before the clock starts.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let before = self.cpu();
        let delivered_before = self.receiver.delivery_count() as u64;
        let started = Instant::now();
        let (worker, _) = RoleProcess::start(Role::Worker, &self.backend).await?;
        let worker_started = worker.cpu();
        self.worker = Some(worker);
        let give_up = started + Duration::from_secs(300);
        let delivered = || self.receiver.delivery_count() as u64 - delivered_before;
        while delivered() < BACKLOG && Instant::now() < give_up {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let elapsed = started.elapsed();
        let mut cpu = self.cpu().since(before);
        cpu.worker = self.cpu().worker.saturating_sub(worker_started);
        let delivered = delivered();
        Ok(SystemRow {
            name,
            process: Measurement::counted(
                delivered,
                BACKLOG.saturating_sub(delivered),
                elapsed,
                cpu.load,
                0,
            ),
            delivered,
            cpu,
            units: delivered,
        })
    }

    /// Sends `count` submissions from `callers` callers, as fast as they are answered.
    async fn submit(&mut self, count: u64, callers: usize) -> anyhow::Result<()> {
        let next = Arc::new(AtomicU64::new(0));
        let answers = Arc::new(answers());
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..callers {
            let (next, answers, form) = (next.clone(), answers.clone(), self.form);
            let mut client = self.client.clone();
            tasks.spawn(async move {
                while next.fetch_add(1, Ordering::Relaxed) < count {
                    client.process(process_request(form, &answers)).await?;
                }
                Ok::<_, tonic::Status>(())
            });
        }
        while let Some(done) = tasks.join_next().await {
            done??;
        }
        self.submitted += count;
        Ok(())
    }

    async fn stop(self) -> anyhow::Result<()> {
        if let Some(worker) = self.worker {
            worker.stop().await?;
        }
        self.proxy.stop().await?;
        Ok(())
    }
}

/// The four rows of one backend, named with `prefix` (9 or 10).
async fn system_rows(
    args: &Args,
    prefix: &str,
    label: &str,
    backend: SystemBackend,
    statements: Option<&Statements>,
) -> anyhow::Result<Vec<SystemRow>> {
    let mut system = System::start(backend).await?;
    let mut rows = Vec::new();
    let callers = args.system_callers;
    println!("{prefix}a. {label}: Process at {callers} callers, worker running");
    let full = profiled(statements, &format!("{prefix}a"), || {
        system.row(
            format!("{prefix}a. {label}: {callers} callers"),
            Load::Callers(callers),
            args.duration,
        )
    })
    .await?;
    let half_rate = full.process.throughput() / 2.0;
    rows.push(full);
    system.catch_up().await;
    for (letter, rate) in [("b", half_rate), ("c", FIXED_RATE)] {
        println!("{prefix}{letter}. {label}: Process at a fixed {rate:.0}/s, worker running");
        let row = profiled(statements, &format!("{prefix}{letter}"), || {
            system.row(
                format!("{prefix}{letter}. {label}: fixed {rate:.0}/s"),
                Load::Rate(rate),
                args.duration,
            )
        })
        .await?;
        rows.push(row);
        system.catch_up().await;
    }
    println!("{prefix}d. {label}: worker draining {BACKLOG} queued jobs");
    let name = format!("{prefix}d. {label}: worker drains {BACKLOG}");
    let drain = match statements {
        Some(statements) => {
            statements.reset().await?;
            let row = system.drain_row(name).await?;
            statements.print(&format!("{prefix}d")).await?;
            row
        }
        None => system.drain_row(name).await?,
    };
    rows.push(drain);
    system.stop().await?;
    Ok(rows)
}

/// Runs `row` between a reset and a print of PostgreSQL's statement statistics, if kept.
async fn profiled<F, Fut>(
    statements: Option<&Statements>,
    row: &str,
    measure: F,
) -> anyhow::Result<SystemRow>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = SystemRow>,
{
    if let Some(statements) = statements {
        statements.reset().await?;
    }
    let measured = measure().await;
    if let Some(statements) = statements {
        statements.print(row).await?;
    }
    Ok(measured)
}

/// Rows 9 (PostgreSQL + RabbitMQ) and 10 (embedded).
pub async fn run_system(args: &Args) -> anyhow::Result<Vec<SystemRow>> {
    let db = TestDatabase::create("postsub_bench_system").await;
    let broker = TestBroker::create();
    if !broker.set_queue_policy("postsub-bench", r#"{"queue-version":2}"#) {
        println!("(no queue-version 2 policy: the broker's default classic queue storage is used)");
    }
    let statements = if args.pg_statements {
        Some(Statements::open(&db.url).await?)
    } else {
        None
    };
    let mut rows = system_rows(
        args,
        "9",
        "PG+RabbitMQ",
        SystemBackend {
            database_url: format!("{}?sslmode=disable", db.url),
            broker: Some((broker.url.clone(), broker.prefix.clone())),
        },
        statements.as_ref(),
    )
    .await?;
    let file = TestSqlite::create("bench-system");
    rows.extend(
        system_rows(
            args,
            "10",
            "embedded",
            SystemBackend {
                database_url: file.url.clone(),
                broker: None,
            },
            None,
        )
        .await?,
    );
    Ok(rows)
}

/// PostgreSQL's statement statistics (`pg_stat_statements`), for `--pg-statements`: the
/// server must have the module in `shared_preload_libraries`.
struct Statements {
    pool: sqlx::PgPool,
}

impl Statements {
    async fn open(url: &str) -> anyhow::Result<Self> {
        let pool = sqlx::PgPool::connect(&format!("{url}?sslmode=disable")).await?;
        sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            .execute(&pool)
            .await?;
        sqlx::query("SELECT count(*) FROM pg_stat_statements")
            .execute(&pool)
            .await
            .context(
                "pg_stat_statements is not loaded: add it to shared_preload_libraries and restart PostgreSQL",
            )?;
        Ok(Self { pool })
    }

    async fn reset(&self) -> anyhow::Result<()> {
        sqlx::query("SELECT pg_stat_statements_reset()")
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The statements of this database that took the most time since the last reset.
    async fn print(&self, row: &str) -> anyhow::Result<()> {
        let top: Vec<(String, i64, f64, f64, i64)> = sqlx::query_as(
            "SELECT regexp_replace(query, '\\s+', ' ', 'g'), calls, total_exec_time, \
                    mean_exec_time, rows \
             FROM pg_stat_statements \
             WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) \
             ORDER BY total_exec_time DESC LIMIT 10",
        )
        .fetch_all(&self.pool)
        .await?;
        println!("  row {row}: statements by total execution time");
        println!(
            "  {:>8} {:>10} {:>9} {:>9}  statement",
            "calls", "total ms", "mean µs", "rows"
        );
        for (query, calls, total, mean, rows) in top {
            let query: String = query.chars().take(110).collect();
            println!(
                "  {calls:>8} {total:>10.1} {:>9.1} {rows:>9}  {query}",
                mean * 1000.0
            );
        }
        Ok(())
    }
}

/// Prints the whole-system rows: throughput, latency and CPU µs per submission of each part.
pub fn print_system_table(rows: &[SystemRow]) {
    println!();
    println!(
        "CPU in µs per submission (per job in the drain rows), each process from /proc; \
         system = proxy + worker + PostgreSQL + RabbitMQ; load = this process (load generator \
         and webhook receiver)."
    );
    println!(
        "| {:<38} | {:>7} | {:>7} | {:>7} | {:>11} | {:>6} | {:>6} | {:>6} | {:>8} | {:>6} | {:>6} |",
        "row",
        "subs/s",
        "p50 ms",
        "p99 ms",
        "delivered/s",
        "proxy",
        "worker",
        "PG",
        "RabbitMQ",
        "system",
        "load"
    );
    println!(
        "|{:-<40}|{:->9}|{:->9}|{:->9}|{:->13}|{:->8}|{:->8}|{:->8}|{:->10}|{:->8}|{:->8}|",
        "", "", "", "", "", "", "", "", "", "", ""
    );
    for row in rows {
        let m = &row.process;
        let per_unit = |cpu: Duration| cpu.as_secs_f64() * 1e6 / row.units.max(1) as f64;
        let latency = |quantile| {
            if m.latency.is_empty() {
                "–".to_owned()
            } else {
                format!("{:.2}", m.latency_ms(quantile))
            }
        };
        let submissions = if m.latency.is_empty() {
            "–".to_owned()
        } else {
            format!("{:.0}", m.throughput())
        };
        println!(
            "| {:<38} | {:>7} | {:>7} | {:>7} | {:>11.0} | {:>6.0} | {:>6.0} | {:>6.0} | {:>8.0} | {:>6.0} | {:>6.0} |",
            row.name,
            submissions,
            latency(0.5),
            latency(0.99),
            row.delivered as f64 / m.elapsed.as_secs_f64(),
            per_unit(row.cpu.proxy),
            per_unit(row.cpu.worker),
            per_unit(row.cpu.postgres),
            per_unit(row.cpu.rabbitmq),
            per_unit(row.cpu.system()),
            per_unit(row.cpu.load),
        );
        if m.errors > 0 {
            println!("|   ({} requests failed)", m.errors);
        }
    }
}
