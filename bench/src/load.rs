//! Load drivers, latencies into one histogram: closed loop (a fixed number of callers, each
//! sending its next request as soon as the last one answered, for a fixed time: the maximum
//! throughput) and open loop (requests sent at a fixed rate, whatever earlier ones are
//! doing: the latency at a given load).

use std::{
    future::Future,
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;

use crate::usage::Usage;

/// What one scenario measured.
pub struct Measurement {
    /// Requests answered successfully.
    pub requests: u64,
    /// Requests that failed.
    pub errors: u64,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Latency of successful requests, in microseconds.
    pub latency: Histogram<u64>,
    /// CPU time of the whole process during the run.
    pub cpu: Duration,
    /// Peak resident memory of the process during the run, in bytes.
    pub peak_rss: u64,
}

impl Measurement {
    /// A measurement of work counted at the end (a queue drained), without latencies.
    pub fn counted(
        requests: u64,
        errors: u64,
        elapsed: Duration,
        cpu: Duration,
        peak_rss: u64,
    ) -> Self {
        Self {
            requests,
            errors,
            elapsed,
            latency: histogram(),
            cpu,
            peak_rss,
        }
    }

    /// Requests per second.
    pub fn throughput(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    /// A latency quantile in milliseconds.
    pub fn latency_ms(&self, quantile: f64) -> f64 {
        self.latency.value_at_quantile(quantile) as f64 / 1000.0
    }

    /// CPU seconds per 1,000 requests.
    pub fn cpu_per_1k(&self) -> f64 {
        self.cpu.as_secs_f64() * 1000.0 / self.requests.max(1) as f64
    }
}

fn histogram() -> Histogram<u64> {
    // 1 µs to 60 s at 3 significant digits.
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// Latencies and counts of one caller, or of all of them once merged.
struct Tally {
    latency: Histogram<u64>,
    ok: u64,
    errors: u64,
}

impl Tally {
    fn new() -> Self {
        Self {
            latency: histogram(),
            ok: 0,
            errors: 0,
        }
    }

    /// Counts one request that took `took`; prints the first error only.
    fn record<E: std::fmt::Display>(&mut self, result: Result<(), E>, took: Duration) {
        match result {
            Ok(()) => {
                self.ok += 1;
                self.latency.saturating_record(took.as_micros() as u64);
            }
            Err(err) => {
                if self.errors == 0 {
                    eprintln!("  a request failed: {err}");
                }
                self.errors += 1;
            }
        }
    }

    fn merge(&mut self, other: Tally) {
        self.latency
            .add(other.latency)
            .expect("same histogram bounds");
        self.ok += other.ok;
        self.errors += other.errors;
    }

    fn measured(self, usage: Usage, started: Instant) -> Measurement {
        let elapsed = started.elapsed();
        let (cpu, peak_rss) = usage.finish();
        Measurement {
            requests: self.ok,
            errors: self.errors,
            elapsed,
            latency: self.latency,
            cpu,
            peak_rss,
        }
    }
}

/// How a row drives its load.
#[derive(Debug, Clone, Copy)]
pub enum Load {
    /// A fixed number of callers, each calling again once answered: the maximum throughput.
    Callers(usize),
    /// A fixed rate of requests per second: the latency at that load.
    Rate(f64),
}

impl Load {
    /// Drives `call` for `duration` with this load.
    pub async fn drive<F, Fut, E>(self, duration: Duration, call: F) -> Measurement
    where
        F: Fn(u64) -> Fut + Clone + Send + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: std::fmt::Display + Send + 'static,
    {
        match self {
            Load::Callers(callers) => drive(callers, duration, call).await,
            Load::Rate(rate) => drive_at_rate(rate, duration, call).await,
        }
    }
}

/// Runs `concurrency` callers for `duration`; `call(i)` makes request number `i` of a caller.
async fn drive<F, Fut, E>(concurrency: usize, duration: Duration, call: F) -> Measurement
where
    F: Fn(u64) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<(), E>> + Send,
    E: std::fmt::Display + Send,
{
    let usage = Usage::start();
    let started = Instant::now();
    let deadline = started + duration;
    let callers: Vec<_> = (0..concurrency)
        .map(|caller| {
            let call = call.clone();
            tokio::spawn(async move {
                let mut tally = Tally::new();
                let mut i = caller as u64;
                while Instant::now() < deadline {
                    let sent = Instant::now();
                    let result = call(i).await;
                    tally.record(result, sent.elapsed());
                    i += concurrency as u64;
                }
                tally
            })
        })
        .collect();
    let mut all = Tally::new();
    for caller in callers {
        all.merge(caller.await.expect("a load caller panicked"));
    }
    all.measured(usage, started)
}

/// Sends `rate` requests per second for `duration`, each on its own task (open loop).
/// Latency counts from when a request was due, not when it went out, so a stall shows in
/// the latencies instead of lowering the load (no coordinated omission).
async fn drive_at_rate<F, Fut, E>(rate: f64, duration: Duration, call: F) -> Measurement
where
    F: Fn(u64) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<(), E>> + Send,
    E: std::fmt::Display + Send + 'static,
{
    let usage = Usage::start();
    let started = Instant::now();
    let total = (duration.as_secs_f64() * rate) as u64;
    let mut requests = tokio::task::JoinSet::new();
    for i in 0..total {
        let due = started + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(due.into()).await;
        let call = call.clone();
        requests.spawn(async move {
            let result = call(i).await;
            (result, due.elapsed())
        });
    }
    let mut all = Tally::new();
    while let Some(done) = requests.join_next().await {
        let (result, took) = done.expect("a load request panicked");
        all.record(result, took);
    }
    all.measured(usage, started)
}
