//! Running one task once: the part the dispatcher (sync) and the worker (async) share.

use std::{panic::AssertUnwindSafe, time::Duration};

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
/// one run, never the caller.
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
    let run = AssertUnwindSafe(task.run(context, submission)).catch_unwind();
    match tokio::time::timeout(timeout, run).await {
        Ok(Ok(Ok(outcome))) => Execution::Finished(outcome),
        Ok(Ok(Err(err))) => Execution::Failed(err),
        Ok(Err(_panic)) => Execution::Panicked,
        Err(_elapsed) => Execution::TimedOut(timeout),
    }
}
