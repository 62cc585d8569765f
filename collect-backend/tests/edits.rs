//! A submission's whole life through the whole stack, on both backends: created, edited
//! (PUT) and deleted (DELETE) at the demo backend, whose layer reports each event; the sheet
//! row is written, rewritten in place and removed (or marked), and the webhook receiver
//! gets `submission.created`, `.updated` and `.deleted`, each once. Two edits reported out of
//! order leave the newer one in the sheet.

mod common;

use std::time::Duration;

use common::{On, SheetsStack, eventually, spawn_with_sheets};
use postsub::{
    json::to_proto_struct,
    pb::{self, post_submission_client::PostSubmissionClient},
};
use postsub_testkit::WebhookReceiver;
use reqwest::StatusCode;
use serde_json::{Value, json};

const PATIENCE: Duration = Duration::from_secs(60);

/// A form with a Sheets binding and a webhook binding taking every event, a sync validate
/// binding taking edits, and the receiver.
async fn bound_form(sheets: &SheetsStack, on_delete: &str) -> (String, WebhookReceiver) {
    let (status, form) = sheets
        .stack
        .post(
            "/forms",
            json!({"title": "Budget", "questions": [
                {"key": "name", "type": "string", "required": true},
                {"key": "age", "type": "integer"}
            ]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{form}");
    let form = form["id"].as_str().unwrap().to_owned();
    let receiver = WebhookReceiver::start().await;
    let every_event = || {
        Some(pb::BindingOptions {
            events: "created,updated,deleted".into(),
            backoff_initial: "100ms".into(),
            ..Default::default()
        })
    };
    sheets
        .stack
        .bind_with_options(
            &form,
            "sheet",
            "google_sheets",
            pb::Mode::Async,
            json!({"credentials_file": sheets.key_file, "batch_wait": "10ms",
                   "on_delete": on_delete}),
            every_event(),
        )
        .await;
    sheets
        .stack
        .bind_with_options(
            &form,
            "hook",
            "webhook",
            pb::Mode::Async,
            json!({"url": receiver.url, "secret": receiver.secret}),
            every_event(),
        )
        .await;
    sheets
        .stack
        .bind_with_options(
            &form,
            "check",
            "validate",
            pb::Mode::Sync,
            json!({"fields": {"age": {"type": "number", "max": 150}}}),
            Some(pb::BindingOptions {
                events: "created,updated".into(),
                ..Default::default()
            }),
        )
        .await;
    (form, receiver)
}

/// The sheet's data rows (header skipped).
fn rows(sheets: &SheetsStack) -> Vec<Vec<Value>> {
    match sheets.emulator.spreadsheets().first() {
        Some((id, _)) => sheets.emulator.values(id, "Responses"),
        None => Vec::new(),
    }
}

/// The receiver's deliveries as (type, submission id, name answer).
fn deliveries(receiver: &WebhookReceiver) -> Vec<(String, String, Value)> {
    receiver
        .deliveries()
        .into_iter()
        .map(|delivery| {
            assert!(delivery.signature_ok);
            (
                delivery.body["type"].as_str().unwrap().to_owned(),
                delivery.body["data"]["submission_id"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
                delivery.body["data"]["answers"]["name"].clone(),
            )
        })
        .collect()
}

/// A request to the backend, as a client of it sends it.
async fn send(
    sheets: &SheetsStack,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = sheets
        .stack
        .http
        .request(method, format!("{}{path}", sheets.stack.backend));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    (response.status(), response.json().await.unwrap())
}

async fn a_submission_is_created_edited_and_deleted(on: On, on_delete: &str) {
    let sheets = spawn_with_sheets(on, &[]).await;
    let (form, receiver) = bound_form(&sheets, on_delete).await;
    let submissions = format!("/forms/{form}/submissions");

    // Created: one row, one submission.created; the listing passes the layer untouched.
    let (status, created) = sheets
        .stack
        .post(
            &format!("/forms/{form}/submit"),
            json!({"answers": {"name": "Ada", "age": 36}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let (_, other) = sheets
        .stack
        .post(
            &format!("/forms/{form}/submit"),
            json!({"answers": {"name": "Grace", "age": 45}}),
        )
        .await;
    let other_id = other["id"].as_str().unwrap().to_owned();
    eventually("two rows and two webhooks", PATIENCE, || async {
        rows(&sheets).len() == 3 && receiver.delivery_count() == 2
    })
    .await;
    let (status, listing) = send(&sheets, reqwest::Method::GET, &submissions, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(listing.get("post_submission").is_none(), "{listing}");

    // Edited: the row is rewritten in place (still row 2), submission.updated arrives, and
    // the sync validate binding ran on the edit and flagged it.
    let (status, edited) = send(
        &sheets,
        reqwest::Method::PUT,
        &format!("{submissions}/{id}"),
        Some(json!({"answers": {"name": "Ada Lovelace", "age": 200}})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{edited}");
    assert_eq!(edited["revision"], 2);
    let results = &edited["post_submission"]["sync_results"];
    assert_eq!(results[0]["status"], "flagged", "{edited}");
    assert_eq!(
        edited["post_submission"]["jobs"].as_array().unwrap().len(),
        2
    );
    eventually(
        "the edit in the sheet and at the receiver",
        PATIENCE,
        || async {
            let rows = rows(&sheets);
            rows.len() == 3
                && rows[1][0] == json!(id)
                && rows[1].contains(&json!("Ada Lovelace"))
                && receiver.delivery_count() == 3
        },
    )
    .await;
    assert_eq!(rows(&sheets)[2][0], json!(other_id), "the other row stays");

    // An older revision reported after the newer one (a late retry of the layer) runs, and
    // leaves the newer answers in the sheet.
    let mut client = PostSubmissionClient::connect(sheets.stack.grpc.clone())
        .await
        .unwrap();
    let Value::Object(old_answers) = json!({"name": "Ada (old)", "age": 35}) else {
        unreachable!()
    };
    let late = client
        .process(pb::ProcessRequest {
            form_id: form.clone(),
            submission_id: id.clone(),
            answers: Some(to_proto_struct(old_answers)),
            event: pb::SubmissionEvent::Updated.into(),
            revision: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(late.jobs.len(), 2);
    eventually("the late edit's webhook", PATIENCE, || async {
        receiver.delivery_count() == 4
    })
    .await;
    eventually("the late edit's sheet run finished", PATIENCE, || async {
        sheets
            .stack
            .runs(&form)
            .await
            .iter()
            .filter(|run| run.kind == "google_sheets")
            .all(|run| run.status == pb::RunStatus::Succeeded as i32)
    })
    .await;
    assert!(rows(&sheets)[1].contains(&json!("Ada Lovelace")));

    // Deleted: the row goes (or is marked), submission.deleted arrives; the sync validate
    // binding does not take deletions.
    let (status, deleted) = send(
        &sheets,
        reqwest::Method::DELETE,
        &format!("{submissions}/{id}"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{deleted}");
    assert_eq!(deleted["revision"], 3);
    assert_eq!(
        deleted["post_submission"]["sync_results"],
        json!([]),
        "{deleted}"
    );
    eventually("the deletion at the receiver", PATIENCE, || async {
        receiver.delivery_count() == 5
    })
    .await;
    match on_delete {
        "mark" => {
            eventually("the row marked deleted", PATIENCE, || async {
                let rows = rows(&sheets);
                let column = rows[0].iter().position(|h| h == "deleted_at");
                column.is_some_and(|c| {
                    rows[1]
                        .get(c)
                        .and_then(Value::as_str)
                        .is_some_and(|t| !t.is_empty())
                })
            })
            .await;
            assert_eq!(rows(&sheets).len(), 3);
        }
        _ => {
            eventually("the row removed", PATIENCE, || async {
                let rows = rows(&sheets);
                rows.len() == 2 && rows[1][0] == json!(other_id)
            })
            .await;
        }
    }
    let kinds: Vec<(String, String, Value)> = deliveries(&receiver);
    let types: Vec<&str> = kinds
        .iter()
        .filter(|(_, sid, _)| *sid == id)
        .map(|(kind, ..)| kind.as_str())
        .collect();
    assert_eq!(
        types,
        [
            "submission.created",
            "submission.updated",
            "submission.updated",
            "submission.deleted"
        ]
    );

    // The history says which event each run was for; the same DELETE again finds nothing.
    let runs = sheets.stack.runs(&form).await;
    let events = |event: &str| {
        runs.iter()
            .filter(|run| run.submission_id == id && run.event == event)
            .count()
    };
    // Created: sheet, hook, check; each of the two edits: sheet, hook, check; deleted:
    // sheet and hook.
    assert_eq!(
        (events("created"), events("updated"), events("deleted")),
        (3, 6, 2)
    );
    let (status, gone) = send(
        &sheets,
        reqwest::Method::DELETE,
        &format!("{submissions}/{id}"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(gone["error"].as_str().unwrap().contains(&id), "{gone}");
    let (status, unknown) = send(
        &sheets,
        reqwest::Method::PUT,
        &format!("{submissions}/{}", uuid::Uuid::new_v4()),
        Some(json!({"answers": {"name": "x"}})),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{unknown}");
    assert!(unknown.get("post_submission").is_none(), "{unknown}");
    assert_eq!(receiver.delivery_count(), 5, "nothing ran twice");
}

#[tokio::test]
async fn a_submission_is_created_edited_and_deleted_on_postgres_and_rabbitmq() {
    a_submission_is_created_edited_and_deleted(On::Servers, "delete").await;
}

#[tokio::test]
async fn a_submission_is_created_edited_and_deleted_on_the_embedded_backend() {
    a_submission_is_created_edited_and_deleted(On::Embedded, "mark").await;
}

#[tokio::test]
async fn an_event_a_binding_does_not_take_runs_nothing() {
    let sheets = spawn_with_sheets(On::Embedded, &[]).await;
    let (status, form) = sheets
        .stack
        .post("/forms", json!({"title": "t", "questions": []}))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let form = form["id"].as_str().unwrap().to_owned();
    let receiver = WebhookReceiver::start().await;
    sheets
        .stack
        .bind(
            &form,
            "hook",
            "webhook",
            pb::Mode::Async,
            json!({"url": receiver.url, "secret": receiver.secret}),
        )
        .await;
    let (_, created) = sheets
        .stack
        .post(&format!("/forms/{form}/submit"), json!({"answers": {}}))
        .await;
    let id = created["id"].as_str().unwrap();
    let (status, edited) = send(
        &sheets,
        reqwest::Method::PUT,
        &format!("/forms/{form}/submissions/{id}"),
        Some(json!({"answers": {"n": 1}})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        edited["post_submission"],
        json!({"sync_results": [], "jobs": []}),
        "a binding of `created` only has no run for an edit, and that is no error"
    );
    eventually("the creation's webhook", PATIENCE, || async {
        receiver.delivery_count() == 1
    })
    .await;

    // A kind refuses an event it cannot take, and an unknown event is named.
    let refused = |name: &str, kind: &str, mode: pb::Mode, config: Value, events: &str| {
        let request = pb::CreateBindingRequest {
            form_id: form.clone(),
            name: name.into(),
            kind: kind.into(),
            mode: mode.into(),
            config: Some(to_proto_struct(config.as_object().unwrap().clone())),
            options: Some(pb::BindingOptions {
                events: events.into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let stack = &sheets.stack;
        async move {
            let status = stack
                .admin()
                .await
                .create_binding(request)
                .await
                .unwrap_err();
            assert_eq!(status.code(), tonic::Code::InvalidArgument);
            status.message().to_owned()
        }
    };
    assert_eq!(
        refused(
            "check",
            "validate",
            pb::Mode::Sync,
            json!({}),
            "created,deleted"
        )
        .await,
        "events: task kind `validate` runs on created,updated, not on created,deleted"
    );
    let hook = json!({"url": receiver.url, "secret": receiver.secret});
    assert_eq!(
        refused("hook2", "webhook", pb::Mode::Async, hook, "created,edited").await,
        "events: unknown event `edited`: expected `created`, `updated` or `deleted`"
    );
}
