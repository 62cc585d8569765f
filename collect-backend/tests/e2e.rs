//! The whole path, on the real PostgreSQL and RabbitMQ: backend → PostSubmissionLayer →
//! proxy (`Process`) → sync `validate` inline and async `webhook` through RabbitMQ → worker
//! → local webhook receiver, with every run in the history.

mod common;

use std::time::Duration;

use common::{eventually, spawn_stack};
use postsub::{
    json::to_proto_struct,
    pb::{self, post_submission_client::PostSubmissionClient},
};
use postsub_tasks::{Registry, TargetPolicy};
use postsub_testkit::WebhookReceiver;
use reqwest::StatusCode;
use serde_json::{Value, json};

const PATIENCE: Duration = Duration::from_secs(20);

#[tokio::test]
async fn submission_runs_sync_and_async_tasks_and_records_them() {
    let stack = spawn_stack(Registry::with_builtins_for(TargetPolicy::dev()), &[]).await;
    let receiver = WebhookReceiver::start().await;

    let (status, form) = stack
        .post(
            "/forms",
            json!({"title": "Budget", "questions": [
                {"key": "monthly_income", "label": "Monthly income", "type": "number", "required": true},
                {"key": "monthly_savings", "label": "Monthly savings", "type": "number", "required": true}
            ]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let form_id = form["id"].as_str().unwrap().to_owned();
    stack
        .bind(
            &form_id,
            "budget_rules",
            "validate",
            pb::Mode::Sync,
            json!({
                "fields": {"monthly_income": {"required": true, "type": "number", "min": 0}},
                "rules": [{"name": "savings_within_income", "expr": "monthly_savings <= monthly_income",
                           "field": "monthly_savings",
                           "message": "Monthly savings cannot exceed monthly income"}]
            }),
        )
        .await;
    stack
        .bind(
            &form_id,
            "crm_hook",
            "webhook",
            pb::Mode::Async,
            json!({"url": receiver.url, "secret": receiver.secret}),
        )
        .await;

    let submit = format!("/forms/{form_id}/submit");
    let (status, valid) = stack
        .post(
            &submit,
            json!({"answers": {"monthly_income": 3000, "monthly_savings": 500}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{valid}");
    let results = &valid["post_submission"]["sync_results"];
    assert_eq!(results.as_array().unwrap().len(), 1, "{valid}");
    assert_eq!(results[0]["name"], "budget_rules");
    assert_eq!(results[0]["kind"], "validate");
    assert_eq!(results[0]["status"], "ok");
    assert_eq!(results[0]["flags"], json!([]));
    let jobs = &valid["post_submission"]["jobs"];
    assert_eq!(jobs.as_array().unwrap().len(), 1);
    assert_eq!(jobs[0]["name"], "crm_hook");
    assert_eq!(jobs[0]["kind"], "webhook");

    let (status, broken) = stack
        .post(
            &submit,
            json!({"answers": {"monthly_income": 1000, "monthly_savings": 1500}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{broken}");
    let result = &broken["post_submission"]["sync_results"][0];
    assert_eq!(result["status"], "flagged");
    assert_eq!(
        result["flags"],
        json!([{"field": "monthly_savings", "rule": "savings_within_income",
                "message": "Monthly savings cannot exceed monthly income"}])
    );

    // Each submission's webhook arrives once, signed.
    eventually("two webhook deliveries", PATIENCE, || async {
        receiver.delivery_count() >= 2
    })
    .await;
    let deliveries = receiver.deliveries();
    assert!(deliveries.iter().all(|d| d.signature_ok), "{deliveries:?}");
    let mut delivered: Vec<&str> = deliveries
        .iter()
        .map(|d| d.body["data"]["submission_id"].as_str().unwrap())
        .collect();
    delivered.sort_unstable();
    let mut submitted = vec![
        valid["id"].as_str().unwrap(),
        broken["id"].as_str().unwrap(),
    ];
    submitted.sort_unstable();
    assert_eq!(delivered, submitted);
    assert_eq!(deliveries[0].id, jobs[0]["run_id"].as_str().unwrap());

    // Every run is in the history with the right status.
    eventually("four finished runs", PATIENCE, || async {
        let runs = stack.runs(&form_id).await;
        runs.len() == 4
            && runs
                .iter()
                .all(|r| r.status() == pb::RunStatus::Succeeded && r.attempts == 1)
    })
    .await;
    let runs = stack.runs(&form_id).await;
    let flagged: Vec<_> = runs.iter().filter(|r| !r.flags.is_empty()).collect();
    assert_eq!(flagged.len(), 1);
    assert_eq!(flagged[0].submission_id, broken["id"].as_str().unwrap());
    assert_eq!(flagged[0].mode(), pb::Mode::Sync);
    assert_eq!(
        runs.iter().filter(|r| r.mode() == pb::Mode::Async).count(),
        2
    );

    // Calling Process again for a submission queues the same run, which does not run twice.
    let mut client = PostSubmissionClient::connect(stack.grpc.clone())
        .await
        .unwrap();
    let Value::Object(answers) = valid["answers"].clone() else {
        panic!("answers are an object")
    };
    for _ in 0..3 {
        let reply = client
            .process(pb::ProcessRequest {
                form_id: form_id.clone(),
                submission_id: valid["id"].as_str().unwrap().into(),
                answers: Some(to_proto_struct(answers.clone())),
                submitted_at: None,
                metadata: Default::default(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(reply.jobs[0].run_id, jobs[0]["run_id"].as_str().unwrap());
    }
    // A marker submission queued after the repeats: once its webhook arrives, the worker has
    // taken (and skipped) every repeat before it.
    let (_, marker) = stack
        .post(
            &submit,
            json!({"answers": {"monthly_income": 1, "monthly_savings": 1}}),
        )
        .await;
    eventually("the marker delivery", PATIENCE, || async {
        receiver.delivery_count() >= 3
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let deliveries = receiver.deliveries();
    assert_eq!(deliveries.len(), 3, "{deliveries:?}");
    assert_eq!(
        deliveries[2].body["data"]["submission_id"], marker["id"],
        "repeated Process calls must not deliver again"
    );
    let repeated = stack
        .runs(&form_id)
        .await
        .into_iter()
        .find(|r| r.run_id == jobs[0]["run_id"].as_str().unwrap())
        .unwrap();
    assert_eq!(repeated.attempts, 1);
    assert_eq!(repeated.status(), pb::RunStatus::Succeeded);

    stack.postsub.stop().await.unwrap();
}
