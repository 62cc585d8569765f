//! The task author's harness: runs one task kind against a config and submissions with no
//! server at all (task state in memory, a run context like the worker's), so a task's unit
//! tests are a few lines.
//!
//! ```text
//! let harness = TaskHarness::new(SmsReceipt::new(&TargetPolicy::dev()), json!({…}))?;
//! let submission = harness.submission(json!({"phone": "+15550100"}));
//! let outcome = harness.run(&submission).await?;      // attempt 1
//! let again = harness.attempt(&submission, 2).await;  // the same run, attempt 2
//! ```

use std::sync::Arc;

use chrono::Utc;
use postsub_tasks::{
    ConfigError, Event, Events, MemoryState, Outcome, RunContext, Submission, TaskBase, TaskError,
};
use serde_json::Value;
use uuid::Uuid;

/// One binding of a task kind, with its parsed config and its own task state.
pub struct TaskHarness<T: TaskBase> {
    task: T,
    config: T::Config,
    binding_id: Uuid,
    form_id: Uuid,
    events: Events,
    state: Arc<MemoryState>,
}

impl<T: TaskBase> TaskHarness<T> {
    /// A binding of `task` with `config`, refused as the proxy would refuse it.
    pub fn new(task: T, config: Value) -> Result<Self, ConfigError> {
        let config = task.parse_config(&config)?;
        Ok(Self {
            task,
            config,
            binding_id: Uuid::new_v4(),
            form_id: Uuid::new_v4(),
            events: Events::CREATED,
            state: Arc::default(),
        })
    }

    /// The binding takes these events (`created` only unless set), as its `events` option.
    pub fn with_events(mut self, events: Events) -> Self {
        self.events = events;
        self
    }

    /// A new submission of the binding's form with `answers` (a JSON object).
    pub fn submission(&self, answers: Value) -> Submission {
        let Value::Object(answers) = answers else {
            panic!("answers must be a JSON object");
        };
        Submission {
            form_id: self.form_id,
            submission_id: Uuid::new_v4(),
            answers,
            submitted_at: Utc::now(),
            metadata: Default::default(),
            event: Event::Created,
            revision: 0,
        }
    }

    /// `submission` as a later `event` of revision `revision` reports it, with `answers`
    /// (its new ones for an edit, its last ones for a deletion).
    pub fn change(
        &self,
        submission: &Submission,
        event: Event,
        revision: u64,
        answers: Value,
    ) -> Submission {
        let Value::Object(answers) = answers else {
            panic!("answers must be a JSON object");
        };
        Submission {
            answers,
            event,
            revision,
            ..submission.clone()
        }
    }

    /// The first attempt of the run of this binding for `submission`.
    pub async fn run(&self, submission: &Submission) -> Result<Outcome, TaskError> {
        self.attempt(submission, 1).await
    }

    /// Attempt `attempt` of that run: the same run id as every other attempt (a retry, or
    /// a redelivery after a worker died), the same task state.
    pub async fn attempt(
        &self,
        submission: &Submission,
        attempt: u32,
    ) -> Result<Outcome, TaskError> {
        let context = RunContext {
            run_id: self.run_id(submission),
            binding_id: self.binding_id,
            binding_name: "harness".into(),
            attempt,
            events: self.events,
            state: self.state.clone(),
        };
        self.task.run(&self.config, &context, submission).await
    }

    /// The run id of `submission`'s run: fixed per binding, submission, event and revision,
    /// as in postsub.
    pub fn run_id(&self, submission: &Submission) -> Uuid {
        let name = format!(
            "{}/{}/{}",
            submission.submission_id, submission.event, submission.revision
        );
        Uuid::new_v5(&self.binding_id, name.as_bytes())
    }

    /// The binding's task state.
    pub fn state(&self) -> &MemoryState {
        &self.state
    }

    /// The task kind.
    pub fn task(&self) -> &T {
        &self.task
    }
}
