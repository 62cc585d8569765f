//! One writer per sheet: it groups the rows of concurrent runs into one `values.append`
//! call, keeps the header, and spaces its write calls to stay under Google's quota (about 60
//! write requests per minute per user) instead of hammering into it.
//!
//! A run hands its row to the writer and waits for the answer. The writer takes the first
//! row, lingers briefly (and at least until the next write is allowed) for more, then:
//! adds new answer keys as columns at the end of the header, drops the rows of runs that
//! may have been written before (a retry or a redelivery) if their submission id is in
//! column A already, and appends the rest in one call. Every run of the batch gets the
//! same result.

use std::{collections::HashSet, sync::Arc, time::Duration};

use google_sheets4::api::{Scope, ValueRange};
use serde_json::{Map, Value};
use tokio::{
    sync::{mpsc, oneshot},
    time::Instant,
};

use super::{
    client::{Google, RetryAfter, task_error},
    rows::Header,
};
use crate::TaskError;

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

/// One run's row.
pub struct PendingRow {
    /// Submission id (column A).
    pub submission_id: String,
    /// Submission time (column B).
    pub submitted_at: String,
    /// The answers.
    pub answers: Map<String, Value>,
    /// An earlier attempt may have written the row: look before appending.
    pub check_existing: bool,
    /// Where the writer answers.
    pub reply: oneshot::Sender<Result<Written, TaskError>>,
}

/// What the writer did with a row.
#[derive(Debug, Clone, Copy)]
pub struct Written {
    /// Rows the append call carried (0 when the row was there already).
    pub rows_in_call: usize,
    /// The row was in the sheet already; nothing was appended for it.
    pub already_present: bool,
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
        self.ensure_header(batch).await?;
        let present = if batch.iter().any(|row| row.check_existing) {
            self.submission_ids().await?
        } else {
            HashSet::new()
        };
        let header = self.header.as_ref().expect("ensure_header set it");
        let mut fresh: HashSet<&str> = HashSet::new();
        let values: Vec<Vec<Value>> = batch
            .iter()
            .filter(|row| !present.contains(&row.submission_id))
            // The same submission twice in one batch (a duplicate delivery) is one row.
            .filter(|row| fresh.insert(row.submission_id.as_str()))
            .map(|row| header.cells(&row.submission_id, &row.submitted_at, &row.answers))
            .collect();
        let rows_in_call = values.len();
        if rows_in_call > 0 {
            self.append(values).await?;
        }
        Ok(batch
            .iter()
            .map(|row| {
                let already_present = present.contains(&row.submission_id);
                Ok(Written {
                    rows_in_call: if already_present { 0 } else { rows_in_call },
                    already_present,
                })
            })
            .collect())
    }

    /// Reads the header on first use, and whenever the batch brings new answer keys, which
    /// become columns at the end. Re-reading before adding keeps columns another writer
    /// added meanwhile.
    async fn ensure_header(&mut self, batch: &[PendingRow]) -> Result<(), TaskError> {
        let answers = || batch.iter().map(|row| &row.answers);
        if self
            .header
            .as_ref()
            .is_some_and(|header| !header.lacks_any(answers()))
        {
            return Ok(());
        }
        // Whatever happens next, the sheet's header is not known for sure until it is read
        // (or written) again.
        self.header = None;
        let (mut header, stored) = match self.read_header().await? {
            Some(header) => (header, true),
            None => (Header::new(&self.settings.columns), false),
        };
        if header.extend_with_answers(answers()) || !stored {
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

    /// The submission ids in column A.
    async fn submission_ids(&mut self) -> Result<HashSet<String>, TaskError> {
        let column = self.read(&self.target.range("A:A")).await?;
        Ok(column
            .into_iter()
            .filter_map(|row| row.into_iter().next())
            .filter_map(|cell| cell.as_str().map(str::to_owned))
            .collect())
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
