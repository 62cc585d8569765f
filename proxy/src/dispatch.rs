//! `PostSubmission.Process`: runs a form's sync bindings inline and queues its async ones.
//!
//! The hot path reads bindings from the [`BindingCache`] (no database round trip), runs the
//! sync tasks concurrently, each under its own timeout and isolated from panics, publishes
//! the async jobs concurrently with publisher confirms, and hands every run to the batching
//! [`Recorder`] without waiting for the write.

use std::{sync::Arc, time::Duration};

use chrono::{TimeDelta, Utc};
use futures_util::future::join_all;
use postsub::{
    json::{from_proto_struct, from_proto_timestamp, to_proto_value},
    pb::{self, post_submission_server::PostSubmission},
};
use postsub_tasks::{Mode, RunContext, Submission, TaskState};
use prost::Message as _;
use tonic::{Request, Response, Status};

use crate::{
    bindings::{BindingCache, LiveBinding},
    execute::{Execution, execute},
    ids::parse_uuid,
    job::Job,
    options::DurationOption,
    outbox::Outbox,
    queue::Publisher,
    recorder::{Recorder, RecorderStopped},
    run::{Attempt, Run, RunStatus, flag_to_proto},
};

/// Limits applied to every `Process` call.
#[derive(Debug, Clone, Copy)]
pub struct DispatchLimits {
    /// Largest encoded `answers` accepted.
    pub max_answers_bytes: usize,
    /// How long one sync task may run, unless its binding says.
    pub sync_timeout: Duration,
}

/// The `PostSubmission` service.
#[derive(Clone)]
pub struct Dispatcher {
    cache: BindingCache,
    publisher: Arc<Publisher>,
    recorder: Recorder,
    state: Arc<dyn TaskState>,
    outbox: Outbox,
    limits: DispatchLimits,
}

impl Dispatcher {
    /// A dispatcher over shared parts.
    pub fn new(
        cache: BindingCache,
        publisher: Arc<Publisher>,
        recorder: Recorder,
        state: Arc<dyn TaskState>,
        outbox: Outbox,
        limits: DispatchLimits,
    ) -> Self {
        Self {
            outbox,
            cache,
            publisher,
            recorder,
            state,
            limits,
        }
    }

    fn parse(&self, request: pb::ProcessRequest) -> Result<Submission, Status> {
        let form_id = parse_uuid("form_id", &request.form_id)?;
        let submission_id = parse_uuid("submission_id", &request.submission_id)?;
        let answers = request
            .answers
            .ok_or_else(|| Status::invalid_argument("answers is missing"))?;
        let size = answers.encoded_len();
        if size > self.limits.max_answers_bytes {
            return Err(Status::invalid_argument(format!(
                "answers are {size} bytes; the limit is {} (POSTSUB_MAX_ANSWERS_BYTES)",
                self.limits.max_answers_bytes
            )));
        }
        let submitted_at = match request.submitted_at {
            None => Utc::now(),
            Some(ts) => from_proto_timestamp(ts)
                .ok_or_else(|| Status::invalid_argument("submitted_at is out of range"))?,
        };
        Ok(Submission {
            form_id,
            submission_id,
            answers: from_proto_struct(answers),
            submitted_at,
            metadata: request.metadata.into_iter().collect(),
        })
    }

    async fn run_sync(&self, live: &LiveBinding, submission: &Submission) -> pb::SyncResult {
        let binding = &live.binding;
        let mut run = Run::queued(
            binding.id,
            &binding.kind,
            Mode::Sync,
            submission,
            Utc::now(),
        );
        run.started_at = Some(run.created_at);
        run.attempts = 1;
        let context = RunContext {
            run_id: run.run_id,
            binding_id: binding.id,
            attempt: 1,
            state: self.state.clone(),
        };
        let timeout = binding.options.timeout_or(self.limits.sync_timeout);
        let execution = execute(live, &context, submission, timeout).await;
        let (status, run_status) = match &execution {
            Execution::Finished(outcome) if outcome.flags.is_empty() => {
                (pb::SyncStatus::Ok, RunStatus::Succeeded)
            }
            Execution::Finished(_) => (pb::SyncStatus::Flagged, RunStatus::Succeeded),
            Execution::TimedOut(_) => (pb::SyncStatus::TimedOut, RunStatus::Failed),
            Execution::Failed(_) | Execution::Panicked => {
                (pb::SyncStatus::Failed, RunStatus::Failed)
            }
        };
        // A sync run has exactly one attempt. When it succeeded, the run row says all there
        // is to say (store::run_attempts derives the attempt from it), so only a failed one
        // costs a second row: two fewer rows per request on the hot path.
        let attempt = (run_status != RunStatus::Succeeded)
            .then(|| Attempt::ended(run.run_id, 1, run.created_at, &execution));
        let run = run.after_attempt(execution, run_status);
        let result = pb::SyncResult {
            binding_id: binding.id.to_string(),
            name: binding.name.clone(),
            kind: binding.kind.clone(),
            status: status.into(),
            flags: run.flags.iter().cloned().map(flag_to_proto).collect(),
            output: run.output.clone().map(to_proto_value),
            error: run.error.clone().unwrap_or_default(),
            run_id: run.run_id.to_string(),
        };
        warn_if_stopped(self.recorder.record_attempt(run, attempt).await);
        result
    }

    async fn queue(
        &self,
        live: &LiveBinding,
        submission: &Submission,
    ) -> Result<pb::QueuedJob, Status> {
        let binding = &live.binding;
        let run = Run::queued(
            binding.id,
            &binding.kind,
            Mode::Async,
            submission,
            Utc::now(),
        );
        let job = Job {
            run_id: run.run_id,
            binding_id: binding.id,
            kind: binding.kind.clone(),
            queued_at: run.created_at,
            submission: submission.clone(),
            attempts_before: 0,
        };
        // A `delay` makes the job wait in a delay queue until that long after the submission.
        let release_at = live
            .binding
            .options
            .duration(DurationOption::Delay)
            .and_then(|delay| TimeDelta::from_std(delay).ok())
            .map(|delay| submission.submitted_at + delay)
            .filter(|at| *at > Utc::now());
        let published = match release_at.and_then(|at| (at - Utc::now()).to_std().ok()) {
            Some(wait) => self.publisher.publish_delayed(&job, wait).await,
            None => self.publisher.publish(&job).await,
        };
        if let Err(err) = published {
            // RabbitMQ is away: keep the job in PostgreSQL for the relay.
            self.outbox.keep(&job, release_at).await.map_err(|db| {
                tracing::error!(error = %err, database = %db, run_id = %job.run_id,
                    "neither RabbitMQ nor the outbox took a job");
                Status::unavailable(format!(
                    "could not queue task `{}`: {err}; the outbox is unavailable too: {db}",
                    binding.name
                ))
            })?;
            tracing::warn!(error = %err, run_id = %job.run_id, "RabbitMQ unavailable; job kept in the outbox");
            metrics::counter!("postsub_jobs_kept_total", "kind" => binding.kind.clone())
                .increment(1);
        } else {
            metrics::counter!("postsub_jobs_queued_total", "kind" => binding.kind.clone())
                .increment(1);
        }
        let queued = pb::QueuedJob {
            run_id: job.run_id.to_string(),
            binding_id: binding.id.to_string(),
            name: binding.name.clone(),
            kind: binding.kind.clone(),
        };
        warn_if_stopped(self.recorder.record_queued(run).await);
        Ok(queued)
    }
}

/// Runs are handed to the recorder without waiting for the write; one lost at shutdown is
/// only logged.
fn warn_if_stopped(recorded: Result<(), RecorderStopped>) {
    if recorded.is_err() {
        tracing::warn!("run recorder stopped before a run was recorded");
    }
}

#[tonic::async_trait]
impl PostSubmission for Dispatcher {
    async fn process(
        &self,
        request: Request<pb::ProcessRequest>,
    ) -> Result<Response<pb::ProcessResponse>, Status> {
        let submission = self.parse(request.into_inner())?;
        let Some(bindings) = self.cache.for_form(submission.form_id) else {
            return Ok(Response::new(pb::ProcessResponse::default()));
        };
        let sync = bindings
            .iter()
            .filter(|live| live.binding.mode == Mode::Sync)
            .map(|live| self.run_sync(live, &submission));
        let queued = bindings
            .iter()
            .filter(|live| live.binding.mode == Mode::Async)
            .map(|live| self.queue(live, &submission));
        let (sync_results, jobs) = tokio::join!(join_all(sync), join_all(queued));
        let jobs = jobs.into_iter().collect::<Result<Vec<_>, Status>>()?;
        Ok(Response::new(pb::ProcessResponse { sync_results, jobs }))
    }
}
