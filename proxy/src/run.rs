//! Runs: one record per (submission, binding), how its id is derived, and its attempts.

use std::{fmt, str::FromStr, sync::LazyLock};

use chrono::{DateTime, Utc};
use postsub::pb;
use postsub_tasks::{Event, Flag, Mode, Submission};
use regex::Regex;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::execute::Execution;

/// Namespace of run ids (UUID v5), fixed forever: changing it would break idempotency
/// across a deploy.
const RUN_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6f1c_2a57_3b1e_4d4b_9a0e_5c7d_8e21_b3f4);

/// The run id of `binding_id` for `submission`'s event: the same on every `Process` call
/// reporting that event, so repeated calls queue the same run instead of a second one.
///
/// A creation's id is derived from (submission, binding) alone, as before events existed:
/// a submission is created once, whatever revision a backend reports with it (a backfill
/// of an edited submission finds its creation's run). An edit's or a deletion's id is
/// derived from (submission, binding, event, revision), so each edit runs once.
pub fn run_id(submission: &Submission, binding_id: Uuid) -> Uuid {
    let mut name = [0u8; 41];
    name[..16].copy_from_slice(submission.submission_id.as_bytes());
    name[16..32].copy_from_slice(binding_id.as_bytes());
    if submission.event == Event::Created {
        return Uuid::new_v5(&RUN_ID_NAMESPACE, &name[..32]);
    }
    name[32] = submission.event as u8;
    name[33..].copy_from_slice(&submission.revision.to_be_bytes());
    Uuid::new_v5(&RUN_ID_NAMESPACE, &name)
}

/// A binding's mode as the protobuf enum.
pub fn mode_to_proto(mode: Mode) -> pb::Mode {
    match mode {
        Mode::Sync => pb::Mode::Sync,
        Mode::Async => pb::Mode::Async,
    }
}

/// The mode of a protobuf enum value; `None` for `UNSPECIFIED` or an unknown value.
pub fn mode_from_proto(mode: i32) -> Option<Mode> {
    match pb::Mode::try_from(mode) {
        Ok(pb::Mode::Sync) => Some(Mode::Sync),
        Ok(pb::Mode::Async) => Some(Mode::Async),
        _ => None,
    }
}

/// A flag as the protobuf message.
pub fn flag_to_proto(flag: Flag) -> pb::Flag {
    pb::Flag {
        field: flag.field,
        rule: flag.rule,
        message: flag.message,
    }
}

/// Where a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// In a queue: not started, or waiting for its next attempt (`error` says why the last
    /// one failed).
    Queued,
    /// A worker is running it.
    Running,
    /// Finished (a sync run with flags also counts as succeeded; the flags say what).
    Succeeded,
    /// A sync run that finished with an error or timed out.
    Failed,
    /// An async run that used up its attempts or hit an error no retry can fix; its job is
    /// in the dead-letter queue.
    Dead,
    /// An async job taken after its binding's `expires_after`: not run, dropped.
    Expired,
}

impl RunStatus {
    /// Every status, in the order they are listed to people.
    pub const ALL: [RunStatus; 6] = [
        RunStatus::Queued,
        RunStatus::Running,
        RunStatus::Succeeded,
        RunStatus::Failed,
        RunStatus::Dead,
        RunStatus::Expired,
    ];

    /// The name in the database, the CLI and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "queued",
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Dead => "dead",
            RunStatus::Expired => "expired",
        }
    }

    /// The status of a protobuf value; `None` for `UNSPECIFIED`.
    pub fn from_proto(status: pb::RunStatus) -> Option<Self> {
        match status {
            pb::RunStatus::Unspecified => None,
            pb::RunStatus::Queued => Some(RunStatus::Queued),
            pb::RunStatus::Running => Some(RunStatus::Running),
            pb::RunStatus::Succeeded => Some(RunStatus::Succeeded),
            pb::RunStatus::Failed => Some(RunStatus::Failed),
            pb::RunStatus::Dead => Some(RunStatus::Dead),
            pb::RunStatus::Expired => Some(RunStatus::Expired),
        }
    }
}

impl From<RunStatus> for pb::RunStatus {
    fn from(status: RunStatus) -> Self {
        match status {
            RunStatus::Queued => pb::RunStatus::Queued,
            RunStatus::Running => pb::RunStatus::Running,
            RunStatus::Succeeded => pb::RunStatus::Succeeded,
            RunStatus::Failed => pb::RunStatus::Failed,
            RunStatus::Dead => pb::RunStatus::Dead,
            RunStatus::Expired => pb::RunStatus::Expired,
        }
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RunStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RunStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = RunStatus::ALL.iter().map(|s| s.as_str()).collect();
                format!(
                    "unknown run status `{s}`: expected one of {}",
                    names.join(", ")
                )
            })
    }
}

/// One run in the history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Run {
    /// See [`run_id`].
    pub run_id: Uuid,
    /// The binding that ran.
    pub binding_id: Uuid,
    /// The submission's form.
    pub form_id: Uuid,
    /// The submission it ran for.
    pub submission_id: Uuid,
    /// Task kind.
    pub kind: String,
    /// The submission event it ran for.
    pub event: Event,
    /// Sync or async.
    pub mode: Mode,
    /// Where it stands.
    pub status: RunStatus,
    /// Attempts started so far.
    pub attempts: i32,
    /// The task's output, once finished.
    pub output: Option<Value>,
    /// Problems the task found with the answers.
    pub flags: Vec<Flag>,
    /// Why it failed.
    pub error: Option<String>,
    /// When the run was first recorded (queued, or run inline).
    pub created_at: DateTime<Utc>,
    /// When the latest attempt started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it finished.
    pub finished_at: Option<DateTime<Utc>>,
    /// When the row last changed; `None` before it is stored.
    pub updated_at: Option<DateTime<Utc>>,
}

impl Run {
    /// A run of a binding for `submission` that has not started.
    pub fn queued(
        binding_id: Uuid,
        kind: &str,
        mode: Mode,
        submission: &Submission,
        created_at: DateTime<Utc>,
    ) -> Self {
        Run {
            run_id: run_id(submission, binding_id),
            event: submission.event,
            binding_id,
            form_id: submission.form_id,
            submission_id: submission.submission_id,
            kind: kind.to_owned(),
            mode,
            status: RunStatus::Queued,
            attempts: 0,
            output: None,
            flags: Vec::new(),
            error: None,
            created_at,
            started_at: None,
            finished_at: None,
            updated_at: None,
        }
    }

    /// This run after an attempt that ended as `execution`, now in `status`: finished
    /// (`Succeeded`, `Failed`, `Dead`), or `Queued` for its next attempt.
    pub fn after_attempt(mut self, execution: Execution, status: RunStatus) -> Self {
        self.error = execution.error();
        self.status = status;
        if let Execution::Finished(outcome) = execution {
            self.output = Some(outcome.output);
            self.flags = outcome.flags;
        }
        self.finished_at = (status != RunStatus::Queued).then(Utc::now);
        self
    }
}

/// How one attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptStatus {
    /// The task returned an outcome.
    Succeeded,
    /// The task returned an error (or its binding could not run).
    Failed,
    /// The task did not return within its timeout.
    TimedOut,
    /// The task panicked.
    Panicked,
}

impl AttemptStatus {
    /// How `execution` ended.
    pub fn of(execution: &Execution) -> Self {
        match execution {
            Execution::Finished(_) => AttemptStatus::Succeeded,
            Execution::Failed(_) => AttemptStatus::Failed,
            Execution::TimedOut(_) => AttemptStatus::TimedOut,
            Execution::Panicked => AttemptStatus::Panicked,
        }
    }

    /// The name in the database, the CLI and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptStatus::Succeeded => "succeeded",
            AttemptStatus::Failed => "failed",
            AttemptStatus::TimedOut => "timed_out",
            AttemptStatus::Panicked => "panicked",
        }
    }

    /// The status of a protobuf value; `None` for `UNSPECIFIED`.
    pub fn from_proto(status: pb::AttemptStatus) -> Option<Self> {
        match status {
            pb::AttemptStatus::Unspecified => None,
            pb::AttemptStatus::Succeeded => Some(AttemptStatus::Succeeded),
            pb::AttemptStatus::Failed => Some(AttemptStatus::Failed),
            pb::AttemptStatus::TimedOut => Some(AttemptStatus::TimedOut),
            pb::AttemptStatus::Panicked => Some(AttemptStatus::Panicked),
        }
    }

    /// The status named `name` in the database.
    pub fn from_name(name: &str) -> Option<Self> {
        [
            AttemptStatus::Succeeded,
            AttemptStatus::Failed,
            AttemptStatus::TimedOut,
            AttemptStatus::Panicked,
        ]
        .into_iter()
        .find(|status| status.as_str() == name)
    }
}

impl From<AttemptStatus> for pb::AttemptStatus {
    fn from(status: AttemptStatus) -> Self {
        match status {
            AttemptStatus::Succeeded => pb::AttemptStatus::Succeeded,
            AttemptStatus::Failed => pb::AttemptStatus::Failed,
            AttemptStatus::TimedOut => pb::AttemptStatus::TimedOut,
            AttemptStatus::Panicked => pb::AttemptStatus::Panicked,
        }
    }
}

/// One attempt of a run, as the history keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    /// The run.
    pub run_id: Uuid,
    /// 1 for the first; counting goes on across rounds.
    pub attempt: i32,
    /// How it ended.
    pub status: AttemptStatus,
    /// Why it failed.
    pub error: Option<String>,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// When it ended.
    pub finished_at: DateTime<Utc>,
}

impl Attempt {
    /// Attempt `attempt` of `run_id`, started at `started_at`, that just ended as `execution`.
    pub fn ended(
        run_id: Uuid,
        attempt: i32,
        started_at: DateTime<Utc>,
        execution: &Execution,
    ) -> Self {
        Attempt {
            run_id,
            attempt,
            status: AttemptStatus::of(execution),
            error: execution.error(),
            started_at,
            finished_at: Utc::now(),
        }
    }
}

/// What a run died of, for grouping dead runs (the console's Dead letters, `postsub runs
/// retry-dead --cause`): the HTTP status class the destination answered, or the kind of
/// failure when it did not answer.
pub fn error_cause(error: Option<&str>) -> String {
    static ANSWERED: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"answered (\d{3})").expect("valid regex"));
    let Some(error) = error else {
        return "no error recorded".to_owned();
    };
    if let Some(code) = ANSWERED
        .captures(error)
        .and_then(|c| c[1].parse::<u16>().ok())
    {
        return match code {
            429 => "HTTP 429 (rate limit or quota)".to_owned(),
            401 => "HTTP 401 (credentials refused)".to_owned(),
            403 => "HTTP 403 (permission)".to_owned(),
            404 => "HTTP 404 (not found)".to_owned(),
            500..=599 => "HTTP 5xx (server error)".to_owned(),
            code => format!("HTTP {code}"),
        };
    }
    let lower = error.to_ascii_lowercase();
    let kind = if lower.contains("connection refused") {
        "connection refused"
    } else if lower.contains("timed out") || lower.contains("timeout") {
        "timed out"
    } else if lower.contains("dns error") || lower.contains("failed to lookup") {
        "name not resolved"
    } else if lower.contains(" refused: ") {
        "target refused (outbound checks)"
    } else if lower.contains("certificate") || lower.contains("tls") {
        "TLS"
    } else if lower.contains("panicked") {
        "task panicked"
    } else if lower.contains("unknown task kind") || lower.contains("no binding") {
        "binding or kind gone"
    } else {
        "other"
    };
    kind.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_runs_are_grouped_by_what_the_destination_answered() {
        let cause = |e: &str| error_cause(Some(e));
        assert_eq!(
            cause("POST http://x/h answered 503 Service Unavailable: down"),
            "HTTP 5xx (server error)"
        );
        assert_eq!(
            cause("appending rows: Google answered 429: quota"),
            "HTTP 429 (rate limit or quota)"
        );
        assert_eq!(
            cause(
                "POST http://127.0.0.1:1/h failed: error sending request: Connection refused (os error 111)"
            ),
            "connection refused"
        );
        assert_eq!(cause("timed out after 30s"), "timed out");
        assert_eq!(cause("something else"), "other");
    }

    #[test]
    fn statuses_parse_from_their_names() {
        for status in RunStatus::ALL {
            assert_eq!(status.as_str().parse::<RunStatus>(), Ok(status));
        }
        assert_eq!(
            "gone".parse::<RunStatus>().unwrap_err(),
            "unknown run status `gone`: expected one of queued, running, succeeded, failed, dead, expired"
        );
    }

    #[test]
    fn run_id_is_stable_and_distinct_per_event_and_revision() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let submission = |id: Uuid, event: Event, revision: u64| Submission {
            form_id: Uuid::nil(),
            submission_id: id,
            answers: serde_json::Map::new(),
            submitted_at: Utc::now(),
            metadata: Default::default(),
            event,
            revision,
        };
        let created = submission(a, Event::Created, 0);
        assert_eq!(run_id(&created, b), run_id(&created, b));
        assert_ne!(
            run_id(&created, b),
            run_id(&submission(b, Event::Created, 0), a)
        );
        // The derivation of earlier releases, so existing runs keep their ids.
        let mut name = [0u8; 32];
        name[..16].copy_from_slice(a.as_bytes());
        name[16..].copy_from_slice(b.as_bytes());
        assert_eq!(run_id(&created, b), Uuid::new_v5(&RUN_ID_NAMESPACE, &name));
        // A creation's revision does not matter; an edit's does, and each event is its own.
        assert_eq!(
            run_id(&submission(a, Event::Created, 9), b),
            run_id(&created, b)
        );
        let ids: std::collections::HashSet<Uuid> = [
            run_id(&created, b),
            run_id(&submission(a, Event::Updated, 1), b),
            run_id(&submission(a, Event::Updated, 2), b),
            run_id(&submission(a, Event::Deleted, 2), b),
        ]
        .into();
        assert_eq!(ids.len(), 4);
    }
}
