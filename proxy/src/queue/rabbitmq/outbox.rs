//! The outbox: jobs `Process` could not hand to RabbitMQ wait in PostgreSQL (`outbox`) until
//! a relay publishes them. Part of the RabbitMQ backend, which always pairs with the
//! PostgreSQL store.
//!
//! `Process` publishes straight to RabbitMQ as long as it can. When the broker is
//! unreachable or does not confirm, the job is written here instead and `Process` answers as
//! usual; the relay (one per proxy; several proxies share the table through `SKIP LOCKED`)
//! publishes the kept jobs oldest first once the broker answers again, deleting each only
//! after its publish is confirmed. A job published but not yet deleted when a proxy dies is
//! published again: the worker's claim on the run id makes that harmless.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use sqlx::{PgPool, types::Json};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::Publisher;
use crate::job::Job;

/// Jobs the relay takes per transaction.
const BATCH: i64 = 100;
/// How often the relay looks without being woken (jobs another proxy left, a restart).
const POLL: Duration = Duration::from_secs(1);

/// Handle to the outbox; cheap to clone.
#[derive(Clone)]
pub struct Outbox {
    pool: PgPool,
    wake: Arc<Notify>,
}

impl Outbox {
    /// The outbox in the proxy's database.
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            wake: Arc::default(),
        }
    }

    /// Keeps a job for the relay; `release_at` is when it may run (a binding's `delay`).
    pub async fn keep(&self, job: &Job, release_at: Option<DateTime<Utc>>) -> sqlx::Result<()> {
        sqlx::query("INSERT INTO outbox (run_id, job, release_at) VALUES ($1, $2, $3)")
            .bind(job.run_id)
            .bind(Json(job))
            .bind(release_at)
            .execute(&self.pool)
            .await?;
        self.wake.notify_one();
        Ok(())
    }

    /// How many jobs it holds.
    pub async fn size(&self) -> sqlx::Result<i64> {
        sqlx::query_scalar("SELECT count(*) FROM outbox")
            .fetch_one(&self.pool)
            .await
    }

    /// Publishes kept jobs until `shutdown`: when woken by [`Outbox::keep`], and every
    /// second; after a failed publish it waits with backoff.
    pub async fn relay(self, publisher: Arc<Publisher>, shutdown: CancellationToken) {
        let mut backoff = POLL;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(backoff) => {}
            }
            match self.drain(&publisher).await {
                Ok(0) => backoff = POLL,
                Ok(published) => {
                    tracing::info!(published, "outbox jobs published");
                    backoff = POLL;
                }
                Err(err) => {
                    tracing::warn!(error = %err, "outbox relay cannot publish yet");
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    /// Publishes every kept job, oldest first; returns how many.
    async fn drain(&self, publisher: &Publisher) -> anyhow::Result<usize> {
        let mut published = 0;
        loop {
            let mut tx = self.pool.begin().await?;
            let kept: Vec<(i64, Json<Job>, Option<DateTime<Utc>>)> = sqlx::query_as(
                "SELECT seq, job, release_at FROM outbox ORDER BY seq LIMIT $1
                 FOR UPDATE SKIP LOCKED",
            )
            .bind(BATCH)
            .fetch_all(&mut *tx)
            .await?;
            if kept.is_empty() {
                return Ok(published);
            }
            let mut done = Vec::with_capacity(kept.len());
            for (seq, Json(job), release_at) in &kept {
                let wait = release_at
                    .and_then(|at| (at - Utc::now()).to_std().ok())
                    .filter(|wait| !wait.is_zero());
                let sent = match wait {
                    Some(wait) => publisher.publish_delayed(job, wait).await,
                    None => publisher.publish(job).await,
                };
                if let Err(err) = sent {
                    // Keep what went out; the rest stays for the next try.
                    delete(&mut tx, &done).await?;
                    tx.commit().await?;
                    return Err(err.into());
                }
                done.push(*seq);
            }
            delete(&mut tx, &done).await?;
            tx.commit().await?;
            published += done.len();
        }
    }
}

async fn delete(tx: &mut sqlx::PgConnection, seqs: &[i64]) -> sqlx::Result<()> {
    if !seqs.is_empty() {
        sqlx::query("DELETE FROM outbox WHERE seq = ANY($1)")
            .bind(seqs)
            .execute(tx)
            .await?;
    }
    Ok(())
}
