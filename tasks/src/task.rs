//! The task interface: [`TaskBase`] and the types a task receives and returns.

use std::{collections::BTreeMap, fmt, sync::Arc, time::Duration};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::TaskState;

/// Where a binding runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Inline in `Process`; the result goes back with the submit response.
    Sync,
    /// Queued and run by a worker, with retries.
    Async,
}

impl Mode {
    /// The name used in the database, the CLI and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Sync => "sync",
            Mode::Async => "async",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Mode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "sync" => Ok(Mode::Sync),
            "async" => Ok(Mode::Async),
            other => Err(format!(
                "unknown mode `{other}`: expected `sync` or `async`"
            )),
        }
    }
}

/// What happened to a submission: the event a `Process` call reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Event {
    /// The submission was stored (a 2xx POST): the event every binding takes by default.
    #[default]
    Created,
    /// Its answers were replaced or changed (a 2xx PUT or PATCH).
    Updated,
    /// It was deleted (a 2xx DELETE); `answers` are its last ones.
    Deleted,
}

impl Event {
    /// Every event, in the order they are listed to people.
    pub const ALL: [Event; 3] = [Event::Created, Event::Updated, Event::Deleted];

    /// The name used in the API, the database, the CLI and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Created => "created",
            Event::Updated => "updated",
            Event::Deleted => "deleted",
        }
    }

    /// Whether this is [`Event::Created`] (serde skips the field then, so a job of a new
    /// submission reads as it did before events existed).
    pub fn is_created(&self) -> bool {
        *self == Event::Created
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Event {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Event::ALL
            .into_iter()
            .find(|event| event.as_str() == s)
            .ok_or_else(|| {
                format!("unknown event `{s}`: expected `created`, `updated` or `deleted`")
            })
    }
}

/// A set of [`Event`]s: those a binding takes, or a kind can take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Events(u8);

impl Events {
    /// What a binding takes unless it says: `created` only.
    pub const CREATED: Events = Events(1);
    /// Every event.
    pub const ALL: Events = Events(0b111);

    /// The set of these events.
    pub fn of(events: &[Event]) -> Self {
        Events(events.iter().fold(0, |bits, event| bits | event.bit()))
    }

    /// Whether `event` is in the set.
    pub fn contains(self, event: Event) -> bool {
        self.0 & event.bit() != 0
    }

    /// Whether the set holds no event.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Whether every event of `other` is in this set.
    pub fn includes(self, other: Events) -> bool {
        other.0 & !self.0 == 0
    }

    /// The events in the set, in [`Event::ALL`]'s order.
    pub fn iter(self) -> impl Iterator<Item = Event> {
        Event::ALL
            .into_iter()
            .filter(move |event| self.contains(*event))
    }

    /// Whether the set holds an edit or a delete: the bindings that must keep a
    /// submission's revisions in order.
    pub fn follows_edits(self) -> bool {
        self.contains(Event::Updated) || self.contains(Event::Deleted)
    }
}

impl Default for Events {
    fn default() -> Self {
        Events::CREATED
    }
}

impl fmt::Display for Events {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.iter().map(Event::as_str).collect();
        f.write_str(&names.join(","))
    }
}

impl std::str::FromStr for Events {
    type Err = String;

    /// A comma-separated list: `created,updated`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let events = s
            .split(',')
            .map(str::trim)
            .filter(|name| !name.is_empty())
            .map(str::parse)
            .collect::<Result<Vec<Event>, _>>()?;
        if events.is_empty() {
            return Err("name at least one event: created, updated or deleted".into());
        }
        Ok(Events::of(&events))
    }
}

/// One stored submission, as every task sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Submission {
    /// The form the submission belongs to.
    pub form_id: Uuid,
    /// The backend's id of the submission.
    pub submission_id: Uuid,
    /// Answers keyed by question key.
    pub answers: Map<String, Value>,
    /// When the backend stored it.
    pub submitted_at: DateTime<Utc>,
    /// Context from the backend (request id, user agent, ...).
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// What happened to it; absent in JSON for `created`.
    #[serde(default, skip_serializing_if = "Event::is_created")]
    pub event: Event,
    /// The backend's version of it (a counter, or its update time in microseconds): of two
    /// edits, the one with the higher revision is the newer. 0 when unknown; absent in JSON
    /// then.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub revision: u64,
}

fn is_zero(revision: &u64) -> bool {
    *revision == 0
}

/// Which run of which binding this is, and what the task may use.
#[derive(Clone)]
pub struct RunContext {
    /// Stable across attempts and repeated `Process` calls: use it to make side effects
    /// idempotent (the webhook task sends it as `webhook-id`).
    pub run_id: Uuid,
    /// The binding being run.
    pub binding_id: Uuid,
    /// Its name (unique per form).
    pub binding_name: String,
    /// The events the binding takes: a kind that keeps one thing per submission (a sheet
    /// row) keeps the newest revision when this holds edits or deletes.
    pub events: Events,
    /// 1 for the first attempt. Above 1, an earlier attempt may have had its side effect
    /// without being recorded: check before repeating it.
    pub attempt: u32,
    /// Durable state of this binding.
    pub state: Arc<dyn TaskState>,
}

impl fmt::Debug for RunContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunContext")
            .field("run_id", &self.run_id)
            .field("binding_id", &self.binding_id)
            .field("binding_name", &self.binding_name)
            .field("events", &self.events)
            .field("attempt", &self.attempt)
            .finish_non_exhaustive()
    }
}

/// One problem found with one answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flag {
    /// The question key the problem is about.
    pub field: String,
    /// The check or rule that failed (`required`, `type`, a rule's name, ...).
    pub rule: String,
    /// A sentence for the person who filled the form.
    pub message: String,
}

/// What a finished task returns.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// Task-specific result, kept in the run history.
    pub output: Value,
    /// Problems found with the answers; a sync result with flags has status `flagged`.
    pub flags: Vec<Flag>,
}

/// Why a task did not finish. The task says whether another attempt can help; the worker
/// decides whether to make one.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TaskError {
    /// Another attempt may succeed (timeouts, 5xx, 429, a connection refused).
    #[error("{message}")]
    Retryable {
        /// What went wrong.
        message: String,
        /// The earliest a retry is welcome, when the other side said (`Retry-After`).
        retry_after: Option<Duration>,
    },
    /// No attempt can succeed until someone changes something (bad config, 4xx).
    #[error("{message}")]
    Fatal {
        /// What went wrong, and what to change.
        message: String,
    },
}

impl TaskError {
    /// A retryable error with no hint on when to retry.
    pub fn retryable(message: impl Into<String>) -> Self {
        TaskError::Retryable {
            message: message.into(),
            retry_after: None,
        }
    }

    /// An error no retry can fix.
    pub fn fatal(message: impl Into<String>) -> Self {
        TaskError::Fatal {
            message: message.into(),
        }
    }

    /// Whether another attempt can help.
    pub fn is_retryable(&self) -> bool {
        matches!(self, TaskError::Retryable { .. })
    }
}

/// A binding config the task kind cannot use; the message says why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl ConfigError {
    /// Deserializes a binding config, which must be a JSON object, into a kind's config type;
    /// the error names the path of what does not fit (`rules[2].expr: invalid type: …`).
    pub fn parse<T: serde::de::DeserializeOwned>(config: &Value) -> Result<T, ConfigError> {
        if !config.is_object() {
            return Err(ConfigError("config must be a JSON object".into()));
        }
        serde_path_to_error::deserialize(config).map_err(|err| {
            let path = err.path().to_string();
            let inner = err.into_inner();
            if path == "." {
                ConfigError(format!("config does not parse: {inner}"))
            } else {
                ConfigError(format!("{path}: {inner}"))
            }
        })
    }

    /// An error about the part of a config at `path` (`rules[2].expr`, `fields.age`).
    pub fn at(path: impl fmt::Display, message: impl fmt::Display) -> Self {
        ConfigError(format!("{path}: {message}"))
    }
}

/// The JSON Schema of a kind's config type: what [`TaskBase::config_schema`] returns for
/// the type [`ConfigError::parse`] reads, so the two cannot drift apart.
pub fn schema_for<T: schemars::JsonSchema>() -> Value {
    serde_json::to_value(schemars::schema_for!(T)).expect("a schema is JSON")
}

/// A kind of post-submission task.
///
/// The config is parsed and checked once per binding ([`TaskBase::parse_config`]), so a bad
/// config is refused when the binding is created and expensive preparation (compiling
/// rules, building clients) is not repeated per submission.
#[async_trait]
pub trait TaskBase: Send + Sync + 'static {
    /// The parsed, checked config of one binding.
    type Config: Send + Sync + 'static;

    /// Unique name bindings refer to (`validate`, `webhook`, ...).
    fn kind(&self) -> &'static str;

    /// One line for `postsub` users listing the kinds.
    fn description(&self) -> &'static str;

    /// The modes a binding of this kind may use.
    fn modes(&self) -> &'static [Mode] {
        &[Mode::Sync, Mode::Async]
    }

    /// The events a binding of this kind may take (all by default; `validate` has nothing
    /// to check in a deletion).
    fn events(&self) -> Events {
        Events::ALL
    }

    /// The config as JSON Schema: [`schema_for`] of the type `parse_config` deserializes.
    fn config_schema(&self) -> Value;

    /// Parses and checks a binding's JSON config. Name the path of what is wrong in the
    /// error ([`ConfigError::parse`] and [`ConfigError::at`] do).
    fn parse_config(&self, config: &Value) -> Result<Self::Config, ConfigError>;

    /// The config as the admin API shows it: secrets masked. The default shows it whole.
    fn redact_config(&self, config: &Value) -> Value {
        config.clone()
    }

    /// Runs the task against one submission.
    async fn run(
        &self,
        config: &Self::Config,
        context: &RunContext,
        submission: &Submission,
    ) -> Result<Outcome, TaskError>;
}

/// A task kind with its config type erased, as the [`crate::Registry`] stores it.
pub trait DynTask: Send + Sync {
    /// See [`TaskBase::kind`].
    fn kind(&self) -> &'static str;
    /// See [`TaskBase::description`].
    fn description(&self) -> &'static str;
    /// See [`TaskBase::modes`].
    fn modes(&self) -> &'static [Mode];
    /// See [`TaskBase::events`].
    fn events(&self) -> Events;
    /// See [`TaskBase::config_schema`].
    fn config_schema(&self) -> Value;
    /// Parses a binding config into a task ready to run.
    fn prepare(&self, config: &Value) -> Result<Arc<dyn PreparedTask>, ConfigError>;
    /// See [`TaskBase::redact_config`].
    fn redact_config(&self, config: &Value) -> Value;
}

/// One binding's task with its parsed config: what the proxy and worker run.
#[async_trait]
pub trait PreparedTask: Send + Sync {
    /// Runs the task against one submission.
    async fn run(
        &self,
        context: &RunContext,
        submission: &Submission,
    ) -> Result<Outcome, TaskError>;
}

struct Prepared<T: TaskBase> {
    task: Arc<T>,
    config: T::Config,
}

#[async_trait]
impl<T: TaskBase> PreparedTask for Prepared<T> {
    async fn run(
        &self,
        context: &RunContext,
        submission: &Submission,
    ) -> Result<Outcome, TaskError> {
        self.task.run(&self.config, context, submission).await
    }
}

pub(crate) struct Erased<T>(pub(crate) Arc<T>);

impl<T: TaskBase> DynTask for Erased<T> {
    fn kind(&self) -> &'static str {
        self.0.kind()
    }

    fn description(&self) -> &'static str {
        self.0.description()
    }

    fn modes(&self) -> &'static [Mode] {
        self.0.modes()
    }

    fn events(&self) -> Events {
        self.0.events()
    }

    fn redact_config(&self, config: &Value) -> Value {
        self.0.redact_config(config)
    }

    fn config_schema(&self) -> Value {
        self.0.config_schema()
    }

    fn prepare(&self, config: &Value) -> Result<Arc<dyn PreparedTask>, ConfigError> {
        let config = self.0.parse_config(config)?;
        Ok(Arc::new(Prepared {
            task: self.0.clone(),
            config,
        }))
    }
}
