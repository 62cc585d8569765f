//! The proxy's gRPC and HTTP APIs, on both backends: bad input gets a clear status, bindings
//! take effect at once (and on other proxies through the store's change feed), sync tasks
//! are isolated from each other, a repeated call runs nothing twice, and the run history
//! can be filtered and paged.

use std::sync::{Arc, atomic::AtomicBool};

use futures_util::future::join_all;
use postsub::pb::{self, post_submission_client::PostSubmissionClient};
use postsub_proxy::{
    app::{DevStack, Launch, Proxy, Services},
    settings::DevSettings,
};
use postsub_testkit::WebhookReceiver;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tonic::{Code, transport::Channel};
use uuid::Uuid;

use crate::helpers::{
    Backend, assert_status, binding, eventually, object, process, registry, spawn_proxy,
};

crate::contract!(
    a_repeated_process_call_runs_nothing_twice,
    bad_ids_and_oversize_answers_are_invalid_argument,
    bindings_with_bad_kind_mode_or_config_are_refused_with_the_reason,
    sync_tasks_are_isolated_from_a_hanging_or_panicking_neighbour,
    binding_changes_reach_this_proxy_at_once_and_other_processes_through_the_change_feed,
    run_history_filters_and_pages,
    health_endpoints_answer
);

async fn bad_ids_and_oversize_answers_are_invalid_argument(backend: Backend) {
    let proxy = spawn_proxy(backend).await;
    let mut client = proxy.process_client().await;
    let mut request = process(Uuid::new_v4(), json!({}));
    request.form_id = "not-a-uuid".into();
    assert_status(
        client.process(request).await,
        Code::InvalidArgument,
        "form_id `not-a-uuid` is not a UUID",
    );
    let mut request = process(Uuid::new_v4(), json!({}));
    request.submission_id = String::new();
    assert_status(
        client.process(request).await,
        Code::InvalidArgument,
        "submission_id is missing",
    );
    let mut request = process(Uuid::new_v4(), json!({}));
    request.answers = None;
    assert_status(
        client.process(request).await,
        Code::InvalidArgument,
        "answers is missing",
    );
    let mut deep = json!(1);
    for _ in 0..40 {
        deep = json!([deep]);
    }
    assert_status(
        client
            .process(process(Uuid::new_v4(), json!({ "deep": deep })))
            .await,
        Code::InvalidArgument,
        "answers nest 41 levels deep; the limit is 32 (POSTSUB_MAX_ANSWERS_DEPTH)",
    );
    let big = "x".repeat(2000);
    assert_status(
        client
            .process(process(Uuid::new_v4(), json!({"essay": big})))
            .await,
        Code::InvalidArgument,
        "the limit is 1024",
    );
    // Far past the limit, the transport refuses to decode at all.
    let huge = "x".repeat(1 << 20);
    assert_status(
        client
            .process(process(Uuid::new_v4(), json!({"essay": huge})))
            .await,
        Code::OutOfRange,
        "",
    );

    let mut admin = proxy.admin().await;
    assert_status(
        admin
            .get_run(pb::GetRunRequest {
                run_id: "42".into(),
            })
            .await,
        Code::InvalidArgument,
        "run_id `42` is not a UUID",
    );
    assert_status(
        admin
            .list_runs(pb::ListRunsRequest {
                page_token: "garbage".into(),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "page_token",
    );
    proxy.stack.stop().await.unwrap();
}

async fn bindings_with_bad_kind_mode_or_config_are_refused_with_the_reason(backend: Backend) {
    let proxy = spawn_proxy(backend).await;
    let mut admin = proxy.admin().await;
    let form = Uuid::new_v4();
    let create = |name: &str, kind: &str, mode: pb::Mode, config: Value| {
        binding(form, name, kind, mode, config)
    };
    assert_status(
        admin
            .create_binding(create("a", "sheets", pb::Mode::Async, json!({})))
            .await,
        Code::InvalidArgument,
        "unknown task kind `sheets`; known kinds: ",
    );
    assert_status(
        admin
            .create_binding(create(
                "a",
                "validate",
                pb::Mode::Sync,
                json!({"fields": {"age": {"typ": "number"}}}),
            ))
            .await,
        Code::InvalidArgument,
        "unknown field `typ`",
    );
    assert_status(
        admin
            .create_binding(create(
                "a",
                "validate",
                pb::Mode::Sync,
                json!({"rules": [{"name": "r", "expr": "monthly_savings <="}]}),
            ))
            .await,
        Code::InvalidArgument,
        "rules[0].expr: rule `r`: expression `monthly_savings <=` does not compile",
    );
    assert_status(
        admin
            .create_binding(create(
                "a",
                "webhook",
                pb::Mode::Async,
                json!({"url": "http://x/", "secret": "plain"}),
            ))
            .await,
        Code::InvalidArgument,
        "whsec_",
    );
    assert_status(
        admin
            .create_binding(create(
                "a",
                "webhook",
                pb::Mode::Sync,
                json!({"url": "http://x/", "secret": "whsec_c2VjcmV0"}),
            ))
            .await,
        Code::InvalidArgument,
        "cannot run in sync mode",
    );
    assert_status(
        admin
            .create_binding(create("a", "validate", pb::Mode::Unspecified, json!({})))
            .await,
        Code::InvalidArgument,
        "mode must be MODE_SYNC or MODE_ASYNC",
    );
    assert_status(
        admin
            .create_binding(create(" ", "validate", pb::Mode::Sync, json!({})))
            .await,
        Code::InvalidArgument,
        "name is missing",
    );
    admin
        .create_binding(create("checks", "validate", pb::Mode::Sync, json!({})))
        .await
        .unwrap();
    assert_status(
        admin
            .create_binding(create("checks", "validate", pb::Mode::Sync, json!({})))
            .await,
        Code::AlreadyExists,
        "this form already has a binding named \"checks\"",
    );
    let missing = Uuid::new_v4().to_string();
    assert_status(
        admin
            .get_binding(pb::GetBindingRequest {
                id: missing.clone(),
            })
            .await,
        Code::NotFound,
        "no binding with id",
    );
    assert_status(
        admin
            .delete_binding(pb::DeleteBindingRequest {
                id: missing.clone(),
            })
            .await,
        Code::NotFound,
        "no binding with id",
    );
    assert_status(
        admin.get_run(pb::GetRunRequest { run_id: missing }).await,
        Code::NotFound,
        "no run with id",
    );
    // Nothing refused was stored.
    let stored = admin
        .list_bindings(pb::ListBindingsRequest {
            form_id: form.to_string(),
        })
        .await
        .unwrap()
        .into_inner()
        .bindings;
    assert_eq!(stored.len(), 1);
    proxy.stack.stop().await.unwrap();
}

async fn sync_tasks_are_isolated_from_a_hanging_or_panicking_neighbour(backend: Backend) {
    let proxy = spawn_proxy(backend).await;
    let mut admin = proxy.admin().await;
    let form = Uuid::new_v4();
    let rules = json!({"fields": {"age": {"type": "integer", "min": 0}}});
    for (name, kind) in [
        ("checks", "validate"),
        ("stuck", "hang"),
        ("buggy", "panic"),
    ] {
        admin
            .create_binding(binding(
                form,
                name,
                kind,
                pb::Mode::Sync,
                rules_for(kind, &rules),
            ))
            .await
            .unwrap();
    }
    let reply = proxy
        .process_client()
        .await
        .process(process(form, json!({"age": "old"})))
        .await
        .unwrap()
        .into_inner();
    let by_name = |name: &str| {
        reply
            .sync_results
            .iter()
            .find(|r| r.name == name)
            .unwrap_or_else(|| panic!("no result for {name}"))
            .clone()
    };
    let checks = by_name("checks");
    assert_eq!(checks.status(), pb::SyncStatus::Flagged);
    assert_eq!(checks.flags[0].field, "age");
    assert_eq!(checks.flags[0].rule, "type");
    let stuck = by_name("stuck");
    assert_eq!(stuck.status(), pb::SyncStatus::TimedOut);
    assert_eq!(stuck.error, "timed out after 300ms");
    let buggy = by_name("buggy");
    assert_eq!(buggy.status(), pb::SyncStatus::Failed);
    assert_eq!(buggy.error, "the task panicked");

    // All three are in the history.
    eventually("three recorded runs", || async {
        proxy
            .admin()
            .await
            .list_runs(pb::ListRunsRequest {
                form_id: form.to_string(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .runs
            .len()
            == 3
    })
    .await;
    // Each with its one attempt: a succeeded sync run's is derived from the run row, the
    // others are stored with their own status.
    for (result, status) in [
        (&checks, pb::AttemptStatus::Succeeded),
        (&stuck, pb::AttemptStatus::TimedOut),
        (&buggy, pb::AttemptStatus::Panicked),
    ] {
        let run = proxy.run(&result.run_id).await;
        let history: Vec<_> = run.attempt_history.iter().map(|a| a.status()).collect();
        assert_eq!(history, [status], "{}", result.name);
    }
    proxy.stack.stop().await.unwrap();
}

fn rules_for(kind: &str, rules: &Value) -> Value {
    if kind == "validate" {
        rules.clone()
    } else {
        json!({})
    }
}

async fn binding_changes_reach_this_proxy_at_once_and_other_processes_through_the_change_feed(
    backend: Backend,
) {
    let proxy = spawn_proxy(backend).await;
    // A second proxy on the same database, as behind a load balancer.
    let services = Services::start(
        &proxy.settings.backend().unwrap(),
        registry(proxy.service_up.clone()),
    )
    .await
    .unwrap();
    let other = Proxy::build(&services, &proxy.settings.proxy, Launch::Dev)
        .await
        .unwrap();
    let other_url = format!("http://{}", other.grpc_addr());
    let stop_other = CancellationToken::new();
    let other_task = tokio::spawn(other.run(stop_other.clone()));
    let mut other_client = PostSubmissionClient::connect(other_url).await.unwrap();

    let form = Uuid::new_v4();
    let mut admin = proxy.admin().await;
    let created = admin
        .create_binding(binding(
            form,
            "checks",
            "validate",
            pb::Mode::Sync,
            json!({}),
        ))
        .await
        .unwrap()
        .into_inner();
    // This proxy: at once.
    let reply = proxy
        .process_client()
        .await
        .process(process(form, json!({})))
        .await
        .unwrap();
    assert_eq!(reply.into_inner().sync_results.len(), 1);
    // The other proxy: after the NOTIFY.
    eventually("the other proxy to see the binding", || {
        let mut client = other_client.clone();
        async move {
            client
                .process(process(form, json!({})))
                .await
                .unwrap()
                .into_inner()
                .sync_results
                .len()
                == 1
        }
    })
    .await;

    // Disabling stops it everywhere.
    admin
        .update_binding(pb::UpdateBindingRequest {
            id: created.id.clone(),
            enabled: Some(false),
            ..Default::default()
        })
        .await
        .unwrap();
    let reply = proxy
        .process_client()
        .await
        .process(process(form, json!({})))
        .await
        .unwrap();
    assert!(reply.into_inner().sync_results.is_empty());
    eventually("the other proxy to see the change", || {
        let mut client = other_client.clone();
        async move {
            client
                .process(process(form, json!({})))
                .await
                .unwrap()
                .into_inner()
                .sync_results
                .is_empty()
        }
    })
    .await;

    // An update's config is checked like a new one.
    assert_status(
        admin
            .update_binding(pb::UpdateBindingRequest {
                id: created.id,
                config: Some(object(json!({"rules": [{"name": "r", "expr": "("}]}))),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "does not compile",
    );
    let _ = other_client.process(process(form, json!({}))).await;
    stop_other.cancel();
    other_task.await.unwrap().unwrap();
    services.stop().await;
    proxy.stack.stop().await.unwrap();
}

async fn run_history_filters_and_pages(backend: Backend) {
    let proxy = spawn_proxy(backend).await;
    let form = Uuid::new_v4();
    let mut admin = proxy.admin().await;
    admin
        .create_binding(binding(
            form,
            "checks",
            "validate",
            pb::Mode::Sync,
            json!({"fields": {"n": {"max": 10}}}),
        ))
        .await
        .unwrap();
    // Three runs per submission, created at one instant: pages must end between them too.
    for name in ["more", "again"] {
        admin
            .create_binding(binding(form, name, "validate", pb::Mode::Sync, json!({})))
            .await
            .unwrap();
    }
    let mut client = proxy.process_client().await;
    for n in 0..5 {
        client
            .process(process(form, json!({"n": n * 5})))
            .await
            .unwrap();
    }
    eventually("fifteen runs", || {
        let mut admin = admin.clone();
        async move {
            admin
                .list_runs(pb::ListRunsRequest {
                    form_id: form.to_string(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner()
                .runs
                .len()
                == 15
        }
    })
    .await;
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = admin
            .list_runs(pb::ListRunsRequest {
                form_id: form.to_string(),
                page_size: 2,
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.runs.len() <= 2);
        seen.extend(page.runs.into_iter().map(|r| r.run_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 15, "paging returns each run once");
    let other_form = admin
        .list_runs(pb::ListRunsRequest {
            form_id: Uuid::new_v4().to_string(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(other_form.runs.is_empty());
    let future = admin
        .list_runs(pb::ListRunsRequest {
            form_id: form.to_string(),
            created_after: Some(prost_types::Timestamp {
                seconds: chrono::Utc::now().timestamp() + 60,
                nanos: 0,
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(future.runs.is_empty());
    let failed = admin
        .list_runs(pb::ListRunsRequest {
            form_id: form.to_string(),
            status: pb::RunStatus::Failed.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(failed.runs.is_empty(), "flagged sync runs succeeded");
    // The console's filters, in the API too: kind, flag (field or rule), error text.
    let count = |request: pb::ListRunsRequest| {
        let mut admin = admin.clone();
        async move {
            let request = pb::ListRunsRequest {
                form_id: form.to_string(),
                ..request
            };
            admin
                .list_runs(request)
                .await
                .unwrap()
                .into_inner()
                .runs
                .len()
        }
    };
    let kind = |kind: &str| pb::ListRunsRequest {
        kind: kind.into(),
        ..Default::default()
    };
    let flag = |flag: &str| pb::ListRunsRequest {
        flag: flag.into(),
        ..Default::default()
    };
    assert_eq!(count(kind("validate")).await, 15);
    assert_eq!(count(kind("webhook")).await, 0);
    assert_eq!(count(flag("n")).await, 2, "n = 15 and 20 are over the max");
    assert_eq!(count(flag("max")).await, 2);
    assert_eq!(count(flag("other")).await, 0);
    let error = pb::ListRunsRequest {
        error_contains: "anything".into(),
        ..Default::default()
    };
    assert_eq!(count(error).await, 0, "no run failed");
    proxy.stack.stop().await.unwrap();
}

async fn health_endpoints_answer(backend: Backend) {
    let proxy = spawn_proxy(backend).await;
    let channel = Channel::from_shared(proxy.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let reply = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "postsub.v1.PostSubmission".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        reply.status(),
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );
    let http = format!("http://{}", proxy.stack.http_addr());
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::new();
    assert_eq!(
        client
            .get(format!("{http}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        client
            .get(format!("{http}/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    proxy.stack.stop().await.unwrap();
}

async fn a_repeated_process_call_runs_nothing_twice(backend: Backend) {
    let proxy = spawn_proxy(backend).await;
    let receiver = WebhookReceiver::start().await;
    let form = Uuid::new_v4();
    let mut admin = proxy.admin().await;
    let hook = json!({"url": receiver.url, "secret": receiver.secret});
    for (name, kind, mode, config) in [
        (
            "checks",
            "validate",
            pb::Mode::Sync,
            json!({"fields": {"n": {"max": 1}}}),
        ),
        ("hook", "webhook", pb::Mode::Async, hook),
    ] {
        admin
            .create_binding(binding(form, name, kind, mode, config))
            .await
            .unwrap();
    }
    let mut client = proxy.process_client().await;
    let request = process(form, json!({"n": 2}));
    let first = client.process(request.clone()).await.unwrap().into_inner();
    let job = first.jobs[0].run_id.clone();
    proxy.run_in(&job, pb::RunStatus::Succeeded).await;
    // Again after the job ran, and three times at once for another submission.
    let again = client.process(request).await.unwrap().into_inner();
    assert_eq!(again.jobs[0].run_id, job, "the same run");
    assert_eq!(again.sync_results[0].run_id, first.sync_results[0].run_id);
    assert_eq!(again.sync_results[0].status(), pb::SyncStatus::Flagged);
    let burst = process(form, json!({"n": 0}));
    let replies = join_all((0..3).map(|_| {
        let mut client = client.clone();
        let request = burst.clone();
        async move { client.process(request).await.unwrap().into_inner() }
    }))
    .await;
    let burst_job = replies[0].jobs[0].run_id.clone();
    assert!(
        replies
            .iter()
            .all(|reply| reply.jobs[0].run_id == burst_job)
    );
    proxy.run_in(&burst_job, pb::RunStatus::Succeeded).await;

    // Whatever was queued twice has been taken and dropped: one delivery per submission,
    // one attempt per run.
    eventually("the queue to be empty", || async {
        let queue = proxy.queue("webhook").await;
        queue.ready == 0 && queue.in_flight.unwrap_or(0) == 0
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let mut ids: Vec<String> = receiver.deliveries().into_iter().map(|d| d.id).collect();
    ids.sort();
    let mut expected = vec![job.clone(), burst_job.clone()];
    expected.sort();
    assert_eq!(ids, expected, "each run delivered once");
    for run in [&job, &burst_job] {
        assert_eq!(proxy.run(run).await.attempts, 1);
    }
    proxy.stack.stop().await.unwrap();
}

#[tokio::test]
async fn the_proxy_starts_without_rabbitmq_and_keeps_jobs_in_the_outbox() {
    let db = postsub_testkit::TestDatabase::create("postsub").await;
    let flags: &[&str] = &[];
    let bad = DevSettings::isolated(&db.url, "http://127.0.0.1:5672", "unused", flags)
        .expect_err("a URL that is not AMQP is refused at start-up");
    assert!(bad.to_string().contains("not an AMQP URL"), "{bad}");

    // Nothing listens on port 1: the connection is refused, as when the broker is down.
    let settings =
        DevSettings::isolated(&db.url, "amqp://guest:guest@127.0.0.1:1/%2f", "away", flags)
            .expect("settings parse");
    let stack = DevStack::start(
        &settings,
        registry(Arc::new(AtomicBool::new(false))),
        CancellationToken::new(),
    )
    .await
    .expect("postsub starts while RabbitMQ is down");
    let url = format!("http://{}", stack.grpc_addr());
    let form = Uuid::new_v4();
    let channel = Channel::from_shared(url).unwrap().connect().await.unwrap();
    pb::task_admin_client::TaskAdminClient::new(channel.clone())
        .create_binding(binding(
            form,
            "hook",
            "webhook",
            pb::Mode::Async,
            json!({"url": "http://127.0.0.1:9/hook", "secret": "whsec_c2VjcmV0"}),
        ))
        .await
        .unwrap();
    let reply = PostSubmissionClient::new(channel)
        .process(process(form, json!({"name": "Ada"})))
        .await
        .expect("Process answers without RabbitMQ")
        .into_inner();
    assert_eq!(reply.jobs.len(), 1, "the job is reported queued: {reply:?}");

    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let kept: Vec<Uuid> = sqlx::query_scalar("SELECT run_id FROM outbox")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(kept, [reply.jobs[0].run_id.parse::<Uuid>().unwrap()]);
    pool.close().await;
    stack.stop().await.unwrap();
}
