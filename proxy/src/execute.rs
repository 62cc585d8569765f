//! Running one task once: the part the dispatcher (sync) and the worker (async) share.

use std::{
    panic::AssertUnwindSafe,
    time::{Duration, Instant},
};

use futures_util::FutureExt;
use postsub_tasks::{Outcome, RunContext, Submission, TaskError};

use crate::bindings::LiveBinding;

/// How one attempt ended.
#[derive(Debug)]
pub enum Execution {
    /// The task returned.
    Finished(Outcome),
    /// The task returned an error (or its binding cannot run).
    Failed(TaskError),
    /// The task did not return within its timeout.
    TimedOut(Duration),
    /// The task panicked.
    Panicked,
}

impl Execution {
    /// How the attempt ended, as metrics name it.
    pub fn outcome(&self) -> &'static str {
        match self {
            Execution::Finished(_) => "succeeded",
            Execution::Failed(_) => "failed",
            Execution::TimedOut(_) => "timed_out",
            Execution::Panicked => "panicked",
        }
    }

    /// The error text for the run history; `None` when the task finished.
    pub fn error(&self) -> Option<String> {
        match self {
            Execution::Finished(_) => None,
            Execution::Failed(err) => Some(err.to_string()),
            Execution::TimedOut(limit) => Some(format!("timed out after {limit:?}")),
            Execution::Panicked => Some("the task panicked".into()),
        }
    }
}

/// Runs a binding's task against a submission under `timeout`. A panic or a hang costs this
/// one run, never the caller. Its time goes to `postsub_task_seconds{kind,outcome}`.
pub async fn execute(
    live: &LiveBinding,
    context: &RunContext,
    submission: &Submission,
    timeout: Duration,
) -> Execution {
    let task = match &live.task {
        Ok(task) => task,
        Err(reason) => return Execution::Failed(TaskError::fatal(reason.clone())),
    };
    let started = Instant::now();
    let run = AssertUnwindSafe(task.run(context, submission)).catch_unwind();
    let execution = match tokio::time::timeout(timeout, run).await {
        Ok(Ok(Ok(outcome))) => Execution::Finished(outcome),
        Ok(Ok(Err(err))) => Execution::Failed(err),
        Ok(Err(_panic)) => Execution::Panicked,
        Err(_elapsed) => Execution::TimedOut(timeout),
    };
    metrics::histogram!("postsub_task_seconds", "kind" => live.binding.kind.clone(),
        "outcome" => execution.outcome())
    .record(started.elapsed());
    execution
}
