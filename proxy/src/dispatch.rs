//! `PostSubmission.Process`: runs a form's sync bindings inline and queues its async ones.
//!
//! The hot path reads bindings from the [`BindingCache`] (no database round trip), runs the
//! sync tasks concurrently, each under its own timeout and isolated from panics, and
//! meanwhile hands the async jobs to the [`JobQueue`], which answers once they are durable
//! (and records their runs). Sync runs go to the batching [`Recorder`] without waiting for
//! the write.

use std::{
    future::Future,
    sync::Arc,
    time::{Duration, Instant},
};

use chrono::{TimeDelta, Utc};
use futures_util::future::join_all;
use postsub::{
    json::{from_proto_struct, from_proto_timestamp, to_proto_value},
    pb::{self, post_submission_server::PostSubmission},
};
use postsub_tasks::{Event, Mode, RunContext, Submission, TaskState};
use prost::Message as _;
use tonic::{Request, Response, Status};

use crate::{
    bindings::{BindingCache, LiveBinding},
    execute::{Execution, execute},
    ids::parse_uuid,
    job::Job,
    options::DurationOption,
    queue::{JobQueue, NewJob},
    recorder::{Recorder, RecorderStopped},
    run::{Attempt, Run, RunStatus, flag_to_proto, run_id},
    store::Store,
};

/// Most submissions one `RunBindings` call may carry.
const MAX_BACKFILL_BATCH: usize = 1000;

/// Limits applied to every `Process` call.
#[derive(Debug, Clone, Copy)]
pub struct DispatchLimits {
    /// Largest encoded `answers` accepted.
    pub max_answers_bytes: usize,
    /// Deepest nesting of objects and lists in `answers` accepted.
    pub max_answers_depth: usize,
    /// Most object keys in `answers`, nested ones included.
    pub max_answers_keys: usize,
    /// How long one sync task may run, unless its binding says.
    pub sync_timeout: Duration,
}

/// The `PostSubmission` service.
#[derive(Clone)]
pub struct Dispatcher {
    cache: BindingCache,
    queue: Arc<dyn JobQueue>,
    recorder: Recorder,
    store: Arc<dyn Store>,
    limits: DispatchLimits,
}

impl Dispatcher {
    /// A dispatcher over shared parts (the store keeps the task state, and answers which
    /// runs exist for `RunBindings`).
    pub fn new(
        cache: BindingCache,
        queue: Arc<dyn JobQueue>,
        recorder: Recorder,
        store: Arc<dyn Store>,
        limits: DispatchLimits,
    ) -> Self {
        Self {
            cache,
            queue,
            recorder,
            store,
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
        let answers = from_proto_struct(answers);
        let (depth, keys) = shape(&answers);
        if depth > self.limits.max_answers_depth {
            return Err(Status::invalid_argument(format!(
                "answers nest {depth} levels deep; the limit is {} (POSTSUB_MAX_ANSWERS_DEPTH)",
                self.limits.max_answers_depth
            )));
        }
        if keys > self.limits.max_answers_keys {
            return Err(Status::invalid_argument(format!(
                "answers hold {keys} keys; the limit is {} (POSTSUB_MAX_ANSWERS_KEYS)",
                self.limits.max_answers_keys
            )));
        }
        let event = match pb::SubmissionEvent::try_from(request.event) {
            Ok(pb::SubmissionEvent::Unspecified | pb::SubmissionEvent::Created) => Event::Created,
            Ok(pb::SubmissionEvent::Updated) => Event::Updated,
            Ok(pb::SubmissionEvent::Deleted) => Event::Deleted,
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "event {} is not a SubmissionEvent",
                    request.event
                )));
            }
        };
        Ok(Submission {
            form_id,
            submission_id,
            answers,
            submitted_at,
            metadata: request.metadata.into_iter().collect(),
            event,
            revision: request.revision,
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
            binding_name: binding.name.clone(),
            events: binding.options.events(),
            attempt: 1,
            state: self.store.clone() as Arc<dyn TaskState>,
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

    /// The job of an async binding, with its run and when it may start.
    fn job(live: &LiveBinding, submission: &Submission) -> (NewJob, pb::QueuedJob) {
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
        // A `delay` makes the job wait until that long after the submission.
        let release_at = binding
            .options
            .duration(DurationOption::Delay)
            .and_then(|delay| TimeDelta::from_std(delay).ok())
            .map(|delay| submission.submitted_at + delay)
            .filter(|at| *at > Utc::now());
        let queued = pb::QueuedJob {
            run_id: job.run_id.to_string(),
            binding_id: binding.id.to_string(),
            name: binding.name.clone(),
            kind: binding.kind.clone(),
        };
        (
            NewJob {
                job,
                run,
                release_at,
            },
            queued,
        )
    }

    async fn enqueue(&self, jobs: Vec<NewJob>) -> Result<(), Status> {
        if jobs.is_empty() {
            return Ok(());
        }
        self.queue.enqueue(jobs).await.map_err(|err| {
            tracing::error!(error = %err, "could not queue a submission's async tasks");
            Status::unavailable(format!("could not queue the async tasks: {err}"))
        })
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
        let started = Instant::now();
        let submission = timed("parse", async { self.parse(request.into_inner()) }).await?;
        let Some(bindings) = self.cache.for_form(submission.form_id) else {
            // Not an error (a form may have no tasks), but the first thing to look for when
            // a backend wonders why nothing ran.
            tracing::debug!(form_id = %submission.form_id, submission_id = %submission.submission_id,
                "no enabled binding for this form: nothing to run");
            return Ok(Response::new(pb::ProcessResponse::default()));
        };
        let taking = || bindings.iter().filter(|live| live.takes(&submission));
        let sync = taking()
            .filter(|live| live.binding.mode == Mode::Sync)
            .map(|live| self.run_sync(live, &submission));
        let (new_jobs, jobs): (Vec<_>, Vec<_>) = taking()
            .filter(|live| live.binding.mode == Mode::Async)
            .map(|live| Self::job(live, &submission))
            .unzip();
        let (sync_results, queued) = tokio::join!(
            timed("sync", join_all(sync)),
            timed("enqueue", self.enqueue(new_jobs))
        );
        queued?;
        let took = started.elapsed();
        metrics::histogram!("postsub_process_seconds").record(took.as_secs_f64());
        if took > SLOW_PROCESS {
            tracing::debug!(?took, form_id = %submission.form_id,
                submission_id = %submission.submission_id,
                "slow Process call (its stages: postsub_process_stage_seconds in /metrics)");
        }
        Ok(Response::new(pb::ProcessResponse { sync_results, jobs }))
    }

    async fn run_bindings(
        &self,
        request: Request<pb::RunBindingsRequest>,
    ) -> Result<Response<pb::RunBindingsResponse>, Status> {
        run_bindings(self, request.into_inner())
            .await
            .map(Response::new)
    }
}

impl Dispatcher {
    /// The bindings a `RunBindings` call names: each must exist and be enabled.
    fn chosen_bindings(&self, ids: &[String]) -> Result<Vec<Arc<LiveBinding>>, Status> {
        if ids.is_empty() {
            return Err(Status::invalid_argument(
                "binding_ids: name at least one binding",
            ));
        }
        ids.iter()
            .map(|id| {
                let id = parse_uuid("binding_ids", id)?;
                let live = self
                    .cache
                    .get(id)
                    .ok_or_else(|| Status::not_found(format!("no binding has the id {id}")))?;
                if !live.binding.enabled {
                    return Err(Status::failed_precondition(format!(
                        "binding {id} ({}) is disabled; enable it to backfill it",
                        live.binding.name
                    )));
                }
                Ok(live)
            })
            .collect()
    }
}

/// What `RunBindings` does with one submission.
struct Backfill {
    submission: Submission,
    /// The bindings whose run of it does not exist yet.
    due: Vec<Arc<LiveBinding>>,
}

/// `RunBindings`: see the proto. The submissions of one call share one enqueue (one commit
/// or one batch of confirms), so a backfill costs far less per submission than `Process`.
async fn run_bindings(
    dispatcher: &Dispatcher,
    request: pb::RunBindingsRequest,
) -> Result<pb::RunBindingsResponse, Status> {
    if request.submissions.len() > MAX_BACKFILL_BATCH {
        return Err(Status::invalid_argument(format!(
            "{} submissions in one call; the limit is {MAX_BACKFILL_BATCH}",
            request.submissions.len()
        )));
    }
    let bindings = dispatcher.chosen_bindings(&request.binding_ids)?;
    let mut results: Vec<pb::BackfillResult> = Vec::with_capacity(request.submissions.len());
    let mut work: Vec<(usize, Submission)> = Vec::new();
    for request in request.submissions {
        let result = pb::BackfillResult {
            submission_id: request.submission_id.clone(),
            ..Default::default()
        };
        match dispatcher.parse(request) {
            Ok(submission) => match bindings
                .iter()
                .find(|live| live.binding.form_id != submission.form_id)
            {
                Some(other) => results.push(pb::BackfillResult {
                    error: format!(
                        "binding {} ({}) is of form {}, not of this submission's form {}",
                        other.binding.id,
                        other.binding.name,
                        other.binding.form_id,
                        submission.form_id
                    ),
                    ..result
                }),
                None => {
                    work.push((results.len(), submission));
                    results.push(result);
                }
            },
            Err(status) => results.push(pb::BackfillResult {
                error: status.message().to_owned(),
                ..result
            }),
        }
    }
    let run_ids: Vec<_> = work
        .iter()
        .flat_map(|(_, submission)| {
            bindings
                .iter()
                .filter(|live| live.takes(submission))
                .map(|live| run_id(submission, live.binding.id))
        })
        .collect();
    let existing = dispatcher
        .store
        .existing_runs(&run_ids)
        .await
        .map_err(|err| Status::unavailable(format!("cannot read the run history: {err}")))?;
    let backfills: Vec<Backfill> = work
        .into_iter()
        .map(|(index, submission)| {
            let (done, due): (Vec<_>, Vec<_>) = bindings
                .iter()
                .filter(|live| live.takes(&submission))
                .cloned()
                .partition(|live| existing.contains(&run_id(&submission, live.binding.id)));
            results[index].started = due.len() as u32;
            results[index].already_done = done.len() as u32;
            Backfill { submission, due }
        })
        .collect();
    if request.dry_run {
        return Ok(pb::RunBindingsResponse { results });
    }
    let sync = backfills.iter().flat_map(|backfill| {
        backfill
            .due
            .iter()
            .filter(|live| live.binding.mode == Mode::Sync)
            .map(|live| dispatcher.run_sync(live, &backfill.submission))
    });
    let jobs: Vec<NewJob> = backfills
        .iter()
        .flat_map(|backfill| {
            backfill
                .due
                .iter()
                .filter(|live| live.binding.mode == Mode::Async)
                .map(|live| Dispatcher::job(live, &backfill.submission).0)
        })
        .collect();
    let (_, queued) = tokio::join!(join_all(sync), dispatcher.enqueue(jobs));
    queued?;
    Ok(pb::RunBindingsResponse { results })
}

/// A `Process` call slower than this is logged at debug.
const SLOW_PROCESS: Duration = Duration::from_millis(50);

/// Awaits `stage` and records how long it took in `postsub_process_stage_seconds`.
async fn timed<T>(stage: &'static str, future: impl Future<Output = T>) -> T {
    let started = Instant::now();
    let output = future.await;
    metrics::histogram!("postsub_process_stage_seconds", "stage" => stage)
        .record(started.elapsed().as_secs_f64());
    output
}

/// How deep `answers` nest (the top object is level 1, each object or list inside one more)
/// and how many object keys they hold. The recursion is bounded: protobuf decoding refuses
/// messages nested more than 100 deep.
fn shape(answers: &serde_json::Map<String, serde_json::Value>) -> (usize, usize) {
    fn walk(value: &serde_json::Value, level: usize, deepest: &mut usize, keys: &mut usize) {
        let children: Vec<&serde_json::Value> = match value {
            serde_json::Value::Object(map) => {
                *keys += map.len();
                map.values().collect()
            }
            serde_json::Value::Array(list) => list.iter().collect(),
            _ => return,
        };
        *deepest = (*deepest).max(level);
        for child in children {
            walk(child, level + 1, deepest, keys);
        }
    }
    let (mut deepest, mut keys) = (1, answers.len());
    for value in answers.values() {
        walk(value, 2, &mut deepest, &mut keys);
    }
    (deepest, keys)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::shape;

    #[test]
    fn shape_counts_levels_and_keys() {
        let answers = |value: serde_json::Value| value.as_object().unwrap().clone();
        assert_eq!(shape(&answers(json!({}))), (1, 0));
        assert_eq!(shape(&answers(json!({"a": 1, "b": "x"}))), (1, 2));
        assert_eq!(shape(&answers(json!({"a": {"b": [1, {"c": 2}]}}))), (4, 3));
    }
}
