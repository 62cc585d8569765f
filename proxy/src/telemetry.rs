//! Metrics in Prometheus' text format, served at `/metrics` by the proxy's and the worker's
//! HTTP servers.
//!
//! Counters: `postsub_jobs_queued_total{kind}` (published to RabbitMQ by `Process`),
//! `postsub_jobs_kept_total{kind}` (kept in the outbox while RabbitMQ was away),
//! `postsub_deliveries_total{outcome}` (jobs a worker took, by what became of them:
//! `succeeded`, `retrying`, `dead`, `duplicate`, …),
//! `postsub_runs_expired_total{kind}` (jobs dropped past their `expires_after`).

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder on first use and returns the handle that renders it.
pub fn prometheus() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        // Another recorder may be installed already (an embedding program's): then these
        // counters go there, and `/metrics` shows what this handle sees.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}
