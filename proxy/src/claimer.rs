//! The worker's claims in batches: every job a worker takes claims its run first
//! ([`Store::claim_run`]), and one statement per job cost PostgreSQL a round trip and a
//! statement's fixed work each. Jobs delivered together (a prefetch window) wait for each
//! other's claims here and go to the store as one [`Store::claim_runs`].
//!
//! One task writes the batches: it takes every claim waiting (no linger: a lone job is
//! claimed at once, so a quiet worker adds no latency) and answers each with its own
//! result. A redelivered job is claimed on its own, since it may take over a `running` run
//! (rare, and the batch statement does not). The task ends when the last handle is dropped.

use std::{collections::HashSet, sync::Arc};

use tokio::sync::{mpsc, oneshot};

use crate::{
    job::Job,
    run::Run,
    store::{Store, StoreError, StoreResult},
};

/// Most claims in one statement.
const MAX_BATCH: usize = 256;

struct Claim {
    run: Run,
    job: Job,
    claimed: oneshot::Sender<StoreResult<Option<i32>>>,
}

/// Handle to the claim task; cheap to clone.
#[derive(Clone)]
pub struct Claimer {
    store: Arc<dyn Store>,
    claims: mpsc::Sender<Claim>,
}

impl Claimer {
    /// Starts the claim task over `store`.
    pub fn start(store: Arc<dyn Store>) -> Self {
        let (claims, receiver) = mpsc::channel(MAX_BATCH * 4);
        tokio::spawn(claim_batches(store.clone(), receiver));
        Self { store, claims }
    }

    /// [`Store::claim_run`], batched with the claims of other jobs waiting at the same time.
    pub async fn claim(&self, run: &Run, job: &Job, redelivered: bool) -> StoreResult<Option<i32>> {
        if redelivered {
            return self.store.claim_run(run, job, true).await;
        }
        let (claimed, answer) = oneshot::channel();
        let claim = Claim {
            run: run.clone(),
            job: job.clone(),
            claimed,
        };
        self.claims
            .send(claim)
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }
}

async fn claim_batches(store: Arc<dyn Store>, mut receiver: mpsc::Receiver<Claim>) {
    let mut waiting = Vec::with_capacity(MAX_BATCH);
    while receiver.recv_many(&mut waiting, MAX_BATCH).await > 0 {
        // A run may appear once per statement: a second delivery of a job already being
        // claimed is a duplicate, as claim_run would find it `running`.
        let mut seen = HashSet::with_capacity(waiting.len());
        let (batch, duplicates): (Vec<Claim>, Vec<Claim>) = waiting
            .drain(..)
            .partition(|claim| seen.insert(claim.run.run_id));
        for duplicate in duplicates {
            let _ = duplicate.claimed.send(Ok(None));
        }
        let (claims, answers): (Vec<(Run, Job)>, Vec<_>) = batch
            .into_iter()
            .map(|claim| ((claim.run, claim.job), claim.claimed))
            .unzip();
        match store.claim_runs(&claims).await {
            Ok(taken) => {
                for (answer, attempt) in answers.into_iter().zip(taken) {
                    let _ = answer.send(Ok(attempt));
                }
            }
            Err(err) => {
                // Every job of the batch goes back to its queue (the worker requeues on an
                // error); the first carries the error itself, the others name it.
                let message = err.to_string();
                let mut err = Some(err);
                for answer in answers {
                    let failed = err
                        .take()
                        .unwrap_or_else(|| StoreError::NotCommitted(message.clone()));
                    let _ = answer.send(Err(failed));
                }
            }
        }
    }
}
