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
//! with row 3's bindings, and the worker draining the webhook jobs that row queued.
//!
//! Everything runs in this process on loopback; each row's load is a fixed number of
//! callers for a fixed time (closed loop), except rows 3b and 4b, which send at a fixed rate
//! (open loop) to measure latency at a given load.

mod load;
mod scenarios;
mod usage;

use std::time::Duration;

use clap::Parser;

use crate::load::Measurement;

/// Benchmark postsub against bare tonic and raw RabbitMQ publishing.
#[derive(Debug, Parser)]
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
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // Warnings by default; RUST_LOG=postsub_proxy=debug shows, for one, the recorder's batches.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    println!(
        "postsub-bench: {} per row, {} concurrent callers, {} cores",
        humantime::format_duration(args.duration),
        args.concurrency,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    // Interrupted, the run is dropped, and with it its database and vhost.
    let report = tokio::select! {
        report = scenarios::run_all(&args) => report?,
        () = interrupted() => {
            eprintln!("interrupted: removing the benchmark's database and vhost");
            return Ok(());
        }
    };
    print_table(&report);
    Ok(())
}

/// Ctrl-C or SIGTERM.
async fn interrupted() {
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
