//! The job message: what the proxy publishes for one async run and the worker consumes.

use chrono::{DateTime, Utc};
use postsub_tasks::Submission;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// One async run to do. JSON on the wire, `run_id` also as the AMQP message id.
///
/// The binding's config is not in the message: the worker reads the binding from its own
/// cache, so secrets stay out of the broker and a fixed config applies to retries. The same
/// message goes to the delay queues between attempts and to the dead-letter queue at the end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// Deterministic id of the run (see [`crate::run::run_id`]).
    pub run_id: Uuid,
    /// The binding to run.
    pub binding_id: Uuid,
    /// The binding's task kind, which names the queue.
    pub kind: String,
    /// When `Process` queued it.
    pub queued_at: DateTime<Utc>,
    /// The submission to run it against.
    pub submission: Submission,
    /// Attempts the run made in earlier rounds. `postsub runs retry` and `postsub dlq
    /// replay` start a new round, which may make the binding's `max_attempts` attempts
    /// again, while the run's attempt count goes on (so its history shows every round).
    #[serde(default)]
    pub attempts_before: u32,
}

impl Job {
    /// Parses a message body.
    pub fn decode(body: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(body)
    }

    /// The message body.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a job always serializes")
    }
}
