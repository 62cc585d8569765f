//! `TaskAdmin`: bindings, task kinds, the run history, queues, and re-queuing dead runs
//! over gRPC.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use postsub::{
    json::{
        from_proto_struct, from_proto_timestamp, to_proto_struct, to_proto_timestamp,
        to_proto_value,
    },
    pb::{self, task_admin_server::TaskAdmin},
};
use postsub_tasks::{Event, Mode, Registry};
use serde_json::{Value, json};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{
    auth::Caller,
    bindings::BindingCache,
    ids::{parse_optional_uuid, parse_uuid},
    options::{BindingOptions, DurationOption, OptionError, format_duration},
    queue::{JobQueue, QueueError},
    requeue::{self, RequeueError},
    run::{Attempt, Run, RunStatus, flag_to_proto, mode_from_proto, mode_to_proto},
    store::{Binding, NewAuditEntry, NewBinding, RunFilter, StatsBy, Store, StoreError},
};

/// Default and largest page of `ListRuns`.
const DEFAULT_PAGE: u32 = 100;
const MAX_PAGE: u32 = 1000;

/// The `TaskAdmin` service.
#[derive(Clone)]
pub struct Admin {
    store: Arc<dyn Store>,
    registry: Registry,
    cache: BindingCache,
    /// Re-queues dead runs.
    queue: Arc<dyn JobQueue>,
}

impl Admin {
    /// The service over the proxy's store, registry, binding cache and queue.
    pub fn new(
        store: Arc<dyn Store>,
        registry: Registry,
        cache: BindingCache,
        queue: Arc<dyn JobQueue>,
    ) -> Self {
        Self {
            store,
            registry,
            cache,
            queue,
        }
    }

    /// Checks a binding the way `Process` will use it: kind known, mode offered, config valid.
    fn check(
        &self,
        kind: &str,
        mode: Mode,
        config: &Value,
        options: &BindingOptions,
    ) -> Result<(), Status> {
        self.registry
            .prepare(kind, mode, config)
            .map_err(|err| Status::invalid_argument(err.0))?;
        let (events, takes) = (
            options.events(),
            self.registry.get(kind).map(|task| task.events()),
        );
        if let Some(takes) = takes
            && !takes.includes(events)
        {
            return Err(Status::invalid_argument(format!(
                "events: task kind `{kind}` runs on {takes}, not on {events}"
            )));
        }
        Ok(())
    }

    /// Records a change in the audit log. A change that happened is not undone when its
    /// entry cannot be written; the failure is logged at ERROR with the entry.
    async fn audit(
        &self,
        actor: String,
        action: &str,
        target: String,
        before: Option<Value>,
        after: Option<Value>,
    ) {
        let entry = NewAuditEntry {
            actor,
            action: action.to_owned(),
            target,
            before,
            after,
        };
        if let Err(err) = self.store.record_audit(&entry).await {
            tracing::error!(error = %err, actor = %entry.actor, action = %entry.action,
                target = %entry.target, "the audit log could not record a change");
        }
    }

    /// A binding as the audit log keeps it: secrets masked, as the API shows it.
    fn audited(&self, binding: &Binding) -> Value {
        json!({
            "id": binding.id, "form_id": binding.form_id, "name": binding.name,
            "kind": binding.kind, "mode": binding.mode.as_str(), "enabled": binding.enabled,
            "config": redacted_config(&self.registry, binding), "options": binding.options,
        })
    }

    /// Makes this proxy see a binding change at once (others follow the NOTIFY).
    async fn refresh(&self) {
        if let Err(err) = self.cache.reload().await {
            tracing::warn!(error = %err, "reloading bindings after a change failed");
        }
    }

    /// `run` with its attempt history, as `GetRun` shows it.
    async fn run_with_attempts(&self, run: Run) -> Result<Response<pb::Run>, Status> {
        let attempts = self
            .store
            .run_attempts(&run)
            .await
            .map_err(database_error)?;
        Ok(Response::new(run_to_proto(run, attempts)))
    }
}

/// Who made a call, for the audit log: the token's name, or `anonymous` on a proxy that
/// asks for no token.
fn actor<T>(request: &Request<T>) -> String {
    request
        .extensions()
        .get::<Caller>()
        .map_or_else(|| "anonymous".to_owned(), |caller| caller.name.clone())
}

/// An optional string filter: empty (or blank) means unset.
pub(crate) fn non_empty(text: &str) -> Option<String> {
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

fn parse_mode(mode: i32) -> Result<Mode, Status> {
    mode_from_proto(mode)
        .ok_or_else(|| Status::invalid_argument("mode must be MODE_SYNC or MODE_ASYNC"))
}

fn status_from_proto(status: i32) -> Result<Option<RunStatus>, Status> {
    pb::RunStatus::try_from(status)
        .map(RunStatus::from_proto)
        .map_err(|_| Status::invalid_argument(format!("unknown run status {status}")))
}

/// Applies the options a request sets to `options`, then checks them together.
fn apply_options(
    options: &mut BindingOptions,
    change: Option<pb::BindingOptions>,
) -> Result<(), Status> {
    let invalid = |err: OptionError| Status::invalid_argument(err.to_string());
    if let Some(change) = change {
        if let Some(attempts) = change.max_attempts {
            options.set_max_attempts(attempts).map_err(invalid)?;
        }
        for (option, text) in [
            (DurationOption::BackoffInitial, change.backoff_initial),
            (DurationOption::BackoffMax, change.backoff_max),
            (DurationOption::Timeout, change.timeout),
            (DurationOption::Delay, change.delay),
            (DurationOption::ExpiresAfter, change.expires_after),
        ] {
            if !text.is_empty() {
                options.set_duration(option, &text).map_err(invalid)?;
            }
        }
        if !change.events.is_empty() {
            options.set_events(&change.events).map_err(invalid)?;
        }
    }
    options.check().map_err(invalid)
}

/// The options as the API shows them: the retry policy with its defaults filled in, the
/// other durations as set (empty when not).
fn options_to_proto(options: &BindingOptions) -> pb::BindingOptions {
    let policy = options.retry_policy();
    let text = |option| {
        options
            .duration(option)
            .map(format_duration)
            .unwrap_or_default()
    };
    pb::BindingOptions {
        max_attempts: Some(policy.max_attempts),
        backoff_initial: format_duration(policy.backoff_initial),
        backoff_max: format_duration(policy.backoff_max),
        timeout: text(DurationOption::Timeout),
        delay: text(DurationOption::Delay),
        expires_after: text(DurationOption::ExpiresAfter),
        events: options.events().to_string(),
    }
}

fn from_timestamp(field: &str, t: prost_types::Timestamp) -> Result<DateTime<Utc>, Status> {
    from_proto_timestamp(t)
        .ok_or_else(|| Status::invalid_argument(format!("{field} is out of range")))
}

/// The history filter of a `ListRuns` request (its page token included).
fn run_filter(request: &pb::ListRunsRequest) -> Result<RunFilter, Status> {
    let filter = RunFilter {
        form_id: parse_optional_uuid("form_id", &request.form_id)?,
        submission_id: parse_optional_uuid("submission_id", &request.submission_id)?,
        binding_id: parse_optional_uuid("binding_id", &request.binding_id)?,
        status: status_from_proto(request.status)?,
        created_after: request
            .created_after
            .map(|t| from_timestamp("created_after", t))
            .transpose()?,
        created_before: request
            .created_before
            .map(|t| from_timestamp("created_before", t))
            .transpose()?,
        after_key: parse_page_token(&request.page_token)?,
        kind: non_empty(&request.kind),
        flag: non_empty(&request.flag),
        flag_field: non_empty(&request.flag_field),
        flag_rule: non_empty(&request.flag_rule),
        error_contains: non_empty(&request.error_contains),
        event: non_empty(&request.event)
            .map(|event| event.parse::<Event>())
            .transpose()
            .map_err(Status::invalid_argument)?,
    };
    if let (Some(after), Some(before)) = (filter.created_after, filter.created_before)
        && after >= before
    {
        return Err(Status::invalid_argument(format!(
            "created_after {after} is not before created_before {before}"
        )));
    }
    Ok(filter)
}

fn config_from_proto(config: Option<prost_types::Struct>) -> Value {
    Value::Object(config.map(from_proto_struct).unwrap_or_default())
}

/// A binding's config with what its kind marks secret masked. A kind this process does not
/// know (a task author's, served by another binary) cannot say which fields are secret, so
/// every text in its config is masked.
pub(crate) fn redacted_config(registry: &Registry, binding: &Binding) -> Value {
    match registry.get(&binding.kind) {
        Some(task) => task.redact_config(&binding.config),
        None => mask_texts(&binding.config),
    }
}

fn mask_texts(value: &Value) -> Value {
    match value {
        Value::String(_) => Value::String("********".into()),
        Value::Array(items) => Value::Array(items.iter().map(mask_texts).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(key, value)| (key.clone(), mask_texts(value)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn binding_to_proto(registry: &Registry, binding: Binding) -> pb::Binding {
    let config = match redacted_config(registry, &binding) {
        Value::Object(map) => Some(to_proto_struct(map)),
        _ => None,
    };
    pb::Binding {
        id: binding.id.to_string(),
        form_id: binding.form_id.to_string(),
        name: binding.name,
        kind: binding.kind,
        mode: mode_to_proto(binding.mode).into(),
        config,
        enabled: binding.enabled,
        options: Some(options_to_proto(&binding.options)),
        created_at: Some(to_proto_timestamp(&binding.created_at)),
        updated_at: Some(to_proto_timestamp(&binding.updated_at)),
    }
}

/// A run as the API shows it, with `attempts` as its attempt history (empty in lists).
fn run_to_proto(run: Run, attempts: Vec<Attempt>) -> pb::Run {
    pb::Run {
        run_id: run.run_id.to_string(),
        binding_id: run.binding_id.to_string(),
        form_id: run.form_id.to_string(),
        submission_id: run.submission_id.to_string(),
        kind: run.kind,
        event: run.event.to_string(),
        mode: mode_to_proto(run.mode).into(),
        status: pb::RunStatus::from(run.status).into(),
        attempts: run.attempts.max(0) as u32,
        output: run.output.map(to_proto_value),
        error: run.error.unwrap_or_default(),
        flags: run.flags.into_iter().map(flag_to_proto).collect(),
        created_at: Some(to_proto_timestamp(&run.created_at)),
        started_at: run.started_at.map(|t| to_proto_timestamp(&t)),
        finished_at: run.finished_at.map(|t| to_proto_timestamp(&t)),
        updated_at: run.updated_at.map(|t| to_proto_timestamp(&t)),
        attempt_history: attempts
            .into_iter()
            .map(|attempt| pb::Attempt {
                attempt: attempt.attempt.max(0) as u32,
                status: pb::AttemptStatus::from(attempt.status).into(),
                error: attempt.error.unwrap_or_default(),
                started_at: Some(to_proto_timestamp(&attempt.started_at)),
                finished_at: Some(to_proto_timestamp(&attempt.finished_at)),
            })
            .collect(),
    }
}

/// A binding write's error: `ALREADY_EXISTS` naming the name when the form has a binding
/// of that name, else [`database_error`].
fn binding_write_error(err: StoreError, name: &str) -> Status {
    if err.is_unique_violation() {
        return Status::already_exists(format!("this form already has a binding named {name:?}"));
    }
    database_error(err)
}

/// Maps a database error to a status; the details go to the log, not to the caller.
fn database_error(err: StoreError) -> Status {
    tracing::error!(error = %err, "database error in the admin API");
    Status::unavailable("the database is unavailable; try again")
}

fn not_found(what: &str, id: Uuid) -> Status {
    Status::not_found(format!("no {what} with id {id}"))
}

fn requeue_error(err: RequeueError) -> Status {
    match err {
        RequeueError::NotFound(id) => not_found("run", id),
        RequeueError::NotRetryable(reason) => Status::failed_precondition(reason),
        RequeueError::Queue(err) => queue_error(err),
        RequeueError::Store(err) => database_error(err),
    }
}

fn queue_error(err: QueueError) -> Status {
    tracing::error!(error = %err, "queue error in the admin API");
    Status::unavailable(format!("{err}; try again"))
}

/// Where a page of runs ended. The time keeps every digit the store holds (SQLite keeps
/// nanoseconds): a rounded one would skip the runs created within the dropped digits.
pub(crate) fn page_token(run: &Run) -> String {
    page_key(run.created_at, run.run_id)
}

/// The page token of `ListRuns` (and the console's `after`) for a page that starts after
/// the run created at `at` with id `run_id`.
pub fn page_key(at: DateTime<Utc>, run_id: Uuid) -> String {
    format!(
        "{}.{:09}_{}",
        at.timestamp(),
        at.timestamp_subsec_nanos(),
        run_id
    )
}

pub(crate) fn parse_page_token(token: &str) -> Result<Option<(DateTime<Utc>, Uuid)>, Status> {
    if token.is_empty() {
        return Ok(None);
    }
    let bad = || Status::invalid_argument("page_token is not one this server issued");
    let (at, id) = token.split_once('_').ok_or_else(bad)?;
    let (seconds, nanos) = at.split_once('.').ok_or_else(bad)?;
    let seconds: i64 = seconds.parse().map_err(|_| bad())?;
    let nanos: u32 = nanos.parse().map_err(|_| bad())?;
    let created_at = DateTime::from_timestamp(seconds, nanos).ok_or_else(bad)?;
    let id = Uuid::parse_str(id).map_err(|_| bad())?;
    Ok(Some((created_at, id)))
}

#[tonic::async_trait]
impl TaskAdmin for Admin {
    async fn create_binding(
        &self,
        request: Request<pb::CreateBindingRequest>,
    ) -> Result<Response<pb::Binding>, Status> {
        let actor = actor(&request);
        let request = request.into_inner();
        let form_id = parse_uuid("form_id", &request.form_id)?;
        let name = request.name.trim().to_owned();
        if name.is_empty() {
            return Err(Status::invalid_argument("name is missing"));
        }
        let mode = parse_mode(request.mode)?;
        let config = config_from_proto(request.config);
        let mut options = BindingOptions::default();
        apply_options(&mut options, request.options)?;
        self.check(&request.kind, mode, &config, &options)?;
        let binding = self
            .store
            .insert_binding(NewBinding {
                form_id,
                name: name.clone(),
                kind: request.kind,
                mode,
                config,
                enabled: request.enabled.unwrap_or(true),
                options,
            })
            .await
            .map_err(|err| binding_write_error(err, &name))?;
        tracing::info!(binding_id = %binding.id, form_id = %binding.form_id, kind = %binding.kind, "binding created");
        let after = self.audited(&binding);
        self.audit(
            actor,
            "binding.create",
            binding.id.to_string(),
            None,
            Some(after),
        )
        .await;
        self.refresh().await;
        Ok(Response::new(binding_to_proto(&self.registry, binding)))
    }

    async fn get_binding(
        &self,
        request: Request<pb::GetBindingRequest>,
    ) -> Result<Response<pb::Binding>, Status> {
        let id = parse_uuid("id", &request.into_inner().id)?;
        let binding = self
            .store
            .get_binding(id)
            .await
            .map_err(database_error)?
            .ok_or_else(|| not_found("binding", id))?;
        Ok(Response::new(binding_to_proto(&self.registry, binding)))
    }

    async fn list_bindings(
        &self,
        request: Request<pb::ListBindingsRequest>,
    ) -> Result<Response<pb::ListBindingsResponse>, Status> {
        let bindings = match parse_optional_uuid("form_id", &request.into_inner().form_id)? {
            Some(form_id) => self.store.form_bindings(form_id).await,
            None => self.store.all_bindings().await,
        }
        .map_err(database_error)?;
        Ok(Response::new(pb::ListBindingsResponse {
            bindings: bindings
                .into_iter()
                .map(|b| binding_to_proto(&self.registry, b))
                .collect(),
        }))
    }

    async fn update_binding(
        &self,
        request: Request<pb::UpdateBindingRequest>,
    ) -> Result<Response<pb::Binding>, Status> {
        let actor = actor(&request);
        let request = request.into_inner();
        let id = parse_uuid("id", &request.id)?;
        let mut binding = self
            .store
            .get_binding(id)
            .await
            .map_err(database_error)?
            .ok_or_else(|| not_found("binding", id))?;
        let before = self.audited(&binding);
        if let Some(name) = request.name {
            let name = name.trim().to_owned();
            if name.is_empty() {
                return Err(Status::invalid_argument("name cannot be empty"));
            }
            binding.name = name;
        }
        if let Some(mode) = request.mode {
            binding.mode = parse_mode(mode)?;
        }
        if request.config.is_some() {
            binding.config = config_from_proto(request.config);
        }
        if let Some(enabled) = request.enabled {
            binding.enabled = enabled;
        }
        apply_options(&mut binding.options, request.options)?;
        self.check(
            &binding.kind,
            binding.mode,
            &binding.config,
            &binding.options,
        )?;
        let binding = self
            .store
            .update_binding(&binding)
            .await
            .map_err(|err| binding_write_error(err, &binding.name))?
            .ok_or_else(|| not_found("binding", id))?;
        let after = self.audited(&binding);
        self.audit(
            actor,
            "binding.update",
            id.to_string(),
            Some(before),
            Some(after),
        )
        .await;
        self.refresh().await;
        Ok(Response::new(binding_to_proto(&self.registry, binding)))
    }

    async fn delete_binding(
        &self,
        request: Request<pb::DeleteBindingRequest>,
    ) -> Result<Response<()>, Status> {
        let actor = actor(&request);
        let id = parse_uuid("id", &request.into_inner().id)?;
        let before = self
            .store
            .get_binding(id)
            .await
            .map_err(database_error)?
            .ok_or_else(|| not_found("binding", id))?;
        if !self
            .store
            .delete_binding(id)
            .await
            .map_err(database_error)?
        {
            return Err(not_found("binding", id));
        }
        let before = self.audited(&before);
        self.audit(actor, "binding.delete", id.to_string(), Some(before), None)
            .await;
        self.refresh().await;
        Ok(Response::new(()))
    }

    async fn list_task_kinds(
        &self,
        _request: Request<pb::ListTaskKindsRequest>,
    ) -> Result<Response<pb::ListTaskKindsResponse>, Status> {
        let kinds = self
            .registry
            .kinds()
            .map(|task| pb::TaskKind {
                name: task.kind().into(),
                description: task.description().into(),
                modes: task
                    .modes()
                    .iter()
                    .map(|m| mode_to_proto(*m).into())
                    .collect(),
                config_schema: match task.config_schema() {
                    Value::Object(schema) => Some(to_proto_struct(schema)),
                    _ => None,
                },
            })
            .collect();
        Ok(Response::new(pb::ListTaskKindsResponse { kinds }))
    }

    async fn list_runs(
        &self,
        request: Request<pb::ListRunsRequest>,
    ) -> Result<Response<pb::ListRunsResponse>, Status> {
        let request = request.into_inner();
        let filter = run_filter(&request)?;
        let page_size = match request.page_size {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        };
        // One extra row tells whether another page follows.
        let mut runs = self
            .store
            .list_runs(&filter, i64::from(page_size) + 1)
            .await
            .map_err(database_error)?;
        let next_page_token = if runs.len() > page_size as usize {
            runs.truncate(page_size as usize);
            runs.last().map(page_token).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListRunsResponse {
            runs: runs
                .into_iter()
                .map(|run| run_to_proto(run, Vec::new()))
                .collect(),
            next_page_token,
        }))
    }

    async fn run_stats(
        &self,
        request: Request<pb::RunStatsRequest>,
    ) -> Result<Response<pb::RunStatsResponse>, Status> {
        let request = request.into_inner();
        let by: StatsBy = request.by.parse().map_err(Status::invalid_argument)?;
        let filter = run_filter(&request.filter.unwrap_or_default())?;
        let counts = self
            .store
            .run_stats(&filter, by)
            .await
            .map_err(database_error)?
            .into_iter()
            .map(|count| pb::RunCount {
                key: count.key,
                runs: u64::try_from(count.runs).unwrap_or_default(),
            })
            .collect();
        Ok(Response::new(pb::RunStatsResponse { counts }))
    }

    async fn get_run(
        &self,
        request: Request<pb::GetRunRequest>,
    ) -> Result<Response<pb::Run>, Status> {
        let run_id = parse_uuid("run_id", &request.into_inner().run_id)?;
        let run = self
            .store
            .get_run(run_id)
            .await
            .map_err(database_error)?
            .ok_or_else(|| not_found("run", run_id))?;
        self.run_with_attempts(run).await
    }

    async fn retry_run(
        &self,
        request: Request<pb::RetryRunRequest>,
    ) -> Result<Response<pb::Run>, Status> {
        let actor = actor(&request);
        let run_id = parse_uuid("run_id", &request.into_inner().run_id)?;
        let before = self.store.get_run(run_id).await.map_err(database_error)?;
        let run = requeue::retry_run(self.store.as_ref(), self.queue.as_ref(), run_id)
            .await
            .map_err(requeue_error)?;
        let status = |run: &Run| json!({"status": run.status.as_str(), "attempts": run.attempts});
        self.audit(
            actor,
            "run.retry",
            run_id.to_string(),
            before.as_ref().map(status),
            Some(status(&run)),
        )
        .await;
        self.run_with_attempts(run).await
    }

    async fn replay_dead_letters(
        &self,
        request: Request<pb::ReplayDeadLettersRequest>,
    ) -> Result<Response<pb::ReplayDeadLettersResponse>, Status> {
        let actor = actor(&request);
        let request = request.into_inner();
        let form_id = parse_optional_uuid("form_id", &request.form_id)?;
        let target = format!(
            "kind {}, form {}",
            if request.kind.is_empty() {
                "any"
            } else {
                &request.kind
            },
            form_id.map_or_else(|| "any".to_owned(), |id| id.to_string())
        );
        let kinds: Vec<String> = if request.kind.is_empty() {
            self.registry.kinds().map(|k| k.kind().to_owned()).collect()
        } else if self.registry.get(&request.kind).is_some() {
            vec![request.kind]
        } else {
            return Err(Status::invalid_argument(format!(
                "unknown task kind `{}`",
                request.kind
            )));
        };
        let replayed =
            requeue::replay_dead_letters(self.store.as_ref(), self.queue.as_ref(), &kinds, form_id)
                .await
                .map_err(requeue_error)?;
        let after = json!({"replayed": replayed.replayed, "unknown": replayed.unknown});
        self.audit(actor, "dlq.replay", target, None, Some(after))
            .await;
        Ok(Response::new(pb::ReplayDeadLettersResponse {
            replayed: replayed.replayed,
            unknown: replayed.unknown,
        }))
    }

    async fn list_audit_entries(
        &self,
        request: Request<pb::ListAuditEntriesRequest>,
    ) -> Result<Response<pb::ListAuditEntriesResponse>, Status> {
        let request = request.into_inner();
        let since = request
            .since
            .map(|t| from_timestamp("since", t))
            .transpose()?;
        let before_id = match request.page_token.as_str() {
            "" => None,
            token => Some(token.parse::<i64>().map_err(|_| {
                Status::invalid_argument("page_token is not one this server issued")
            })?),
        };
        let page_size = match request.page_size {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        };
        // One extra entry tells whether another page follows.
        let mut entries = self
            .store
            .audit_entries(since, before_id, i64::from(page_size) + 1)
            .await
            .map_err(database_error)?;
        let next_page_token = if entries.len() > page_size as usize {
            entries.truncate(page_size as usize);
            entries.last().map(|e| e.id.to_string()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListAuditEntriesResponse {
            entries: entries
                .into_iter()
                .map(|entry| pb::AuditEntry {
                    id: entry.id,
                    at: Some(to_proto_timestamp(&entry.at)),
                    actor: entry.actor,
                    action: entry.action,
                    target: entry.target,
                    before: entry.before.map(to_proto_value),
                    after: entry.after.map(to_proto_value),
                })
                .collect(),
            next_page_token,
        }))
    }

    async fn list_queues(
        &self,
        _request: Request<pb::ListQueuesRequest>,
    ) -> Result<Response<pb::ListQueuesResponse>, Status> {
        let queues = self
            .queue
            .stats()
            .await
            .map_err(queue_error)?
            .into_iter()
            .map(|stats| pb::QueueStats {
                kind: stats.kind,
                ready: stats.ready,
                in_flight: stats.in_flight,
                waiting: stats.waiting,
                dead: stats.dead,
                consumers: stats.consumers,
                oldest_ready_ms: stats
                    .oldest_ready
                    .map(|age| u64::try_from(age.as_millis()).unwrap_or(u64::MAX)),
            })
            .collect();
        Ok(Response::new(pb::ListQueuesResponse { queues }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_of_a_kind_this_process_does_not_know_shows_no_text() {
        let config = json!({"auth_token": "t0k3n", "retries": 3, "to": ["+1555"], "on": true});
        assert_eq!(
            mask_texts(&config),
            json!({"auth_token": "********", "retries": 3, "to": ["********"], "on": true})
        );
    }

    #[test]
    fn a_page_token_keeps_the_run_time_to_the_nanosecond() {
        let at = DateTime::from_timestamp(1_796_000_000, 123_456_789).unwrap();
        let submission = postsub_tasks::Submission {
            form_id: Uuid::new_v4(),
            submission_id: Uuid::new_v4(),
            answers: serde_json::Map::new(),
            submitted_at: at,
            metadata: Default::default(),
            event: Event::Created,
            revision: 0,
        };
        let run = Run::queued(Uuid::new_v4(), "webhook", Mode::Async, &submission, at);
        assert_eq!(
            parse_page_token(&page_token(&run)).unwrap(),
            Some((at, run.run_id))
        );
        for garbage in ["1_x", "1.5", "x.1_00000000-0000-0000-0000-000000000000"] {
            assert!(parse_page_token(garbage).is_err(), "{garbage}");
        }
    }
}
