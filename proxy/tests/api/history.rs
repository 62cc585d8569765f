//! Queries of the run history by time and by result: `ListRuns`' time range and flag
//! filters, the event filter, `RunStats`, and the CLI's `runs list --since/--until/
//! --flag-field/--flag-rule/--event` and `runs stats`, against known data.

use std::time::Duration;

use chrono::Utc;
use postsub::{json::to_proto_timestamp, pb};
use serde_json::{Value, json};
use tonic::Code;
use uuid::Uuid;

use crate::{
    contract,
    helpers::{Backend, TestProxy, assert_status, binding, eventually, spawn_proxy},
};

contract!(the_history_answers_by_time_range_flag_and_in_counts);

async fn submit_all(proxy: &TestProxy, form: Uuid, answers: &[Value]) {
    let mut client = proxy.process_client().await;
    for answers in answers {
        client
            .process(crate::helpers::process(form, answers.clone()))
            .await
            .unwrap();
    }
}

async fn list(proxy: &TestProxy, request: pb::ListRunsRequest) -> Vec<pb::Run> {
    let request = pb::ListRunsRequest {
        page_size: 1000,
        ..request
    };
    proxy
        .admin()
        .await
        .list_runs(request)
        .await
        .unwrap()
        .into_inner()
        .runs
}

async fn stats(proxy: &TestProxy, filter: pb::ListRunsRequest, by: &str) -> Vec<(String, u64)> {
    let request = pb::RunStatsRequest {
        filter: Some(filter),
        by: by.into(),
    };
    let counts = proxy.admin().await.run_stats(request).await.unwrap();
    counts
        .into_inner()
        .counts
        .into_iter()
        .map(|count| (count.key, count.runs))
        .collect()
}

async fn the_history_answers_by_time_range_flag_and_in_counts(backend: Backend) {
    let proxy = spawn_proxy(backend).await;
    let form = Uuid::new_v4();
    let checks = json!({
        "fields": {"email": {"type": "string", "pattern": "^[^@]+@[^@]+$"}},
        "rules": [{"name": "savings_within_income", "expr": "monthly_savings <= monthly_income",
                   "field": "monthly_savings"}]});
    let mut admin = proxy.admin().await;
    let checks_binding = admin
        .create_binding(binding(form, "checks", "validate", pb::Mode::Sync, checks))
        .await
        .unwrap()
        .into_inner();
    let age = json!({"fields": {"age": {"type": "number", "max": 150}}});
    admin
        .create_binding(binding(form, "age", "validate", pb::Mode::Sync, age))
        .await
        .unwrap();

    // Before: 4 over budget (one also with a bad e-mail), 2 clean.
    let first = [
        json!({"monthly_income": 10, "monthly_savings": 20}),
        json!({"monthly_income": 10, "monthly_savings": 30}),
        json!({"monthly_income": 10, "monthly_savings": 40}),
        json!({"monthly_income": 10, "monthly_savings": 50, "email": "nope"}),
        json!({"monthly_income": 10, "monthly_savings": 5}),
        json!({"monthly_income": 10, "monthly_savings": 5, "age": 30}),
    ];
    submit_all(&proxy, form, &first).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let between = Utc::now();
    tokio::time::sleep(Duration::from_millis(50)).await;
    // After: 1 over budget, 2 bad e-mails, 1 too old.
    let second = [
        json!({"monthly_income": 10, "monthly_savings": 11}),
        json!({"monthly_income": 10, "monthly_savings": 1, "email": "a"}),
        json!({"monthly_income": 10, "monthly_savings": 1, "email": "b"}),
        json!({"monthly_income": 10, "monthly_savings": 1, "age": 200}),
    ];
    submit_all(&proxy, form, &second).await;
    let all = pb::ListRunsRequest {
        form_id: form.to_string(),
        ..Default::default()
    };
    // Two sync runs per submission, written by the recorder a moment later.
    eventually("every run to be recorded", || async {
        list(&proxy, all.clone()).await.len() == 20
    })
    .await;

    // Counted by hand from the history...
    let runs = list(&proxy, all.clone()).await;
    let by_hand = |rule: &str| {
        runs.iter()
            .filter(|run| run.flags.iter().any(|flag| flag.rule == rule))
            .count() as u64
    };
    assert_eq!(by_hand("savings_within_income"), 5);
    assert_eq!(by_hand("pattern"), 3);
    assert_eq!(by_hand("max"), 1);
    // ...and by RunStats.
    assert_eq!(
        stats(&proxy, all.clone(), "flag_rule").await,
        [
            ("savings_within_income".to_owned(), 5),
            ("pattern".to_owned(), 3),
            ("max".to_owned(), 1)
        ]
    );
    let per_binding = stats(&proxy, all.clone(), "binding").await;
    assert_eq!(per_binding.len(), 2);
    assert!(per_binding.iter().all(|(_, runs)| *runs == 10));
    assert_eq!(
        stats(&proxy, all.clone(), "status").await,
        [("succeeded".to_owned(), 20)]
    );
    assert_eq!(
        stats(&proxy, all.clone(), "kind").await,
        [("validate".to_owned(), 20)]
    );

    // The time range splits the two batches exactly.
    let since = |after: bool| pb::ListRunsRequest {
        created_after: after.then(|| to_proto_timestamp(&between)),
        created_before: (!after).then(|| to_proto_timestamp(&between)),
        ..all.clone()
    };
    assert_eq!(list(&proxy, since(false)).await.len(), 12);
    assert_eq!(list(&proxy, since(true)).await.len(), 8);
    assert_eq!(
        stats(&proxy, since(true), "flag_rule").await,
        [
            ("pattern".to_owned(), 2),
            ("max".to_owned(), 1),
            ("savings_within_income".to_owned(), 1)
        ]
    );

    // Flag filters: by field, by rule, both on one flag.
    let flagged = |field: &str, rule: &str| pb::ListRunsRequest {
        flag_field: field.into(),
        flag_rule: rule.into(),
        ..all.clone()
    };
    assert_eq!(list(&proxy, flagged("email", "")).await.len(), 3);
    assert_eq!(
        list(&proxy, flagged("", "savings_within_income"))
            .await
            .len(),
        5
    );
    assert_eq!(list(&proxy, flagged("email", "pattern")).await.len(), 3);
    assert_eq!(
        list(&proxy, flagged("monthly_savings", "pattern"))
            .await
            .len(),
        0
    );
    let per_binding = stats(&proxy, flagged("", "savings_within_income"), "binding").await;
    assert_eq!(per_binding, [(checks_binding.id.clone(), 5)]);

    // Bad input says what is wrong.
    assert_status(
        proxy
            .admin()
            .await
            .run_stats(pb::RunStatsRequest {
                filter: None,
                by: "weekday".into(),
            })
            .await,
        Code::InvalidArgument,
        "cannot count runs by `weekday`",
    );
    assert_status(
        proxy
            .admin()
            .await
            .list_runs(pb::ListRunsRequest {
                created_after: Some(to_proto_timestamp(&Utc::now())),
                created_before: Some(to_proto_timestamp(&between)),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "is not before created_before",
    );

    // The CLI, as a user runs it.

    let form_arg = form.to_string();
    let (ok, table, stderr) = proxy
        .cli(&["runs", "stats", "--form", &form_arg, "--by", "flag_rule"])
        .await;
    assert!(ok, "{stderr}");
    assert_eq!(
        table,
        "FLAG_RULE                  RUNS\n\
         savings_within_income         5\n\
         pattern                       3\n\
         max                           1\n"
    );
    let since_arg = between.to_rfc3339();
    let (ok, json_out, stderr) = proxy
        .cli(&[
            "runs",
            "list",
            "--form",
            &form_arg,
            "--since",
            &since_arg,
            "--flag-field",
            "email",
            "--json",
        ])
        .await;
    assert!(ok, "{stderr}");
    let listed: Vec<Value> = serde_json::from_str(&json_out).unwrap();
    assert_eq!(listed.len(), 2);
    let (ok, _, stderr) = proxy
        .cli(&["runs", "list", "--since", "1h", "--until", "2h"])
        .await;
    assert!(!ok);
    assert!(stderr.contains("is not before --until"), "{stderr}");

    // Edits: only the binding taking `updated` runs on them, and `--event` finds exactly
    // those runs.
    let age_binding = admin
        .list_bindings(pb::ListBindingsRequest {
            form_id: form.to_string(),
        })
        .await
        .unwrap()
        .into_inner()
        .bindings
        .into_iter()
        .find(|binding| binding.name == "age")
        .unwrap();
    admin
        .update_binding(pb::UpdateBindingRequest {
            id: age_binding.id.clone(),
            options: Some(pb::BindingOptions {
                events: "created,updated".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut client = proxy.process_client().await;
    for (revision, age) in [(2, 40), (3, 300)] {
        let reply = client
            .process(pb::ProcessRequest {
                event: pb::SubmissionEvent::Updated.into(),
                revision,
                ..crate::helpers::process(form, json!({"age": age}))
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(reply.sync_results.len(), 1, "only `age` takes edits");
    }
    let edits = pb::ListRunsRequest {
        event: "updated".into(),
        ..all.clone()
    };
    eventually("the edits' runs to be recorded", || async {
        list(&proxy, edits.clone()).await.len() == 2
    })
    .await;
    let runs = list(&proxy, edits.clone()).await;
    assert!(
        runs.iter()
            .all(|run| run.binding_id == age_binding.id && run.event == "updated")
    );
    assert_eq!(
        stats(&proxy, edits.clone(), "flag_rule").await,
        [("max".to_owned(), 1)]
    );
    let created = pb::ListRunsRequest {
        event: "created".into(),
        ..all.clone()
    };
    assert_eq!(list(&proxy, created).await.len(), 20);
    let (ok, json_out, stderr) = proxy
        .cli(&[
            "runs", "list", "--form", &form_arg, "--event", "updated", "--json",
        ])
        .await;
    assert!(ok, "{stderr}");
    let listed: Vec<Value> = serde_json::from_str(&json_out).unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().all(|run| run["event"] == "updated"));
    let (ok, _, stderr) = proxy.cli(&["runs", "list", "--event", "edited"]).await;
    assert!(!ok);
    assert!(stderr.contains("unknown event `edited`"), "{stderr}");
    assert_status(
        proxy
            .admin()
            .await
            .list_runs(pb::ListRunsRequest {
                event: "edited".into(),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "unknown event `edited`",
    );
}
