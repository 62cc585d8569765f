//! The console's pages. Every filter is in the URL (a link can be shared), lists page by
//! key (`created_at`, `run_id`), never by offset, and a bad filter is a 400 page naming
//! the field.

use std::{collections::HashMap, str::FromStr, time::Duration};

use askama::Template;
use axum::{
    body::Body,
    extract::{Path, Query, State},
    http::header,
    response::{IntoResponse, Response},
};
use chrono::{DateTime, DurationRound as _, NaiveDateTime, Utc};
use postsub_tasks::Event;
use serde::Deserialize;
use uuid::Uuid;

use super::{
    Console, PageError, Viewer, render,
    view::{self, age, maybe_time, pretty, query_string, time},
};
use crate::{
    admin::{non_empty, page_token, parse_page_token},
    queue::KindStats,
    run::{Run, RunStatus, error_cause},
    store::{Binding, RunFilter},
};

/// Runs on one page of the Runs page.
const RUNS_PAGE: i64 = 50;
/// Runs per database round trip of the CSV export.
const CSV_CHUNK: i64 = 1000;
/// Audit entries per page.
const AUDIT_PAGE: i64 = 50;
/// Groups of dead runs read at most.
const DEAD_GROUPS: i64 = 1000;
/// Errors the Forms page reads at most to find each binding's last one (a storm of one
/// binding's errors can hide another's older one past this many).
const RECENT_ERRORS: i64 = 10_000;
/// The Overview chart's width in minutes.
const CHART_MINUTES: i64 = 60;

/// Bindings by id, to name them in lists (runs outlive deleted bindings).
async fn bindings_by_id(console: &Console) -> Result<HashMap<Uuid, Binding>, PageError> {
    Ok(console
        .inner
        .store
        .all_bindings()
        .await
        .map_err(|err| PageError::unavailable("reading bindings", err))?
        .into_iter()
        .map(|binding| (binding.id, binding))
        .collect())
}

fn binding_name(bindings: &HashMap<Uuid, Binding>, id: Uuid) -> String {
    bindings.get(&id).map_or_else(
        || format!("(deleted {})", &id.to_string()[..8]),
        |b| b.name.clone(),
    )
}

// ---------------------------------------------------------------- Overview

/// One task kind's queue, as the Overview and Dead letters pages show it.
pub(super) struct QueueRow {
    kind: String,
    ready: u64,
    in_flight: String,
    waiting: String,
    dead: u64,
    consumers: String,
    oldest: String,
}

fn optional(count: Option<u64>) -> String {
    count.map_or_else(|| "–".to_owned(), |n| n.to_string())
}

impl From<KindStats> for QueueRow {
    fn from(stats: KindStats) -> Self {
        QueueRow {
            kind: stats.kind,
            ready: stats.ready,
            in_flight: optional(stats.in_flight),
            waiting: optional(stats.waiting),
            dead: stats.dead,
            consumers: optional(stats.consumers),
            oldest: stats
                .oldest_ready
                .map_or_else(|| "–".to_owned(), |d| age(d.as_secs())),
        }
    }
}

/// Where a status (as stored) goes in lists: the order of [`RunStatus::ALL`].
fn status_order(status: &str) -> usize {
    RunStatus::from_str(status).map_or(usize::MAX, |status| status as usize)
}

/// One bar segment of the runs-per-minute chart.
struct Bar {
    x: i64,
    y: i64,
    height: i64,
    status: String,
    title: String,
}

#[derive(Template)]
#[template(path = "console/overview_live.html")]
struct OverviewLive {
    queues: Vec<QueueRow>,
    queue_error: Option<String>,
    /// Jobs in RabbitMQ's outbox; `None` on the embedded backend, which has none.
    outbox: Option<u64>,
    bars: Vec<Bar>,
    chart_max: i64,
    totals: Vec<(String, i64)>,
    updated: String,
}

#[derive(Template)]
#[template(path = "console/overview.html")]
struct OverviewPage {
    viewer: Viewer,
    live: String,
}

async fn overview_live_part(console: &Console) -> Result<OverviewLive, PageError> {
    let now = Utc::now();
    // The chart's first minute, whole.
    let since = (now - chrono::Duration::minutes(CHART_MINUTES - 1))
        .duration_trunc(chrono::Duration::minutes(1))
        .expect("a minute divides any time");
    let inner = &console.inner;
    // Independent reads, at once (the page refreshes every 5 s).
    let (stats, outbox, counts) = tokio::join!(
        inner.queue.stats(),
        inner.queue.outbox_size(),
        inner.store.runs_per_minute(since),
    );
    let (queues, queue_error) = match stats {
        Ok(stats) => (stats.into_iter().map(QueueRow::from).collect(), None),
        Err(err) => (
            Vec::new(),
            Some(format!("the job queue did not answer: {err}")),
        ),
    };
    let outbox = outbox.unwrap_or_else(|err| {
        tracing::debug!(error = %err, "console: the outbox size is unavailable");
        None
    });
    let counts = counts.map_err(|err| PageError::unavailable("counting runs", err))?;
    // Minute index → status → count.
    let mut per_minute: Vec<Vec<(String, i64)>> = vec![Vec::new(); CHART_MINUTES as usize];
    let mut totals: Vec<(String, i64)> = Vec::new();
    for count in counts {
        let Ok(minute) = NaiveDateTime::parse_from_str(&count.minute, "%Y-%m-%dT%H:%M") else {
            continue;
        };
        let index = (minute.and_utc() - since).num_minutes();
        if !(0..CHART_MINUTES).contains(&index) {
            continue;
        }
        per_minute[index as usize].push((count.status.clone(), count.count));
        match totals
            .iter_mut()
            .find(|(status, _)| *status == count.status)
        {
            Some((_, total)) => *total += count.count,
            None => totals.push((count.status, count.count)),
        }
    }
    totals.sort_by_key(|(status, _)| status_order(status));
    let chart_max = per_minute
        .iter()
        .map(|minute| minute.iter().map(|(_, n)| n).sum::<i64>())
        .max()
        .unwrap_or(0)
        .max(1);
    const HEIGHT: i64 = 100;
    let mut bars = Vec::new();
    for (index, minute) in per_minute.iter_mut().enumerate() {
        minute.sort_by_key(|(status, _)| status_order(status));
        let mut top = HEIGHT;
        let at = since + chrono::Duration::minutes(index as i64);
        for (status, count) in minute.iter() {
            let height = (count * HEIGHT / chart_max).max(1);
            top -= height;
            bars.push(Bar {
                x: index as i64 * 10,
                y: top,
                height,
                status: status.clone(),
                title: format!("{}: {count} {status}", at.format("%H:%M")),
            });
        }
    }
    Ok(OverviewLive {
        queues,
        queue_error,
        outbox,
        bars,
        chart_max,
        totals,
        updated: time(&now),
    })
}

pub(super) async fn overview(
    State(console): State<Console>,
    viewer: Viewer,
) -> Result<Response, PageError> {
    let live = overview_live_part(&console).await?;
    let live = live
        .render()
        .map_err(|err| PageError::unavailable("rendering the overview", err))?;
    Ok(render(&OverviewPage { viewer, live }))
}

/// The Overview's figures alone, for its live refresh.
pub(super) async fn overview_live(
    State(console): State<Console>,
    _viewer: Viewer,
) -> Result<Response, PageError> {
    Ok(render(&overview_live_part(&console).await?))
}

// ---------------------------------------------------------------- Forms

struct BindingRow {
    id: String,
    name: String,
    kind: String,
    mode: String,
    enabled: bool,
    runs: i64,
    success: String,
    backlog: i64,
    dead: i64,
    last_error: String,
    failed_link: String,
}

struct FormRows {
    form_id: String,
    bindings: Vec<BindingRow>,
}

#[derive(Template)]
#[template(path = "console/forms.html")]
struct FormsPage {
    viewer: Viewer,
    forms: Vec<FormRows>,
}

pub(super) async fn forms(
    State(console): State<Console>,
    viewer: Viewer,
) -> Result<Response, PageError> {
    let store = &console.inner.store;
    let since = Utc::now() - chrono::Duration::hours(24);
    let unavailable = |err| PageError::unavailable("counting runs", err);
    let bindings = store
        .all_bindings()
        .await
        .map_err(|err| PageError::unavailable("reading bindings", err))?;
    // Three independent reads, at once: the page waits for the slowest, not the sum.
    let (recent, unfinished, errors) = tokio::join!(
        store.runs_by_binding(since),
        store.unfinished_by_binding(),
        store.recent_errors(since, RECENT_ERRORS),
    );
    let (recent, unfinished) = (
        recent.map_err(unavailable)?,
        unfinished.map_err(unavailable)?,
    );
    // Newest first: the first error of a binding is its last.
    let mut last_errors: HashMap<Uuid, String> = HashMap::new();
    for error in errors.map_err(unavailable)? {
        last_errors
            .entry(error.binding_id)
            .or_insert_with(|| format!("{}: {}", time(&error.created_at), error.error));
    }
    let mut forms: Vec<FormRows> = Vec::new();
    for binding in bindings {
        let of = |counts: &[crate::store::BindingStatusCount], statuses: &[&str]| -> i64 {
            counts
                .iter()
                .filter(|c| c.binding_id == binding.id && statuses.contains(&c.status.as_str()))
                .map(|c| c.count)
                .sum()
        };
        let runs = of(&recent, &RunStatus::ALL.map(RunStatus::as_str));
        let succeeded = of(&recent, &["succeeded"]);
        let finished = of(&recent, &["succeeded", "failed", "dead", "expired"]);
        let last_error = last_errors.remove(&binding.id).unwrap_or_default();
        let failed_status = if binding.mode == postsub_tasks::Mode::Sync {
            "failed"
        } else {
            "dead"
        };
        let row = BindingRow {
            id: binding.id.to_string(),
            name: binding.name.clone(),
            kind: binding.kind.clone(),
            mode: binding.mode.as_str().to_owned(),
            enabled: binding.enabled,
            runs,
            success: if finished == 0 {
                "–".to_owned()
            } else {
                format!("{:.1} %", succeeded as f64 * 100.0 / finished as f64)
            },
            backlog: of(&unfinished, &["queued", "running"]),
            dead: of(&unfinished, &["dead"]),
            last_error,
            failed_link: format!(
                "/ui/runs?{}",
                query_string([
                    ("binding", binding.id.to_string().as_str()),
                    ("status", failed_status)
                ])
            ),
        };
        let form_id = binding.form_id.to_string();
        match forms.iter_mut().find(|form| form.form_id == form_id) {
            Some(form) => form.bindings.push(row),
            None => forms.push(FormRows {
                form_id,
                bindings: vec![row],
            }),
        }
    }
    Ok(render(&FormsPage { viewer, forms }))
}

// ---------------------------------------------------------------- Runs

/// The Runs page's filters, as the URL carries them.
#[derive(Debug, Default, Clone, Deserialize)]
pub(super) struct RunsQuery {
    #[serde(default)]
    form: String,
    #[serde(default)]
    binding: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    event: String,
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
    #[serde(default)]
    submission: String,
    #[serde(default)]
    flag: String,
    #[serde(default)]
    error: String,
    #[serde(default)]
    after: String,
}

fn uuid_field(field: &str, text: &str) -> Result<Option<Uuid>, PageError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    Uuid::parse_str(text)
        .map(Some)
        .map_err(|_| PageError::bad_request(format!("{field}: `{text}` is not a UUID")))
}

/// A time from the filter form: RFC 3339, or `YYYY-MM-DDTHH:MM[:SS]` / `YYYY-MM-DD` in UTC
/// (what a `datetime-local` input sends).
fn time_field(field: &str, text: &str) -> Result<Option<DateTime<Utc>>, PageError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Ok(Some(at.with_timezone(&Utc)));
    }
    for format in [
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(at) = NaiveDateTime::parse_from_str(text, format) {
            return Ok(Some(at.and_utc()));
        }
    }
    if let Ok(day) = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(day.and_hms_opt(0, 0, 0).map(|at| at.and_utc()));
    }
    Err(PageError::bad_request(format!(
        "{field}: `{text}` is not a time (2026-12-03T09:30, UTC, or RFC 3339)"
    )))
}

impl RunsQuery {
    /// The store's filter, or a 400 naming the field that is wrong.
    fn filter(&self) -> Result<RunFilter, PageError> {
        let status = match self.status.trim() {
            "" => None,
            status => Some(RunStatus::from_str(status).map_err(|_| {
                PageError::bad_request(format!(
                    "status: `{status}` is not a status (queued, running, succeeded, failed, \
                     dead or expired)"
                ))
            })?),
        };
        let created_after = time_field("from", &self.from)?;
        let created_before = time_field("to", &self.to)?;
        if let (Some(from), Some(to)) = (created_after, created_before)
            && from >= to
        {
            return Err(PageError::bad_request(
                "from, to: the time range is the wrong way round (from must be before to)",
            ));
        }
        Ok(RunFilter {
            form_id: uuid_field("form", &self.form)?,
            submission_id: uuid_field("submission", &self.submission)?,
            binding_id: uuid_field("binding", &self.binding)?,
            status,
            created_after,
            created_before,
            kind: non_empty(&self.kind),
            flag: non_empty(&self.flag),
            flag_field: None,
            flag_rule: None,
            event: non_empty(&self.event)
                .map(|event| event.parse::<Event>())
                .transpose()
                .map_err(|why| PageError::bad_request(format!("event: {why}")))?,
            error_contains: non_empty(&self.error),
            after_key: parse_page_token(self.after.trim())
                .map_err(|_| PageError::bad_request("after: not a page key this console made"))?,
        })
    }

    /// The query string of these filters, with `after` as given.
    fn link(&self, after: &str) -> String {
        query_string([
            ("form", self.form.as_str()),
            ("binding", self.binding.as_str()),
            ("kind", self.kind.as_str()),
            ("status", self.status.as_str()),
            ("event", self.event.as_str()),
            ("from", self.from.as_str()),
            ("to", self.to.as_str()),
            ("submission", self.submission.as_str()),
            ("flag", self.flag.as_str()),
            ("error", self.error.as_str()),
            ("after", after),
        ])
    }
}

/// A run in a list.
pub(super) struct RunRow {
    run_id: String,
    created: String,
    status: String,
    /// `flagged (2)` for a sync run whose flags the submit reported.
    verdict: String,
    /// The submission event the run is for.
    event: &'static str,
    kind: String,
    binding: String,
    submission_id: String,
    attempts: i32,
    error: String,
}

fn verdict(run: &Run) -> String {
    if run.status == RunStatus::Succeeded && !run.flags.is_empty() {
        format!("flagged ({})", run.flags.len())
    } else {
        run.status.as_str().to_owned()
    }
}

fn run_row(run: &Run, bindings: &HashMap<Uuid, Binding>) -> RunRow {
    RunRow {
        run_id: run.run_id.to_string(),
        created: time(&run.created_at),
        status: run.status.as_str().to_owned(),
        verdict: verdict(run),
        event: run.event.as_str(),
        kind: run.kind.clone(),
        binding: binding_name(bindings, run.binding_id),
        submission_id: run.submission_id.to_string(),
        attempts: run.attempts,
        error: run
            .error
            .as_deref()
            .map(|e| e.chars().take(160).collect())
            .unwrap_or_default(),
    }
}

#[derive(Template)]
#[template(path = "console/runs.html")]
struct RunsPage {
    viewer: Viewer,
    query: RunsQuery,
    statuses: Vec<&'static str>,
    events: Vec<&'static str>,
    kinds: Vec<String>,
    problem: Option<String>,
    /// Said when the filter's form has no binding (its `Process` calls run nothing).
    unbound_form: bool,
    runs: Vec<RunRow>,
    next: Option<String>,
    csv: String,
}

pub(super) async fn runs(
    State(console): State<Console>,
    viewer: Viewer,
    Query(query): Query<RunsQuery>,
) -> Result<Response, PageError> {
    let kinds = console
        .inner
        .registry
        .kinds()
        .map(|k| k.kind().to_owned())
        .collect();
    let statuses = RunStatus::ALL.iter().map(|s| s.as_str()).collect();
    let events = Event::ALL.iter().map(|e| e.as_str()).collect();
    let filter = match query.filter() {
        Ok(filter) => filter,
        // The page with the filter form, saying what is wrong.
        Err(problem) => {
            let mut response = render(&RunsPage {
                viewer,
                csv: String::new(),
                query,
                statuses,
                events,
                kinds,
                problem: Some(problem.message),
                unbound_form: false,
                runs: Vec::new(),
                next: None,
            });
            *response.status_mut() = problem.status;
            return Ok(response);
        }
    };
    let mut runs = console
        .inner
        .store
        .list_runs(&filter, RUNS_PAGE + 1)
        .await
        .map_err(|err| PageError::unavailable("listing runs", err))?;
    let next = (runs.len() > RUNS_PAGE as usize).then(|| {
        runs.truncate(RUNS_PAGE as usize);
        format!(
            "/ui/runs?{}",
            query.link(&page_token(runs.last().expect("a full page")))
        )
    });
    let bindings = bindings_by_id(&console).await?;
    let rows = runs.iter().map(|run| run_row(run, &bindings)).collect();
    let unbound_form = filter
        .form_id
        .is_some_and(|form| !bindings.values().any(|b| b.form_id == form));
    Ok(render(&RunsPage {
        viewer,
        csv: format!("/ui/runs.csv?{}", query.link("")),
        query,
        statuses,
        events,
        kinds,
        problem: None,
        unbound_form,
        runs: rows,
        next,
    }))
}

const CSV_HEADER: [&str; 14] = [
    "run_id",
    "created_at",
    "status",
    "flags",
    "kind",
    "mode",
    "binding_id",
    "binding",
    "form_id",
    "submission_id",
    "attempts",
    "finished_at",
    "error",
    "event",
];

fn csv_run(run: &Run, bindings: &HashMap<Uuid, Binding>) -> String {
    let created = run.created_at.to_rfc3339();
    let finished = run.finished_at.map(|t| t.to_rfc3339()).unwrap_or_default();
    view::csv_line([
        run.run_id.to_string().as_str(),
        &created,
        run.status.as_str(),
        &run.flags.len().to_string(),
        &run.kind,
        run.mode.as_str(),
        &run.binding_id.to_string(),
        &binding_name(bindings, run.binding_id),
        &run.form_id.to_string(),
        &run.submission_id.to_string(),
        &run.attempts.to_string(),
        &finished,
        run.error.as_deref().unwrap_or(""),
        run.event.as_str(),
    ])
}

/// Every run the filter matches, as CSV, streamed a chunk at a time (memory stays flat
/// however many there are).
pub(super) async fn runs_csv(
    State(console): State<Console>,
    _viewer: Viewer,
    Query(query): Query<RunsQuery>,
) -> Result<Response, PageError> {
    let filter = query.filter()?;
    let bindings = bindings_by_id(&console).await?;
    let header = view::csv_line(CSV_HEADER);
    struct Cursor {
        console: Console,
        filter: RunFilter,
        bindings: HashMap<Uuid, Binding>,
        header: Option<String>,
        done: bool,
    }
    let cursor = Cursor {
        console,
        filter,
        bindings,
        header: Some(header),
        done: false,
    };
    let chunks = futures_util::stream::unfold(cursor, |mut cursor| async move {
        if let Some(header) = cursor.header.take() {
            return Some((Ok(header), cursor));
        }
        if cursor.done {
            return None;
        }
        let page = match cursor
            .console
            .inner
            .store
            .list_runs(&cursor.filter, CSV_CHUNK)
            .await
        {
            Ok(page) => page,
            Err(err) => {
                tracing::warn!(error = %err, "console: the CSV export stopped");
                cursor.done = true;
                return Some((Err(std::io::Error::other(err.to_string())), cursor));
            }
        };
        if page.len() < CSV_CHUNK as usize {
            cursor.done = true;
        }
        let last = page.last()?;
        cursor.filter.after_key = Some((last.created_at, last.run_id));
        let chunk: String = page
            .iter()
            .map(|run| csv_run(run, &cursor.bindings))
            .collect();
        Some((Ok(chunk), cursor))
    });
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"runs.csv\"",
            ),
        ],
        Body::from_stream(chunks),
    )
        .into_response())
}

// ---------------------------------------------------------------- Run and Submission

struct AttemptRow {
    attempt: i32,
    status: String,
    error: String,
    started: String,
    took: String,
}

/// A run with everything the Run and Submission pages show of it.
struct RunDetail {
    row: RunRow,
    mode: String,
    binding_id: String,
    form_id: String,
    started: String,
    finished: String,
    output: Option<String>,
    flags: Vec<(String, String, String)>,
    attempts: Vec<AttemptRow>,
    retryable: bool,
}

async fn run_detail(
    console: &Console,
    run: Run,
    bindings: &HashMap<Uuid, Binding>,
) -> Result<RunDetail, PageError> {
    let attempts = console
        .inner
        .store
        .run_attempts(&run)
        .await
        .map_err(|err| PageError::unavailable("reading attempts", err))?;
    Ok(RunDetail {
        row: run_row(&run, bindings),
        mode: run.mode.as_str().to_owned(),
        binding_id: run.binding_id.to_string(),
        form_id: run.form_id.to_string(),
        started: maybe_time(run.started_at.as_ref()),
        finished: maybe_time(run.finished_at.as_ref()),
        output: run.output.as_ref().map(pretty),
        flags: run
            .flags
            .iter()
            .map(|f| (f.field.clone(), f.rule.clone(), f.message.clone()))
            .collect(),
        attempts: attempts
            .into_iter()
            .map(|a| AttemptRow {
                attempt: a.attempt,
                status: a.status.as_str().to_owned(),
                error: a.error.unwrap_or_default(),
                started: time(&a.started_at),
                took: view::took(
                    (a.finished_at - a.started_at)
                        .to_std()
                        .unwrap_or(Duration::ZERO),
                ),
            })
            .collect(),
        retryable: run.mode == postsub_tasks::Mode::Async
            && matches!(
                run.status,
                RunStatus::Dead | RunStatus::Failed | RunStatus::Expired
            ),
    })
}

/// The submission's answers as a run's stored job has them (async runs only), masked.
async fn answers_of(console: &Console, run_id: Uuid) -> Result<Option<String>, PageError> {
    let job = console
        .inner
        .store
        .run_input(run_id)
        .await
        .map_err(|err| PageError::unavailable("reading the run's job", err))?;
    Ok(job.map(|job| {
        pretty(&view::masked_answers(&serde_json::Value::Object(
            job.submission.answers,
        )))
    }))
}

#[derive(Template)]
#[template(path = "console/run.html")]
struct RunPage {
    viewer: Viewer,
    run: RunDetail,
    answers: Option<String>,
}

pub(super) async fn run(
    State(console): State<Console>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let run_id = uuid_field("run id", &id)?.ok_or_else(|| PageError::bad_request("no run id"))?;
    let run = console
        .inner
        .store
        .get_run(run_id)
        .await
        .map_err(|err| PageError::unavailable("reading the run", err))?
        .ok_or_else(|| PageError::not_found(format!("no run with id {run_id}")))?;
    let bindings = bindings_by_id(&console).await?;
    let answers = answers_of(&console, run_id).await?;
    let run = run_detail(&console, run, &bindings).await?;
    Ok(render(&RunPage {
        viewer,
        run,
        answers,
    }))
}

#[derive(Template)]
#[template(path = "console/submission.html")]
struct SubmissionPage {
    viewer: Viewer,
    submission_id: String,
    runs: Vec<RunDetail>,
    answers: Option<String>,
}

/// Runs of one submission shown at most (one per binding: a form has few).
const SUBMISSION_RUNS: i64 = 200;

pub(super) async fn submission(
    State(console): State<Console>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let submission_id =
        uuid_field("submission id", &id)?.ok_or_else(|| PageError::bad_request("no id"))?;
    let filter = RunFilter {
        submission_id: Some(submission_id),
        ..RunFilter::default()
    };
    let mut found = console
        .inner
        .store
        .list_runs(&filter, SUBMISSION_RUNS)
        .await
        .map_err(|err| PageError::unavailable("listing runs", err))?;
    if found.is_empty() {
        return Err(PageError::not_found(format!(
            "no runs of submission {submission_id}: it was never processed, or by another \
             deployment"
        )));
    }
    // Sync verdicts first, then each async destination, oldest first.
    found.sort_by_key(|run| (run.mode == postsub_tasks::Mode::Async, run.created_at));
    let bindings = bindings_by_id(&console).await?;
    let mut answers = None;
    let mut runs = Vec::with_capacity(found.len());
    for run in found {
        if answers.is_none() && run.mode == postsub_tasks::Mode::Async {
            answers = answers_of(&console, run.run_id).await?;
        }
        runs.push(run_detail(&console, run, &bindings).await?);
    }
    Ok(render(&SubmissionPage {
        viewer,
        submission_id: submission_id.to_string(),
        runs,
        answers,
    }))
}

// ---------------------------------------------------------------- Dead letters

pub(super) struct DeadGroupRow {
    binding: String,
    binding_id: String,
    kind: String,
    cause: String,
    count: i64,
    sample: String,
    newest: String,
    retry_link: String,
    runs_link: String,
}

#[derive(Template)]
#[template(path = "console/dead.html")]
struct DeadPage {
    viewer: Viewer,
    groups: Vec<DeadGroupRow>,
    queues: Vec<QueueRow>,
}

/// Dead runs grouped by binding and cause, largest first.
pub(super) async fn dead_groups(console: &Console) -> Result<Vec<DeadGroupRow>, PageError> {
    let raw = console
        .inner
        .store
        .dead_run_groups(DEAD_GROUPS)
        .await
        .map_err(|err| PageError::unavailable("grouping dead runs", err))?;
    let bindings = bindings_by_id(console).await?;
    let mut groups: Vec<DeadGroupRow> = Vec::new();
    for group in raw {
        let cause = error_cause(group.error.as_deref());
        let binding_id = group.binding_id.to_string();
        if let Some(row) = groups
            .iter_mut()
            .find(|row| row.binding_id == binding_id && row.cause == cause)
        {
            row.count += group.count;
            continue;
        }
        let kind = bindings
            .get(&group.binding_id)
            .map(|b| b.kind.clone())
            .unwrap_or_default();
        groups.push(DeadGroupRow {
            binding: binding_name(&bindings, group.binding_id),
            retry_link: format!(
                "/ui/dead/retry?{}",
                query_string([("binding", binding_id.as_str()), ("cause", cause.as_str())])
            ),
            runs_link: format!(
                "/ui/runs?{}",
                query_string([("binding", binding_id.as_str()), ("status", "dead")])
            ),
            binding_id,
            kind,
            cause,
            count: group.count,
            sample: group.error.unwrap_or_default().chars().take(300).collect(),
            newest: time(&group.newest),
        });
    }
    groups.sort_by_key(|group| std::cmp::Reverse(group.count));
    Ok(groups)
}

pub(super) async fn dead_letters(
    State(console): State<Console>,
    viewer: Viewer,
) -> Result<Response, PageError> {
    let groups = dead_groups(&console).await?;
    let queues = match console.inner.queue.stats().await {
        Ok(stats) => stats.into_iter().map(QueueRow::from).collect(),
        Err(_) => Vec::new(),
    };
    Ok(render(&DeadPage {
        viewer,
        groups,
        queues,
    }))
}

// ---------------------------------------------------------------- Bindings

struct BindingView {
    id: String,
    form_id: String,
    name: String,
    kind: String,
    mode: String,
    enabled: bool,
    options: String,
    config: String,
    updated: String,
}

#[derive(Template)]
#[template(path = "console/bindings.html")]
struct BindingsPage {
    viewer: Viewer,
    bindings: Vec<BindingView>,
}

pub(super) async fn bindings(
    State(console): State<Console>,
    viewer: Viewer,
) -> Result<Response, PageError> {
    let registry = &console.inner.registry;
    let bindings = console
        .inner
        .store
        .all_bindings()
        .await
        .map_err(|err| PageError::unavailable("reading bindings", err))?;
    let mut views: Vec<BindingView> = bindings
        .into_iter()
        .map(|binding| BindingView {
            id: binding.id.to_string(),
            form_id: binding.form_id.to_string(),
            config: pretty(&crate::admin::redacted_config(registry, &binding)),
            options: pretty(&serde_json::to_value(binding.options).unwrap_or_default()),
            name: binding.name,
            kind: binding.kind,
            mode: binding.mode.as_str().to_owned(),
            enabled: binding.enabled,
            updated: time(&binding.updated_at),
        })
        .collect();
    views.sort_by(|a, b| a.form_id.cmp(&b.form_id));
    Ok(render(&BindingsPage {
        viewer,
        bindings: views,
    }))
}

// ---------------------------------------------------------------- Audit

struct AuditRow {
    id: i64,
    at: String,
    actor: String,
    action: String,
    target: String,
    before: String,
    after: String,
}

#[derive(Template)]
#[template(path = "console/audit.html")]
struct AuditPage {
    viewer: Viewer,
    entries: Vec<AuditRow>,
    next: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct AuditQuery {
    before: Option<String>,
}

pub(super) async fn audit(
    State(console): State<Console>,
    viewer: Viewer,
    Query(query): Query<AuditQuery>,
) -> Result<Response, PageError> {
    let before = match query.before.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(id) => Some(id.parse::<i64>().map_err(|_| {
            PageError::bad_request(format!("before: `{id}` is not an audit entry id"))
        })?),
    };
    let mut entries = console
        .inner
        .store
        .audit_entries(None, before, AUDIT_PAGE + 1)
        .await
        .map_err(|err| PageError::unavailable("reading the audit log", err))?;
    let next = (entries.len() > AUDIT_PAGE as usize).then(|| {
        entries.truncate(AUDIT_PAGE as usize);
        format!(
            "/ui/audit?before={}",
            entries.last().expect("a full page").id
        )
    });
    let json = |value: Option<serde_json::Value>| value.as_ref().map(pretty).unwrap_or_default();
    Ok(render(&AuditPage {
        viewer,
        entries: entries
            .into_iter()
            .map(|entry| AuditRow {
                id: entry.id,
                at: time(&entry.at),
                actor: entry.actor,
                action: entry.action,
                target: entry.target,
                before: json(entry.before),
                after: json(entry.after),
            })
            .collect(),
        next,
    }))
}
