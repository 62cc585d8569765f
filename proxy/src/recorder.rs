//! The run recorder: writes the run history (runs and their attempts) in batches, never
//! one INSERT per run or attempt.
//!
//! Callers hand records to a channel; a writer task takes everything that has queued up
//! (group commit: the busier the proxy, the larger the batch) and writes it in one
//! transaction, with one statement per write kind. Records of the same run within a batch
//! are merged first, so a batch never touches a row twice. A failed write is retried with
//! backoff while new records wait in the bounded channel (backpressure, not unbounded
//! memory).
//!
//! There are [`WRITERS`] writers, each with its own channel, committing in parallel: one
//! writer spends most of a batch waiting on round trips, not on PostgreSQL's CPU. A run's
//! records always go to the same writer (chosen by run id), so they are written in the
//! order they were made, and two writers never touch the same row.
//!
//! [`Recorder::record_queued`] and [`Recorder::record_attempt`] return once the record is
//! queued; [`Recorder::record_attempt_durably`] once it is committed, for the worker, which
//! acks a job only after its attempt is recorded.

use std::{collections::HashMap, sync::Arc, time::Duration};

use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::{
    run::{Attempt, Run},
    store::{self, RunWrite},
};

/// Most records written in one statement.
const MAX_BATCH: usize = 1000;

/// Writer tasks committing in parallel, each over its own pooled connection.
pub const WRITERS: usize = 4;

struct Entry {
    run: Run,
    write: RunWrite,
    /// The attempt that brought the run to this state, if one did.
    attempt: Option<Attempt>,
    committed: Option<oneshot::Sender<()>>,
}

/// The recorder stopped (shutdown); the record was not written.
#[derive(Debug, thiserror::Error)]
#[error("the run recorder has stopped")]
pub struct RecorderStopped;

/// Handle to the writer tasks; cheap to clone.
#[derive(Clone)]
pub struct Recorder {
    /// One channel per writer.
    writers: Arc<[mpsc::Sender<Entry>]>,
}

impl Recorder {
    /// Starts the writer tasks, holding up to `capacity` records in all. The returned task
    /// ends when every `Recorder` clone is dropped and the records queued so far are
    /// written.
    pub fn start(pool: PgPool, capacity: usize) -> (Self, tokio::task::JoinHandle<()>) {
        let (writers, tasks): (Vec<_>, Vec<_>) = (0..WRITERS)
            .map(|_| {
                let (entries, receiver) = mpsc::channel(capacity.div_ceil(WRITERS));
                (entries, tokio::spawn(write_batches(pool.clone(), receiver)))
            })
            .unzip();
        let all_written = tokio::spawn(async move {
            for task in tasks {
                let _ = task.await;
            }
        });
        (
            Self {
                writers: writers.into(),
            },
            all_written,
        )
    }

    /// Queues the record of a job just queued, which never overwrites what a worker wrote
    /// about its run; waits only when the channel is full.
    pub async fn record_queued(&self, run: Run) -> Result<(), RecorderStopped> {
        self.send(Entry {
            run,
            write: RunWrite::InsertIfAbsent,
            attempt: None,
            committed: None,
        })
        .await
    }

    /// Queues the record of a run's state after an attempt, and of the attempt when it is
    /// given; waits only when the channel is full.
    pub async fn record_attempt(
        &self,
        run: Run,
        attempt: Option<Attempt>,
    ) -> Result<(), RecorderStopped> {
        self.send(Entry {
            run,
            write: RunWrite::Upsert,
            attempt,
            committed: None,
        })
        .await
    }

    /// Like [`Recorder::record_attempt`], but waits until the records are committed.
    pub async fn record_attempt_durably(
        &self,
        run: Run,
        attempt: Attempt,
    ) -> Result<(), RecorderStopped> {
        let (committed, done) = oneshot::channel();
        self.send(Entry {
            run,
            write: RunWrite::Upsert,
            attempt: Some(attempt),
            committed: Some(committed),
        })
        .await?;
        done.await.map_err(|_| RecorderStopped)
    }

    async fn send(&self, entry: Entry) -> Result<(), RecorderStopped> {
        let writer = (entry.run.run_id.as_u128() % self.writers.len() as u128) as usize;
        self.writers[writer]
            .send(entry)
            .await
            .map_err(|_| RecorderStopped)
    }
}

async fn write_batches(pool: PgPool, mut receiver: mpsc::Receiver<Entry>) {
    let mut entries = Vec::with_capacity(MAX_BATCH);
    while receiver.recv_many(&mut entries, MAX_BATCH).await > 0 {
        let batch = Batch::merge(entries.drain(..));
        let started = std::time::Instant::now();
        let mut backoff = Duration::from_millis(50);
        loop {
            match batch.write(&pool).await {
                Ok(()) => break,
                Err(err) => {
                    tracing::error!(error = %err, runs = batch.len(), ?backoff,
                        "writing the run history failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        tracing::debug!(runs = batch.len(), took = ?started.elapsed(), "run history batch written");
        for committed in batch.committed {
            let _ = committed.send(());
        }
    }
}

/// One batch, merged per run.
struct Batch {
    inserts: Vec<Run>,
    upserts: Vec<Run>,
    attempts: Vec<Attempt>,
    committed: Vec<oneshot::Sender<()>>,
}

impl Batch {
    fn merge(entries: impl Iterator<Item = Entry>) -> Self {
        // Per run, the latest upsert wins; an insert-if-absent only counts when the batch has
        // nothing else for that run (it must never overwrite). Every attempt counts, once.
        let mut merged: HashMap<Uuid, (Run, RunWrite)> = HashMap::new();
        let mut attempts: HashMap<(Uuid, i32), Attempt> = HashMap::new();
        let mut committed = Vec::new();
        for entry in entries {
            committed.extend(entry.committed);
            if let Some(attempt) = entry.attempt {
                attempts.insert((attempt.run_id, attempt.attempt), attempt);
            }
            if entry.write == RunWrite::Upsert || !merged.contains_key(&entry.run.run_id) {
                merged.insert(entry.run.run_id, (entry.run, entry.write));
            }
        }
        let (mut inserts, mut upserts) = (Vec::new(), Vec::new());
        for (run, write) in merged.into_values() {
            match write {
                RunWrite::InsertIfAbsent => inserts.push(run),
                RunWrite::Upsert => upserts.push(run),
            }
        }
        Self {
            inserts,
            upserts,
            attempts: attempts.into_values().collect(),
            committed,
        }
    }

    fn len(&self) -> usize {
        self.inserts.len() + self.upserts.len()
    }

    /// Writes the batch in one transaction: runs first, then the attempts that refer to
    /// them.
    async fn write(&self, pool: &PgPool) -> sqlx::Result<()> {
        let mut tx = pool.begin().await?;
        store::write_runs(&mut tx, RunWrite::InsertIfAbsent, &self.inserts).await?;
        store::write_runs(&mut tx, RunWrite::Upsert, &self.upserts).await?;
        store::write_attempts(&mut tx, &self.attempts).await?;
        tx.commit().await
    }
}
