//! The embedded job queue: a lease queue in the `jobs` table of the embedded store's SQLite
//! file.
//!
//! # A job's life
//! - Queued (`state = 'ready'`) with `visible_at`, when it may be taken: now, or later for
//!   a binding's `delay` or a retry's backoff. A `Process` call's jobs and their runs'
//!   `queued` records are one transaction, committed (with other calls', group commit)
//!   before `Process` answers: there is no outbox to relay.
//! - Taken by a claim, one `UPDATE … WHERE id IN (SELECT … LIMIT n) RETURNING …`, which
//!   sets the lease: `lease_owner` and a `visible_at` pushed to the lease's expiry. The
//!   owner renews its leases while it holds the jobs; the jobs of a process that died
//!   become visible again when their lease runs out, and are delivered as redelivered, so
//!   nothing a crashed worker held is lost.
//! - Acknowledged: deleted. A retry is a new row visible after the backoff; a dead letter
//!   is a row in `state = 'dead'` with the error and attempt count, until a replay makes it
//!   `ready` again.
//!
//! # Waking consumers
//! A publish in this process wakes its consumers at once; a timer wakes them for the next
//! job that becomes visible; and a slow poll finds what other processes on the same file
//! queued.
//!
//! # Prefetch
//! A consumer holds at most `prefetch` jobs of all kinds together (RabbitMQ's prefetch is
//! per kind's queue).

use std::{
    collections::VecDeque,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use chrono::Utc;
use serde_json::{Value, json};
use tokio::{sync::Notify, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{
    Consumer, DeadLetter, DeadLetters, Delivery, JobQueue, KindStats, NewJob, QueueError, Settle,
};
use crate::{
    job::Job,
    store::{
        StoreError,
        sqlite::{Db, SqliteStore, rows::Rows, sql_time},
    },
};

/// How long a taken job stays invisible to other consumers without a renewal.
const LEASE: Duration = Duration::from_secs(15);
/// How often a consumer renews the leases of the jobs it holds.
const RENEW: Duration = Duration::from_secs(5);
/// How often an idle consumer looks for jobs other processes queued.
const POLL: Duration = Duration::from_millis(500);

fn unavailable(err: StoreError) -> QueueError {
    QueueError(format!("the embedded queue is unavailable: {err}"))
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

fn payload(job: &Job) -> String {
    serde_json::to_string(job).expect("a job always serializes")
}

/// The job queue in the embedded store's file.
pub struct EmbeddedQueue {
    db: Arc<Db>,
    /// The kinds this process runs, as a JSON array for `json_each`.
    kinds: String,
    kind_names: Vec<String>,
    /// Wakes this process's consumers when a job is queued.
    wake: Arc<Notify>,
}

impl EmbeddedQueue {
    /// The queue in `store`'s file, for jobs of `kinds`.
    pub fn new(store: &SqliteStore, kinds: Vec<String>) -> Self {
        Self {
            db: store.db(),
            kinds: Value::from(kinds.clone()).to_string(),
            kind_names: kinds,
            wake: Arc::default(),
        }
    }

    /// Inserts `job` as a new row of `state`, visible at `visible_at`.
    async fn insert(
        &self,
        job: &Job,
        visible_at: i64,
        dead: Option<(String, i32)>,
    ) -> Result<(), QueueError> {
        insert_job(&self.db, &self.wake, job, visible_at, dead).await
    }
}

async fn insert_job(
    db: &Db,
    wake: &Notify,
    job: &Job,
    visible_at: i64,
    dead: Option<(String, i32)>,
) -> Result<(), QueueError> {
    let (run_id, form_id) = (job.run_id, job.submission.form_id);
    let (kind, payload) = (job.kind.clone(), payload(job));
    let state = if dead.is_some() { "dead" } else { "ready" };
    let (error, attempts) = dead.map_or((None, 0), |(error, attempts)| (Some(error), attempts));
    let now = sql_time(Utc::now());
    db.writer
        .write(move |connection| {
            Box::pin(async move {
                sqlx::query(
                    "INSERT INTO jobs (run_id, kind, form_id, payload, state, visible_at, error,
                        attempts, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                )
                .bind(run_id)
                .bind(kind)
                .bind(form_id)
                .bind(payload)
                .bind(state)
                .bind(visible_at)
                .bind(error)
                .bind(attempts)
                .bind(now)
                .execute(connection)
                .await
                .map(drop)
            })
        })
        .await
        .map_err(unavailable)?;
    wake.notify_waiters();
    Ok(())
}

#[async_trait]
impl JobQueue for EmbeddedQueue {
    async fn enqueue(&self, jobs: Vec<NewJob>) -> Result<(), QueueError> {
        if jobs.is_empty() {
            return Ok(());
        }
        // Each job with its run, in the same transaction.
        let now = Utc::now();
        let mut rows = Rows::default();
        for new in &jobs {
            rows.job(&new.job, new.release_at.unwrap_or(now).max(now));
            rows.run(&new.run, false);
        }
        self.db.writer.write_rows(rows).await.map_err(unavailable)?;
        self.wake.notify_waiters();
        for new in jobs {
            metrics::counter!("postsub_jobs_queued_total", "kind" => new.job.kind).increment(1);
        }
        Ok(())
    }

    async fn connect(&self) -> Result<(), QueueError> {
        Ok(())
    }

    async fn publish(&self, job: &Job) -> Result<(), QueueError> {
        self.insert(job, now_ms(), None).await
    }

    async fn consume(&self, prefetch: u16) -> Result<Box<dyn Consumer>, QueueError> {
        let owner = format!("{}-{}", std::process::id(), Uuid::new_v4().simple());
        let stop_renewing = CancellationToken::new();
        let renewing = tokio::spawn(renew_leases(
            self.db.clone(),
            owner.clone(),
            stop_renewing.clone(),
        ));
        Ok(Box::new(EmbeddedConsumer {
            db: self.db.clone(),
            kinds: self.kinds.clone(),
            owner,
            prefetch: usize::from(prefetch.max(1)),
            buffer: VecDeque::new(),
            held: Arc::default(),
            settled: Arc::default(),
            wake: self.wake.clone(),
            renewing: Some((renewing, stop_renewing)),
            cancelled: false,
        }))
    }

    async fn dead_letters(&self, kind: &str) -> Result<Box<dyn DeadLetters>, QueueError> {
        let until: i64 = sqlx::query_scalar(
            "SELECT coalesce(max(id), 0) FROM jobs WHERE state = 'dead' AND kind = ?1",
        )
        .bind(kind)
        .fetch_one(&self.db.readers)
        .await
        .map_err(|err| unavailable(err.into()))?;
        Ok(Box::new(EmbeddedDeadLetters {
            db: self.db.clone(),
            wake: self.wake.clone(),
            kind: kind.to_owned(),
            after: 0,
            until,
        }))
    }

    async fn stats(&self) -> Result<Vec<KindStats>, QueueError> {
        let now = now_ms();
        let rows: Vec<(String, i64, i64, i64, i64, Option<i64>)> = sqlx::query_as(
            "SELECT kind,
                coalesce(sum(state = 'ready' AND visible_at <= ?1), 0),
                coalesce(sum(state = 'ready' AND visible_at > ?1 AND lease_owner IS NOT NULL), 0),
                coalesce(sum(state = 'ready' AND visible_at > ?1 AND lease_owner IS NULL), 0),
                coalesce(sum(state = 'dead'), 0),
                min(CASE WHEN state = 'ready' AND visible_at <= ?1 THEN visible_at END)
             FROM jobs GROUP BY kind",
        )
        .bind(now)
        .fetch_all(&self.db.readers)
        .await
        .map_err(|err| unavailable(err.into()))?;
        let count = |n: i64| u64::try_from(n).unwrap_or(0);
        let mut stats: Vec<KindStats> = self
            .kind_names
            .iter()
            .map(|kind| KindStats {
                kind: kind.clone(),
                ready: 0,
                in_flight: Some(0),
                waiting: Some(0),
                dead: 0,
                consumers: None,
                oldest_ready: None,
            })
            .collect();
        for (kind, ready, in_flight, waiting, dead, oldest) in rows {
            let index = match stats.iter().position(|s| s.kind == kind) {
                Some(index) => index,
                // Jobs of a kind this process does not run: shown all the same.
                None => {
                    stats.push(KindStats {
                        kind: kind.clone(),
                        ready: 0,
                        in_flight: None,
                        waiting: None,
                        dead: 0,
                        consumers: None,
                        oldest_ready: None,
                    });
                    stats.len() - 1
                }
            };
            stats[index] = KindStats {
                kind,
                ready: count(ready),
                in_flight: Some(count(in_flight)),
                waiting: Some(count(waiting)),
                dead: count(dead),
                consumers: None,
                oldest_ready: oldest.map(|visible| {
                    Duration::from_millis(u64::try_from(now - visible).unwrap_or(0))
                }),
            };
        }
        Ok(stats)
    }

    async fn relay(&self, _shutdown: CancellationToken) {}

    async fn close(&self) {}
}

/// Pushes the lease of every job `owner` holds out by another [`LEASE`], every [`RENEW`].
async fn renew_leases(db: Arc<Db>, owner: String, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(RENEW) => {}
        }
        let owner = owner.clone();
        let renewed = db
            .writer
            .write(move |connection| {
                Box::pin(async move {
                    sqlx::query(
                        "UPDATE jobs SET visible_at = ?2 WHERE lease_owner = ?1 AND state = 'ready'",
                    )
                    .bind(owner)
                    .bind(now_ms() + millis(LEASE))
                    .execute(connection)
                    .await
                    .map(drop)
                })
            })
            .await;
        if let Err(err) = renewed {
            tracing::warn!(error = %err, "cannot renew the leases of held jobs");
        }
    }
}

/// A job taken by a claim.
struct Claimed {
    id: i64,
    kind: String,
    payload: String,
    deliveries: i64,
}

/// One worker's stream of jobs.
struct EmbeddedConsumer {
    db: Arc<Db>,
    kinds: String,
    owner: String,
    prefetch: usize,
    /// Claimed, not handed out yet.
    buffer: VecDeque<Claimed>,
    /// Claimed and not settled, handed out or not.
    held: Arc<AtomicUsize>,
    /// Signalled when a delivery is settled, so a full consumer claims again.
    settled: Arc<Notify>,
    wake: Arc<Notify>,
    renewing: Option<(JoinHandle<()>, CancellationToken)>,
    cancelled: bool,
}

impl EmbeddedConsumer {
    /// Takes up to `limit` visible jobs of this consumer's kinds, oldest first.
    async fn claim(&self, limit: usize) -> Result<Vec<Claimed>, QueueError> {
        let (owner, kinds) = (self.owner.clone(), self.kinds.clone());
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut claimed: Vec<(i64, String, String, i64)> = self
            .db
            .writer
            .write(move |connection| {
                Box::pin(async move {
                    let now = now_ms();
                    sqlx::query_as(
                        "UPDATE jobs SET lease_owner = ?1, visible_at = ?2,
                            deliveries = deliveries + 1
                         WHERE id IN (SELECT id FROM jobs
                            WHERE state = 'ready' AND visible_at <= ?3
                                AND kind IN (SELECT value FROM json_each(?4))
                            ORDER BY visible_at, id LIMIT ?5)
                         RETURNING id, kind, payload, deliveries",
                    )
                    .bind(owner)
                    .bind(now + millis(LEASE))
                    .bind(now)
                    .bind(kinds)
                    .bind(limit)
                    .fetch_all(connection)
                    .await
                })
            })
            .await
            .map_err(unavailable)?;
        claimed.sort_by_key(|(id, ..)| *id);
        Ok(claimed
            .into_iter()
            .map(|(id, kind, payload, deliveries)| Claimed {
                id,
                kind,
                payload,
                deliveries,
            })
            .collect())
    }

    /// When the next job of this consumer's kinds becomes visible, if any is queued.
    async fn next_visible(&self) -> Result<Option<i64>, QueueError> {
        sqlx::query_scalar(
            "SELECT min(visible_at) FROM jobs
             WHERE state = 'ready' AND kind IN (SELECT value FROM json_each(?1))",
        )
        .bind(&self.kinds)
        .fetch_one(&self.db.readers)
        .await
        .map_err(|err| unavailable(err.into()))
    }

    /// Gives back every job this consumer's owner holds, so others take them at once.
    async fn release(&self, only: Option<Vec<i64>>) {
        let owner = self.owner.clone();
        let only = only.map(|ids| Value::from(ids).to_string());
        let released = self
            .db
            .writer
            .write(move |connection| {
                Box::pin(async move {
                    sqlx::query(
                        "UPDATE jobs SET lease_owner = NULL, visible_at = ?2
                         WHERE lease_owner = ?1 AND state = 'ready'
                            AND (?3 IS NULL OR id IN (SELECT value FROM json_each(?3)))",
                    )
                    .bind(owner)
                    .bind(now_ms())
                    .bind(only)
                    .execute(connection)
                    .await
                    .map(drop)
                })
            })
            .await;
        match released {
            Ok(()) => self.wake.notify_waiters(),
            // Their leases run out instead.
            Err(err) => tracing::warn!(error = %err, "cannot give back held jobs"),
        }
    }
}

#[async_trait]
impl Consumer for EmbeddedConsumer {
    async fn next(&mut self) -> Result<Delivery, QueueError> {
        loop {
            if self.cancelled {
                return Err(QueueError("the consumer was cancelled".into()));
            }
            if let Some(claimed) = self.buffer.pop_front() {
                return Ok(Delivery {
                    body: claimed.payload.into_bytes(),
                    redelivered: claimed.deliveries > 1,
                    origin: format!("jobs ({})", claimed.kind),
                    settle: Box::new(EmbeddedSettle {
                        db: self.db.clone(),
                        wake: self.wake.clone(),
                        id: claimed.id,
                        deliveries: claimed.deliveries,
                        held: self.held.clone(),
                        settled: self.settled.clone(),
                    }),
                });
            }
            let settled = self.settled.notified();
            let room = self
                .prefetch
                .saturating_sub(self.held.load(Ordering::SeqCst));
            if room == 0 {
                settled.await;
                continue;
            }
            // Registered before looking, so a publish in between is not missed.
            let woken = self.wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let claimed = self.claim(room).await?;
            if !claimed.is_empty() {
                self.held.fetch_add(claimed.len(), Ordering::SeqCst);
                self.buffer.extend(claimed);
                continue;
            }
            let wait = match self.next_visible().await? {
                Some(at) => {
                    Duration::from_millis(u64::try_from(at - now_ms()).unwrap_or(0)).min(POLL)
                }
                None => POLL,
            };
            tokio::select! {
                () = woken => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    async fn cancel(&mut self) {
        self.cancelled = true;
        let unstarted: Vec<i64> = self.buffer.drain(..).map(|claimed| claimed.id).collect();
        if !unstarted.is_empty() {
            self.held.fetch_sub(unstarted.len(), Ordering::SeqCst);
            self.release(Some(unstarted)).await;
        }
    }

    async fn close(mut self: Box<Self>) {
        if let Some((task, stop)) = self.renewing.take() {
            stop.cancel();
            let _ = task.await;
        }
        // Jobs still held were not finished (the drain timed out): back to the queue.
        self.release(None).await;
    }
}

/// Settles one claimed job, by its id and the delivery that claimed it (a job whose lease
/// ran out and that another consumer took is no longer this delivery's to settle).
struct EmbeddedSettle {
    db: Arc<Db>,
    wake: Arc<Notify>,
    id: i64,
    deliveries: i64,
    held: Arc<AtomicUsize>,
    settled: Arc<Notify>,
}

impl EmbeddedSettle {
    /// Deletes the job, with every other settled job of the transaction.
    async fn delete(&self) -> Result<(), QueueError> {
        let mut rows = Rows::default();
        rows.settled(self.id, self.deliveries);
        self.db.writer.write_rows(rows).await.map_err(unavailable)
    }
}

impl Drop for EmbeddedSettle {
    fn drop(&mut self) {
        self.held.fetch_sub(1, Ordering::SeqCst);
        self.settled.notify_one();
    }
}

#[async_trait]
impl Settle for EmbeddedSettle {
    async fn ack(&self) -> Result<(), QueueError> {
        self.delete().await
    }

    async fn requeue(&self) -> Result<(), QueueError> {
        let (id, deliveries) = (self.id, self.deliveries);
        self.db
            .writer
            .write(move |connection| {
                Box::pin(async move {
                    sqlx::query(
                        "UPDATE jobs SET lease_owner = NULL, visible_at = ?3
                         WHERE id = ?1 AND deliveries = ?2 AND state = 'ready'",
                    )
                    .bind(id)
                    .bind(deliveries)
                    .bind(now_ms())
                    .execute(connection)
                    .await
                    .map(drop)
                })
            })
            .await
            .map_err(unavailable)?;
        self.wake.notify_waiters();
        Ok(())
    }

    async fn reject(&self) -> Result<(), QueueError> {
        self.delete().await
    }

    async fn retry_later(&self, job: &Job, delay: Duration) -> Result<(), QueueError> {
        insert_job(&self.db, &self.wake, job, now_ms() + millis(delay), None).await
    }

    async fn dead_letter(&self, job: &Job, error: &str, attempts: i32) -> Result<(), QueueError> {
        let dead = Some((error.to_owned(), attempts));
        insert_job(&self.db, &self.wake, job, now_ms(), dead).await
    }
}

/// A replay session over one kind's dead letters: takes each letter that was dead when
/// the session began once, in order; letters stay where they are until forwarded or
/// discarded.
struct EmbeddedDeadLetters {
    db: Arc<Db>,
    wake: Arc<Notify>,
    kind: String,
    /// The last letter taken.
    after: i64,
    /// The newest letter when the session began.
    until: i64,
}

#[async_trait]
impl DeadLetters for EmbeddedDeadLetters {
    async fn count(&mut self) -> Result<u64, QueueError> {
        let count: i64 =
            sqlx::query_scalar("SELECT count(*) FROM jobs WHERE state = 'dead' AND kind = ?1")
                .bind(&self.kind)
                .fetch_one(&self.db.readers)
                .await
                .map_err(|err| unavailable(err.into()))?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    async fn take(&mut self) -> Result<Option<DeadLetter>, QueueError> {
        let letter: Option<(i64, String)> = sqlx::query_as(
            "SELECT id, payload FROM jobs WHERE state = 'dead' AND kind = ?1
                AND id > ?2 AND id <= ?3
             ORDER BY id LIMIT 1",
        )
        .bind(&self.kind)
        .bind(self.after)
        .bind(self.until)
        .fetch_optional(&self.db.readers)
        .await
        .map_err(|err| unavailable(err.into()))?;
        Ok(letter.map(|(id, payload)| {
            self.after = id;
            DeadLetter {
                body: payload.into_bytes(),
                tag: u64::try_from(id).unwrap_or(0),
            }
        }))
    }

    async fn forward(
        &mut self,
        letters: Vec<(DeadLetter, Job)>,
    ) -> Result<(), (usize, QueueError)> {
        let rows: Vec<Value> = letters
            .iter()
            .map(|(letter, job)| json!({"id": letter.tag, "payload": payload(job)}))
            .collect();
        let rows = Value::from(rows).to_string();
        self.db
            .writer
            .write(move |connection| {
                Box::pin(async move {
                    sqlx::query(
                        "UPDATE jobs SET state = 'ready', visible_at = ?2, lease_owner = NULL,
                            deliveries = 0, attempts = 0, error = NULL,
                            payload = (SELECT value ->> 'payload' FROM json_each(?1)
                                WHERE value ->> 'id' = jobs.id)
                         WHERE state = 'dead'
                            AND id IN (SELECT value ->> 'id' FROM json_each(?1))",
                    )
                    .bind(rows)
                    .bind(now_ms())
                    .execute(connection)
                    .await
                    .map(drop)
                })
            })
            .await
            .map_err(|err| (0, unavailable(err)))?;
        self.wake.notify_waiters();
        Ok(())
    }

    async fn put_back(&mut self, _letter: DeadLetter) -> Result<(), QueueError> {
        Ok(())
    }

    async fn discard(&mut self, letter: DeadLetter) -> Result<(), QueueError> {
        let id = i64::try_from(letter.tag).unwrap_or(0);
        self.db
            .writer
            .write(move |connection| {
                Box::pin(async move {
                    sqlx::query("DELETE FROM jobs WHERE id = ?1 AND state = 'dead'")
                        .bind(id)
                        .execute(connection)
                        .await
                        .map(drop)
                })
            })
            .await
            .map_err(unavailable)
    }

    async fn close(self: Box<Self>) {}
}
