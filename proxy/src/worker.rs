//! The worker: consumes jobs from every kind's queue and runs them.
//!
//! # Running workers
//! `postsub worker` (or `postsub dev`) runs one. Each takes at most `prefetch` unacked jobs
//! from the [`JobQueue`] (per queue on RabbitMQ, in all on the embedded queue) and runs at
//! most `concurrency` at once: a permit is taken before a delivery is, so a busy worker
//! leaves jobs in the queue for the others.
//!
//! # One job
//! [`Worker::process_one`]: decode, claim the run in the [`Store`] (which refuses a run that
//! already finished or that another worker holds, so a job queued twice runs once; the
//! claims of jobs taken together go in one batch, see [`crate::claimer`]), run
//! the task under its binding's timeout, record the attempt durably, then ack. A job is
//! acked only after its attempt is committed; a worker that dies before that leaves the
//! job unacked and the queue delivers it again.
//!
//! # Retries and dead letters
//! The task says whether another attempt can help ([`TaskError`]); the worker decides,
//! with the binding's [`RetryPolicy`]. After a retryable error, a timeout or a panic, with
//! attempts left in this round, the run goes back to `queued` (the last error kept) and
//! the job waits in the queue (see [`crate::queue`]) for the backoff. After the last
//! attempt, or at once after a fatal error, the job goes to the kind's dead-letter queue
//! and the run is `dead`. The record is written before the delayed publish (the job must
//! not come back before its run is `queued` again) and after the dead-letter publish (a
//! run marked `dead` always has its letter).
//!
//! # Expiry
//! A job taken (first attempt or retry) after its binding's `expires_after`, counted from
//! the submission, does not run: the run is `expired` and the job dropped.
//!
//! # Scaling
//! Workers are stateless: start more, anywhere that reaches the queue and the store
//! (RabbitMQ and PostgreSQL; or, for the embedded backend, on the machine of its file).
//!
//! # Stopping workers safely
//! On shutdown the worker cancels its consumer (no new jobs), waits up to `drain_timeout`
//! for the jobs it holds, then closes the consumer; the queue takes back whatever was not
//! acked. A lost consumer is remade with backoff.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, SecondsFormat, Utc};
use postsub_tasks::{Mode, RunContext, TaskError, TaskState};
use tokio::{sync::Semaphore, task::JoinSet};
use tokio_util::sync::CancellationToken;

use crate::{
    alerts::Alerts,
    bindings::{BindingCache, LiveBinding},
    claimer::Claimer,
    execute::{Execution, execute},
    job::Job,
    options::RetryPolicy,
    queue::{Consumer, Delivery, JobQueue, QueueError},
    recorder::Recorder,
    run::{Attempt, Run, RunStatus},
    store::Store,
};

/// Worker limits.
#[derive(Debug, Clone)]
pub struct WorkerLimits {
    /// Unacked jobs the queue hands this worker (per kind's queue on RabbitMQ).
    pub prefetch: u16,
    /// Jobs run at once.
    pub concurrency: usize,
    /// How long one task may run, unless its binding says.
    pub task_timeout: Duration,
    /// How long shutdown waits for running jobs.
    pub drain_timeout: Duration,
}

/// What became of one delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Processed {
    /// The task succeeded; recorded.
    Succeeded,
    /// The attempt failed and the job waits for the next one; recorded.
    Retrying,
    /// The attempt failed for the last time; the job is in the dead-letter queue, recorded.
    Dead,
    /// The job was taken after its binding's `expires_after`: not run, dropped, the run
    /// recorded `expired`.
    Expired,
    /// The run had finished already or is held by another worker: nothing ran.
    Duplicate,
    /// The message is not a job; it was dropped.
    Malformed,
    /// The run could not be claimed or recorded (database down), or the job could not be
    /// moved on (queue down); the job goes back.
    Requeued,
}

impl Processed {
    /// The outcome's name in metrics.
    pub fn name(self) -> &'static str {
        match self {
            Processed::Succeeded => "succeeded",
            Processed::Retrying => "retrying",
            Processed::Dead => "dead",
            Processed::Expired => "expired",
            Processed::Duplicate => "duplicate",
            Processed::Malformed => "malformed",
            Processed::Requeued => "requeued",
        }
    }
}

/// What happens to a job after an attempt.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Next {
    /// Nothing: the run succeeded.
    Done,
    /// Another attempt after this wait.
    Retry(Duration),
    /// No more attempts: the dead-letter queue.
    Dead,
}

impl Next {
    /// What follows attempt `attempt` of this round, which ended as `execution`.
    fn after(execution: &Execution, policy: &RetryPolicy, attempt: u32) -> Self {
        let retry_after = match execution {
            Execution::Finished(_) => return Next::Done,
            Execution::Failed(TaskError::Fatal { .. }) => return Next::Dead,
            Execution::Failed(TaskError::Retryable { retry_after, .. }) => *retry_after,
            Execution::TimedOut(_) | Execution::Panicked => None,
        };
        if policy.allows_after(attempt) {
            Next::Retry(policy.retry_delay(attempt, retry_after))
        } else {
            Next::Dead
        }
    }
}

/// A worker; cheap to clone (the clones share everything).
#[derive(Clone)]
pub struct Worker {
    queue: Arc<dyn JobQueue>,
    store: Arc<dyn Store>,
    cache: BindingCache,
    recorder: Recorder,
    claimer: Claimer,
    state: Arc<dyn TaskState>,
    limits: WorkerLimits,
    alerts: Alerts,
}

impl Worker {
    /// A worker over shared parts.
    pub fn new(
        queue: Arc<dyn JobQueue>,
        store: Arc<dyn Store>,
        cache: BindingCache,
        recorder: Recorder,
        state: Arc<dyn TaskState>,
        limits: WorkerLimits,
        alerts: Alerts,
    ) -> Self {
        Self {
            queue,
            claimer: Claimer::start(store.clone()),
            store,
            cache,
            recorder,
            state,
            limits,
            alerts,
        }
    }

    /// Consumes until `shutdown`, reconnecting with backoff whenever the queue goes away.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut backoff = Duration::from_millis(100);
        while !shutdown.is_cancelled() {
            match self.queue.consume(self.limits.prefetch).await {
                Ok(consumer) => {
                    tracing::info!("worker consuming");
                    backoff = Duration::from_millis(100);
                    if let Err(err) = self.consume(consumer, &shutdown).await {
                        tracing::warn!(error = %err, "worker lost the queue; reconnecting");
                    }
                }
                Err(err) => {
                    tracing::warn!(error = %err, ?backoff, "worker cannot reach the queue; retrying");
                    tokio::select! {
                        () = shutdown.cancelled() => {}
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    async fn consume(
        &self,
        mut consumer: Box<dyn Consumer>,
        shutdown: &CancellationToken,
    ) -> Result<(), QueueError> {
        let permits = Arc::new(Semaphore::new(self.limits.concurrency));
        let mut running = JoinSet::new();
        let outcome = loop {
            // Reap finished jobs so the set does not grow.
            while running.try_join_next().is_some() {}
            let permit = tokio::select! {
                () = shutdown.cancelled() => break Ok(()),
                permit = permits.clone().acquire_owned() => permit.expect("semaphore never closes"),
            };
            let delivery = tokio::select! {
                () = shutdown.cancelled() => break Ok(()),
                delivery = consumer.next() => delivery,
            };
            match delivery {
                Ok(delivery) => {
                    let worker = self.clone();
                    running.spawn(async move {
                        worker.process_one(delivery).await;
                        drop(permit);
                    });
                }
                Err(err) => break Err(err),
            }
        };
        // Drain: take no new jobs, let the running ones finish (their acks need the consumer).
        consumer.cancel().await;
        let drained = tokio::time::timeout(self.limits.drain_timeout, async {
            while running.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                jobs = running.len(),
                "drain timeout passed; unfinished jobs go back to the queue"
            );
            running.abort_all();
            while running.join_next().await.is_some() {}
        }
        consumer.close().await;
        outcome
    }

    /// Handles one delivery from start to ack.
    pub async fn process_one(&self, delivery: Delivery) -> Processed {
        let processed = self.handle(&delivery).await;
        metrics::counter!("postsub_deliveries_total", "outcome" => processed.name()).increment(1);
        let settle = &delivery.settle;
        let settled = match processed {
            Processed::Succeeded
            | Processed::Retrying
            | Processed::Dead
            | Processed::Expired
            | Processed::Duplicate => settle.ack().await,
            Processed::Malformed => settle.reject().await,
            Processed::Requeued => {
                // Give the database a moment before the job comes round again.
                tokio::time::sleep(Duration::from_secs(1)).await;
                settle.requeue().await
            }
        };
        if let Err(err) = settled {
            // The consumer is gone; the queue will deliver the job again.
            tracing::warn!(error = %err, "could not settle a delivery");
        }
        processed
    }

    async fn handle(&self, delivery: &Delivery) -> Processed {
        let job = match Job::decode(&delivery.body) {
            Ok(job) => job,
            Err(err) => {
                tracing::error!(error = %err, origin = %delivery.origin,
                    "dropping a message that is not a postsub job");
                return Processed::Malformed;
            }
        };
        let run = Run::queued(
            job.binding_id,
            &job.kind,
            Mode::Async,
            &job.submission,
            job.queued_at,
        );
        let live = self.binding(&job).await;
        if let Some(live) = &live
            && let Some(expiry) = live.binding.options.expiry(job.submission.submitted_at)
            && Utc::now() > expiry
        {
            return self.expire(&job, &run, delivery.redelivered, expiry).await;
        }
        let attempt = match self.claimer.claim(&run, &job, delivery.redelivered).await {
            Ok(Some(attempt)) => attempt,
            Ok(None) => {
                tracing::debug!(run_id = %run.run_id, "run already done or held elsewhere");
                return Processed::Duplicate;
            }
            Err(err) => {
                tracing::error!(error = %err, run_id = %run.run_id, "cannot claim run");
                return Processed::Requeued;
            }
        };
        let mut run = run;
        let started_at = Utc::now();
        run.attempts = attempt;
        run.started_at = Some(started_at);
        let context = RunContext {
            run_id: run.run_id,
            binding_id: job.binding_id,
            binding_name: live
                .as_ref()
                .map(|live| live.binding.name.clone())
                .unwrap_or_default(),
            events: live
                .as_ref()
                .map(|live| live.binding.options.events())
                .unwrap_or_default(),
            attempt: attempt.max(1) as u32,
            state: self.state.clone(),
        };
        let execution = match &live {
            Some(live) => {
                let timeout = live.binding.options.timeout_or(self.limits.task_timeout);
                execute(live, &context, &job.submission, timeout).await
            }
            None => Execution::Failed(TaskError::fatal(format!(
                "binding {} no longer exists",
                job.binding_id
            ))),
        };
        let policy = live.map_or_else(RetryPolicy::default, |live| {
            live.binding.options.retry_policy()
        });
        let round_attempt = (attempt.max(1) as u32).saturating_sub(job.attempts_before);
        let next = Next::after(&execution, &policy, round_attempt);
        let record = Attempt::ended(run.run_id, attempt, started_at, &execution);
        self.settle(delivery, &job, run, execution, record, next)
            .await
    }

    /// Moves the job on after an attempt (`next`) and records the attempt and the run.
    async fn settle(
        &self,
        delivery: &Delivery,
        job: &Job,
        run: Run,
        execution: Execution,
        record: Attempt,
        next: Next,
    ) -> Processed {
        let attempt = record.attempt;
        match next {
            Next::Done => {
                let run = run.after_attempt(execution, RunStatus::Succeeded);
                self.record(run, record, Processed::Succeeded).await
            }
            Next::Retry(delay) => {
                let error = execution.error().unwrap_or_default();
                tracing::warn!(run_id = %run.run_id, kind = %job.kind, attempt, %error, ?delay,
                    "task failed; retrying");
                let run = run.after_attempt(execution, RunStatus::Queued);
                if self.record(run, record, Processed::Retrying).await == Processed::Requeued {
                    return Processed::Requeued;
                }
                match delivery.settle.retry_later(job, delay).await {
                    Ok(()) => Processed::Retrying,
                    Err(err) => {
                        // The run is `queued`: the job coming back runs at once.
                        tracing::error!(error = %err, run_id = %job.run_id,
                            "cannot queue a retry; the job goes back to its queue");
                        Processed::Requeued
                    }
                }
            }
            Next::Dead => {
                let error = execution.error().unwrap_or_default();
                tracing::error!(run_id = %run.run_id, kind = %job.kind, attempt, %error,
                    "task failed for good; dead-lettering the job");
                if let Err(err) = delivery.settle.dead_letter(job, &error, attempt).await {
                    // Left `running`: the job coming back is redelivered, so it takes over.
                    tracing::error!(error = %err, run_id = %job.run_id,
                        "cannot dead-letter a job; it goes back to its queue");
                    return Processed::Requeued;
                }
                let run = run.after_attempt(execution, RunStatus::Dead);
                let processed = self.record(run, record, Processed::Dead).await;
                if processed == Processed::Dead {
                    self.alerts.run_dead(job, attempt, &error);
                }
                processed
            }
        }
    }

    /// Marks the run `expired` instead of running a job taken after its `expiry`, and drops
    /// the job.
    async fn expire(
        &self,
        job: &Job,
        run: &Run,
        redelivered: bool,
        expiry: DateTime<Utc>,
    ) -> Processed {
        let error = format!(
            "expired at {}: not started within the binding's expires_after of the submission",
            expiry.to_rfc3339_opts(SecondsFormat::Millis, true)
        );
        match self.store.expire_run(run, job, redelivered, &error).await {
            Ok(true) => {
                tracing::warn!(run_id = %run.run_id, kind = %job.kind, %expiry,
                    "job expired before it could start; dropped");
                metrics::counter!("postsub_runs_expired_total", "kind" => job.kind.clone())
                    .increment(1);
                self.alerts.run_expired(job, expiry);
                Processed::Expired
            }
            Ok(false) => Processed::Duplicate,
            Err(err) => {
                tracing::error!(error = %err, run_id = %run.run_id, "cannot mark a run expired");
                Processed::Requeued
            }
        }
    }

    /// Records an attempt and the run's state after it and waits for the commit; then
    /// `recorded`, or `Requeued` when the recorder has stopped.
    async fn record(&self, run: Run, attempt: Attempt, recorded: Processed) -> Processed {
        match self.recorder.record_attempt_durably(run, attempt).await {
            Ok(()) => recorded,
            Err(err) => {
                tracing::error!(error = %err, "cannot record an attempt; requeueing");
                Processed::Requeued
            }
        }
    }

    /// The job's binding; reloads the cache once when it is not there yet (a binding made
    /// a moment ago on another proxy).
    async fn binding(&self, job: &Job) -> Option<Arc<LiveBinding>> {
        if let Some(live) = self.cache.get(job.binding_id) {
            return Some(live);
        }
        if let Err(err) = self.cache.reload().await {
            tracing::warn!(error = %err, "reloading bindings failed");
        }
        self.cache.get(job.binding_id)
    }
}
