//! The `google_sheets` kind following edits and deletions, through the real Google clients
//! against the emulator: rows rewritten in place, removed or marked, and revisions kept in
//! order whatever order their runs come in.

use postsub_tasks::{
    Event, Events, Submission,
    google_sheets::{Endpoints, GoogleSheets},
};
use postsub_testkit::{SheetsEmulator, task::TaskHarness};
use serde_json::{Value, json};

/// A binding taking every event, with `config` and the emulator's key file.
async fn binding(emulator: &SheetsEmulator, config: Value) -> TaskHarness<GoogleSheets> {
    let dir = std::env::temp_dir().join(format!("postsub-sheets-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut config = config;
    config["credentials_file"] = json!(emulator.write_service_account_key(&dir));
    if config.get("batch_wait").is_none() {
        config["batch_wait"] = json!("1ms");
    }
    config["max_writes_per_minute"] = json!(60_000);
    let sheets = GoogleSheets::new(Endpoints {
        sheets_base_url: emulator.sheets_base_url(),
        drive_base_url: emulator.drive_base_url(),
    });
    TaskHarness::new(sheets, config)
        .expect("config")
        .with_events(Events::ALL)
}

/// What the run did to its row (its output's `action`).
async fn action(harness: &TaskHarness<GoogleSheets>, submission: &Submission) -> String {
    let outcome = harness.run(submission).await.expect("the run succeeds");
    outcome.output["action"]
        .as_str()
        .expect("an action")
        .to_owned()
}

/// The sheet's rows, as text.
fn rows(emulator: &SheetsEmulator) -> Vec<Vec<String>> {
    let (id, _) = emulator.spreadsheets().pop().expect("a spreadsheet");
    emulator
        .values(&id, "Responses")
        .into_iter()
        .map(|row| {
            row.into_iter()
                .map(|cell| match cell {
                    Value::String(text) => text,
                    other => other.to_string(),
                })
                .collect()
        })
        .collect()
}

#[tokio::test]
async fn edits_rewrite_in_place_deletes_remove_and_older_revisions_change_nothing() {
    let emulator = SheetsEmulator::start().await;
    let harness = binding(&emulator, json!({})).await;
    let first = harness.submission(json!({"name": "Ada", "age": 36}));
    let second = harness.submission(json!({"name": "Grace", "age": 45}));
    assert_eq!(action(&harness, &first).await, "appended");
    assert_eq!(action(&harness, &second).await, "appended");

    // An edit of revision 2 rewrites row 2 in place; its new key becomes a column.
    let edited = harness.change(
        &first,
        Event::Updated,
        2,
        json!({"name": "Ada L.", "age": 37, "city": "London"}),
    );
    assert_eq!(action(&harness, &edited).await, "rewritten");
    let sheet = rows(&emulator);
    assert_eq!(sheet.len(), 3, "{sheet:?}");
    assert_eq!(
        sheet[0],
        ["submission_id", "submitted_at", "age", "name", "city"]
    );
    assert_eq!(sheet[1][0], first.submission_id.to_string());
    assert_eq!(sheet[1][2..], ["37", "Ada L.", "London"]);
    assert_eq!(sheet[2][3], "Grace");

    // Revision 1 arrives late: the sheet keeps revision 2. So does the retry of the
    // creation.
    let older = harness.change(&first, Event::Updated, 1, json!({"name": "Old"}));
    assert_eq!(action(&harness, &older).await, "superseded");
    let retried = harness.attempt(&first, 2).await.unwrap();
    assert_eq!(retried.output["action"], "superseded");
    assert_eq!(rows(&emulator)[1][3], "Ada L.");

    // An edit of a submission the sheet never had appends it; its creation arriving after
    // adds no second row.
    let late = harness.submission(json!({"name": "Edsger"}));
    let late_edit = harness.change(&late, Event::Updated, 7, json!({"name": "Edsger D."}));
    assert_eq!(action(&harness, &late_edit).await, "appended");
    assert_eq!(action(&harness, &late).await, "superseded");
    let sheet = rows(&emulator);
    assert_eq!(sheet.len(), 4);
    assert_eq!(sheet[3][3], "Edsger D.");

    // The deletion removes the row; the rows below move up.
    let deleted = harness.change(&first, Event::Deleted, 3, json!({"name": "Ada L."}));
    assert_eq!(action(&harness, &deleted).await, "deleted");
    let sheet = rows(&emulator);
    assert_eq!(sheet.len(), 3, "{sheet:?}");
    assert_eq!(sheet[1][0], second.submission_id.to_string());
    // Its retry finds nothing to delete; an edit after it changes nothing.
    let again = harness.attempt(&deleted, 2).await.unwrap();
    assert_eq!(again.output["action"], "absent");
    let after = harness.change(&first, Event::Updated, 4, json!({"name": "Ghost"}));
    assert_eq!(action(&harness, &after).await, "superseded");
    assert_eq!(rows(&emulator).len(), 3);
}

#[tokio::test]
async fn on_delete_mark_writes_the_time_into_a_deleted_at_column() {
    let emulator = SheetsEmulator::start().await;
    let harness = binding(&emulator, json!({"on_delete": "mark"})).await;
    let kept = harness.submission(json!({"name": "Ada"}));
    let gone = harness.submission(json!({"name": "Grace"}));
    assert_eq!(action(&harness, &kept).await, "appended");
    assert_eq!(action(&harness, &gone).await, "appended");
    let deleted = harness.change(&gone, Event::Deleted, 2, json!({"name": "Grace"}));
    assert_eq!(action(&harness, &deleted).await, "marked");
    let sheet = rows(&emulator);
    assert_eq!(
        sheet[0],
        ["submission_id", "submitted_at", "name", "deleted_at"]
    );
    assert_eq!(sheet.len(), 3);
    assert_eq!(sheet[1].get(3).map_or("", String::as_str), "");
    let marked = &sheet[2][3];
    assert!(
        chrono::DateTime::parse_from_rfc3339(marked).is_ok(),
        "{marked}"
    );
}

#[tokio::test]
async fn of_two_edits_in_one_batch_the_newer_is_written_whatever_their_order() {
    let emulator = SheetsEmulator::start().await;
    // Runs reaching the writer within 300 ms share one batch.
    let harness = binding(&emulator, json!({"batch_wait": "300ms"})).await;
    let submission = harness.submission(json!({"name": "v1"}));
    assert_eq!(action(&harness, &submission).await, "appended");
    let newer = harness.change(&submission, Event::Updated, 3, json!({"name": "v3"}));
    let older = harness.change(&submission, Event::Updated, 2, json!({"name": "v2"}));
    let (newer, older) = tokio::join!(harness.run(&newer), harness.run(&older));
    assert_eq!(newer.unwrap().output["action"], "rewritten");
    assert_eq!(older.unwrap().output["action"], "superseded");
    assert_eq!(rows(&emulator)[1][2], "v3");
    // And the revision kept is the newer one: revision 2 again changes nothing.
    let again = harness.change(&submission, Event::Updated, 2, json!({"name": "v2"}));
    assert_eq!(action(&harness, &again).await, "superseded");
    assert_eq!(rows(&emulator)[1][2], "v3");
}
