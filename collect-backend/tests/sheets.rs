//! Google Sheets export through the whole stack: backend → layer → proxy → RabbitMQ → worker
//! → the real `google-sheets4`/`yup-oauth2` clients → the Sheets API emulator.

mod common;

use std::{collections::HashSet, time::Duration};

use common::{On, SheetsStack, eventually, spawn_with_sheets};
use futures_util::future::join_all;
use postsub::pb;
use reqwest::StatusCode;
use serde_json::{Value, json};

const PATIENCE: Duration = Duration::from_secs(90);

async fn spawn_with_emulator(flags: &[&str]) -> SheetsStack {
    spawn_with_sheets(On::Servers, flags).await
}

impl SheetsStack {
    async fn form(&self) -> String {
        let (status, form) = self
            .stack
            .post(
                "/forms",
                json!({"title": "Budget", "questions": [
                    {"key": "name", "type": "string", "required": true},
                    {"key": "age", "type": "integer"},
                    {"key": "subscribed", "type": "boolean"}
                ]}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED);
        form["id"].as_str().unwrap().to_owned()
    }

    /// The answers of submission `i`: numbers, booleans, a missing key now and then, an
    /// extra nested one, and from the 100th on a new question, `city`.
    fn answers(i: usize) -> Value {
        let mut answers = json!({"name": format!("person {i}"), "subscribed": i.is_multiple_of(2)});
        if i % 10 != 3 {
            answers["age"] = json!(i);
        }
        if i.is_multiple_of(7) {
            answers["extra"] = json!({"tags": ["a", i]});
        }
        if i >= 100 {
            answers["city"] = json!("Leeds");
        }
        answers
    }

    /// Submits the submissions numbered `range`, 8 at a time; returns their ids in order.
    async fn submit(&self, form: &str, range: std::ops::Range<usize>) -> Vec<String> {
        let mut ids = Vec::with_capacity(range.len());
        let path = format!("/forms/{form}/submit");
        for chunk in range.collect::<Vec<_>>().chunks(8) {
            let sent = chunk.iter().map(|i| {
                self.stack
                    .post(&path, json!({"answers": Self::answers(*i)}))
            });
            for (status, body) in join_all(sent).await {
                assert_eq!(status, StatusCode::CREATED, "{body}");
                let jobs = body["post_submission"]["jobs"]
                    .as_array()
                    .map_or(0, Vec::len);
                assert!(jobs > 0, "the export is queued: {body}");
                ids.push(body["id"].as_str().unwrap().to_owned());
            }
        }
        ids
    }

    fn only_spreadsheet(&self) -> (String, String) {
        let spreadsheets = self.emulator.spreadsheets();
        assert_eq!(
            spreadsheets.len(),
            1,
            "one spreadsheet per binding: {spreadsheets:?}"
        );
        spreadsheets[0].clone()
    }

    /// Submits 200 submissions in two halves: `city` is a question added once the first
    /// half is in the sheet, so it must become the last column. (Submitted all at once,
    /// retries can reorder rows and a later row may well be the first one written.)
    async fn submit_with_a_question_added_midway(&self, form: &str) -> Vec<String> {
        let mut ids = self.submit(form, 0..100).await;
        eventually("the first 100 rows in the sheet", PATIENCE, || async {
            self.rows().len() > 100
        })
        .await;
        ids.extend(self.submit(form, 100..200).await);
        ids
    }

    fn rows(&self) -> Vec<Vec<Value>> {
        match self.emulator.spreadsheets().first() {
            Some((id, _)) => self.emulator.values(id, "Responses"),
            None => Vec::new(),
        }
    }
}

/// Checks the sheet holds the header and exactly one row per submission, in the right
/// columns with types kept.
fn assert_sheet(rows: &[Vec<Value>], ids: &[String]) {
    let header: Vec<&str> = rows[0].iter().map(|c| c.as_str().unwrap()).collect();
    assert_eq!(&header[..2], ["submission_id", "submitted_at"]);
    let column = |key: &str| {
        header
            .iter()
            .position(|h| *h == key)
            .unwrap_or_else(|| panic!("no column {key} in {header:?}"))
    };
    assert_eq!(
        column("city"),
        header.len() - 1,
        "a question added later is the last column"
    );
    let data = &rows[1..];
    assert_eq!(data.len(), ids.len(), "one row per submission");
    let written: HashSet<&str> = data.iter().map(|row| row[0].as_str().unwrap()).collect();
    assert_eq!(written.len(), ids.len(), "no submission twice");
    for (i, id) in ids.iter().enumerate() {
        let row = data
            .iter()
            .find(|row| row[0] == json!(id))
            .unwrap_or_else(|| panic!("no row for submission {i}"));
        let cell = |key: &str| row.get(column(key)).cloned().unwrap_or(json!(""));
        assert_eq!(cell("name"), json!(format!("person {i}")));
        assert_eq!(
            cell("subscribed"),
            json!(i.is_multiple_of(2)),
            "booleans stay booleans"
        );
        if i % 10 == 3 {
            assert_eq!(cell("age"), json!(""), "a missing answer is an empty cell");
        } else {
            assert_eq!(cell("age"), json!(i), "numbers stay numbers");
        }
        if i.is_multiple_of(7) {
            let extra: Value = serde_json::from_str(cell("extra").as_str().unwrap()).unwrap();
            assert_eq!(extra, json!({"tags": ["a", i]}), "objects become JSON text");
        }
        assert_eq!(
            cell("city"),
            if i >= 100 { json!("Leeds") } else { json!("") }
        );
    }
}

#[tokio::test]
async fn every_submission_becomes_one_row_in_one_shared_spreadsheet() {
    let sheets = spawn_with_emulator(&["--concurrency", "64", "--prefetch", "128"]).await;
    let form = sheets.form().await;
    sheets
        .stack
        .bind(
            &form,
            "sheet",
            "google_sheets",
            pb::Mode::Async,
            json!({"credentials_file": sheets.key_file, "title": "Budget responses",
                   "share_with": ["ops@example.org"], "max_writes_per_minute": 6000}),
        )
        .await;
    let ids = sheets.submit_with_a_question_added_midway(&form).await;
    eventually("200 rows in the sheet", PATIENCE, || async {
        sheets.rows().len() > 200
    })
    .await;

    let (spreadsheet_id, title) = sheets.only_spreadsheet();
    assert_eq!(title, "Budget responses");
    assert_sheet(&sheets.rows(), &ids);
    let shared: Vec<Value> = sheets.emulator.permissions(&spreadsheet_id);
    assert_eq!(shared.len(), 1, "{shared:?}");
    assert_eq!(shared[0]["emailAddress"], "ops@example.org");
    assert_eq!(shared[0]["role"], "writer");
    assert!(
        sheets.emulator.append_calls() < 200,
        "rows are batched: {} append calls for 200 rows",
        sheets.emulator.append_calls()
    );

    eventually("200 succeeded runs", PATIENCE, || async {
        let runs = sheets.stack.runs(&form).await;
        runs.len() == 200 && runs.iter().all(|r| r.status() == pb::RunStatus::Succeeded)
    })
    .await;
    sheets.stack.postsub.stop().await.unwrap();
}

#[tokio::test]
async fn with_a_third_of_calls_failing_every_row_still_arrives_exactly_once() {
    let sheets = spawn_with_emulator(&["--concurrency", "64", "--prefetch", "128"]).await;
    sheets.emulator.fail_every(3, &[429, 500]);
    let form = sheets.form().await;
    sheets
        .stack
        .bind_with_options(
            &form,
            "sheet",
            "google_sheets",
            pb::Mode::Async,
            json!({"credentials_file": sheets.key_file, "share_with": ["ops@example.org"],
                   "max_writes_per_minute": 6000}),
            Some(pb::BindingOptions {
                max_attempts: Some(50),
                backoff_initial: "50ms".into(),
                backoff_max: "1s".into(),
                ..Default::default()
            }),
        )
        .await;
    let ids = sheets.submit_with_a_question_added_midway(&form).await;
    eventually("200 succeeded runs", PATIENCE, || async {
        let runs = sheets.stack.runs(&form).await;
        runs.len() == 200 && runs.iter().all(|r| r.status() == pb::RunStatus::Succeeded)
    })
    .await;

    sheets.only_spreadsheet();
    assert_sheet(&sheets.rows(), &ids);
    let runs = sheets.stack.runs(&form).await;
    let retried = runs.iter().filter(|r| r.attempts > 1).count();
    assert!(
        retried > 0,
        "failures were retried, and the history shows it"
    );
    assert!(sheets.emulator.api_calls() > sheets.emulator.append_calls());
    sheets.stack.postsub.stop().await.unwrap();
}

#[tokio::test]
async fn a_bad_spreadsheet_id_or_a_missing_key_fails_with_an_actionable_error() {
    let sheets = spawn_with_emulator(&[]).await;
    let form = sheets.form().await;
    sheets
        .stack
        .bind(
            &form,
            "wrong_id",
            "google_sheets",
            pb::Mode::Async,
            json!({"credentials_file": sheets.key_file, "spreadsheet_id": "doesNotExist123"}),
        )
        .await;
    sheets
        .stack
        .bind(
            &form,
            "no_key",
            "google_sheets",
            pb::Mode::Async,
            json!({"credentials_file": "/nonexistent/postsub-key.json"}),
        )
        .await;
    sheets.submit(&form, 0..1).await;
    eventually("both runs to end", PATIENCE, || async {
        let runs = sheets.stack.runs(&form).await;
        runs.len() == 2
            && runs
                .iter()
                .all(|r| !matches!(r.status(), pb::RunStatus::Queued | pb::RunStatus::Running))
    })
    .await;
    let runs = sheets.stack.runs(&form).await;
    let errors: Vec<&str> = runs.iter().map(|r| r.error.as_str()).collect();
    assert!(
        errors
            .iter()
            .any(|e| e.contains("opening spreadsheet doesNotExist123")
                && e.contains("404")
                && e.contains("shared with the service account")),
        "{errors:?}"
    );
    assert!(
        errors.iter().any(|e| e
            .contains("cannot read the service-account key `/nonexistent/postsub-key.json`")
            && e.contains("GOOGLE_APPLICATION_CREDENTIALS")),
        "{errors:?}"
    );
    // Neither is retried: a retry cannot help.
    assert!(runs.iter().all(|r| r.attempts == 1), "{runs:?}");
    assert!(sheets.emulator.spreadsheets().is_empty());
    sheets.stack.postsub.stop().await.unwrap();
}
