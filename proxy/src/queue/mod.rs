//! The `JobQueue` seam: where async jobs wait for a worker, between attempts, and dead.
//!
//! Above this seam the dispatcher queues a `Process` call's jobs, the worker consumes and
//! settles them, and `postsub runs retry` / `dlq replay` put dead ones back; none of them
//! names a broker. Below it are two backends, chosen with the store (see
//! [`crate::backend`]):
//!
//! - [`rabbitmq`]: durable queues per task kind with publisher confirms, delay queues by
//!   TTL, dead-letter queues, and an outbox in PostgreSQL for broker outages.
//! - [`embedded`]: a lease queue in the SQLite file of the embedded store, where a job and
//!   its run are committed in one transaction.
//!
//! Both give the same guarantees: a job is acknowledged as queued only once it is durable,
//! a job a worker holds comes back if the worker dies, a retry waits in the queue (not in a
//! worker), and a job that failed for good waits in its kind's dead letters until an
//! operator replays it.

pub mod embedded;
pub mod rabbitmq;

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::{job::Job, run::Run};

/// The queue did not take or give a job; the message says why and where.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct QueueError(pub String);

/// One async job of a `Process` call.
#[derive(Debug, Clone)]
pub struct NewJob {
    /// The job.
    pub job: Job,
    /// Its run's `queued` record, which never overwrites what a worker wrote.
    pub run: Run,
    /// When it may start (a binding's `delay`); `None`: at once.
    pub release_at: Option<DateTime<Utc>>,
}

/// What a queue holds of one task kind. A count the backend cannot know is `None`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KindStats {
    /// The task kind.
    pub kind: String,
    /// Jobs a worker may take now.
    pub ready: u64,
    /// Jobs a worker holds.
    pub in_flight: Option<u64>,
    /// Jobs waiting for a retry or a binding's `delay`.
    pub waiting: Option<u64>,
    /// Dead letters.
    pub dead: u64,
    /// Workers consuming the kind's jobs.
    pub consumers: Option<u64>,
    /// How long the oldest ready job has waited.
    pub oldest_ready: Option<Duration>,
}

/// A durable job queue.
#[async_trait]
pub trait JobQueue: Send + Sync {
    /// Queues the async jobs of one `Process` call and records their runs as `queued`;
    /// returns once every job is durable (confirmed or committed), an error when one
    /// could not be queued.
    async fn enqueue(&self, jobs: Vec<NewJob>) -> Result<(), QueueError>;

    /// Connects now, so start-up can report a queue that does not answer (jobs are kept
    /// until it does).
    async fn connect(&self) -> Result<(), QueueError>;

    /// Queues one job to run now: a run put back to work, already `queued` in the store.
    async fn publish(&self, job: &Job) -> Result<(), QueueError>;

    /// Starts taking jobs of every kind, at most `prefetch` held at a time.
    async fn consume(&self, prefetch: u16) -> Result<Box<dyn Consumer>, QueueError>;

    /// Opens a session on one kind's dead letters.
    async fn dead_letters(&self, kind: &str) -> Result<Box<dyn DeadLetters>, QueueError>;

    /// What the queue holds, per task kind.
    async fn stats(&self) -> Result<Vec<KindStats>, QueueError>;

    /// Jobs kept for the queue because it was away (RabbitMQ's outbox); `None` for a queue
    /// that has no outbox (the embedded one, whose jobs are written with their runs).
    async fn outbox_size(&self) -> Result<Option<u64>, QueueError> {
        Ok(None)
    }

    /// Background work of a proxy until `shutdown` (RabbitMQ's outbox relay); returns at
    /// once when there is none.
    async fn relay(&self, shutdown: CancellationToken);

    /// Closes the queue's connections.
    async fn close(&self);
}

/// A stream of jobs for one worker.
#[async_trait]
pub trait Consumer: Send {
    /// The next job. An error means the consumer is lost (start consuming again); jobs it
    /// held come back to the queue.
    async fn next(&mut self) -> Result<Delivery, QueueError>;

    /// Stops taking jobs; deliveries handed out can still be settled until [`Consumer::close`].
    async fn cancel(&mut self);

    /// Closes the consumer. Jobs held and not acknowledged go back to the queue.
    async fn close(self: Box<Self>);
}

/// A job handed to a worker, held until it is settled.
pub struct Delivery {
    /// The message: a job, unless something else wrote to the queue.
    pub body: Vec<u8>,
    /// Delivered before and not settled: the worker that held it is gone.
    pub redelivered: bool,
    /// Where it came from, for logs.
    pub origin: String,
    /// Settles it.
    pub settle: Box<dyn Settle>,
}

/// What a worker does with a delivery. Exactly one of `ack`, `requeue` and `reject` ends
/// it; `retry_later` and `dead_letter` queue the job anew, before the `ack`.
#[async_trait]
pub trait Settle: Send + Sync {
    /// Done with it: the job leaves the queue.
    async fn ack(&self) -> Result<(), QueueError>;

    /// Not handled (the database is away): back to the queue, for any worker.
    async fn requeue(&self) -> Result<(), QueueError>;

    /// Not a job: dropped.
    async fn reject(&self) -> Result<(), QueueError>;

    /// Queues `job` to come back after `delay` (its next attempt).
    async fn retry_later(&self, job: &Job, delay: Duration) -> Result<(), QueueError>;

    /// Puts `job` in its kind's dead letters, with why and after how many attempts.
    async fn dead_letter(&self, job: &Job, error: &str, attempts: i32) -> Result<(), QueueError>;
}

/// A dead letter taken in a [`DeadLetters`] session.
#[derive(Debug)]
pub struct DeadLetter {
    /// The message: a job, unless something else wrote to the queue.
    pub body: Vec<u8>,
    /// Which letter of the session.
    tag: u64,
}

/// A session on one kind's dead letters. A letter taken is held until it is forwarded,
/// put back or discarded; whatever is still held when the session closes goes back.
#[async_trait]
pub trait DeadLetters: Send {
    /// Letters in the queue now (those this session holds not counted).
    async fn count(&mut self) -> Result<u64, QueueError>;

    /// Takes the next letter, each at most once a session; `None` when there is none.
    async fn take(&mut self) -> Result<Option<DeadLetter>, QueueError>;

    /// Queues each `job` to its work queue in place of its letter, then lets the letter
    /// go, in order; on an error, says how many went before it.
    async fn forward(&mut self, letters: Vec<(DeadLetter, Job)>)
    -> Result<(), (usize, QueueError)>;

    /// Leaves a letter where it was.
    async fn put_back(&mut self, letter: DeadLetter) -> Result<(), QueueError>;

    /// Removes a letter for good.
    async fn discard(&mut self, letter: DeadLetter) -> Result<(), QueueError>;

    /// Ends the session; letters still held go back.
    async fn close(self: Box<Self>);
}
