//! One writer per sheet: it groups the rows of concurrent runs into one `values.append`
//! call, keeps the header, and spaces its write calls to stay under Google's quota (about 60
//! write requests per minute per user) instead of hammering into it.
//!
//! A run hands its row to the writer and waits for the answer. The writer takes the first
//! row, lingers briefly (and at least until the next write is allowed) for more, then:
//! drops the changes an edit of a newer revision has made stale (bindings taking edits),
//! adds new answer keys as columns at the end of the header, drops the rows of runs that
//! may have been written before (a retry or a redelivery) if their submission id is in
//! column A already, appends the rest in one call, rewrites and marks edited rows in one
//! more, and deletes rows in a last one. Every run of the batch gets its row's result.
//!
//! One writer per sheet in a process handles one batch at a time, so the revision check
//! and the write of one edit are not interleaved with another edit's in this process.

use std::{collections::HashMap, sync::Arc, time::Duration};

use futures_util::future::try_join_all;
use google_sheets4::api::{
    BatchUpdateSpreadsheetRequest, BatchUpdateValuesRequest, DeleteDimensionRequest,
    DimensionRange, Request, Scope, ValueRange,
};
use serde_json::{Map, Value, json};
use tokio::{
    sync::{mpsc, oneshot},
    time::Instant,
};
use uuid::Uuid;

use super::{
    client::{Google, RetryAfter, task_error},
    rows::{DELETED_AT, Header, column_letters},
};
use crate::{TaskError, TaskState};

/// Rows waiting for a writer before runs block.
const QUEUE: usize = 1024;

/// Which sheet a writer appends to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SheetTarget {
    /// The spreadsheet.
    pub spreadsheet_id: String,
    /// The tab.
    pub sheet: String,
}

impl SheetTarget {
    /// An A1 range on this sheet (`'Tab name'!A1`), the name quoted as Sheets wants.
    fn range(&self, cells: &str) -> String {
        format!("'{}'!{cells}", self.sheet.replace('\'', "''"))
    }
}

/// How a writer batches and paces.
#[derive(Debug, Clone)]
pub struct WriterSettings {
    /// Most rows in one append call.
    pub max_rows: usize,
    /// How long the first row of a batch waits for company.
    pub linger: Duration,
    /// Least time between two write calls to the spreadsheet.
    pub min_interval: Duration,
    /// Answer keys that come first, in this order.
    pub columns: Vec<String>,
    /// Header labels by answer key.
    pub labels: Map<String, Value>,
}

/// What a run does to its submission's row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// A new submission: append its row.
    Append,
    /// An edit: rewrite the row in place (append it if absent).
    Rewrite,
    /// A deletion: remove the row.
    Delete,
    /// A deletion: write the time into the row's `deleted_at` cell.
    Mark,
}

/// Where a binding that takes edits keeps the newest revision written of each submission.
pub struct Revisions {
    /// The binding's task state.
    pub state: Arc<dyn TaskState>,
    /// The binding.
    pub binding_id: Uuid,
    /// The run's revision.
    pub revision: u64,
}

impl Revisions {
    fn key(submission_id: &str) -> String {
        format!("revision:{submission_id}")
    }
}

/// One run's row.
pub struct PendingRow {
    /// Submission id (column A).
    pub submission_id: String,
    /// Submission time (column B).
    pub submitted_at: String,
    /// The answers.
    pub answers: Map<String, Value>,
    /// What to do with the row.
    pub change: Change,
    /// An earlier attempt may have written the row: look before appending.
    pub check_existing: bool,
    /// Set when the binding takes edits: changes older than the newest written are dropped.
    pub revisions: Option<Revisions>,
    /// Where the writer answers.
    pub reply: oneshot::Sender<Result<Written, TaskError>>,
}

/// What the writer did with a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    /// Rows the append call carried (0 when this row was not appended).
    pub rows_in_call: usize,
    /// What happened to the row.
    pub action: Action,
}

impl PendingRow {
    /// Of the changes of one submission in a batch, for a binding taking edits, the one that
    /// wins: a deletion over an edit over a creation, then the higher revision.
    fn precedence(&self) -> Option<(bool, bool, u64)> {
        let revisions = self.revisions.as_ref()?;
        let deletion = matches!(self.change, Change::Delete | Change::Mark);
        Some((
            deletion,
            deletion || self.change == Change::Rewrite,
            revisions.revision,
        ))
    }
}

/// What happened to a run's row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Appended.
    Appended,
    /// In the sheet already (an earlier attempt wrote it); nothing appended.
    AlreadyPresent,
    /// Rewritten in place.
    Rewritten,
    /// Removed.
    Deleted,
    /// Its `deleted_at` cell written.
    Marked,
    /// A deletion found no row to remove or mark.
    Absent,
    /// Not written: the sheet holds a newer revision of the submission, or its deletion.
    Superseded,
}

impl Action {
    /// The name in the run's output.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Appended => "appended",
            Action::AlreadyPresent => "already_present",
            Action::Rewritten => "rewritten",
            Action::Deleted => "deleted",
            Action::Marked => "marked",
            Action::Absent => "absent",
            Action::Superseded => "superseded",
        }
    }
}

/// The newest change a binding wrote of a submission, as kept in its task state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Newest {
    revision: u64,
    deleted: bool,
}

impl Newest {
    fn from_state(value: &Value) -> Option<Self> {
        Some(Newest {
            revision: value.get("revision")?.as_u64()?,
            deleted: value.get("deleted")?.as_bool()?,
        })
    }

    fn to_state(self) -> Value {
        json!({"revision": self.revision, "deleted": self.deleted})
    }

    /// Whether a change of `revision` still applies after this one was written: a new
    /// submission's row only if nothing was; an edit if it is not older and the submission
    /// not deleted; a deletion unless an other deletion was written (the same one again is
    /// a retry, which applies).
    fn allows(self, change: Change, revision: u64) -> bool {
        match change {
            Change::Append => false,
            Change::Rewrite => !self.deleted && revision >= self.revision,
            Change::Delete | Change::Mark => !self.deleted || revision == self.revision,
        }
    }
}

/// Starts a writer; it lives as long as a sender does.
pub fn spawn(
    google: Arc<Google>,
    target: SheetTarget,
    settings: WriterSettings,
) -> mpsc::Sender<PendingRow> {
    let (rows, receiver) = mpsc::channel(QUEUE);
    tokio::spawn(
        Writer {
            google,
            target,
            settings,
            header: None,
            sheet_id: None,
            next_write: Instant::now(),
        }
        .run(receiver),
    );
    rows
}

struct Writer {
    google: Arc<Google>,
    target: SheetTarget,
    settings: WriterSettings,
    /// The sheet's header as last read or written; `None` until read.
    header: Option<Header>,
    /// The tab's numeric id (for deleting rows), once looked up.
    sheet_id: Option<i32>,
    /// When the next write call may go out.
    next_write: Instant,
}

impl Writer {
    async fn run(mut self, mut receiver: mpsc::Receiver<PendingRow>) {
        while let Some(first) = receiver.recv().await {
            let mut batch = vec![first];
            let until = (Instant::now() + self.settings.linger).max(self.next_write);
            while batch.len() < self.settings.max_rows {
                tokio::select! {
                    () = tokio::time::sleep_until(until) => break,
                    row = receiver.recv() => match row {
                        Some(row) => batch.push(row),
                        None => break,
                    },
                }
            }
            let results = self.write(&batch).await;
            for (row, result) in batch.into_iter().zip(results) {
                // A run that gave up waiting (timeout) no longer listens.
                let _ = row.reply.send(result);
            }
        }
    }

    /// Writes a batch; one result per row.
    async fn write(&mut self, batch: &[PendingRow]) -> Vec<Result<Written, TaskError>> {
        match self.try_write(batch).await {
            Ok(results) => results,
            Err(err) => batch.iter().map(|_| Err(err.clone())).collect(),
        }
    }

    async fn try_write(
        &mut self,
        batch: &[PendingRow],
    ) -> Result<Vec<Result<Written, TaskError>>, TaskError> {
        let newest = self.newest_written(batch).await?;
        // Which rows are still due: not superseded by a newer revision written before...
        let mut due: Vec<bool> = batch
            .iter()
            .zip(&newest)
            .map(|(row, newest)| match (newest, &row.revisions) {
                (Some(newest), Some(revisions)) => newest.allows(row.change, revisions.revision),
                _ => true,
            })
            .collect();
        // ...nor by a newer change of the same submission in this batch.
        let mut winners: HashMap<&str, (bool, bool, u64)> = HashMap::new();
        for (row, _) in batch.iter().zip(&due).filter(|(_, due)| **due) {
            if let Some(key) = row.precedence() {
                let winner = winners.entry(&row.submission_id).or_insert(key);
                *winner = (*winner).max(key);
            }
        }
        for (row, due) in batch.iter().zip(due.iter_mut()) {
            if let Some(key) = row.precedence() {
                *due &= winners.get(row.submission_id.as_str()) == Some(&key);
            }
        }
        let rows = || {
            batch
                .iter()
                .zip(&due)
                .filter(|(_, due)| **due)
                .map(|(row, _)| row)
        };
        let marks = rows().any(|row| row.change == Change::Mark);
        self.ensure_header(
            rows().filter(|row| matches!(row.change, Change::Append | Change::Rewrite)),
            marks,
        )
        .await?;
        let lookup = rows().any(|row| row.check_existing || row.change != Change::Append);
        let present = if lookup {
            self.submission_rows().await?
        } else {
            HashMap::new()
        };
        let header = self.header.as_ref().expect("ensure_header set it");

        // Appended: new rows, and edits of rows not in the sheet; the same submission twice
        // in one batch (a duplicate delivery, or its creation and an edit) is one row, the
        // edit's.
        let mut appended: Vec<Vec<Value>> = Vec::new();
        let mut appended_at: HashMap<&str, usize> = HashMap::new();
        // Rewritten or marked in place: (A1 range, cells).
        let mut updates: Vec<ValueRange> = Vec::new();
        let mut deleted: Vec<usize> = Vec::new();
        let mut actions: Vec<Action> = Vec::with_capacity(batch.len());
        let now = chrono::Utc::now().to_rfc3339();
        for (row, due) in batch.iter().zip(&due) {
            let at = present.get(&row.submission_id).copied();
            let cells = || header.cells(&row.submission_id, &row.submitted_at, &row.answers);
            let action = match (row.change, *due, at) {
                (_, false, _) => Action::Superseded,
                (Change::Append, true, Some(_)) => Action::AlreadyPresent,
                (Change::Append | Change::Rewrite, true, None) => {
                    match appended_at.get(row.submission_id.as_str()) {
                        Some(&earlier) if row.change == Change::Rewrite => {
                            appended[earlier] = cells();
                        }
                        Some(_) => {}
                        None => {
                            appended_at.insert(&row.submission_id, appended.len());
                            appended.push(cells());
                        }
                    }
                    Action::Appended
                }
                (Change::Rewrite, true, Some(at)) => {
                    updates.push(self.cells_at(&format!("A{at}"), cells()));
                    Action::Rewritten
                }
                (Change::Delete | Change::Mark, true, None) => Action::Absent,
                (Change::Delete, true, Some(at)) => {
                    deleted.push(at);
                    Action::Deleted
                }
                (Change::Mark, true, Some(at)) => {
                    let column = header.position(DELETED_AT).expect("ensure_header added it");
                    let cell = format!("{}{at}", column_letters(column));
                    updates.push(self.cells_at(&cell, vec![Value::String(now.clone())]));
                    Action::Marked
                }
            };
            actions.push(action);
        }
        let rows_in_call = appended.len();
        if rows_in_call > 0 {
            self.append(appended).await?;
        }
        if !updates.is_empty() {
            self.update_cells(updates).await?;
        }
        if !deleted.is_empty() {
            self.delete_rows(deleted).await?;
        }
        self.remember_newest(batch, &due).await?;
        Ok(actions
            .into_iter()
            .map(|action| {
                Ok(Written {
                    rows_in_call: if action == Action::Appended {
                        rows_in_call
                    } else {
                        0
                    },
                    action,
                })
            })
            .collect())
    }

    /// The newest change written of each row's submission, for the rows of bindings that
    /// take edits (read concurrently; `None` for the others and for submissions never
    /// edited).
    async fn newest_written(&self, batch: &[PendingRow]) -> Result<Vec<Option<Newest>>, TaskError> {
        try_join_all(batch.iter().map(|row| async move {
            let Some(revisions) = &row.revisions else {
                return Ok(None);
            };
            let stored = revisions
                .state
                .get(revisions.binding_id, &Revisions::key(&row.submission_id))
                .await?;
            Ok::<_, TaskError>(stored.as_ref().and_then(Newest::from_state))
        }))
        .await
    }

    /// Keeps the revision of each edit and deletion written, once the sheet has it.
    async fn remember_newest(&self, batch: &[PendingRow], due: &[bool]) -> Result<(), TaskError> {
        for (row, _) in batch.iter().zip(due).filter(|(_, due)| **due) {
            let Some(revisions) = &row.revisions else {
                continue;
            };
            if row.change == Change::Append {
                continue;
            }
            let newest = Newest {
                revision: revisions.revision,
                deleted: matches!(row.change, Change::Delete | Change::Mark),
            };
            revisions
                .state
                .put(
                    revisions.binding_id,
                    &Revisions::key(&row.submission_id),
                    newest.to_state(),
                )
                .await?;
        }
        Ok(())
    }

    fn cells_at(&self, cells: &str, values: Vec<Value>) -> ValueRange {
        ValueRange {
            range: Some(self.target.range(cells)),
            values: Some(vec![values]),
            ..ValueRange::default()
        }
    }

    /// Reads the header on first use, and whenever the batch brings new answer keys, which
    /// become columns at the end. Re-reading before adding keeps columns another writer
    /// added meanwhile.
    /// With `deleted_at`, the header gets that column too (for marked deletions).
    async fn ensure_header<'a>(
        &mut self,
        rows: impl Iterator<Item = &'a PendingRow> + Clone,
        deleted_at: bool,
    ) -> Result<(), TaskError> {
        let answers = || rows.clone().map(|row| &row.answers);
        if self.header.as_ref().is_some_and(|header| {
            !header.lacks_any(answers()) && (!deleted_at || header.position(DELETED_AT).is_some())
        }) {
            return Ok(());
        }
        // Whatever happens next, the sheet's header is not known for sure until it is read
        // (or written) again.
        self.header = None;
        let (mut header, stored) = match self.read_header().await? {
            Some(header) => (header, true),
            None => (Header::new(&self.settings.columns), false),
        };
        let mut changed = header.extend_with_answers(answers());
        if deleted_at {
            changed |= header.extend([DELETED_AT.to_owned()]);
        }
        if changed || !stored {
            self.write_header(&header).await?;
        }
        self.header = Some(header);
        Ok(())
    }

    /// Waits until the next call is allowed; every call counts against the quota.
    async fn pace(&mut self) {
        tokio::time::sleep_until(self.next_write).await;
        self.next_write = Instant::now() + self.settings.min_interval;
    }

    async fn read_header(&mut self) -> Result<Option<Header>, TaskError> {
        let row = self.read(&self.target.range("1:1")).await?;
        Ok(row
            .first()
            .and_then(|row| Header::from_row(row, &self.settings.labels)))
    }

    /// The submission ids in column A, with the (1-based) row each is first in.
    async fn submission_rows(&mut self) -> Result<HashMap<String, usize>, TaskError> {
        let column = self.read(&self.target.range("A:A")).await?;
        let mut rows = HashMap::new();
        for (index, row) in column.into_iter().enumerate() {
            if let Some(Value::String(id)) = row.into_iter().next() {
                rows.entry(id).or_insert(index + 1);
            }
        }
        Ok(rows)
    }

    /// The tab's numeric id, looked up once.
    async fn sheet_id(&mut self) -> Result<i32, TaskError> {
        if let Some(id) = self.sheet_id {
            return Ok(id);
        }
        self.pace().await;
        let mut retry_after = RetryAfter::default();
        let result = self
            .google
            .sheets
            .spreadsheets()
            .get(&self.target.spreadsheet_id)
            .add_scope(Scope::Spreadsheet)
            .delegate(&mut retry_after)
            .doit()
            .await;
        let (_, spreadsheet) =
            result.map_err(|err| task_error("reading the spreadsheet's tabs", err, retry_after))?;
        let id = spreadsheet
            .sheets
            .unwrap_or_default()
            .into_iter()
            .filter_map(|sheet| sheet.properties)
            .find(|properties| properties.title.as_deref() == Some(self.target.sheet.as_str()))
            .and_then(|properties| properties.sheet_id)
            .ok_or_else(|| {
                TaskError::retryable(format!("the tab `{}` is gone", self.target.sheet))
            })?;
        self.sheet_id = Some(id);
        Ok(id)
    }

    async fn read(&mut self, range: &str) -> Result<Vec<Vec<Value>>, TaskError> {
        self.pace().await;
        let mut retry_after = RetryAfter::default();
        let result = self
            .google
            .sheets
            .spreadsheets()
            .values_get(&self.target.spreadsheet_id, range)
            .add_scope(Scope::Spreadsheet)
            .delegate(&mut retry_after)
            .doit()
            .await;
        match result {
            Ok((_, values)) => Ok(values.values.unwrap_or_default()),
            Err(err) => Err(task_error(&format!("reading {range}"), err, retry_after)),
        }
    }

    async fn write_header(&mut self, header: &Header) -> Result<(), TaskError> {
        self.pace().await;
        let range = self.target.range("A1");
        let request = ValueRange {
            values: Some(vec![header.row(&self.settings.labels)]),
            ..ValueRange::default()
        };
        let mut retry_after = RetryAfter::default();
        let result = self
            .google
            .sheets
            .spreadsheets()
            .values_update(request, &self.target.spreadsheet_id, &range)
            .value_input_option("RAW")
            .add_scope(Scope::Spreadsheet)
            .delegate(&mut retry_after)
            .doit()
            .await;
        result
            .map(drop)
            .map_err(|err| task_error("writing the header row", err, retry_after))
    }

    /// Writes cells in place, every range in one call.
    async fn update_cells(&mut self, data: Vec<ValueRange>) -> Result<(), TaskError> {
        self.pace().await;
        let request = BatchUpdateValuesRequest {
            data: Some(data),
            // RAW, as appends: answers are data, never formulas.
            value_input_option: Some("RAW".into()),
            ..BatchUpdateValuesRequest::default()
        };
        let mut retry_after = RetryAfter::default();
        let result = self
            .google
            .sheets
            .spreadsheets()
            .values_batch_update(request, &self.target.spreadsheet_id)
            .add_scope(Scope::Spreadsheet)
            .delegate(&mut retry_after)
            .doit()
            .await;
        result
            .map(drop)
            .map_err(|err| task_error("rewriting edited rows", err, retry_after))
    }

    /// Removes rows (1-based numbers) in one call, the lowest last so that the numbers of
    /// the others still hold when each is removed.
    async fn delete_rows(&mut self, mut rows: Vec<usize>) -> Result<(), TaskError> {
        let sheet_id = self.sheet_id().await?;
        rows.sort_unstable_by(|a, b| b.cmp(a));
        rows.dedup();
        let requests = rows
            .into_iter()
            .map(|row| Request {
                delete_dimension: Some(DeleteDimensionRequest {
                    range: Some(DimensionRange {
                        sheet_id: Some(sheet_id),
                        dimension: Some("ROWS".into()),
                        start_index: Some(row as i32 - 1),
                        end_index: Some(row as i32),
                    }),
                }),
                ..Request::default()
            })
            .collect();
        self.pace().await;
        let mut retry_after = RetryAfter::default();
        let result = self
            .google
            .sheets
            .spreadsheets()
            .batch_update(
                BatchUpdateSpreadsheetRequest {
                    requests: Some(requests),
                    ..BatchUpdateSpreadsheetRequest::default()
                },
                &self.target.spreadsheet_id,
            )
            .add_scope(Scope::Spreadsheet)
            .delegate(&mut retry_after)
            .doit()
            .await;
        if result.is_err() {
            // The tab may have been replaced: look its id up again next time.
            self.sheet_id = None;
        }
        result
            .map(drop)
            .map_err(|err| task_error("deleting rows of deleted submissions", err, retry_after))
    }

    async fn append(&mut self, values: Vec<Vec<Value>>) -> Result<(), TaskError> {
        self.pace().await;
        let range = self.target.range("A1");
        let request = ValueRange {
            values: Some(values),
            ..ValueRange::default()
        };
        let mut retry_after = RetryAfter::default();
        // RAW: answers are data, never formulas (no `=IMPORTXML(…)` from a form).
        let result = self
            .google
            .sheets
            .spreadsheets()
            .values_append(request, &self.target.spreadsheet_id, &range)
            .value_input_option("RAW")
            .insert_data_option("INSERT_ROWS")
            .add_scope(Scope::Spreadsheet)
            .delegate(&mut retry_after)
            .doit()
            .await;
        result
            .map(drop)
            .map_err(|err| task_error("appending rows", err, retry_after))
    }
}
