//! Putting dead async runs back to work: [`retry_run`] (one run, from the job stored with
//! it; `postsub runs retry`) and [`replay_dead_letters`] (the dead-letter queues;
//! `postsub dlq replay`).
//!
//! Both mark the run `queued` in the store before queuing its job (a worker takes only a
//! `queued` run, and the job may be taken the moment it is queued), queue it durably, and
//! put the run back as it was when that fails. A re-queued run starts
//! a new round of its binding's `max_attempts` attempts ([`Job::attempts_before`]); its
//! attempt count goes on, so its history shows every round.

use std::collections::HashMap;

use postsub_tasks::Mode;
use uuid::Uuid;

use crate::{
    job::Job,
    queue::{DeadLetter, DeadLetters, JobQueue, QueueError},
    run::{Run, RunStatus},
    store::{Store, StoreError},
};

/// Dead letters handled per database round trip.
const CHUNK: usize = 100;

/// Why a run or letter could not be re-queued.
#[derive(Debug, thiserror::Error)]
pub enum RequeueError {
    /// There is no such run.
    #[error("no run with id {0}")]
    NotFound(Uuid),
    /// The run is not in a state a retry applies to; the message says why.
    #[error("{0}")]
    NotRetryable(String),
    /// The queue did not take the job.
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// The store did not answer.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Queues a `dead` (or `failed`, or `expired`) async run again from its stored job, for a
/// new round of attempts, and returns it as it now stands (`queued`).
pub async fn retry_run(
    store: &dyn Store,
    queue: &dyn JobQueue,
    run_id: Uuid,
) -> Result<Run, RequeueError> {
    let run = store
        .get_run(run_id)
        .await?
        .ok_or(RequeueError::NotFound(run_id))?;
    if !matches!(
        run.status,
        RunStatus::Dead | RunStatus::Failed | RunStatus::Expired
    ) {
        return Err(RequeueError::NotRetryable(format!(
            "run {run_id} is {}; only dead, failed or expired runs can be retried",
            run.status
        )));
    }
    if run.mode == Mode::Sync {
        return Err(RequeueError::NotRetryable(format!(
            "run {run_id} is a sync run: it ran inline in Process and has no job to queue"
        )));
    }
    let Some(mut job) = store.run_input(run_id).await? else {
        return Err(RequeueError::NotRetryable(format!(
            "run {run_id} was recorded before retries existed and has no stored job to queue"
        )));
    };
    let Some(&(_, attempts)) = store.requeue_runs(&[run_id], &[run.status]).await?.first() else {
        return Err(RequeueError::NotRetryable(format!(
            "run {run_id} changed while it was being retried; look at it again"
        )));
    };
    job.attempts_before = attempts.max(0) as u32;
    if let Err(err) = queue.publish(&job).await {
        store.unqueue_runs(&[run_id], run.status).await?;
        return Err(err.into());
    }
    tracing::info!(%run_id, attempts, "run retried");
    store
        .get_run(run_id)
        .await?
        .ok_or(RequeueError::NotFound(run_id))
}

/// What a replay of dead letters did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Replayed {
    /// Jobs put back in their work queues.
    pub replayed: u64,
    /// Letters of runs this store does not know: another deployment's, on queues shared
    /// with it (the same vhost and prefix). They are left where they were.
    pub unknown: u64,
}

/// Moves the jobs in each of `kinds`' dead-letter queues back to their work queues (only
/// those of `form_id`, when given). Takes as many letters as a queue held when it began;
/// letters of other forms, that are not jobs, or whose run this store does not know go back
/// to the tail of the queue, and letters whose run is no longer dead (retried meanwhile)
/// are dropped.
pub async fn replay_dead_letters(
    store: &dyn Store,
    queue: &dyn JobQueue,
    kinds: &[String],
    form_id: Option<Uuid>,
) -> Result<Replayed, RequeueError> {
    let mut all = Replayed::default();
    for kind in kinds {
        let mut letters = queue.dead_letters(kind).await?;
        // Whatever happens, letters this session still holds go back to the queue.
        let result = replay_queue(store, letters.as_mut(), form_id).await;
        letters.close().await;
        let done = result?;
        if done.replayed > 0 {
            tracing::info!(kind, count = done.replayed, "dead letters replayed");
        }
        if done.unknown > 0 {
            tracing::warn!(
                kind,
                count = done.unknown,
                "dead letters of runs this deployment does not know were left in place: \
                 another deployment shares these queues (give each its own vhost or \
                 POSTSUB_QUEUE_PREFIX)"
            );
        }
        all.replayed += done.replayed;
        all.unknown += done.unknown;
    }
    Ok(all)
}

async fn replay_queue(
    store: &dyn Store,
    letters: &mut dyn DeadLetters,
    form_id: Option<Uuid>,
) -> Result<Replayed, RequeueError> {
    let held = letters.count().await?;
    let mut replayed = Replayed::default();
    let mut chunk = Vec::with_capacity(CHUNK);
    for _ in 0..held {
        let Some(letter) = letters.take().await? else {
            break;
        };
        match Job::decode(&letter.body) {
            Ok(job) if form_id.is_none_or(|form| job.submission.form_id == form) => {
                chunk.push((letter, job));
            }
            Ok(_) => letters.put_back(letter).await?,
            Err(err) => {
                tracing::warn!(error = %err, "a dead letter is not a job; leaving it there");
                letters.put_back(letter).await?;
            }
        }
        if chunk.len() == CHUNK {
            replayed.add(forward(store, letters, std::mem::take(&mut chunk)).await?);
        }
    }
    replayed.add(forward(store, letters, chunk).await?);
    Ok(replayed)
}

impl Replayed {
    fn add(&mut self, other: Replayed) {
        self.replayed += other.replayed;
        self.unknown += other.unknown;
    }
}

/// Marks the runs of `chunk` `queued` and forwards their jobs to the work queue; returns
/// how many went, and how many were of runs this store does not know (put back).
async fn forward(
    store: &dyn Store,
    letters: &mut dyn DeadLetters,
    chunk: Vec<(DeadLetter, Job)>,
) -> Result<Replayed, RequeueError> {
    let mut done = Replayed::default();
    if chunk.is_empty() {
        return Ok(done);
    }
    let run_ids: Vec<Uuid> = chunk.iter().map(|(_, job)| job.run_id).collect();
    // `queued` too: a run whose replay failed half-way (marked, not queued) has its
    // letter back in the queue and must be replayable.
    let from = [RunStatus::Dead, RunStatus::Failed, RunStatus::Queued];
    let mut requeued: HashMap<Uuid, i32> = store
        .requeue_runs(&run_ids, &from)
        .await?
        .into_iter()
        .collect();
    let mut going = Vec::with_capacity(chunk.len());
    for (letter, mut job) in chunk {
        // A run is forwarded once, even when the queue held two letters of it.
        let Some(attempts) = requeued.remove(&job.run_id) else {
            // Not changed: the run is no longer dead, or it is not this deployment's at
            // all, and another's letter must not be lost.
            if store.get_run(job.run_id).await?.is_none() {
                letters.put_back(letter).await?;
                done.unknown += 1;
            } else {
                tracing::info!(run_id = %job.run_id, "dropping the dead letter of a run no longer dead");
                letters.discard(letter).await?;
            }
            continue;
        };
        job.attempts_before = attempts.max(0) as u32;
        going.push((letter, job));
    }
    let run_ids: Vec<Uuid> = going.iter().map(|(_, job)| job.run_id).collect();
    done.replayed = going.len() as u64;
    if let Err((sent, err)) = letters.forward(going).await {
        store
            .unqueue_runs(&run_ids[sent..], RunStatus::Dead)
            .await?;
        return Err(err.into());
    }
    Ok(done)
}
