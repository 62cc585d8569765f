//! Alerts to an operator's webhook: `run.dead`, `run.expired`, `queue.backlog` and
//! `outbox.growing`, signed per Standard Webhooks like the `webhook` task.
//!
//! A storm is one message with a count, not thousands: events are grouped by type and
//! subject (the binding of a run, the kind of a queue, the outbox), and a group sends at
//! most one message per `POSTSUB_ALERT_INTERVAL`. Its first message waits
//! `POSTSUB_ALERT_GROUP_WAIT` to gather what comes with it (as Alertmanager's `group_wait`
//! does); what arrives after a message goes in the next one, an interval later. Sending is
//! best effort and never holds up the worker or `Process`: events beyond what the sender
//! holds are dropped and counted (`postsub_alerts_dropped_total`).
//!
//! The worker reports the runs it dead-letters or drops as expired; the proxy's
//! [`watch_queue`] looks at the queue every few seconds, sets the queue gauges of
//! `/metrics`, and reports a kind whose oldest ready job waited past
//! `POSTSUB_ALERT_BACKLOG_AGE` (RabbitMQ does not tell the age of its messages over AMQP:
//! there, a kind with ready jobs and no consumer for that long) and an outbox that grows.
//! Grouping is per process.

use std::{collections::HashMap, sync::Arc, time::Duration};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use clap::Args;
use postsub::Secret;
use serde_json::{Map, Value, json};
use tokio::{
    sync::mpsc,
    task::{JoinHandle, JoinSet},
    time::Instant,
};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{job::Job, queue::JobQueue, recorder::Recorder};

/// Events the sender holds before it drops them.
const CAPACITY: usize = 10_000;
/// Run ids a message lists at most.
const SAMPLE: usize = 20;
/// How long one POST may take.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown waits for the last messages.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Where alerts go and how often.
#[derive(Debug, Clone, Args)]
pub struct AlertSettings {
    /// A URL that gets a signed JSON POST for `run.dead`, `run.expired`, `queue.backlog`
    /// and `outbox.growing`, at most once per binding or kind per interval.
    #[arg(long, env = "POSTSUB_ALERT_WEBHOOK")]
    pub alert_webhook: Option<String>,
    /// The Standard Webhooks secret (`whsec_<base64>`) alerts are signed with; required
    /// with an alert webhook.
    #[arg(long, env = "POSTSUB_ALERT_SECRET", hide_env_values = true)]
    pub alert_secret: Option<Secret>,
    /// At most one message per binding (runs), kind (queues) or outbox in this time.
    #[arg(long, env = "POSTSUB_ALERT_INTERVAL", default_value = "5m", value_parser = humantime::parse_duration)]
    pub alert_interval: Duration,
    /// How long the first message of a group waits for more of the same.
    #[arg(long, env = "POSTSUB_ALERT_GROUP_WAIT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub alert_group_wait: Duration,
    /// A kind whose oldest ready job waited longer than this is a `queue.backlog`.
    #[arg(long, env = "POSTSUB_ALERT_BACKLOG_AGE", default_value = "10m", value_parser = humantime::parse_duration)]
    pub alert_backlog_age: Duration,
    /// A URL that gets the `run.expired` alerts only (signed when an alert secret is set);
    /// kept from before alerts existed.
    #[arg(long, env = "POSTSUB_EXPIRY_WEBHOOK")]
    pub expiry_webhook: Option<String>,
}

/// What an alert is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AlertType {
    /// An async run used up its attempts or failed for good.
    RunDead,
    /// A job was dropped past its binding's `expires_after`.
    RunExpired,
    /// A kind's oldest ready job waited too long (no worker, or too few).
    QueueBacklog,
    /// Jobs pile up in RabbitMQ's outbox (the broker is away).
    OutboxGrowing,
}

impl AlertType {
    /// The `type` field of the message.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertType::RunDead => "run.dead",
            AlertType::RunExpired => "run.expired",
            AlertType::QueueBacklog => "queue.backlog",
            AlertType::OutboxGrowing => "outbox.growing",
        }
    }
}

struct Event {
    kind: AlertType,
    /// What the event is grouped by besides its type.
    subject: String,
    at: DateTime<Utc>,
    run_id: Option<Uuid>,
    details: Map<String, Value>,
}

/// Reports events to the alert task; cheap to clone. Disabled, it only drops them.
#[derive(Clone)]
pub struct Alerts {
    events: Option<mpsc::Sender<Event>>,
    backlog_age: Duration,
}

/// The running alert task.
pub struct AlertTask {
    task: JoinHandle<()>,
    stop: CancellationToken,
}

impl AlertTask {
    /// Sends what is pending and stops.
    pub async fn finish(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// One place messages go.
struct Sink {
    url: reqwest::Url,
    key: Option<Vec<u8>>,
    /// `None`: every type.
    only: Option<AlertType>,
}

impl Alerts {
    /// Alerts that go nowhere (no webhook set).
    pub fn disabled() -> Self {
        Self {
            events: None,
            backlog_age: Duration::from_secs(600),
        }
    }

    /// Starts the alert task of `settings`; disabled when they name no webhook. A URL that
    /// does not parse, or an alert webhook without a secret, is an error.
    pub fn start(settings: &AlertSettings) -> anyhow::Result<(Self, Option<AlertTask>)> {
        let key = settings
            .alert_secret
            .as_ref()
            .map(|secret| postsub_tasks::webhook::signing_key(secret.expose()))
            .transpose()
            .map_err(|err| anyhow::anyhow!("POSTSUB_ALERT_SECRET: {err}"))?;
        let mut sinks = Vec::new();
        if let Some(url) = &settings.alert_webhook {
            let url = reqwest::Url::parse(url).context("POSTSUB_ALERT_WEBHOOK is not a URL")?;
            anyhow::ensure!(
                key.is_some(),
                "POSTSUB_ALERT_WEBHOOK needs POSTSUB_ALERT_SECRET (whsec_<base64>): alerts are \
                 signed, so the receiver can tell them from anyone's POST"
            );
            sinks.push(Sink {
                url,
                key: key.clone(),
                only: None,
            });
        }
        if let Some(url) = &settings.expiry_webhook {
            let url = reqwest::Url::parse(url).context("--expiry-webhook is not a URL")?;
            sinks.push(Sink {
                url,
                key,
                only: Some(AlertType::RunExpired),
            });
        }
        if sinks.is_empty() {
            return Ok((
                Self {
                    backlog_age: settings.alert_backlog_age,
                    ..Self::disabled()
                },
                None,
            ));
        }
        let (events, receiver) = mpsc::channel(CAPACITY);
        let stop = CancellationToken::new();
        let grouping = Grouping {
            interval: settings.alert_interval,
            group_wait: settings.alert_group_wait,
        };
        let task = tokio::spawn(send_alerts(
            receiver,
            Arc::new(sinks),
            grouping,
            stop.clone(),
        ));
        Ok((
            Self {
                events: Some(events),
                backlog_age: settings.alert_backlog_age,
            },
            Some(AlertTask { task, stop }),
        ))
    }

    fn emit(&self, event: Event) {
        if let Some(events) = &self.events
            && events.try_send(event).is_err()
        {
            metrics::counter!("postsub_alerts_dropped_total").increment(1);
        }
    }

    fn run_event(&self, kind: AlertType, job: &Job, mut details: Map<String, Value>) {
        details.extend([
            ("run_id".to_owned(), json!(job.run_id)),
            ("binding_id".to_owned(), json!(job.binding_id)),
            ("form_id".to_owned(), json!(job.submission.form_id)),
            (
                "submission_id".to_owned(),
                json!(job.submission.submission_id),
            ),
            ("kind".to_owned(), json!(job.kind)),
        ]);
        self.emit(Event {
            kind,
            subject: job.binding_id.to_string(),
            at: Utc::now(),
            run_id: Some(job.run_id),
            details,
        });
    }

    /// A run went to the dead letters after `attempts` attempts, the last with `error`.
    pub fn run_dead(&self, job: &Job, attempts: i32, error: &str) {
        let details = Map::from_iter([
            ("attempts".to_owned(), json!(attempts)),
            ("error".to_owned(), json!(error)),
        ]);
        self.run_event(AlertType::RunDead, job, details);
    }

    /// A job was dropped: its binding's `expires_after` passed at `expired_at`.
    pub fn run_expired(&self, job: &Job, expired_at: DateTime<Utc>) {
        let details = Map::from_iter([("expired_at".to_owned(), json!(expired_at))]);
        self.run_event(AlertType::RunExpired, job, details);
    }
}

#[derive(Clone, Copy)]
struct Grouping {
    interval: Duration,
    group_wait: Duration,
}

/// What a group gathered since its last message.
struct Pending {
    count: u64,
    first_at: DateTime<Utc>,
    last: Event,
    run_ids: Vec<Uuid>,
}

#[derive(Default)]
struct Group {
    pending: Option<Pending>,
    last_sent: Option<Instant>,
    /// When `pending` goes out.
    due: Option<Instant>,
}

impl Group {
    fn add(&mut self, event: Event, grouping: Grouping, now: Instant) {
        match &mut self.pending {
            Some(pending) => {
                pending.count += 1;
                if let Some(run_id) = event.run_id
                    && pending.run_ids.len() < SAMPLE
                {
                    pending.run_ids.push(run_id);
                }
                pending.last = event;
            }
            None => {
                self.pending = Some(Pending {
                    count: 1,
                    first_at: event.at,
                    run_ids: event.run_id.into_iter().collect(),
                    last: event,
                });
            }
        }
        if self.due.is_none() {
            let earliest = now + grouping.group_wait;
            self.due = Some(match self.last_sent {
                Some(sent) => earliest.max(sent + grouping.interval),
                None => earliest,
            });
        }
    }
}

impl Pending {
    fn message(self) -> Value {
        let mut message = Map::new();
        message.insert("type".to_owned(), json!(self.last.kind.as_str()));
        message.insert("count".to_owned(), json!(self.count));
        message.insert("first_at".to_owned(), json!(self.first_at));
        message.insert("last_at".to_owned(), json!(self.last.at));
        if !self.run_ids.is_empty() {
            message.insert("run_ids".to_owned(), json!(self.run_ids));
        }
        // The latest event's own fields, at the top (`run_id`, `kind`, `error`, …).
        message.extend(self.last.details);
        Value::Object(message)
    }
}

async fn send_alerts(
    mut events: mpsc::Receiver<Event>,
    sinks: Arc<Vec<Sink>>,
    grouping: Grouping,
    stop: CancellationToken,
) {
    let client = reqwest::Client::new();
    let mut groups: HashMap<(AlertType, String), Group> = HashMap::new();
    let mut sending = JoinSet::new();
    loop {
        let next_due = groups.values().filter_map(|group| group.due).min();
        let wait = async {
            match next_due {
                Some(due) => tokio::time::sleep_until(due).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            event = events.recv() => match event {
                Some(event) => groups
                    .entry((event.kind, event.subject.clone()))
                    .or_default()
                    .add(event, grouping, Instant::now()),
                None => break,
            },
            () = wait => {
                let now = Instant::now();
                for group in groups.values_mut() {
                    if group.due.is_some_and(|due| due <= now)
                        && let Some(pending) = group.pending.take()
                    {
                        group.due = None;
                        group.last_sent = Some(now);
                        send(&client, &sinks, pending, &mut sending);
                    }
                }
                // Quiet groups are forgotten once their interval is over.
                groups.retain(|_, group| {
                    group.pending.is_some()
                        || group.last_sent.is_some_and(|sent| now < sent + grouping.interval)
                });
                while sending.try_join_next().is_some() {}
            }
            () = stop.cancelled() => break,
        }
    }
    // Shutdown: what is pending goes now.
    for group in groups.into_values() {
        if let Some(pending) = group.pending {
            send(&client, &sinks, pending, &mut sending);
        }
    }
    let _ = tokio::time::timeout(FLUSH_TIMEOUT, sending.join_all()).await;
}

/// POSTs one message to every sink that takes its type, in the background.
fn send(
    client: &reqwest::Client,
    sinks: &Arc<Vec<Sink>>,
    pending: Pending,
    sending: &mut JoinSet<()>,
) {
    let kind = pending.last.kind;
    let count = pending.count;
    let body = pending.message().to_string();
    for (index, sink) in sinks.iter().enumerate() {
        if sink.only.is_some_and(|only| only != kind) {
            continue;
        }
        let (client, sinks, body) = (client.clone(), sinks.clone(), body.clone());
        sending.spawn(async move {
            let sink = &sinks[index];
            let request = client.post(sink.url.clone()).timeout(SEND_TIMEOUT);
            let request = match &sink.key {
                Some(key) => {
                    let id = format!("alert_{}", Uuid::new_v4().simple());
                    postsub_tasks::webhook::signed(request, key, &id, body)
                }
                None => request
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body),
            };
            let sent = request
                .send()
                .await
                .and_then(reqwest::Response::error_for_status);
            match sent {
                Ok(_) => {
                    metrics::counter!("postsub_alerts_sent_total", "type" => kind.as_str())
                        .increment(1);
                }
                Err(err) => {
                    tracing::warn!(error = %err, url = %sink.url, alert = kind.as_str(), count,
                        "an alert was not delivered");
                }
            }
        });
    }
}

/// Looks at the queue every few seconds until `shutdown`: sets the gauges
/// `postsub_queue_jobs{kind,state}`, `postsub_queue_oldest_ready_seconds{kind}`,
/// `postsub_outbox_jobs` and `postsub_recorder_backlog`, and reports backlogs and a
/// growing outbox to `alerts`.
pub async fn watch_queue(
    queue: Arc<dyn JobQueue>,
    recorder: Recorder,
    alerts: Alerts,
    shutdown: CancellationToken,
) {
    let every = (alerts.backlog_age / 4).clamp(Duration::from_millis(100), Duration::from_secs(15));
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut outbox_before = 0;
    // Kinds whose queue cannot tell the age of its jobs (RabbitMQ over AMQP): since when
    // they hold ready jobs and no worker consumes them.
    let mut unconsumed_since: HashMap<String, Instant> = HashMap::new();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        metrics::gauge!("postsub_recorder_backlog").set(recorder.backlog() as f64);
        match queue.stats().await {
            Ok(stats) => {
                for kind in stats {
                    let gauge = |state: &'static str, value: Option<u64>| {
                        if let Some(value) = value {
                            metrics::gauge!("postsub_queue_jobs", "kind" => kind.kind.clone(),
                                "state" => state)
                            .set(value as f64);
                        }
                    };
                    gauge("ready", Some(kind.ready));
                    gauge("in_flight", kind.in_flight);
                    gauge("waiting", kind.waiting);
                    gauge("dead", Some(kind.dead));
                    let waited = match kind.oldest_ready {
                        Some(oldest) => {
                            metrics::gauge!("postsub_queue_oldest_ready_seconds",
                                "kind" => kind.kind.clone())
                            .set(oldest.as_secs_f64());
                            oldest
                        }
                        None if kind.ready > 0 && kind.consumers == Some(0) => unconsumed_since
                            .entry(kind.kind.clone())
                            .or_insert_with(Instant::now)
                            .elapsed(),
                        None => {
                            unconsumed_since.remove(&kind.kind);
                            Duration::ZERO
                        }
                    };
                    if waited > alerts.backlog_age {
                        alerts.emit(Event {
                            kind: AlertType::QueueBacklog,
                            subject: kind.kind.clone(),
                            at: Utc::now(),
                            run_id: None,
                            details: Map::from_iter([
                                ("kind".to_owned(), json!(kind.kind)),
                                ("ready".to_owned(), json!(kind.ready)),
                                // Without the age (RabbitMQ), how long nobody consumed them.
                                (
                                    "oldest_ready_seconds".to_owned(),
                                    json!(kind.oldest_ready.map(|age| age.as_secs())),
                                ),
                                ("waited_seconds".to_owned(), json!(waited.as_secs())),
                                (
                                    "threshold_seconds".to_owned(),
                                    json!(alerts.backlog_age.as_secs()),
                                ),
                                ("consumers".to_owned(), json!(kind.consumers)),
                            ]),
                        });
                    }
                }
            }
            Err(err) => tracing::debug!(error = %err, "queue figures unavailable"),
        }
        match queue.outbox_size().await {
            Ok(Some(size)) => {
                metrics::gauge!("postsub_outbox_jobs").set(size as f64);
                if size > outbox_before {
                    alerts.emit(Event {
                        kind: AlertType::OutboxGrowing,
                        subject: "outbox".to_owned(),
                        at: Utc::now(),
                        run_id: None,
                        details: Map::from_iter([
                            ("size".to_owned(), json!(size)),
                            ("previous_size".to_owned(), json!(outbox_before)),
                        ]),
                    });
                }
                outbox_before = size;
            }
            Ok(None) => {}
            Err(err) => tracing::debug!(error = %err, "outbox size unavailable"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(run: u128) -> Event {
        Event {
            kind: AlertType::RunDead,
            subject: "b".into(),
            at: Utc::now(),
            run_id: Some(Uuid::from_u128(run)),
            details: Map::from_iter([("error".to_owned(), json!(format!("e{run}")))]),
        }
    }

    #[test]
    fn a_group_sends_after_its_wait_then_once_per_interval() {
        let grouping = Grouping {
            interval: Duration::from_secs(300),
            group_wait: Duration::from_secs(30),
        };
        let start = Instant::now();
        let mut group = Group::default();
        group.add(event(1), grouping, start);
        group.add(event(2), grouping, start + Duration::from_secs(1));
        assert_eq!(group.due, Some(start + Duration::from_secs(30)));
        let message = group.pending.take().unwrap().message();
        assert_eq!(message["count"], 2);
        assert_eq!(message["error"], "e2", "the latest event's fields");
        assert_eq!(message["run_ids"].as_array().unwrap().len(), 2);
        group.last_sent = Some(start + Duration::from_secs(30));
        group.due = None;
        group.add(event(3), grouping, start + Duration::from_secs(40));
        assert_eq!(
            group.due,
            Some(start + Duration::from_secs(330)),
            "the next message waits for the interval"
        );
    }
}
