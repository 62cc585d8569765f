//! `postsub backfill`: runs bindings over submissions stored before the bindings existed, or
//! that the proxy missed while it was down, through the proxy's `RunBindings` (so history,
//! retries, dead letters and the Sheets batching all apply, and a submission whose run
//! exists is counted as already done).
//!
//! The submissions come from a file, read as a stream (JSON Lines or CSV), or from the
//! backend's listing (`GET {URL}/forms/{id}/submissions?since=&until=&after=`), paged with
//! its cursor. A reader task fills a small channel; batches go out with at most
//! `--concurrency` in flight, at most `--rate` submissions a second; the checkpoint file
//! (`--checkpoint`) is written after each batch done in order, so a rerun resumes there.

use std::{
    io::{BufRead as _, IsTerminal as _},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow, bail};
use chrono::{DateTime, Utc};
use clap::Args;
use futures_util::{StreamExt as _, stream::FuturesOrdered};
use postsub::{
    json::{to_proto_struct, to_proto_timestamp},
    pb,
};
use prost::Message as _;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::sync::mpsc;

use crate::client::{
    Client, ServerArgs, SubmitClient, check_range, connect_both, status_error, time_or_age,
};

/// `postsub backfill`.
#[derive(Debug, Args)]
pub struct BackfillArgs {
    /// A binding to run (repeat for several of one form).
    #[arg(long = "binding", value_name = "ID")]
    bindings: Vec<String>,
    /// Every enabled binding of this form.
    #[arg(long, conflicts_with = "bindings")]
    form: Option<String>,
    /// Submissions from this file: JSON Lines (`.jsonl`, `.ndjson`: one
    /// `{submission_id, answers, submitted_at, form_id?}` per line) or CSV (`.csv`: a header
    /// of answer keys with `submission_id` and `submitted_at`).
    #[arg(long, value_name = "PATH", conflicts_with = "from_backend")]
    from_file: Option<PathBuf>,
    /// Submissions from the form backend at this URL (`GET /forms/{id}/submissions`).
    #[arg(long, value_name = "URL")]
    from_backend: Option<String>,
    /// Only submissions stored at or after this time (RFC 3339, or an age such as `1d`).
    #[arg(long, value_parser = time_or_age)]
    since: Option<DateTime<Utc>>,
    /// Only submissions stored before this time.
    #[arg(long, value_parser = time_or_age)]
    until: Option<DateTime<Utc>>,
    /// At most this many submissions a second (spares live traffic and API quotas).
    #[arg(long)]
    rate: Option<u32>,
    /// Batches in flight at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    concurrency: u16,
    /// Submissions per `RunBindings` call.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u16).range(1..=1000))]
    batch: u16,
    /// Count what would run (and what is already done) without running anything.
    #[arg(long)]
    dry_run: bool,
    /// Where to keep how far the backfill got: a rerun with the same file resumes there
    /// (with --from-backend: run it every few minutes to catch up what the proxy missed).
    #[arg(long, value_name = "PATH")]
    checkpoint: Option<PathBuf>,
}

/// Where a source is, to resume from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Position {
    /// Lines of the file read (the header of a CSV file included).
    Line(u64),
    /// The backend's cursor to list from (`after`); none: from the start.
    Cursor(Option<String>),
}

/// What the checkpoint file holds.
#[derive(Debug, Serialize, Deserialize)]
struct Checkpoint {
    /// The file or backend URL, and the form: a checkpoint of another backfill is refused.
    source: String,
    form_id: String,
    position: Position,
}

/// One thing the source read.
enum Read {
    /// A submission, and where the source is once it is done.
    Submission(pb::ProcessRequest, Position),
    /// A line (or row) that is not a submission: reported with its number and skipped.
    Bad { line: u64, reason: String },
    /// Outside `--since`/`--until`.
    Skipped,
    /// The source failed (the backend went away): the backfill stops.
    Failed(String),
}

/// What the backfill did, as the summary says it.
#[derive(Debug, Default)]
struct Tally {
    read: u64,
    started: u64,
    already_done: u64,
    skipped: u64,
    bad: Vec<(u64, String)>,
    errors: Vec<String>,
}

impl Tally {
    fn add(&mut self, result: &pb::BackfillResult) {
        if result.error.is_empty() {
            self.started += u64::from(result.started);
            self.already_done += u64::from(result.already_done);
        } else {
            self.errors.push(format!(
                "submission {}: {}",
                result.submission_id, result.error
            ));
        }
    }

    fn line(&self, elapsed: Duration) -> String {
        let rate = self.read as f64 / elapsed.as_secs_f64().max(0.001);
        format!(
            "{} read, {} runs started, {} already done, {} bad, {} errors ({rate:.0}/s)",
            self.read,
            self.started,
            self.already_done,
            self.bad.len(),
            self.errors.len()
        )
    }
}

/// Runs `postsub backfill`.
pub async fn backfill(server: &ServerArgs, args: BackfillArgs) -> anyhow::Result<()> {
    check_range(args.since, args.until)?;
    let source = match (&args.from_file, &args.from_backend) {
        (Some(path), None) => Source::file(path)?,
        (None, Some(url)) => Source::Backend(url.trim_end_matches('/').to_owned()),
        _ => bail!("say where the submissions are: --from-file PATH or --from-backend URL"),
    };
    let (mut admin, submit) = connect_both(server).await?;
    let (form_id, bindings) = chosen_bindings(&mut admin, &args).await?;
    let checkpoint = match &args.checkpoint {
        Some(path) => read_checkpoint(path, &source, &form_id)?,
        None => None,
    };
    eprintln!(
        "backfill: {} over form {form_id}, from {}{}{}",
        bindings
            .iter()
            .map(|b| format!("{} ({}, {})", b.name, b.kind, b.id))
            .collect::<Vec<_>>()
            .join(", "),
        source.describe(),
        match &checkpoint {
            Some(position) => format!(", resuming at {}", describe_position(position)),
            None => String::new(),
        },
        if args.dry_run { "; a dry run" } else { "" }
    );
    let total = source.total()?;
    let (sender, reads) = mpsc::channel(usize::from(args.batch) * 2);
    let reader = tokio::spawn(source.clone().read(
        form_id.clone(),
        Window {
            since: args.since,
            until: args.until,
        },
        checkpoint,
        sender,
    ));
    let run = Run {
        submit,
        binding_ids: bindings.iter().map(|b| b.id.clone()).collect(),
        dry_run: args.dry_run,
        batch: usize::from(args.batch),
        concurrency: usize::from(args.concurrency),
        rate: args.rate,
        checkpoint: args.checkpoint.clone().map(|path| CheckpointFile {
            path,
            source: source.key(),
            form_id: form_id.clone(),
        }),
    };
    let outcome = run.go(reads, total).await;
    reader.abort();
    outcome.finish(args.dry_run)
}

/// The bindings to run, all of one form, and that form.
async fn chosen_bindings(
    admin: &mut Client,
    args: &BackfillArgs,
) -> anyhow::Result<(String, Vec<pb::Binding>)> {
    let bindings = match (&args.form, args.bindings.is_empty()) {
        (Some(form), true) => {
            let all = admin
                .list_bindings(pb::ListBindingsRequest {
                    form_id: form.clone(),
                })
                .await
                .map_err(status_error)?
                .into_inner()
                .bindings;
            let enabled: Vec<pb::Binding> = all.into_iter().filter(|b| b.enabled).collect();
            if enabled.is_empty() {
                bail!("form {form} has no enabled binding: nothing to backfill");
            }
            enabled
        }
        (None, false) => {
            let mut found = Vec::new();
            for id in &args.bindings {
                let binding = admin
                    .get_binding(pb::GetBindingRequest { id: id.clone() })
                    .await
                    .map_err(status_error)?
                    .into_inner();
                found.push(binding);
            }
            found
        }
        _ => bail!("say what to run: --binding ID (repeatable) or --form ID"),
    };
    let form_id = bindings[0].form_id.clone();
    if let Some(other) = bindings.iter().find(|b| b.form_id != form_id) {
        bail!(
            "bindings {} and {} are of different forms ({form_id}, {}): backfill one form at a time",
            bindings[0].id,
            other.id,
            other.form_id
        );
    }
    Ok((form_id, bindings))
}

/// Where the submissions come from.
#[derive(Debug, Clone)]
enum Source {
    JsonLines(PathBuf),
    Csv(PathBuf),
    Backend(String),
}

impl Source {
    fn file(path: &Path) -> anyhow::Result<Self> {
        let extension = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match extension.as_deref() {
            Some("jsonl" | "ndjson" | "json") => Ok(Source::JsonLines(path.to_owned())),
            Some("csv") => Ok(Source::Csv(path.to_owned())),
            _ => bail!(
                "{}: name the file .jsonl (JSON Lines) or .csv, so the format is known",
                path.display()
            ),
        }
    }

    fn describe(&self) -> String {
        match self {
            Source::JsonLines(path) => format!("{} (JSON Lines)", path.display()),
            Source::Csv(path) => format!("{} (CSV)", path.display()),
            Source::Backend(url) => format!("the backend at {url}"),
        }
    }

    /// What a checkpoint of this source is recorded under.
    fn key(&self) -> String {
        match self {
            Source::JsonLines(path) | Source::Csv(path) => format!("file:{}", path.display()),
            Source::Backend(url) => format!("backend:{url}"),
        }
    }

    /// How many submissions, when it can tell without reading them: a file's lines.
    fn total(&self) -> anyhow::Result<Option<u64>> {
        let path = match self {
            Source::JsonLines(path) | Source::Csv(path) => path,
            Source::Backend(_) => return Ok(None),
        };
        let file =
            std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let mut lines: u64 = 0;
        for line in std::io::BufReader::new(file).split(b'\n') {
            line.with_context(|| format!("cannot read {}", path.display()))?;
            lines += 1;
        }
        Ok(Some(if matches!(self, Source::Csv(_)) {
            lines.saturating_sub(1)
        } else {
            lines
        }))
    }

    /// Reads the source into `sender` from `start`, until it ends, fails, or nobody listens.
    async fn read(
        self,
        form_id: String,
        window: Window,
        start: Option<Position>,
        sender: mpsc::Sender<Read>,
    ) {
        match self {
            Source::JsonLines(path) => {
                let skip = line_of(start);
                let _ = tokio::task::spawn_blocking(move || {
                    read_json_lines(&path, &form_id, window, skip, &sender)
                })
                .await;
            }
            Source::Csv(path) => {
                let skip = line_of(start);
                let _ = tokio::task::spawn_blocking(move || {
                    read_csv(&path, &form_id, window, skip, &sender)
                })
                .await;
            }
            Source::Backend(url) => {
                let after = match start {
                    Some(Position::Cursor(after)) => after,
                    _ => None,
                };
                read_backend(&url, &form_id, window, after, &sender).await;
            }
        }
    }
}

fn line_of(position: Option<Position>) -> u64 {
    match position {
        Some(Position::Line(line)) => line,
        _ => 0,
    }
}

fn describe_position(position: &Position) -> String {
    match position {
        Position::Line(line) => format!("line {}", line + 1),
        Position::Cursor(Some(cursor)) => format!("cursor {cursor}"),
        Position::Cursor(None) => "the start".into(),
    }
}

/// `--since` and `--until`.
#[derive(Debug, Clone, Copy)]
struct Window {
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
}

impl Window {
    fn contains(&self, at: DateTime<Utc>) -> bool {
        self.since.is_none_or(|since| at >= since) && self.until.is_none_or(|until| at < until)
    }

    fn is_set(&self) -> bool {
        self.since.is_some() || self.until.is_some()
    }
}

/// A submission read from a file, checked: the `Read` it makes.
fn submission(line: u64, form_id: &str, window: Window, fields: SubmissionFields) -> Read {
    let bad = |reason: String| Read::Bad { line, reason };
    let Some(submission_id) = fields.submission_id.filter(|id| !id.is_empty()) else {
        return bad("no submission_id".into());
    };
    if let Some(other) = fields.form_id.filter(|id| id != form_id) {
        return bad(format!(
            "form_id {other} is not the form of the bindings ({form_id})"
        ));
    }
    let submitted_at = match fields.submitted_at.as_deref().filter(|t| !t.is_empty()) {
        Some(text) => match DateTime::parse_from_rfc3339(text) {
            Ok(at) => Some(at.with_timezone(&Utc)),
            Err(err) => return bad(format!("submitted_at `{text}` is not RFC 3339: {err}")),
        },
        None if window.is_set() => {
            return bad("no submitted_at to compare with --since/--until".into());
        }
        None => None,
    };
    if let Some(at) = submitted_at
        && !window.contains(at)
    {
        return Read::Skipped;
    }
    Read::Submission(
        pb::ProcessRequest {
            form_id: form_id.to_owned(),
            submission_id,
            answers: Some(to_proto_struct(fields.answers)),
            submitted_at: submitted_at.as_ref().map(to_proto_timestamp),
            metadata: [("backfill".to_owned(), "true".to_owned())].into(),
            // A backfill runs the bindings' creations.
            ..Default::default()
        },
        Position::Line(line),
    )
}

/// The fields of one submission, however the source spells them.
struct SubmissionFields {
    submission_id: Option<String>,
    form_id: Option<String>,
    submitted_at: Option<String>,
    answers: Map<String, Value>,
}

/// A JSON Lines record.
#[derive(Deserialize)]
struct JsonLine {
    submission_id: Option<String>,
    form_id: Option<String>,
    submitted_at: Option<String>,
    answers: Option<Map<String, Value>>,
}

fn read_json_lines(
    path: &Path,
    form_id: &str,
    window: Window,
    skip: u64,
    sender: &mpsc::Sender<Read>,
) {
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(err) => {
            let _ = sender.blocking_send(Read::Failed(format!("{}: {err}", path.display())));
            return;
        }
    };
    for (index, line) in std::io::BufReader::new(file).lines().enumerate() {
        let number = index as u64 + 1;
        if number <= skip {
            continue;
        }
        let read = match line {
            Err(err) => Read::Failed(format!("{} line {number}: {err}", path.display())),
            Ok(text) if text.trim().is_empty() => continue,
            Ok(text) => match serde_json::from_str::<JsonLine>(&text) {
                Err(err) => Read::Bad {
                    line: number,
                    reason: format!("not a submission: {err}"),
                },
                Ok(JsonLine { answers: None, .. }) => Read::Bad {
                    line: number,
                    reason: "no answers object".into(),
                },
                Ok(record) => submission(
                    number,
                    form_id,
                    window,
                    SubmissionFields {
                        submission_id: record.submission_id,
                        form_id: record.form_id,
                        submitted_at: record.submitted_at,
                        answers: record.answers.unwrap_or_default(),
                    },
                ),
            },
        };
        let failed = matches!(read, Read::Failed(_));
        if sender.blocking_send(read).is_err() || failed {
            return;
        }
    }
}

/// A CSV cell as an answer: empty is missing; `true`/`false`, integers and decimal numbers
/// are JSON booleans and numbers; anything else is text.
fn csv_value(cell: &str) -> Option<Value> {
    if cell.is_empty() {
        return None;
    }
    Some(match cell {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        _ => {
            if let Ok(n) = cell.parse::<i64>() {
                Value::from(n)
            } else if let Some(n) = cell
                .parse::<f64>()
                .ok()
                .filter(|n| n.is_finite() && cell.bytes().any(|b| b.is_ascii_digit()))
                .and_then(serde_json::Number::from_f64)
            {
                Value::Number(n)
            } else {
                Value::String(cell.to_owned())
            }
        }
    })
}

fn read_csv(path: &Path, form_id: &str, window: Window, skip: u64, sender: &mpsc::Sender<Read>) {
    let mut reader = match csv::ReaderBuilder::new().flexible(false).from_path(path) {
        Ok(reader) => reader,
        Err(err) => {
            let _ = sender.blocking_send(Read::Failed(format!("{}: {err}", path.display())));
            return;
        }
    };
    let headers = match reader.headers() {
        Ok(headers) => headers.clone(),
        Err(err) => {
            let _ = sender.blocking_send(Read::Failed(format!(
                "{}: the header row does not read: {err}",
                path.display()
            )));
            return;
        }
    };
    if !headers.iter().any(|h| h == "submission_id") {
        let _ = sender.blocking_send(Read::Failed(format!(
            "{}: the header row has no submission_id column",
            path.display()
        )));
        return;
    }
    let mut record = csv::StringRecord::new();
    loop {
        let read = match reader.read_record(&mut record) {
            Ok(false) => return,
            Ok(true) => {
                let line = record.position().map_or(0, |p| p.line());
                if line <= skip {
                    continue;
                }
                let mut fields = SubmissionFields {
                    submission_id: None,
                    form_id: None,
                    submitted_at: None,
                    answers: Map::new(),
                };
                for (header, cell) in headers.iter().zip(record.iter()) {
                    match header {
                        "submission_id" => fields.submission_id = Some(cell.to_owned()),
                        "form_id" => {
                            fields.form_id = Some(cell.to_owned()).filter(|c| !c.is_empty())
                        }
                        "submitted_at" => fields.submitted_at = Some(cell.to_owned()),
                        key => {
                            if let Some(value) = csv_value(cell) {
                                fields.answers.insert(key.to_owned(), value);
                            }
                        }
                    }
                }
                submission(line, form_id, window, fields)
            }
            Err(err) => {
                let line = err.position().map_or(0, |p| p.line());
                match err.kind() {
                    csv::ErrorKind::Io(_) => Read::Failed(format!("{}: {err}", path.display())),
                    _ => Read::Bad {
                        line,
                        reason: match err.kind() {
                            csv::ErrorKind::UnequalLengths {
                                expected_len, len, ..
                            } => format!("{len} cells; the header has {expected_len}"),
                            _ => err.to_string(),
                        },
                    },
                }
            }
        };
        let failed = matches!(read, Read::Failed(_));
        if sender.blocking_send(read).is_err() || failed {
            return;
        }
    }
}

/// A page of the backend's listing.
#[derive(Deserialize)]
struct Page {
    submissions: Vec<BackendSubmission>,
    next: Option<String>,
}

#[derive(Deserialize)]
struct BackendSubmission {
    id: String,
    form_id: String,
    answers: Map<String, Value>,
    created_at: DateTime<Utc>,
}

/// How many submissions one page of the backend's listing asks for.
const BACKEND_PAGE: u32 = 500;

async fn read_backend(
    url: &str,
    form_id: &str,
    window: Window,
    mut after: Option<String>,
    sender: &mpsc::Sender<Read>,
) {
    postsub_tasks::install_crypto_provider();
    let client = reqwest::Client::new();
    loop {
        let mut query: Vec<(&str, String)> = vec![("limit", BACKEND_PAGE.to_string())];
        if let Some(since) = window.since {
            query.push(("since", since.to_rfc3339()));
        }
        if let Some(until) = window.until {
            query.push(("until", until.to_rfc3339()));
        }
        if let Some(after) = &after {
            query.push(("after", after.clone()));
        }
        let listing = format!("{url}/forms/{form_id}/submissions");
        let page = match fetch_page(&client, &listing, &query).await {
            Ok(page) => page,
            Err(err) => {
                let _ = sender.send(Read::Failed(err)).await;
                return;
            }
        };
        let count = page.submissions.len();
        for (index, submission) in page.submissions.into_iter().enumerate() {
            // Within a page, resume at the page; past its last one, at the next.
            let position = if index + 1 == count && page.next.is_some() {
                Position::Cursor(page.next.clone())
            } else {
                Position::Cursor(after.clone())
            };
            let request = pb::ProcessRequest {
                form_id: submission.form_id,
                submission_id: submission.id,
                answers: Some(to_proto_struct(submission.answers)),
                submitted_at: Some(to_proto_timestamp(&submission.created_at)),
                metadata: [("backfill".to_owned(), "true".to_owned())].into(),
                ..Default::default()
            };
            if sender
                .send(Read::Submission(request, position))
                .await
                .is_err()
            {
                return;
            }
        }
        match page.next {
            Some(next) => after = Some(next),
            None => return,
        }
    }
}

async fn fetch_page(
    client: &reqwest::Client,
    listing: &str,
    query: &[(&str, String)],
) -> Result<Page, String> {
    let mut url = reqwest::Url::parse(listing).map_err(|err| format!("{listing}: {err}"))?;
    url.query_pairs_mut()
        .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
    let response = client
        .get(url.clone())
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .map_err(|err| {
            format!(
                "the backend did not answer {url}: {}",
                postsub_tasks::error_chain(&err)
            )
        })?;
    let status = response.status();
    if !status.is_success() {
        let text = response.text().await.unwrap_or_default();
        return Err(format!("the backend answered {status} to {url}: {text}"));
    }
    response
        .json()
        .await
        .map_err(|err| format!("the backend's answer to {url} is not a page of submissions: {err}"))
}

/// The checkpoint file of a backfill.
struct CheckpointFile {
    path: PathBuf,
    source: String,
    form_id: String,
}

impl CheckpointFile {
    /// Writes `position` whole or not at all (a new file renamed over the old one).
    fn save(&self, position: &Position) -> anyhow::Result<()> {
        let checkpoint = Checkpoint {
            source: self.source.clone(),
            form_id: self.form_id.clone(),
            position: position.clone(),
        };
        let partial = self.path.with_extension("partial");
        std::fs::write(
            &partial,
            serde_json::to_vec_pretty(&checkpoint).expect("a checkpoint serializes"),
        )
        .and_then(|()| std::fs::rename(&partial, &self.path))
        .with_context(|| format!("cannot write the checkpoint {}", self.path.display()))
    }
}

/// The position a checkpoint file holds for this backfill, if it exists.
fn read_checkpoint(
    path: &Path,
    source: &Source,
    form_id: &str,
) -> anyhow::Result<Option<Position>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => {
            return Err(anyhow!(
                "cannot read the checkpoint {}: {err}",
                path.display()
            ));
        }
    };
    let checkpoint: Checkpoint = serde_json::from_str(&text)
        .with_context(|| format!("the checkpoint {} does not parse", path.display()))?;
    if checkpoint.source != source.key() || checkpoint.form_id != form_id {
        bail!(
            "the checkpoint {} is of another backfill ({} for form {}); name another file",
            path.display(),
            checkpoint.source,
            checkpoint.form_id
        );
    }
    Ok(Some(checkpoint.position))
}

/// Most bytes of submissions one `RunBindings` call carries: under the smallest message a
/// proxy decodes (64 KiB), whatever its answers limit; a batch ends at `--batch` or here.
const MAX_BATCH_BYTES: usize = 60 * 1024;

/// How a backfill sends its batches.
struct Run {
    submit: SubmitClient,
    binding_ids: Vec<String>,
    dry_run: bool,
    batch: usize,
    concurrency: usize,
    rate: Option<u32>,
    checkpoint: Option<CheckpointFile>,
}

/// How a backfill ended.
struct Outcome {
    tally: Tally,
    /// Why it stopped before the end of the source.
    stopped: Option<String>,
    elapsed: Duration,
}

impl Run {
    async fn go(self, mut reads: mpsc::Receiver<Read>, total: Option<u64>) -> Outcome {
        let progress = Progress::new(total);
        let started = Instant::now();
        let mut tally = Tally::default();
        let mut stopped = None;
        let mut in_flight = FuturesOrdered::new();
        let mut batch: Vec<pb::ProcessRequest> = Vec::with_capacity(self.batch);
        let mut batch_bytes = 0;
        // A submission read that did not fit the batch: the first of the next.
        let mut carry: Option<(pb::ProcessRequest, Position)> = None;
        let mut position = None;
        let mut sent: u64 = 0;
        let mut source_done = false;
        let ctrl_c = tokio::signal::ctrl_c();
        tokio::pin!(ctrl_c);
        // At most this many per batch, so a batch is never more than a second of --rate.
        let batch_size = self
            .rate
            .map_or(self.batch, |rate| self.batch.min(rate.max(1) as usize));
        loop {
            let full =
                batch.len() >= batch_size || carry.is_some() || (source_done && !batch.is_empty());
            if full && in_flight.len() < self.concurrency && stopped.is_none() {
                if let Some(rate) = self.rate {
                    // Paced: the n-th submission goes out no sooner than n / rate seconds in.
                    let due = started + Duration::from_secs_f64(sent as f64 / f64::from(rate));
                    tokio::time::sleep_until(due.into()).await;
                }
                let requests = std::mem::replace(&mut batch, Vec::with_capacity(batch_size));
                sent += requests.len() as u64;
                in_flight.push_back(self.send(requests, position.take()));
                batch_bytes = 0;
                if let Some((request, at)) = carry.take() {
                    batch_bytes = request.encoded_len();
                    batch.push(request);
                    position = Some(at);
                }
                continue;
            }
            if source_done && batch.is_empty() && in_flight.is_empty() {
                break;
            }
            if stopped.is_some() && in_flight.is_empty() {
                break;
            }
            let reading =
                !source_done && stopped.is_none() && carry.is_none() && batch.len() < batch_size;
            tokio::select! {
                read = reads.recv(), if reading => match read {
                    None => source_done = true,
                    Some(Read::Submission(request, at)) => {
                        tally.read += 1;
                        let size = request.encoded_len();
                        if !batch.is_empty() && batch_bytes + size > MAX_BATCH_BYTES {
                            carry = Some((request, at));
                        } else {
                            batch_bytes += size;
                            batch.push(request);
                            position = Some(at);
                        }
                    }
                    Some(Read::Bad { line, reason }) => {
                        tally.read += 1;
                        tally.bad.push((line, reason));
                    }
                    Some(Read::Skipped) => {
                        tally.read += 1;
                        tally.skipped += 1;
                    }
                    Some(Read::Failed(reason)) => {
                        stopped = Some(reason);
                        batch.clear();
                    }
                },
                done = in_flight.next(), if !in_flight.is_empty() => {
                    let Some((count, result, at)) = done else { continue };
                    match result {
                        Ok(results) => {
                            for result in &results {
                                tally.add(result);
                            }
                            if let (Some(file), Some(at)) = (&self.checkpoint, at)
                                && let Err(err) = file.save(&at)
                            {
                                stopped = Some(format!("{err:#}"));
                            }
                        }
                        Err(err) => {
                            tally.errors.push(format!("{count} submissions not run: {err:#}"));
                            stopped = Some(format!("{err:#}"));
                        }
                    }
                },
                _ = &mut ctrl_c, if stopped.is_none() => {
                    stopped = Some("interrupted (Ctrl-C)".into());
                    batch.clear();
                },
            }
            progress.show(&tally, started.elapsed());
        }
        progress.finish();
        Outcome {
            tally,
            stopped,
            elapsed: started.elapsed(),
        }
    }

    /// One `RunBindings` call: how many it carried, what came back, and where the source
    /// is once it is done.
    fn send(
        &self,
        submissions: Vec<pb::ProcessRequest>,
        at: Option<Position>,
    ) -> impl Future<
        Output = (
            usize,
            anyhow::Result<Vec<pb::BackfillResult>>,
            Option<Position>,
        ),
    > + use<> {
        let mut client = self.submit.clone();
        let request = pb::RunBindingsRequest {
            binding_ids: self.binding_ids.clone(),
            submissions,
            dry_run: self.dry_run,
        };
        let count = request.submissions.len();
        async move {
            let result = client
                .run_bindings(request)
                .await
                .map(|reply| reply.into_inner().results)
                .map_err(status_error);
            (count, result, at)
        }
    }
}

impl Outcome {
    /// Prints the summary; an error when anything failed or the run stopped early.
    fn finish(self, dry_run: bool) -> anyhow::Result<()> {
        let Outcome {
            tally,
            stopped,
            elapsed,
        } = self;
        let started = if dry_run { "would start" } else { "started" };
        println!(
            "{} submissions read in {:.1} s: {} runs {started}, {} already done, {} outside \
             --since/--until, {} bad, {} errors",
            tally.read,
            elapsed.as_secs_f64(),
            tally.started,
            tally.already_done,
            tally.skipped,
            tally.bad.len(),
            tally.errors.len()
        );
        for (line, reason) in tally.bad.iter().take(20) {
            println!("  line {line}: {reason}");
        }
        if tally.bad.len() > 20 {
            println!("  … and {} more bad lines", tally.bad.len() - 20);
        }
        for error in tally.errors.iter().take(20) {
            println!("  {error}");
        }
        if let Some(reason) = stopped {
            bail!(
                "the backfill stopped: {reason}; run it again to go on (what is done is skipped)"
            );
        }
        if !tally.bad.is_empty() || !tally.errors.is_empty() {
            bail!(
                "{} bad lines and {} errors (above)",
                tally.bad.len(),
                tally.errors.len()
            );
        }
        Ok(())
    }
}

/// The progress bar at a terminal; elsewhere a plain line every few seconds.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    last_line: std::cell::Cell<Instant>,
}

/// How often a plain progress line is printed.
const PLAIN_EVERY: Duration = Duration::from_secs(2);

impl Progress {
    fn new(total: Option<u64>) -> Self {
        let bar = std::io::stdout().is_terminal().then(|| {
            let bar = match total {
                Some(total) => indicatif::ProgressBar::new(total),
                None => indicatif::ProgressBar::new_spinner(),
            };
            let template = match total {
                Some(_) => "{bar:40} {pos}/{len} {per_sec} ETA {eta} {msg}",
                None => "{spinner} {pos} {per_sec} {msg}",
            };
            bar.set_draw_target(indicatif::ProgressDrawTarget::stdout());
            bar.set_style(
                indicatif::ProgressStyle::with_template(template).expect("the template parses"),
            );
            bar
        });
        Self {
            bar,
            last_line: std::cell::Cell::new(Instant::now()),
        }
    }

    fn show(&self, tally: &Tally, elapsed: Duration) {
        match &self.bar {
            Some(bar) => {
                bar.set_position(tally.read);
                bar.set_message(format!(
                    "{} started, {} already done, {} bad, {} errors",
                    tally.started,
                    tally.already_done,
                    tally.bad.len(),
                    tally.errors.len()
                ));
            }
            None if self.last_line.get().elapsed() >= PLAIN_EVERY => {
                self.last_line.set(Instant::now());
                println!("backfill: {}", tally.line(elapsed));
            }
            None => {}
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn csv_cells_become_typed_answers() {
        assert_eq!(csv_value(""), None);
        assert_eq!(csv_value("true"), Some(json!(true)));
        assert_eq!(csv_value("42"), Some(json!(42)));
        assert_eq!(csv_value("-1.5"), Some(json!(-1.5)));
        assert_eq!(csv_value("1e3"), Some(json!(1000.0)));
        assert_eq!(csv_value("NaN"), Some(json!("NaN")));
        assert_eq!(csv_value("inf"), Some(json!("inf")));
        assert_eq!(csv_value("Ada"), Some(json!("Ada")));
        assert_eq!(csv_value("007x"), Some(json!("007x")));
    }

    #[test]
    fn a_window_is_since_inclusive_until_exclusive() {
        let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        let window = Window {
            since: Some(at("2026-12-01T00:00:00Z")),
            until: Some(at("2026-12-02T00:00:00Z")),
        };
        assert!(window.contains(at("2026-12-01T00:00:00Z")));
        assert!(!window.contains(at("2026-12-02T00:00:00Z")));
        assert!(!window.contains(at("2026-11-30T23:59:59Z")));
    }
}
