//! `postsub-bench`: measures postsub against the limits of its own parts, in one run, on the
//! local PostgreSQL and RabbitMQ, and prints one table with ratios to those limits.
//!
//! Rows: (1) a bare tonic server with `Process`'s signature (the floor of tonic here);
//! (2) `Process` for a form without bindings; (3) `Process` with 2 sync `validate` bindings
//! (10 checks, 3 of them CEL rules across fields) and 1 async `webhook`, then (3b) the same
//! at a fixed rate of half its maximum throughput; (4) raw lapin persistent publishes with
//! confirms of a job-sized message (the floor of RabbitMQ here), then (4b) the same at row
//! 3b's rate;
//! (5) an HTTP submit route with and without `PostSubmissionLayer`; (6) the worker draining
//! webhook jobs, and `google_sheets` rows against the Sheets emulator answering after 100 ms;
//! (7, 8) the embedded backend (one SQLite file, `synchronous` full, then normal): `Process`
//! with row 3's bindings, and the worker draining the webhook jobs that row queued;
//! (9, 10) the whole system, PostgreSQL + RabbitMQ then embedded, with the proxy and the worker
//! in processes of their own: `Process` at full load, at half of it and at 250/s with the
//! worker draining at the same time, and the worker's drain of a 20,000-job backlog, with
//! the CPU per submission of each process (see `system`); (11, 12) the console's pages over
//! a history of 1,000,000 runs, on each backend (see `console`).
//!
//! Everything runs in this process on loopback; each row's load is a fixed number of
//! callers for a fixed time (closed loop), except rows 3b and 4b, which send at a fixed rate
//! (open loop) to measure latency at a given load.

mod console;
mod load;
mod scenarios;
mod system;
mod usage;

use std::time::Duration;

use clap::Parser;

use crate::load::Measurement;

/// Benchmark postsub against bare tonic and raw RabbitMQ publishing.
#[derive(Debug, Clone, Parser)]
#[command(version, about)]
struct Args {
    /// How long each load row runs.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Concurrent callers per load row.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Submissions pushed through the google_sheets row.
    #[arg(long, default_value_t = 1000)]
    sheet_rows: usize,
    /// Also run row 3 for this long, printing the process RSS every 5 s (memory flatness).
    #[arg(long, value_parser = humantime::parse_duration)]
    soak: Option<Duration>,
    /// Run only the embedded backend's rows (7 and 8), without their ratio to row 3: for
    /// profiling them.
    #[arg(long)]
    embedded_only: bool,
    /// Run only the whole-system rows (9 and 10).
    #[arg(long)]
    system_only: bool,
    /// Run only the console rows (11 and 12).
    #[arg(long)]
    console_only: bool,
    /// Run only the per-part table (rows 1 to 8), without the whole-system and console rows.
    #[arg(long)]
    parts_only: bool,
    /// Concurrent callers of the whole-system rows' full load.
    #[arg(long, default_value_t = 64)]
    system_callers: usize,
    /// Print PostgreSQL's most expensive statements for each PostgreSQL whole-system row
    /// (needs `pg_stat_statements` in the server's `shared_preload_libraries`).
    #[arg(long)]
    pg_statements: bool,
    /// Internal: run as the proxy or worker process of the whole-system rows.
    #[arg(long, hide = true, requires = "role_database_url")]
    role: Option<system::Role>,
    #[arg(long, hide = true)]
    role_database_url: Option<String>,
    #[arg(long, hide = true, requires = "role_queue_prefix")]
    role_amqp_url: Option<String>,
    #[arg(long, hide = true)]
    role_queue_prefix: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Row 6d runs this executable as the `postsub` command line (the very code of the
    // `postsub` binary), so that the backfill's memory is a process of its own.
    if std::env::var_os(scenarios::AS_POSTSUB_CLI).is_some() {
        return match postsub_proxy::main(|_, _| {}).await {
            std::process::ExitCode::SUCCESS => Ok(()),
            _ => anyhow::bail!("the backfill failed"),
        };
    }
    let args = Args::parse();
    if let (Some(role), Some(database_url)) = (args.role, args.role_database_url.clone()) {
        init_logs();
        let broker = args
            .role_amqp_url
            .clone()
            .zip(args.role_queue_prefix.clone());
        return system::run_role(
            role,
            system::SystemBackend {
                database_url,
                broker,
            },
        )
        .await;
    }
    init_logs();
    println!(
        "postsub-bench: {} per row, {} concurrent callers, {} cores",
        humantime::format_duration(args.duration),
        args.concurrency,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    // Interrupted, the run is dropped, and with it its database and vhost.
    let (report, system, console) = tokio::select! {
        report = run(&args) => report?,
        () = interrupted() => {
            eprintln!("interrupted: removing the benchmark's database and vhost");
            return Ok(());
        }
    };
    print_table(&report);
    system::print_system_table(&system);
    console::print_console_table(&console);
    Ok(())
}

/// The rows the flags ask for: the per-part table's, the whole-system rows, the console's.
async fn run(args: &Args) -> anyhow::Result<(Report, Vec<system::SystemRow>, console::Rows)> {
    if args.console_only {
        let report = Report {
            rows: Vec::new(),
            notes: Vec::new(),
        };
        return Ok((report, Vec::new(), console::run_console().await?));
    }
    let report = if args.system_only {
        Report {
            rows: Vec::new(),
            notes: Vec::new(),
        }
    } else {
        scenarios::run_all(args).await?
    };
    let system = if args.embedded_only || args.parts_only {
        Vec::new()
    } else {
        system::run_system(args).await?
    };
    let console = if args.embedded_only || args.system_only || args.parts_only {
        Default::default()
    } else {
        console::run_console().await?
    };
    Ok((report, system, console))
}

fn init_logs() {
    // Warnings by default; RUST_LOG=postsub_proxy=debug shows, for one, the recorder's batches.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
}

/// Ctrl-C or SIGTERM.
pub(crate) async fn interrupted() {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("a SIGTERM handler can be installed");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}

/// One row of the table: a name, what it measured, its ratio to a floor row.
struct Row {
    name: &'static str,
    measured: Measurement,
    ratio: Option<(f64, &'static str)>,
}

/// The measured rows and the derived figures.
pub struct Report {
    rows: Vec<Row>,
    notes: Vec<String>,
}

impl Report {
    fn push(
        &mut self,
        name: &'static str,
        measured: Measurement,
        ratio: Option<(f64, &'static str)>,
    ) {
        self.rows.push(Row {
            name,
            measured,
            ratio,
        });
    }
}

fn print_table(report: &Report) {
    println!();
    println!(
        "| {:<44} | {:>9} | {:>8} | {:>8} | {:>8} | {:>10} | {:>8} | {:<22} |",
        "row", "req/s", "p50 ms", "p99 ms", "p99.9 ms", "CPU s/1k", "RSS MiB", "ratio"
    );
    println!(
        "|{:-<46}|{:->11}|{:->10}|{:->10}|{:->10}|{:->12}|{:->10}|{:-<24}|",
        "", "", "", "", "", "", "", ""
    );
    for Row {
        name,
        measured: m,
        ratio,
    } in &report.rows
    {
        let ratio = ratio.map_or(String::new(), |(r, against)| {
            format!("{:.0}% of {against}", r * 100.0)
        });
        // Rows that count finished work (the worker's) have no latencies.
        let latency = |quantile| {
            if m.latency.is_empty() {
                "–".to_owned()
            } else {
                format!("{:.2}", m.latency_ms(quantile))
            }
        };
        println!(
            "| {:<44} | {:>9.0} | {:>8} | {:>8} | {:>8} | {:>10.3} | {:>8.1} | {:<22} |",
            name,
            m.throughput(),
            latency(0.5),
            latency(0.99),
            latency(0.999),
            m.cpu_per_1k(),
            m.peak_rss as f64 / (1024.0 * 1024.0),
            ratio
        );
        if m.errors > 0 {
            println!("|   ({} requests failed)", m.errors);
        }
    }
    println!();
    for note in &report.notes {
        println!("{note}");
    }
}
