//! Retries, dead letters and binding options: failed attempts wait in RabbitMQ with growing
//! backoff, every attempt is in the history, jobs that fail for good are dead-lettered, and
//! `RetryRun` and `ReplayDeadLetters` put them back to work.

use std::sync::atomic::Ordering;

use chrono::{DateTime, TimeDelta, Utc};
use postsub::pb;
use postsub_testkit::WebhookReceiver;
use serde_json::json;
use tonic::Code;
use uuid::Uuid;

use crate::helpers::{
    Backend, Resources, TestProxy, assert_status, binding, quick_retries, spawn_proxy,
    spawn_proxy_with,
};

crate::contract!(
    a_task_that_fails_twice_succeeds_on_its_third_attempt_after_growing_waits,
    a_task_that_always_fails_is_dead_lettered_and_replayed_once_fixed,
    a_fatal_error_is_dead_after_one_attempt,
    an_attempt_past_the_binding_timeout_times_out_and_is_retried,
    retry_run_requeues_a_dead_run_and_refuses_others,
    binding_options_are_checked_shown_and_updated_field_by_field,
    webhook_that_answers_5xx_twice_succeeds_on_the_third_attempt,
    webhook_that_answers_4xx_is_dead_at_once_with_the_reason,
    a_job_taken_after_its_expiry_is_expired_and_not_run,
    a_delayed_job_runs_no_earlier_than_its_delay_after_the_submission,
    an_expired_job_is_reported_to_the_operator_and_counted
);

/// Binds `kind` (async) to a new form with `options`; returns the form.
async fn bind(
    proxy: &TestProxy,
    kind: &str,
    config: serde_json::Value,
    options: pb::BindingOptions,
) -> Uuid {
    let form = Uuid::new_v4();
    let mut request = binding(form, kind, kind, pb::Mode::Async, config);
    request.options = Some(options);
    proxy.admin().await.create_binding(request).await.unwrap();
    form
}

/// Binds `kind` and submits once; returns the run id.
async fn bind_and_submit(
    proxy: &TestProxy,
    kind: &str,
    config: serde_json::Value,
    options: pb::BindingOptions,
) -> String {
    let form = bind(proxy, kind, config, options).await;
    proxy.submit(form, json!({"a": 1})).await.remove(0)
}

fn time(t: &Option<prost_types::Timestamp>) -> DateTime<Utc> {
    let t = t.expect("timestamp set");
    DateTime::from_timestamp(t.seconds, t.nanos as u32).unwrap()
}

fn statuses(run: &pb::Run) -> Vec<pb::AttemptStatus> {
    run.attempt_history.iter().map(|a| a.status()).collect()
}

async fn replay(proxy: &TestProxy, kind: &str, form: Option<Uuid>) -> u64 {
    proxy
        .admin()
        .await
        .replay_dead_letters(pb::ReplayDeadLettersRequest {
            kind: kind.into(),
            form_id: form.map(|f| f.to_string()).unwrap_or_default(),
        })
        .await
        .unwrap()
        .into_inner()
        .replayed
}

async fn a_task_that_fails_twice_succeeds_on_its_third_attempt_after_growing_waits(
    backend: Backend,
) {
    let proxy = spawn_proxy(backend).await;
    let options = pb::BindingOptions {
        backoff_initial: "500ms".into(),
        backoff_max: "5s".into(),
        ..quick_retries(5)
    };
    let form = bind(&proxy, "flaky", json!({"failures": 2}), options).await;
    let run_id = proxy.submit(form, json!({})).await.remove(0);

    let run = proxy.run_in(&run_id, pb::RunStatus::Succeeded).await;
    assert_eq!(run.attempts, 3);
    assert_eq!(run.error, "");
    assert_eq!(
        run.output.clone(),
        Some(postsub::json::to_proto_value(json!({"attempt": 3})))
    );
    let history = &run.attempt_history;
    assert_eq!(
        statuses(&run),
        [
            pb::AttemptStatus::Failed,
            pb::AttemptStatus::Failed,
            pb::AttemptStatus::Succeeded
        ]
    );
    assert_eq!(history[0].error, "flaky failure on attempt 1");
    assert_eq!(history[1].error, "flaky failure on attempt 2");
    assert_eq!(
        history.iter().map(|a| a.attempt).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    // The waits are the broker's (at least the jitter's lower bound, 375ms after a 500ms
    // backoff) and they grow (the next backoff's lower bound is 750ms).
    let starts: Vec<_> = history.iter().map(|a| time(&a.started_at)).collect();
    let first_wait = starts[1] - time(&history[0].finished_at);
    assert!(first_wait >= TimeDelta::milliseconds(375), "{first_wait}");
    let (first_gap, second_gap) = (starts[1] - starts[0], starts[2] - starts[1]);
    assert!(second_gap > first_gap, "{second_gap} after {first_gap}");

    // The list shows the attempt count (and no history).
    let listed = proxy
        .admin()
        .await
        .list_runs(pb::ListRunsRequest {
            form_id: form.to_string(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .runs;
    assert_eq!(listed[0].attempts, 3);
    assert!(listed[0].attempt_history.is_empty());
    assert_eq!(proxy.queue("flaky").await.ready, 0);
    assert_eq!(proxy.dead_letters("flaky").await, 0);
    proxy.stack.stop().await.unwrap();
}

async fn a_task_that_always_fails_is_dead_lettered_and_replayed_once_fixed(backend: Backend) {
    let proxy = spawn_proxy(backend).await;
    let form_a = bind(&proxy, "outage", json!({}), quick_retries(3)).await;
    let form_b = bind(&proxy, "outage", json!({}), quick_retries(3)).await;
    let run_a = proxy.submit(form_a, json!({})).await.remove(0);
    let run_b = proxy.submit(form_b, json!({})).await.remove(0);

    let dead = proxy.run_in(&run_a, pb::RunStatus::Dead).await;
    assert_eq!(dead.attempts, 3);
    assert_eq!(dead.error, "the service is down");
    assert_eq!(statuses(&dead), [pb::AttemptStatus::Failed; 3]);
    proxy.run_in(&run_b, pb::RunStatus::Dead).await;
    assert_eq!(proxy.dead_letters("outage").await, 2);

    // Replayed while the cause is still there: a new round of 3 attempts, dead again.
    assert_eq!(replay(&proxy, "outage", Some(form_a)).await, 1);
    eventually_dead_after(&proxy, &run_a, 6).await;
    assert_eq!(proxy.dead_letters("outage").await, 2);

    // Fixed: a replay of one form runs its job to success and leaves the other's letter.
    proxy.service_up.store(true, Ordering::SeqCst);
    assert_eq!(replay(&proxy, "outage", Some(form_a)).await, 1);
    let done = proxy.run_in(&run_a, pb::RunStatus::Succeeded).await;
    assert_eq!(done.attempts, 7);
    assert_eq!(
        done.attempt_history.last().unwrap().status(),
        pb::AttemptStatus::Succeeded
    );
    assert_eq!(proxy.run(&run_b).await.status(), pb::RunStatus::Dead);
    assert_eq!(proxy.dead_letters("outage").await, 1);

    // Every kind, every form.
    assert_eq!(replay(&proxy, "", None).await, 1);
    proxy.run_in(&run_b, pb::RunStatus::Succeeded).await;
    assert_eq!(proxy.dead_letters("outage").await, 0);
    assert_eq!(replay(&proxy, "", None).await, 0);

    assert_status(
        proxy
            .admin()
            .await
            .replay_dead_letters(pb::ReplayDeadLettersRequest {
                kind: "nope".into(),
                form_id: String::new(),
            })
            .await,
        Code::InvalidArgument,
        "unknown task kind `nope`",
    );
    proxy.stack.stop().await.unwrap();
}

/// Two deployments on one vhost and queue prefix, each with its own database: a replay of
/// every dead letter by one leaves the other's letters where they are, and says so.
#[tokio::test]
async fn a_replay_leaves_the_dead_letters_of_another_deployment_on_shared_queues() {
    let ours = spawn_proxy(Backend::Postgres).await;
    let form = bind(&ours, "outage", json!({}), quick_retries(1)).await;
    let run = ours.submit(form, json!({})).await.remove(0);
    ours.run_in(&run, pb::RunStatus::Dead).await;
    assert_eq!(ours.dead_letters("outage").await, 1);

    let Resources::Postgres(_, broker) = &ours.resources else {
        unreachable!("a PostgreSQL proxy")
    };
    let their_db = postsub_testkit::TestDatabase::create("postsub").await;
    let settings = postsub_proxy::settings::DevSettings::isolated(
        &their_db.url,
        &broker.url,
        &broker.prefix,
        &[],
    )
    .unwrap();
    let theirs = postsub_proxy::app::DevStack::start(
        &settings,
        crate::helpers::registry(ours.service_up.clone()),
        tokio_util::sync::CancellationToken::new(),
    )
    .await
    .unwrap();
    let url = format!("http://{}", theirs.grpc_addr());
    let answer = pb::task_admin_client::TaskAdminClient::connect(url)
        .await
        .unwrap()
        .replay_dead_letters(pb::ReplayDeadLettersRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!((answer.replayed, answer.unknown), (0, 1));
    assert_eq!(
        ours.dead_letters("outage").await,
        1,
        "the letter is still there"
    );
    theirs.stop().await.unwrap();

    ours.service_up.store(true, Ordering::SeqCst);
    assert_eq!(replay(&ours, "outage", None).await, 1);
    ours.run_in(&run, pb::RunStatus::Succeeded).await;
    ours.stack.stop().await.unwrap();
}

/// Waits until the run is dead after `attempts` attempts in all.
async fn eventually_dead_after(proxy: &TestProxy, run_id: &str, attempts: u32) {
    crate::helpers::eventually(&format!("run dead after {attempts} attempts"), || async {
        let run = proxy.run(run_id).await;
        run.status() == pb::RunStatus::Dead && run.attempts == attempts
    })
    .await;
}

async fn a_fatal_error_is_dead_after_one_attempt(backend: Backend) {
    let proxy = spawn_proxy(backend).await;
    let run_id = bind_and_submit(&proxy, "outage", json!({"fatal": true}), quick_retries(5)).await;
    let run = proxy.run_in(&run_id, pb::RunStatus::Dead).await;
    assert_eq!(run.attempts, 1);
    assert_eq!(run.error, "the service refuses this request");
    assert_eq!(statuses(&run), [pb::AttemptStatus::Failed]);
    assert_eq!(proxy.dead_letters("outage").await, 1);
    proxy.stack.stop().await.unwrap();
}

async fn an_attempt_past_the_binding_timeout_times_out_and_is_retried(backend: Backend) {
    let proxy = spawn_proxy(backend).await;
    let options = pb::BindingOptions {
        timeout: "100ms".into(),
        ..quick_retries(2)
    };
    let run_id = bind_and_submit(&proxy, "hang", json!({}), options).await;
    let run = proxy.run_in(&run_id, pb::RunStatus::Dead).await;
    assert_eq!(run.attempts, 2);
    assert_eq!(run.error, "timed out after 100ms");
    assert_eq!(statuses(&run), [pb::AttemptStatus::TimedOut; 2]);
    proxy.stack.stop().await.unwrap();
}

async fn retry_run_requeues_a_dead_run_and_refuses_others(backend: Backend) {
    let proxy = spawn_proxy(backend).await;
    let run_id = bind_and_submit(&proxy, "outage", json!({"fatal": true}), quick_retries(5)).await;
    proxy.run_in(&run_id, pb::RunStatus::Dead).await;
    proxy.service_up.store(true, Ordering::SeqCst);

    let mut admin = proxy.admin().await;
    let retried = admin
        .retry_run(pb::RetryRunRequest {
            run_id: run_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    // The reply shows the run re-queued (or already taken up again) with its history.
    assert_ne!(retried.status(), pb::RunStatus::Dead);
    assert_eq!(
        retried.attempt_history[0].status(),
        pb::AttemptStatus::Failed
    );
    let run = proxy.run_in(&run_id, pb::RunStatus::Succeeded).await;
    assert_eq!(run.attempts, 2);
    assert_eq!(
        statuses(&run),
        [pb::AttemptStatus::Failed, pb::AttemptStatus::Succeeded]
    );

    assert_status(
        admin
            .retry_run(pb::RetryRunRequest {
                run_id: run_id.clone(),
            })
            .await,
        Code::FailedPrecondition,
        "is succeeded; only dead, failed or expired runs can be retried",
    );
    assert_status(
        admin
            .retry_run(pb::RetryRunRequest {
                run_id: Uuid::new_v4().to_string(),
            })
            .await,
        Code::NotFound,
        "no run with id",
    );
    assert_status(
        admin
            .retry_run(pb::RetryRunRequest { run_id: "x".into() })
            .await,
        Code::InvalidArgument,
        "run_id `x` is not a UUID",
    );
    // The run's old letter is still in the dead-letter queue: a replay drops it.
    assert_eq!(proxy.dead_letters("outage").await, 1);
    assert_eq!(replay(&proxy, "outage", None).await, 0);
    assert_eq!(proxy.dead_letters("outage").await, 0);

    // A failed sync run has no job to queue.
    let form = Uuid::new_v4();
    admin
        .create_binding(binding(form, "stuck", "hang", pb::Mode::Sync, json!({})))
        .await
        .unwrap();
    let reply = proxy
        .process_client()
        .await
        .process(crate::helpers::process(form, json!({})))
        .await
        .unwrap()
        .into_inner();
    let sync_run = reply.sync_results[0].run_id.clone();
    proxy.run_in(&sync_run, pb::RunStatus::Failed).await;
    assert_status(
        admin
            .retry_run(pb::RetryRunRequest { run_id: sync_run })
            .await,
        Code::FailedPrecondition,
        "is a sync run",
    );
    proxy.stack.stop().await.unwrap();
}

async fn binding_options_are_checked_shown_and_updated_field_by_field(backend: Backend) {
    let proxy = spawn_proxy(backend).await;
    let mut admin = proxy.admin().await;
    let form = Uuid::new_v4();
    let create = |options: pb::BindingOptions| {
        let mut request = binding(
            form,
            "hook",
            "flaky",
            pb::Mode::Async,
            json!({"failures": 0}),
        );
        request.options = Some(options);
        request
    };
    for (options, message) in [
        (
            pb::BindingOptions {
                max_attempts: Some(0),
                ..Default::default()
            },
            "max_attempts must be between 1 and 1000, not 0",
        ),
        (
            pb::BindingOptions {
                backoff_initial: "soon".into(),
                ..Default::default()
            },
            "backoff_initial `soon` is not a duration",
        ),
        (
            pb::BindingOptions {
                timeout: "0s".into(),
                ..Default::default()
            },
            "timeout must be longer than 0",
        ),
        (
            pb::BindingOptions {
                backoff_max: "500ms".into(),
                ..Default::default()
            },
            "backoff_max (500ms) is shorter than backoff_initial (1s)",
        ),
        (
            pb::BindingOptions {
                expires_after: "90d".into(),
                ..Default::default()
            },
            "expires_after `90d` is longer than 30d",
        ),
    ] {
        assert_status(
            admin.create_binding(create(options)).await,
            Code::InvalidArgument,
            message,
        );
    }

    // Defaults are shown; timeout, delay and expires_after only when set.
    let created = admin
        .create_binding(create(pb::BindingOptions {
            max_attempts: Some(3),
            timeout: "10s".into(),
            delay: "1h".into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        created.options.unwrap(),
        pb::BindingOptions {
            max_attempts: Some(3),
            backoff_initial: "1s".into(),
            backoff_max: "5m".into(),
            timeout: "10s".into(),
            delay: "1h".into(),
            expires_after: String::new(),
            events: "created".into(),
        }
    );

    // An update changes only what it sets; `default` puts an option back.
    let updated = admin
        .update_binding(pb::UpdateBindingRequest {
            id: created.id.clone(),
            options: Some(pb::BindingOptions {
                backoff_max: "90s".into(),
                delay: "default".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let options = updated.options.unwrap();
    assert_eq!(options.max_attempts, Some(3));
    assert_eq!(options.backoff_max, "90s");
    assert_eq!(options.timeout, "10s");
    assert_eq!(options.delay, "");
    assert_status(
        admin
            .update_binding(pb::UpdateBindingRequest {
                id: created.id.clone(),
                options: Some(pb::BindingOptions {
                    backoff_initial: "2m".into(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "backoff_max (90s) is shorter than backoff_initial (2m)",
    );
    let listed = admin
        .list_bindings(pb::ListBindingsRequest {
            form_id: form.to_string(),
        })
        .await
        .unwrap()
        .into_inner()
        .bindings;
    assert_eq!(listed[0].options.as_ref().unwrap().backoff_max, "90s");
    proxy.stack.stop().await.unwrap();
}

async fn webhook_that_answers_5xx_twice_succeeds_on_the_third_attempt(backend: Backend) {
    let proxy = spawn_proxy(backend).await;
    let receiver = WebhookReceiver::start().await;
    receiver.respond_with(&[500, 503]);
    let config = json!({"url": receiver.url, "secret": receiver.secret});
    let run_id = bind_and_submit(&proxy, "webhook", config, quick_retries(5)).await;
    let run = proxy.run_in(&run_id, pb::RunStatus::Succeeded).await;
    assert_eq!(run.attempts, 3);
    assert!(
        run.attempt_history[0].error.contains("answered 500"),
        "{:?}",
        run.attempt_history
    );
    let deliveries = receiver.deliveries();
    assert_eq!(deliveries.len(), 3);
    assert!(
        deliveries.iter().all(|d| d.id == run_id && d.signature_ok),
        "every attempt sends the run id as webhook-id: {deliveries:?}"
    );
    proxy.stack.stop().await.unwrap();
}

async fn webhook_that_answers_4xx_is_dead_at_once_with_the_reason(backend: Backend) {
    let proxy = spawn_proxy(backend).await;
    let receiver = WebhookReceiver::start().await;
    receiver.respond_with(&[400]);
    let config = json!({"url": receiver.url, "secret": receiver.secret});
    let run_id = bind_and_submit(&proxy, "webhook", config, quick_retries(5)).await;
    let run = proxy.run_in(&run_id, pb::RunStatus::Dead).await;
    assert!(
        run.error.contains("answered 400 Bad Request"),
        "{}",
        run.error
    );
    assert_eq!(run.attempts, 1);
    assert_eq!(receiver.delivery_count(), 1);
    assert_eq!(proxy.dead_letters("webhook").await, 1);
    proxy.stack.stop().await.unwrap();
}

async fn a_job_taken_after_its_expiry_is_expired_and_not_run(backend: Backend) {
    let proxy = spawn_proxy(backend).await;
    let options = pb::BindingOptions {
        expires_after: "1m".into(),
        ..Default::default()
    };
    let form = bind(&proxy, "flaky", json!({"failures": 0}), options).await;
    let mut request = crate::helpers::process(form, json!({}));
    request.submitted_at = Some(prost_types::Timestamp {
        seconds: Utc::now().timestamp() - 3600,
        nanos: 0,
    });
    let reply = proxy
        .process_client()
        .await
        .process(request)
        .await
        .unwrap()
        .into_inner();
    let stale = reply.jobs[0].run_id.clone();
    let run = proxy.run_in(&stale, pb::RunStatus::Expired).await;
    assert_eq!(run.attempts, 0);
    assert!(run.attempt_history.is_empty());
    assert!(run.error.contains("expires_after"), "{}", run.error);
    assert_eq!(proxy.queue("flaky").await.ready, 0);

    // A fresh submission runs.
    let fresh = proxy.submit(form, json!({})).await.remove(0);
    proxy.run_in(&fresh, pb::RunStatus::Succeeded).await;

    // With the expiry lifted, the expired run can be retried.
    let mut admin = proxy.admin().await;
    let binding_id = admin
        .list_bindings(pb::ListBindingsRequest {
            form_id: form.to_string(),
        })
        .await
        .unwrap()
        .into_inner()
        .bindings[0]
        .id
        .clone();
    admin
        .update_binding(pb::UpdateBindingRequest {
            id: binding_id,
            options: Some(pb::BindingOptions {
                expires_after: "default".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    admin
        .retry_run(pb::RetryRunRequest {
            run_id: stale.clone(),
        })
        .await
        .unwrap();
    let run = proxy.run_in(&stale, pb::RunStatus::Succeeded).await;
    assert_eq!(run.attempts, 1);
    proxy.stack.stop().await.unwrap();
}

async fn a_delayed_job_runs_no_earlier_than_its_delay_after_the_submission(backend: Backend) {
    let proxy = spawn_proxy(backend).await;
    let options = pb::BindingOptions {
        delay: "1500ms".into(),
        ..Default::default()
    };
    let form = bind(&proxy, "flaky", json!({"failures": 0}), options).await;
    let submitted = Utc::now();
    let run_id = proxy.submit(form, json!({})).await.remove(0);
    let waiting = proxy.run_in(&run_id, pb::RunStatus::Queued).await;
    assert!(waiting.attempt_history.is_empty(), "waiting, not started");
    let run = proxy.run_in(&run_id, pb::RunStatus::Succeeded).await;
    let started = time(&run.attempt_history[0].started_at);
    assert!(
        started - submitted >= TimeDelta::milliseconds(1500),
        "started {} ms after the submission",
        (started - submitted).num_milliseconds()
    );
    proxy.stack.stop().await.unwrap();
}

#[tokio::test]
async fn quorum_queues_carry_jobs_and_retries() {
    let proxy = spawn_proxy_with(Backend::Postgres, &["--quorum-queues"]).await;
    let receiver = WebhookReceiver::start().await;
    receiver.respond_with(&[500]);
    let run_id = bind_and_submit(
        &proxy,
        "webhook",
        json!({"url": receiver.url, "secret": receiver.secret}),
        quick_retries(3),
    )
    .await;
    let run = proxy.run_in(&run_id, pb::RunStatus::Succeeded).await;
    assert_eq!(run.attempts, 2, "retried through the delay queue");
    // The work and dead-letter queues are quorum queues: declaring them classic is refused.
    let Resources::Postgres(_, broker) = &proxy.resources else {
        unreachable!("a RabbitMQ test")
    };
    assert!(declare_as(broker, "webhook", "classic").await.is_err());
    assert!(declare_as(broker, "webhook.dead", "classic").await.is_err());
    assert!(declare_as(broker, "webhook", "quorum").await.is_ok());
    proxy.stack.stop().await.unwrap();
}

/// Declares `<prefix>.<suffix>` as a durable queue of `queue_type`: an error when the
/// queue exists with another type.
async fn declare_as(
    broker: &postsub_testkit::TestBroker,
    suffix: &str,
    queue_type: &str,
) -> Result<(), lapin::Error> {
    use lapin::{
        Connection, ConnectionProperties, options::QueueDeclareOptions, types::FieldTable,
    };
    let connection = Connection::connect(&broker.url, ConnectionProperties::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-queue-type".into(),
        lapin::types::AMQPValue::LongString(queue_type.into()),
    );
    let declared = channel
        .queue_declare(
            format!("{}.{suffix}", broker.prefix).into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            arguments,
        )
        .await;
    let _ = connection.close(200, "declared".into()).await;
    declared.map(drop)
}

async fn an_expired_job_is_reported_to_the_operator_and_counted(backend: Backend) {
    let operator = WebhookReceiver::start().await;
    let proxy = spawn_proxy_with(
        backend,
        &[
            "--expiry-webhook",
            &operator.url,
            "--alert-group-wait",
            "100ms",
        ],
    )
    .await;
    let options = pb::BindingOptions {
        expires_after: "1m".into(),
        ..Default::default()
    };
    let form = bind(&proxy, "flaky", json!({"failures": 0}), options).await;
    let mut request = crate::helpers::process(form, json!({}));
    request.submitted_at = Some(prost_types::Timestamp {
        seconds: Utc::now().timestamp() - 3600,
        nanos: 0,
    });
    let run_id = proxy
        .process_client()
        .await
        .process(request)
        .await
        .unwrap()
        .into_inner()
        .jobs
        .remove(0)
        .run_id;
    proxy.run_in(&run_id, pb::RunStatus::Expired).await;
    crate::helpers::eventually("the expiry report", || async {
        !operator.deliveries().is_empty()
    })
    .await;
    let report = &operator.deliveries()[0].body;
    assert_eq!(report["type"], "run.expired");
    assert_eq!(report["run_id"], run_id.as_str());
    assert_eq!(report["form_id"], form.to_string());

    let metrics = crate::helpers::metrics(proxy.stack.http_addr()).await;
    assert!(
        metrics.contains("postsub_runs_expired_total{kind=\"flaky\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("postsub_deliveries_total{outcome=\"expired\"}"),
        "{metrics}"
    );
    proxy.stack.stop().await.unwrap();
}
