//! Metrics in Prometheus' text format, served at `/metrics` by the proxy's and the worker's
//! HTTP servers.
//!
//! Counters: `postsub_jobs_queued_total{kind}` (published to RabbitMQ by `Process`),
//! `postsub_jobs_kept_total{kind}` (kept in the outbox while RabbitMQ was away),
//! `postsub_deliveries_total{outcome}` (jobs a worker took, by what became of them:
//! `succeeded`, `retrying`, `dead`, `duplicate`, …),
//! `postsub_runs_expired_total{kind}` (jobs dropped past their `expires_after`).
//!
//! Histograms: `postsub_process_seconds` (a `Process` call that was answered, from parsed
//! request to reply) and `postsub_process_stage_seconds{stage}` (its stages: `parse`,
//! `sync`, the form's sync tasks together, and `enqueue`, the async jobs published and
//! confirmed; `sync` and `enqueue` run at the same time), with buckets from 0.5 ms to 5 s,
//! to see which stage a slow tail comes from. `postsub_task_seconds{kind,outcome}`: one
//! attempt of a task (sync or async; `succeeded`, `failed`, `timed_out`, `panicked`), 1 ms
//! to 2 min.
//!
//! Gauges (set by the proxy every few seconds, [`crate::alerts::watch_queue`]):
//! `postsub_queue_jobs{kind,state}` (`ready`, `in_flight`, `waiting`, `dead`),
//! `postsub_queue_oldest_ready_seconds{kind}`, `postsub_outbox_jobs` (RabbitMQ's outbox)
//! and `postsub_recorder_backlog` (run records waiting for the history writer). Counters of
//! alerts: `postsub_alerts_sent_total{type}`, `postsub_alerts_dropped_total`.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Upper bounds of the `Process` latency buckets, in seconds.
const PROCESS_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0,
];

/// Upper bounds of the task duration buckets, in seconds.
const TASK_BUCKETS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 120.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder on first use and returns the handle that renders it.
pub fn prometheus() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Prefix("postsub_process".into()), &PROCESS_BUCKETS)
            .expect("the buckets are not empty")
            .set_buckets_for_metric(Matcher::Full("postsub_task_seconds".into()), &TASK_BUCKETS)
            .expect("the buckets are not empty")
            .build_recorder();
        let handle = recorder.handle();
        // Another recorder may be installed already (an embedding program's): then these
        // counters go there, and `/metrics` shows what this handle sees.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}
