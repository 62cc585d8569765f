//! A closed-loop load driver: a fixed number of callers, each sending its next request as
//! soon as the last one answered, for a fixed time; latencies into one histogram.

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

/// Runs `concurrency` callers for `duration`; `call(i)` makes request number `i` of a caller.
pub async fn drive<F, Fut, E>(concurrency: usize, duration: Duration, call: F) -> Measurement
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
                let mut latency = histogram();
                let (mut ok, mut errors) = (0u64, 0u64);
                let mut i = caller as u64;
                while Instant::now() < deadline {
                    let sent = Instant::now();
                    match call(i).await {
                        Ok(()) => {
                            ok += 1;
                            latency.saturating_record(sent.elapsed().as_micros() as u64);
                        }
                        Err(err) => {
                            if errors == 0 {
                                eprintln!("  a request failed: {err}");
                            }
                            errors += 1;
                        }
                    }
                    i += concurrency as u64;
                }
                (latency, ok, errors)
            })
        })
        .collect();
    let mut latency = histogram();
    let (mut requests, mut errors) = (0, 0);
    for caller in callers {
        let (caller_latency, ok, failed) = caller.await.expect("a load caller panicked");
        latency.add(caller_latency).expect("same histogram bounds");
        requests += ok;
        errors += failed;
    }
    let elapsed = started.elapsed();
    let (cpu, peak_rss) = usage.finish();
    Measurement {
        requests,
        errors,
        elapsed,
        latency,
        cpu,
        peak_rss,
    }
}
