//! The run recorder: writes the run history (runs and their attempts) in batches, never
//! one INSERT per run or attempt.
//!
//! Callers hand records to a channel; one writer task takes everything that has queued up
//! (group commit: the busier the proxy, the larger the batch) and writes it in one
//! statement, its own transaction. Records of the same run within a batch are merged first,
//! so a batch never touches a row twice, and records are written in the order they were
//! made. A failed write is retried with backoff while new records wait in the bounded
//! channel (backpressure, not unbounded memory).
//!
//! Each batch costs the database a commit and a fixed share of work whatever its size, so
//! the writer keeps a quiet proxy from writing one record per batch: when a batch is not
//! full it waits for company, [`LINGER`] when a caller waits for the commit (the worker,
//! whose ack waits for it), up to [`QUIET_LINGER`] when none does (the proxy's records of
//! sync runs and queued jobs, which nobody waits for). The store writes a batch at once
//! (PostgreSQL: one statement over a held connection; SQLite: one transaction of the
//! file's writer).
//!
//! [`Recorder::record_queued`] and [`Recorder::record_attempt`] return once the record is
//! queued; [`Recorder::record_attempt_durably`] once it is committed, for the worker, which
//! acks a job only after its attempt is recorded.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use futures_util::FutureExt as _;
use tokio::{
    sync::{mpsc, oneshot},
    task::JoinHandle,
};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{
    run::{Attempt, Run},
    store::{RunWrite, Store},
};

/// Most records written in one statement.
const MAX_BATCH: usize = 1000;

/// How long a batch that is not full waits for more records before it is written, when a
/// caller waits for its commit.
const LINGER: Duration = Duration::from_millis(1);

/// How long a batch waits for more records when no caller waits for its commit: at a few
/// hundred submissions a second, a batch of several submissions instead of a transaction
/// each (one transaction per submission cost PostgreSQL about 300 µs of CPU at 250/s).
/// The records are in memory meanwhile, as they are while they wait in the channel: a
/// killed proxy loses at most this much more of the history of sync runs (the queued
/// record of an async run is written again by the worker that claims it).
const QUIET_LINGER: Duration = Duration::from_millis(10);

/// Records enough to share a commit: a quiet batch this large stops waiting after the one
/// [`LINGER`] step every batch waits. Waiting for more would only make the database's work
/// come in larger bursts, which a busy machine's other processes (the broker confirming
/// `Process`'s publishes) feel as latency.
const COMPANY: usize = 64;

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

/// Handle to the writer task; cheap to clone.
#[derive(Clone)]
pub struct Recorder {
    entries: mpsc::Sender<Entry>,
}

impl Recorder {
    /// Records waiting for the writer.
    pub fn backlog(&self) -> usize {
        self.entries.max_capacity() - self.entries.capacity()
    }

    /// Starts the writer task, holding up to `capacity` records.
    pub fn start(store: Arc<dyn Store>, capacity: usize) -> (Self, RecorderTask) {
        let (entries, receiver) = mpsc::channel(capacity);
        let stop = CancellationToken::new();
        let task = tokio::spawn(write_batches(store, receiver, stop.clone()));
        (Self { entries }, RecorderTask { task, stop })
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
        self.entries.send(entry).await.map_err(|_| RecorderStopped)
    }
}

/// The writer task of a [`Recorder`].
pub struct RecorderTask {
    task: JoinHandle<()>,
    stop: CancellationToken,
}

impl RecorderTask {
    /// Writes the records queued so far (later ones are refused with [`RecorderStopped`])
    /// and ends the task; false when that took longer than `timeout`.
    pub async fn finish(self, timeout: Duration) -> bool {
        self.stop.cancel();
        tokio::time::timeout(timeout, self.task).await.is_ok()
    }
}

async fn write_batches(
    store: Arc<dyn Store>,
    mut receiver: mpsc::Receiver<Entry>,
    stop: CancellationToken,
) {
    let mut entries = Vec::with_capacity(MAX_BATCH);
    loop {
        let received = tokio::select! {
            biased;
            received = receiver.recv_many(&mut entries, MAX_BATCH) => received,
            () = stop.cancelled() => {
                // What was queued before the stop, then nothing more.
                receiver.close();
                receiver.recv_many(&mut entries, MAX_BATCH).await
            }
        };
        if received == 0 {
            break;
        }
        linger(&mut receiver, &mut entries, &stop).await;
        let batch = Batch::merge(entries.drain(..));
        let started = Instant::now();
        let mut backoff = Duration::from_millis(50);
        loop {
            match store.write_history(&batch.runs, &batch.attempts).await {
                Ok(()) => break,
                Err(err) => {
                    tracing::error!(error = %err, runs = batch.runs.len(), ?backoff,
                        "writing the run history failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        tracing::debug!(runs = batch.runs.len(), took = ?started.elapsed(), "run history batch written");
        for committed in batch.committed {
            let _ = committed.send(());
        }
    }
}

/// Waits for company for a batch that is not full: [`LINGER`] once a record in it waits for
/// its commit, else until [`QUIET_LINGER`] has passed or [`COMPANY`] records are in; in
/// steps of [`LINGER`], taking what arrived at each (so a busy channel costs one wake-up
/// per step, not one per record).
async fn linger(
    receiver: &mut mpsc::Receiver<Entry>,
    entries: &mut Vec<Entry>,
    stop: &CancellationToken,
) {
    let quiet_until = Instant::now() + QUIET_LINGER;
    let mut waited_for = entries.iter().any(|entry| entry.committed.is_some());
    while entries.len() < MAX_BATCH && !stop.is_cancelled() {
        tokio::time::sleep(LINGER).await;
        let before = entries.len();
        // Whatever arrived meanwhile; never waits.
        receiver
            .recv_many(entries, MAX_BATCH - before)
            .now_or_never();
        waited_for |= entries[before..]
            .iter()
            .any(|entry| entry.committed.is_some());
        if waited_for || entries.len() >= COMPANY || Instant::now() >= quiet_until {
            break;
        }
    }
}

/// One batch, merged per run.
struct Batch {
    runs: Vec<(Run, RunWrite)>,
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
        Self {
            runs: merged.into_values().collect(),
            attempts: attempts.into_values().collect(),
            committed,
        }
    }
}
