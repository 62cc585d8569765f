//! The layer's background retries of a `Process` call that failed: the submission is stored
//! and its response already sent, so the layer tries the call again a few times, with
//! backoff, off the request path.
//!
//! Best effort, bounded: at most [`RetryPolicy::capacity`] submissions wait for a retry (a
//! failed call past that is dropped, counted and logged at once), and a submission is given
//! up on after [`RetryPolicy::attempts`] retries, counted and logged with its ids. Retries
//! live in the backend process: a restart loses them. What guarantees every submission its
//! tasks is `postsub backfill --form F --from-backend URL --since T` (the README's
//! Guarantees); these retries only make it rarely needed. A repeated `Process` is harmless:
//! run ids are derived from the submission and binding, so nothing runs twice.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::sync::Semaphore;

use crate::pb;

/// How the layer retries failed `Process` calls in the background.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the failed call; 0 turns background retries off (default 5).
    pub attempts: u32,
    /// The wait before the first retry; it doubles per retry, up to `max_backoff`
    /// (default 1 s).
    pub backoff: Duration,
    /// The longest wait between retries (default 30 s).
    pub max_backoff: Duration,
    /// Most submissions waiting for a retry at once (default 1,000).
    pub capacity: usize,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 5,
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
            capacity: 1000,
        }
    }
}

/// What the background retries did so far (see [`crate::PostSubmissionLayer::retry_stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetryStats {
    /// Submissions waiting for their next retry.
    pub pending: u64,
    /// Submissions whose `Process` went through on a retry.
    pub delivered: u64,
    /// Submissions given up on: every retry failed, or the proxy refused the call for a
    /// reason a retry cannot change.
    pub gave_up: u64,
    /// Failed calls not retried because `capacity` submissions were waiting already.
    pub dropped: u64,
}

/// A failed call's outcome, as [`Retries`] needs to know it.
pub(crate) enum Failure {
    /// Another try may work: the proxy is unreachable, busy or slow.
    Transient,
    /// Another try would be refused the same way (a bad token, a bad request).
    Permanent,
}

impl Failure {
    /// How a `Process` call that ended with `code` failed.
    pub(crate) fn of(code: tonic::Code) -> Self {
        use tonic::Code;
        match code {
            Code::Unavailable
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Aborted
            | Code::Cancelled
            | Code::Unknown
            | Code::Internal => Failure::Transient,
            _ => Failure::Permanent,
        }
    }
}

#[derive(Default)]
struct Counters {
    pending: AtomicU64,
    delivered: AtomicU64,
    gave_up: AtomicU64,
    dropped: AtomicU64,
}

/// The retries of one layer (shared by its clones and the services it makes).
#[derive(Clone)]
pub(crate) struct Retries {
    policy: RetryPolicy,
    slots: Arc<Semaphore>,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for Retries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Retries")
            .field("policy", &self.policy)
            .field("stats", &self.stats())
            .finish()
    }
}

impl Retries {
    pub(crate) fn new(policy: RetryPolicy) -> Self {
        Self {
            policy,
            slots: Arc::new(Semaphore::new(policy.capacity)),
            counters: Arc::default(),
        }
    }

    pub(crate) fn stats(&self) -> RetryStats {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        RetryStats {
            pending: read(&self.counters.pending),
            delivered: read(&self.counters.delivered),
            gave_up: read(&self.counters.gave_up),
            dropped: read(&self.counters.dropped),
        }
    }

    /// Whether a failure like `failure` is retried.
    pub(crate) fn takes(&self, failure: &Failure) -> bool {
        self.policy.attempts > 0 && matches!(failure, Failure::Transient)
    }

    /// Retries `request` in the background with `call`, which sends it once. Never waits:
    /// with every slot taken, the request is dropped (counted, logged).
    pub(crate) fn retry<F, Fut>(&self, request: pb::ProcessRequest, call: F)
    where
        F: Fn(pb::ProcessRequest) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), Failure>> + Send,
    {
        let Ok(slot) = self.slots.clone().try_acquire_owned() else {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(form_id = %request.form_id, submission_id = %request.submission_id,
                capacity = self.policy.capacity,
                "Process failed and the background retries are full: not retried; \
                 `postsub backfill --from-backend` brings its tasks back");
            return;
        };
        self.counters.pending.fetch_add(1, Ordering::Relaxed);
        let (policy, counters) = (self.policy, self.counters.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let mut backoff = policy.backoff;
            let mut outcome = Err(Failure::Transient);
            for _ in 0..policy.attempts {
                tokio::time::sleep(backoff).await;
                outcome = call(request.clone()).await;
                if !matches!(outcome, Err(Failure::Transient)) {
                    break;
                }
                backoff = (backoff * 2).min(policy.max_backoff);
            }
            counters.pending.fetch_sub(1, Ordering::Relaxed);
            if outcome.is_ok() {
                counters.delivered.fetch_add(1, Ordering::Relaxed);
                tracing::info!(form_id = %request.form_id, submission_id = %request.submission_id,
                    "Process went through on a background retry");
            } else {
                counters.gave_up.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(form_id = %request.form_id, submission_id = %request.submission_id,
                    "gave up retrying Process for this submission: its tasks run when \
                     `postsub backfill --form … --from-backend … --since …` runs");
            }
        });
    }
}
