//! The job queue on RabbitMQ ([`RabbitQueue`]): topology, publishing with confirms,
//! consuming, delays between attempts and dead letters; and, for broker outages, the
//! [`outbox`] in PostgreSQL (this backend always pairs with the PostgreSQL store). A
//! `Process` call's jobs are published, then their runs handed to the run recorder.
//!
//! # Queues, per task kind
//! - `<prefix>.<kind>`: the work queue, durable, fed through the default exchange.
//! - `<prefix>.<kind>.retry.<ms>`: delay queues, where a job waits for its next attempt.
//!   One per power-of-two bucket of milliseconds, declared when first needed, each
//!   dead-lettering to the work queue. A job waits in the bucket at or above its wait, with
//!   the wait as per-message expiry; when that passes, RabbitMQ moves it back to the work
//!   queue. RabbitMQ expires messages only at the head of a queue, so a job can wait behind
//!   a longer one of its bucket: bucketing keeps that under twice its own wait. No broker
//!   plugin is needed.
//! - `<prefix>.<kind>.dead`: the dead-letter queue, durable: jobs that will not be tried
//!   again, with the headers `x-postsub-error` (why) and `x-postsub-attempts`.
//!
//! Messages are persistent and carry the run id as message id. A publish counts only once
//! the broker confirms it, so a job reported as queued is on disk in RabbitMQ; it is
//! mandatory, so a queue deleted under a running process is an error (and is declared
//! again on the next publish), not a job silently dropped.
//!
//! Connections are made lazily and remade after a failure (by the next publish, or by the
//! worker's reconnect loop); queues are declared on first use on each connection.
//! `Process` publishes on one connection, a worker's retries and dead letters go out on
//! another, so a busy worker does not slow `Process` down.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex as SyncMutex},
    time::Duration,
};

use arc_swap::ArcSwapOption;
use async_trait::async_trait;
use chrono::Utc;
use futures_util::{
    StreamExt,
    future::join_all,
    stream::{SelectAll, select_all},
};
use lapin::{
    Acker, BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, Consumer,
    message::Delivery,
    options::{
        BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicGetOptions,
        BasicNackOptions, BasicPublishOptions, BasicQosOptions, BasicRejectOptions,
        ConfirmSelectOptions, QueueDeclareOptions,
    },
    types::{AMQPValue, FieldTable},
};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use self::outbox::Outbox;
use super::{DeadLetter, JobQueue, KindStats, NewJob, QueueError};
use crate::{job::Job, recorder::Recorder};

pub mod outbox;

/// Why a RabbitMQ operation did not go through.
#[derive(Debug, thiserror::Error)]
pub enum RabbitError {
    /// The broker could not be reached or the connection broke.
    #[error("RabbitMQ is unavailable: {0}")]
    Unavailable(#[from] lapin::Error),
    /// The broker refused to take the message.
    #[error("RabbitMQ did not confirm the message (nack)")]
    Nacked,
    /// The queue does not exist (deleted while this process ran); it is declared again on
    /// the next publish.
    #[error("RabbitMQ has no queue `{0}`")]
    Unroutable(String),
}

/// A queue of one task kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Destination<'a> {
    /// The kind's work queue.
    Work(&'a str),
    /// The kind's delay queue for waits up to this many milliseconds (a power of two).
    Retry(&'a str, u64),
    /// The kind's dead-letter queue.
    Dead(&'a str),
}

/// The delay-queue bucket of a wait: the power of two of milliseconds at or above it.
fn retry_bucket(delay: Duration) -> u64 {
    (delay.as_millis() as u64).max(1).next_power_of_two()
}

impl From<RabbitError> for QueueError {
    fn from(err: RabbitError) -> Self {
        QueueError(err.to_string())
    }
}

impl From<lapin::Error> for QueueError {
    fn from(err: lapin::Error) -> Self {
        RabbitError::from(err).into()
    }
}

/// Checks an AMQP URL the way the client will read it, so a typo is an error at start-up
/// rather than an outage at the first publish.
pub fn parse_amqp_url(url: &str) -> Result<String, String> {
    url.parse::<lapin::uri::AMQPUri>()
        .map(|_| url.to_owned())
        .map_err(|err| format!("not an AMQP URL ({err})"))
}

/// Names and connection settings of the queues.
#[derive(Debug, Clone)]
pub struct QueueSettings {
    /// AMQP URL, vhost included.
    pub url: String,
    /// Prefix of every queue name, so deployments (and tests) can share a vhost.
    pub prefix: String,
    /// Task kinds to declare queues for.
    pub kinds: Vec<String>,
    /// Work and dead-letter queues are quorum queues. Delay queues stay classic: they hold
    /// jobs briefly and need per-message expiry.
    pub quorum: bool,
}

impl QueueSettings {
    /// The work queue of a task kind.
    pub fn queue_name(&self, kind: &str) -> String {
        self.name(Destination::Work(kind))
    }

    /// The dead-letter queue of a task kind.
    pub fn dead_queue_name(&self, kind: &str) -> String {
        self.name(Destination::Dead(kind))
    }

    fn name(&self, destination: Destination<'_>) -> String {
        let prefix = &self.prefix;
        match destination {
            Destination::Work(kind) => format!("{prefix}.{kind}"),
            Destination::Retry(kind, bucket) => format!("{prefix}.{kind}.retry.{bucket}"),
            Destination::Dead(kind) => format!("{prefix}.{kind}.dead"),
        }
    }

    async fn connect(&self) -> Result<Connection, lapin::Error> {
        let properties = ConnectionProperties::default()
            .with_connection_name(format!("postsub-{}", std::process::id()).into());
        Connection::connect(&self.url, properties).await
    }

    /// Declares one queue (durable; delay queues dead-letter to their work queue) and
    /// returns it, with the count of messages it holds.
    async fn declare(
        &self,
        channel: &Channel,
        destination: Destination<'_>,
    ) -> Result<lapin::Queue, lapin::Error> {
        let mut arguments = FieldTable::default();
        if self.quorum && !matches!(destination, Destination::Retry(..)) {
            arguments.insert(
                "x-queue-type".into(),
                AMQPValue::LongString("quorum".into()),
            );
        }
        if let Destination::Retry(kind, _) = destination {
            arguments.insert(
                "x-dead-letter-exchange".into(),
                AMQPValue::LongString("".into()),
            );
            arguments.insert(
                "x-dead-letter-routing-key".into(),
                AMQPValue::LongString(self.queue_name(kind).into()),
            );
        }
        channel
            .queue_declare(
                self.name(destination).into(),
                QueueDeclareOptions {
                    durable: true,
                    ..QueueDeclareOptions::default()
                },
                arguments,
            )
            .await
    }
}

/// The properties of a job message: persistent, JSON, the run id as message id.
fn job_properties(job: &Job) -> BasicProperties {
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
        .with_message_id(job.run_id.to_string().into())
        .with_timestamp(job.queued_at.timestamp().max(0) as u64)
}

/// Publishes one message to `queue` through the default exchange and waits for the
/// broker's confirm (the channel must be in confirm mode).
async fn send(
    channel: &Channel,
    queue: &str,
    body: &[u8],
    properties: BasicProperties,
) -> Result<(), RabbitError> {
    let confirm = channel
        .basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions {
                mandatory: true,
                ..BasicPublishOptions::default()
            },
            body,
            properties,
        )
        .await?;
    match confirm.await? {
        Confirmation::Ack(None) => Ok(()),
        Confirmation::Ack(Some(_returned)) => Err(RabbitError::Unroutable(queue.to_owned())),
        Confirmation::Nack(_) | Confirmation::NotRequested => Err(RabbitError::Nacked),
    }
}

/// Publishes jobs over one shared connection and confirm-mode channel.
pub struct Publisher {
    settings: QueueSettings,
    channel: ArcSwapOption<Channel>,
    /// Held while (re)connecting, so concurrent publishes make one connection, not many.
    connecting: Mutex<Option<Connection>>,
    /// Queues declared on the current channel, by name.
    declared: SyncMutex<HashSet<String>>,
}

impl Publisher {
    /// A publisher that connects on first use.
    pub fn new(settings: QueueSettings) -> Self {
        Self {
            settings,
            channel: ArcSwapOption::empty(),
            connecting: Mutex::new(None),
            declared: SyncMutex::default(),
        }
    }

    /// Connects now, so start-up fails early on a bad URL.
    pub async fn connect(&self) -> Result<(), RabbitError> {
        self.channel().await.map(drop)
    }

    async fn channel(&self) -> Result<Arc<Channel>, RabbitError> {
        if let Some(channel) = self.channel.load_full()
            && channel.status().connected()
        {
            return Ok(channel);
        }
        let mut connection = self.connecting.lock().await;
        // Someone else may have reconnected while this call waited for the lock.
        if let Some(channel) = self.channel.load_full()
            && channel.status().connected()
        {
            return Ok(channel);
        }
        if let Some(old) = connection.take() {
            let _ = old.close(200, "reconnecting".into()).await;
        }
        let fresh = self.settings.connect().await?;
        let channel = fresh.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        let channel = Arc::new(channel);
        self.declared_names().clear();
        self.channel.store(Some(channel.clone()));
        *connection = Some(fresh);
        tracing::info!("connected to RabbitMQ for publishing");
        Ok(channel)
    }

    fn declared_names(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.declared.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Publishes to `destination`, declaring it first if this channel has not yet.
    async fn publish_to(
        &self,
        destination: Destination<'_>,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<(), RabbitError> {
        let channel = self.channel().await?;
        let name = self.settings.name(destination);
        if !self.declared_names().contains(&name) {
            self.settings.declare(&channel, destination).await?;
            self.declared_names().insert(name.clone());
        }
        let sent = send(&channel, &name, body, properties).await;
        if let Err(RabbitError::Unroutable(_)) = &sent {
            self.declared_names().remove(&name);
        }
        sent
    }

    /// Publishes a job to its kind's work queue and waits for the broker's confirm.
    pub async fn publish(&self, job: &Job) -> Result<(), RabbitError> {
        self.publish_to(
            Destination::Work(&job.kind),
            &job.encode(),
            job_properties(job),
        )
        .await
    }

    /// Publishes a job to wait `delay` in a delay queue, after which RabbitMQ moves it back
    /// to the work queue.
    pub async fn publish_delayed(&self, job: &Job, delay: Duration) -> Result<(), RabbitError> {
        let delay = delay.max(Duration::from_millis(1));
        let properties = job_properties(job).with_expiration(delay.as_millis().to_string().into());
        self.publish_to(
            Destination::Retry(&job.kind, retry_bucket(delay)),
            &job.encode(),
            properties,
        )
        .await
    }

    /// Publishes a job to its kind's dead-letter queue, saying why it died and after how
    /// many attempts.
    pub async fn publish_dead(
        &self,
        job: &Job,
        error: &str,
        attempts: i32,
    ) -> Result<(), RabbitError> {
        let mut headers = FieldTable::default();
        headers.insert(
            "x-postsub-error".into(),
            AMQPValue::LongString(error.into()),
        );
        headers.insert("x-postsub-attempts".into(), AMQPValue::LongInt(attempts));
        let properties = job_properties(job).with_headers(headers);
        self.publish_to(Destination::Dead(&job.kind), &job.encode(), properties)
            .await
    }

    /// Opens a channel of its own (connecting first if needed), in confirm mode.
    async fn own_channel(&self) -> Result<Channel, RabbitError> {
        self.channel().await?;
        let channel = match self.connecting.lock().await.as_ref() {
            Some(connection) => connection.create_channel().await?,
            None => {
                return Err(RabbitError::Unavailable(lapin::Error::from(
                    lapin::ErrorKind::InvalidConnectionState(lapin::ConnectionState::Closed),
                )));
            }
        };
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(channel)
    }

    /// Closes the connection.
    pub async fn close(&self) {
        // The channel first: a connection closed under an open channel makes lapin log the
        // channel's end as an error.
        if let Some(channel) = self.channel.swap(None) {
            let _ = channel.close(200, "shutting down".into()).await;
        }
        if let Some(connection) = self.connecting.lock().await.take() {
            let _ = connection.close(200, "shutting down".into()).await;
        }
    }
}

/// The job queue on RabbitMQ, with the outbox in PostgreSQL for when the broker is away.
pub struct RabbitQueue {
    settings: QueueSettings,
    /// `Process`'s publishes (and re-queued runs).
    publisher: Arc<Publisher>,
    /// The worker's publishes to delay and dead-letter queues, on a connection of their
    /// own so a busy worker does not slow `Process` down.
    worker_publisher: Arc<Publisher>,
    outbox: Outbox,
    recorder: Recorder,
}

impl RabbitQueue {
    /// The queues of `settings`, keeping jobs in `outbox` while RabbitMQ is away and
    /// recording queued runs with `recorder`. Connects when first used.
    pub fn new(settings: QueueSettings, outbox: Outbox, recorder: Recorder) -> Self {
        Self {
            publisher: Arc::new(Publisher::new(settings.clone())),
            worker_publisher: Arc::new(Publisher::new(settings.clone())),
            settings,
            outbox,
            recorder,
        }
    }

    /// Queue names.
    pub fn settings(&self) -> &QueueSettings {
        &self.settings
    }

    /// Publishes one job of a `Process` call, or keeps it in the outbox while RabbitMQ
    /// does not take it, then records its run.
    async fn enqueue_one(&self, new: NewJob) -> Result<(), QueueError> {
        let NewJob {
            job,
            run,
            release_at,
        } = new;
        let published = match release_at.and_then(|at| (at - Utc::now()).to_std().ok()) {
            Some(wait) => self.publisher.publish_delayed(&job, wait).await,
            None => self.publisher.publish(&job).await,
        };
        if let Err(err) = published {
            // RabbitMQ is away: keep the job in PostgreSQL for the relay.
            self.outbox.keep(&job, release_at).await.map_err(|db| {
                tracing::error!(error = %err, database = %db, run_id = %job.run_id,
                    "neither RabbitMQ nor the outbox took a job");
                QueueError(format!("{err}; the outbox is unavailable too: {db}"))
            })?;
            tracing::warn!(error = %err, run_id = %job.run_id, "RabbitMQ unavailable; job kept in the outbox");
            metrics::counter!("postsub_jobs_kept_total", "kind" => job.kind.clone()).increment(1);
        } else {
            metrics::counter!("postsub_jobs_queued_total", "kind" => job.kind.clone()).increment(1);
        }
        // Handed over without waiting for the write; one lost at shutdown is only logged.
        if self.recorder.record_queued(run).await.is_err() {
            tracing::warn!("run recorder stopped before a run was recorded");
        }
        Ok(())
    }
}

#[async_trait]
impl JobQueue for RabbitQueue {
    async fn enqueue(&self, jobs: Vec<NewJob>) -> Result<(), QueueError> {
        join_all(jobs.into_iter().map(|new| self.enqueue_one(new)))
            .await
            .into_iter()
            .collect()
    }

    async fn connect(&self) -> Result<(), QueueError> {
        Ok(self.publisher.connect().await?)
    }

    async fn publish(&self, job: &Job) -> Result<(), QueueError> {
        Ok(self.publisher.publish(job).await?)
    }

    async fn consume(&self, prefetch: u16) -> Result<Box<dyn super::Consumer>, QueueError> {
        let consuming = self.settings.consume(prefetch).await?;
        Ok(Box::new(RabbitConsumer {
            tags: consuming.consumers.iter().map(|c| c.tag()).collect(),
            deliveries: select_all(consuming.consumers),
            connection: consuming.connection,
            channel: consuming.channel,
            publisher: self.worker_publisher.clone(),
        }))
    }

    async fn dead_letters(&self, kind: &str) -> Result<Box<dyn super::DeadLetters>, QueueError> {
        Ok(Box::new(RabbitDeadLetters {
            channel: self.publisher.own_channel().await?,
            settings: self.settings.clone(),
            kind: kind.to_owned(),
            held: HashMap::new(),
            next_tag: 0,
        }))
    }

    async fn outbox_size(&self) -> Result<Option<u64>, QueueError> {
        let size = self
            .outbox
            .size()
            .await
            .map_err(|err| QueueError(format!("counting the outbox: {err}")))?;
        Ok(Some(size.max(0) as u64))
    }

    async fn stats(&self) -> Result<Vec<KindStats>, QueueError> {
        let channel = self.publisher.own_channel().await?;
        let mut stats = Vec::with_capacity(self.settings.kinds.len());
        for kind in &self.settings.kinds {
            let work = self
                .settings
                .declare(&channel, Destination::Work(kind))
                .await?;
            let dead = self
                .settings
                .declare(&channel, Destination::Dead(kind))
                .await?;
            // AMQP reports ready messages and consumers; what workers hold unacked, what
            // waits in the delay queues and the age of messages only the management API
            // knows.
            stats.push(KindStats {
                kind: kind.clone(),
                ready: u64::from(work.message_count()),
                in_flight: None,
                waiting: None,
                dead: u64::from(dead.message_count()),
                consumers: Some(u64::from(work.consumer_count())),
                oldest_ready: None,
            });
        }
        let _ = channel.close(200, "counted".into()).await;
        Ok(stats)
    }

    async fn relay(&self, shutdown: CancellationToken) {
        self.outbox
            .clone()
            .relay(self.publisher.clone(), shutdown)
            .await;
    }

    async fn close(&self) {
        self.publisher.close().await;
        self.worker_publisher.close().await;
    }
}

/// A worker's consumers: one channel, one consumer per kind's work queue.
struct RabbitConsumer {
    connection: Connection,
    channel: Channel,
    tags: Vec<lapin::types::ShortString>,
    deliveries: SelectAll<Consumer>,
    publisher: Arc<Publisher>,
}

#[async_trait]
impl super::Consumer for RabbitConsumer {
    async fn next(&mut self) -> Result<super::Delivery, QueueError> {
        match self.deliveries.next().await {
            Some(Ok(delivery)) => Ok(super::Delivery {
                body: delivery.data,
                redelivered: delivery.redelivered,
                origin: delivery.routing_key.to_string(),
                settle: Box::new(RabbitSettle {
                    acker: delivery.acker,
                    publisher: self.publisher.clone(),
                }),
            }),
            Some(Err(err)) => Err(err.into()),
            None => Err(QueueError("RabbitMQ closed the consumers".into())),
        }
    }

    async fn cancel(&mut self) {
        for tag in &self.tags {
            let _ = self
                .channel
                .basic_cancel(tag.clone(), BasicCancelOptions::default())
                .await;
        }
    }

    async fn close(self: Box<Self>) {
        let _ = self.channel.close(200, "worker stopping".into()).await;
        let _ = self.connection.close(200, "worker stopping".into()).await;
    }
}

/// An ack, nack or reject; one the acker had already sent counts as done.
fn settled(result: lapin::Result<bool>) -> Result<(), QueueError> {
    result.map(drop).map_err(QueueError::from)
}

/// Settles a delivery with its acker; moves jobs on with the worker's publisher.
struct RabbitSettle {
    acker: Acker,
    publisher: Arc<Publisher>,
}

#[async_trait]
impl super::Settle for RabbitSettle {
    async fn ack(&self) -> Result<(), QueueError> {
        settled(self.acker.ack(BasicAckOptions::default()).await)
    }

    async fn requeue(&self) -> Result<(), QueueError> {
        let options = BasicNackOptions {
            requeue: true,
            ..BasicNackOptions::default()
        };
        settled(self.acker.nack(options).await)
    }

    async fn reject(&self) -> Result<(), QueueError> {
        settled(
            self.acker
                .reject(BasicRejectOptions { requeue: false })
                .await,
        )
    }

    async fn retry_later(&self, job: &Job, delay: Duration) -> Result<(), QueueError> {
        Ok(self.publisher.publish_delayed(job, delay).await?)
    }

    async fn dead_letter(&self, job: &Job, error: &str, attempts: i32) -> Result<(), QueueError> {
        Ok(self.publisher.publish_dead(job, error, attempts).await?)
    }
}

/// A session on one kind's dead-letter queue, on its own channel. A letter taken is held
/// (unacked) until it is forwarded, put back or discarded; whatever is still held when the
/// session closes, or its connection breaks, RabbitMQ returns to the queue.
struct RabbitDeadLetters {
    channel: Channel,
    settings: QueueSettings,
    kind: String,
    held: HashMap<u64, Delivery>,
    next_tag: u64,
}

impl RabbitDeadLetters {
    fn release(&mut self, letter: &DeadLetter) -> Result<Delivery, QueueError> {
        self.held
            .remove(&letter.tag)
            .ok_or_else(|| QueueError("this dead letter is not held by the session".into()))
    }

    /// Publishes `job` to the work queue in place of `letter`, then lets the letter go.
    async fn forward_one(&mut self, letter: &DeadLetter, job: &Job) -> Result<(), QueueError> {
        send(
            &self.channel,
            &self.settings.queue_name(&self.kind),
            &job.encode(),
            job_properties(job),
        )
        .await?;
        let delivery = self.release(letter)?;
        settled(delivery.acker.ack(BasicAckOptions::default()).await)
    }
}

#[async_trait]
impl super::DeadLetters for RabbitDeadLetters {
    async fn count(&mut self) -> Result<u64, QueueError> {
        let queue = self
            .settings
            .declare(&self.channel, Destination::Dead(&self.kind))
            .await?;
        Ok(u64::from(queue.message_count()))
    }

    async fn take(&mut self) -> Result<Option<DeadLetter>, QueueError> {
        let message = self
            .channel
            .basic_get(
                self.settings.dead_queue_name(&self.kind).into(),
                BasicGetOptions { no_ack: false },
            )
            .await?;
        Ok(message.map(|message| {
            self.next_tag += 1;
            let letter = DeadLetter {
                body: message.delivery.data.clone(),
                tag: self.next_tag,
            };
            self.held.insert(self.next_tag, message.delivery);
            letter
        }))
    }

    async fn forward(
        &mut self,
        letters: Vec<(DeadLetter, Job)>,
    ) -> Result<(), (usize, QueueError)> {
        for (sent, (letter, job)) in letters.iter().enumerate() {
            self.forward_one(letter, job)
                .await
                .map_err(|err| (sent, err))?;
        }
        Ok(())
    }

    /// Puts the letter back at the tail of the queue, as it was (a `basic_get` cannot
    /// leave it in place while the session takes the ones behind it).
    async fn put_back(&mut self, letter: DeadLetter) -> Result<(), QueueError> {
        let delivery = self.release(&letter)?;
        send(
            &self.channel,
            &self.settings.dead_queue_name(&self.kind),
            &delivery.data,
            delivery.properties.clone(),
        )
        .await?;
        settled(delivery.acker.ack(BasicAckOptions::default()).await)
    }

    async fn discard(&mut self, letter: DeadLetter) -> Result<(), QueueError> {
        let delivery = self.release(&letter)?;
        settled(delivery.acker.ack(BasicAckOptions::default()).await)
    }

    async fn close(self: Box<Self>) {
        let _ = self
            .channel
            .close(200, "dead letters replayed".into())
            .await;
    }
}

/// A consuming connection: one channel, one consumer per kind's queue.
struct Consuming {
    connection: Connection,
    channel: Channel,
    consumers: Vec<Consumer>,
}

impl QueueSettings {
    /// Connects, declares every kind's work and dead-letter queues, and starts consuming
    /// the work queues with at most `prefetch` unacknowledged jobs per queue.
    async fn consume(&self, prefetch: u16) -> Result<Consuming, lapin::Error> {
        let connection = self.connect().await?;
        let channel = connection.create_channel().await?;
        for kind in &self.kinds {
            self.declare(&channel, Destination::Work(kind)).await?;
            self.declare(&channel, Destination::Dead(kind)).await?;
        }
        channel
            .basic_qos(prefetch, BasicQosOptions::default())
            .await?;
        let mut consumers = Vec::with_capacity(self.kinds.len());
        for kind in &self.kinds {
            consumers.push(
                channel
                    .basic_consume(
                        self.queue_name(kind).into(),
                        format!("postsub-worker-{kind}-{}", std::process::id()).into(),
                        BasicConsumeOptions::default(),
                        FieldTable::default(),
                    )
                    .await?,
            );
        }
        Ok(Consuming {
            connection,
            channel,
            consumers,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_go_to_the_power_of_two_bucket_at_or_above_them() {
        let bucket = |ms| retry_bucket(Duration::from_millis(ms));
        assert_eq!(
            [bucket(0), bucket(1), bucket(100), bucket(128), bucket(129)],
            [1, 1, 128, 128, 256]
        );
        let settings = QueueSettings {
            url: String::new(),
            prefix: "postsub".into(),
            kinds: vec![],
            quorum: false,
        };
        assert_eq!(
            settings.name(Destination::Retry("webhook", 128)),
            "postsub.webhook.retry.128"
        );
        assert_eq!(settings.dead_queue_name("webhook"), "postsub.webhook.dead");
    }
}
