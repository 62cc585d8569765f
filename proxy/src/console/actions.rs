//! What an `admin` session may do. Each action is a POST carrying the session's CSRF
//! token; a `read` session gets 403 (and sees no buttons). Changes go through the
//! `TaskAdmin` service and [`crate::requeue`], so they are checked and audited as the API
//! and CLI's are.

use askama::Template;
use axum::{
    Form,
    extract::{Path, Query, State},
    response::{IntoResponse, Redirect, Response},
};
use postsub::pb::{self, task_admin_server::TaskAdmin};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use super::{Console, PageError, Refusal, Viewer, render, session::CsrfForm};
use crate::{
    requeue::{self, RequeueError},
    run::RunStatus,
    store::{NewAuditEntry, RunFilter},
};

/// Dead runs read per round trip when a group is retried.
const GROUP_CHUNK: i64 = 500;

fn admin_only(viewer: &Viewer) -> Result<(), PageError> {
    if viewer.can_act() {
        Ok(())
    } else {
        Err(PageError::forbidden(format!(
            "token {:?} has the `{}` scope; changes need an `admin` token",
            viewer.name, viewer.scope
        )))
    }
}

/// A request to the admin API made by `viewer`.
fn as_viewer<T>(viewer: &Viewer, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.extensions_mut().insert(viewer.caller());
    request
}

pub(super) async fn retry_run(
    State(console): State<Console>,
    viewer: Viewer,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Result<Response, Refusal> {
    let back = format!("/ui/runs/{id}");
    viewer.check_csrf(&form.csrf, &back)?;
    admin_only(&viewer)?;
    console
        .inner
        .admin
        .retry_run(as_viewer(&viewer, pb::RetryRunRequest { run_id: id }))
        .await
        .map_err(PageError::from_status)?;
    Ok(Redirect::to(&back).into_response())
}

#[derive(Deserialize)]
pub(super) struct GroupQuery {
    binding: String,
    cause: String,
}

impl GroupQuery {
    fn binding_id(&self) -> Result<Uuid, PageError> {
        Uuid::parse_str(self.binding.trim()).map_err(|_| {
            PageError::bad_request(format!("binding: `{}` is not a UUID", self.binding))
        })
    }
}

/// The dead runs of `binding_id` whose error is of `cause`, all of them.
async fn group_runs(
    console: &Console,
    binding_id: Uuid,
    cause: &str,
) -> Result<Vec<Uuid>, PageError> {
    let mut filter = RunFilter {
        binding_id: Some(binding_id),
        status: Some(RunStatus::Dead),
        ..RunFilter::default()
    };
    let mut runs = Vec::new();
    loop {
        let page = console
            .inner
            .store
            .list_runs(&filter, GROUP_CHUNK)
            .await
            .map_err(|err| PageError::unavailable("listing dead runs", err))?;
        runs.extend(
            page.iter()
                .filter(|run| crate::run::error_cause(run.error.as_deref()) == cause)
                .map(|run| run.run_id),
        );
        match page.last() {
            Some(last) if page.len() == GROUP_CHUNK as usize => {
                filter.after_key = Some((last.created_at, last.run_id));
            }
            _ => return Ok(runs),
        }
    }
}

#[derive(Template)]
#[template(path = "console/confirm.html")]
struct ConfirmPage {
    viewer: Viewer,
    binding: String,
    binding_id: String,
    cause: String,
    count: usize,
    command: String,
}

/// Before a group is retried: how many runs it touches, the CLI that does the same, and
/// a button to confirm.
pub(super) async fn confirm_retry_group(
    State(console): State<Console>,
    viewer: Viewer,
    Query(query): Query<GroupQuery>,
) -> Result<Response, PageError> {
    admin_only(&viewer)?;
    let binding_id = query.binding_id()?;
    let runs = group_runs(&console, binding_id, &query.cause).await?;
    let binding = console
        .inner
        .store
        .get_binding(binding_id)
        .await
        .map_err(|err| PageError::unavailable("reading the binding", err))?
        .map_or_else(|| "(deleted binding)".to_owned(), |b| b.name);
    let command = format!(
        "postsub runs retry-dead --binding {binding_id} --cause '{}'",
        query.cause
    );
    Ok(render(&ConfirmPage {
        viewer,
        binding,
        binding_id: binding_id.to_string(),
        cause: query.cause,
        count: runs.len(),
        command,
    }))
}

#[derive(Deserialize)]
pub(super) struct GroupForm {
    csrf: String,
    binding: String,
    cause: String,
}

#[derive(Template)]
#[template(path = "console/retried.html")]
struct RetriedPage {
    viewer: Viewer,
    cause: String,
    retried: usize,
    skipped: usize,
    failed: Vec<String>,
}

/// Retries every dead run of a group. A run no longer dead (a second click, or retried
/// meanwhile) is skipped, so each run is retried once.
pub(super) async fn retry_group(
    State(console): State<Console>,
    viewer: Viewer,
    Form(form): Form<GroupForm>,
) -> Result<Response, Refusal> {
    viewer.check_csrf(&form.csrf, "/ui/dead")?;
    let run = async {
        admin_only(&viewer)?;
        let query = GroupQuery {
            binding: form.binding,
            cause: form.cause,
        };
        let binding_id = query.binding_id()?;
        let runs = group_runs(&console, binding_id, &query.cause).await?;
        let inner = &console.inner;
        let (mut retried, mut skipped, mut failed) = (0, 0, Vec::new());
        for run_id in &runs {
            match requeue::retry_run(inner.store.as_ref(), inner.queue.as_ref(), *run_id).await {
                Ok(_) => retried += 1,
                Err(RequeueError::NotRetryable(_) | RequeueError::NotFound(_)) => skipped += 1,
                Err(err) => failed.push(format!("{run_id}: {err}")),
            }
        }
        let entry = NewAuditEntry {
            actor: viewer.name.clone(),
            action: "run.retry_group".to_owned(),
            target: format!("binding {binding_id}, cause {}", query.cause),
            before: Some(json!({"dead": runs.len()})),
            after: Some(json!({"retried": retried, "skipped": skipped, "failed": failed.len()})),
        };
        if let Err(err) = inner.store.record_audit(&entry).await {
            tracing::error!(error = %err, action = %entry.action, target = %entry.target,
                "the audit log could not record a change");
        }
        tracing::info!(%binding_id, cause = %query.cause, retried, skipped,
            failed = failed.len(), "console: dead runs retried");
        Ok::<_, PageError>(render(&RetriedPage {
            viewer: viewer.clone(),
            cause: query.cause,
            retried,
            skipped,
            failed,
        }))
    };
    Ok(run.await?)
}

#[derive(Deserialize)]
pub(super) struct EnabledForm {
    csrf: String,
    enabled: bool,
}

pub(super) async fn set_enabled(
    State(console): State<Console>,
    viewer: Viewer,
    Path(id): Path<String>,
    Form(form): Form<EnabledForm>,
) -> Result<Response, Refusal> {
    viewer.check_csrf(&form.csrf, "/ui/bindings")?;
    admin_only(&viewer)?;
    console
        .inner
        .admin
        .update_binding(as_viewer(
            &viewer,
            pb::UpdateBindingRequest {
                id,
                enabled: Some(form.enabled),
                ..Default::default()
            },
        ))
        .await
        .map_err(PageError::from_status)?;
    Ok(Redirect::to("/ui/bindings").into_response())
}
