//! Alerts, on both backends: 50 runs dying within one interval are one signed `run.dead`
//! message with their count; a kind nobody consumes is a `queue.backlog`; the queue gauges
//! reach `/metrics`; an alert webhook without a secret is refused at start-up.

use std::time::Duration;

use postsub::pb;
use postsub_proxy::{
    alerts::Alerts,
    app::{Launch, Proxy, Services},
};
use postsub_testkit::webhook::WebhookReceiver;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::helpers::{
    Backend, Resources, binding, eventually, metrics, process, quick_retries, registry,
    spawn_proxy_with,
};

crate::contract!(
    fifty_runs_dying_within_an_interval_are_one_alert_with_their_count,
    a_kind_nobody_consumes_is_a_backlog_alert_and_a_gauge
);

/// The flags that send alerts to `receiver`, grouped for `group_wait`, one per hour.
fn alert_flags<'a>(receiver: &'a WebhookReceiver, group_wait: &'a str) -> Vec<&'a str> {
    vec![
        "--alert-webhook",
        &receiver.url,
        "--alert-secret",
        &receiver.secret,
        "--alert-group-wait",
        group_wait,
        "--alert-interval",
        "1h",
    ]
}

async fn fifty_runs_dying_within_an_interval_are_one_alert_with_their_count(backend: Backend) {
    let operator = WebhookReceiver::start().await;
    let proxy = spawn_proxy_with(backend, &alert_flags(&operator, "3s")).await;
    let destination = WebhookReceiver::start().await;
    destination.respond_with(&[500; 50]);
    let form = Uuid::new_v4();
    let mut hook = binding(
        form,
        "crm",
        "webhook",
        pb::Mode::Async,
        json!({"url": destination.url, "secret": destination.secret}),
    );
    hook.options = Some(quick_retries(1));
    proxy.admin().await.create_binding(hook).await.unwrap();
    let mut client = proxy.process_client().await;
    let mut runs = Vec::new();
    for n in 0..50 {
        let answer = client
            .process(process(form, json!({"n": n})))
            .await
            .unwrap();
        runs.push(answer.into_inner().jobs.remove(0).run_id);
    }
    eventually("50 dead runs", || async {
        destination.delivery_count() >= 50
    })
    .await;
    for run in &runs {
        proxy.run_in(run, pb::RunStatus::Dead).await;
    }
    eventually("the alert", || async { operator.delivery_count() > 0 }).await;
    // Nothing more comes within the interval.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let alerts = operator.deliveries();
    assert_eq!(alerts.len(), 1, "one message for the storm: {alerts:?}");
    let alert = &alerts[0];
    assert!(alert.signature_ok, "signed with the alert secret");
    assert_eq!(alert.body["type"], "run.dead");
    assert_eq!(alert.body["count"], 50, "{}", alert.body);
    assert_eq!(alert.body["form_id"], form.to_string());
    assert_eq!(alert.body["kind"], "webhook");
    assert_eq!(
        alert.body["run_ids"].as_array().unwrap().len(),
        20,
        "a sample of the runs"
    );
    assert!(
        alert.body["error"]
            .as_str()
            .unwrap()
            .contains("answered 500"),
        "{}",
        alert.body
    );
    proxy.stack.stop().await.unwrap();
}

async fn a_kind_nobody_consumes_is_a_backlog_alert_and_a_gauge(kind: Backend) {
    let operator = WebhookReceiver::start().await;
    let mut flags = alert_flags(&operator, "100ms");
    flags.extend(["--alert-backlog-age", "1s"]);
    let resources = Resources::create(kind).await;
    let settings = resources.settings(&flags);
    let backend = settings.backend().unwrap();
    backend.database.migrate().await.unwrap();
    // A proxy and no worker.
    let services = Services::start(&backend, registry(Default::default()))
        .await
        .unwrap()
        .with_alerts(&settings.alerts)
        .unwrap();
    let proxy = Proxy::build(&services, &settings.proxy, Launch::Dev)
        .await
        .unwrap();
    let (grpc, http) = (proxy.grpc_addr(), proxy.http_addr());
    let stop = CancellationToken::new();
    let running = tokio::spawn(proxy.run(stop.clone()));
    let url = format!("http://{grpc}");
    let form = Uuid::new_v4();
    let mut admin = pb::task_admin_client::TaskAdminClient::connect(url.clone())
        .await
        .unwrap();
    admin
        .create_binding(binding(
            form,
            "crm",
            "webhook",
            pb::Mode::Async,
            json!({"url": operator.url, "secret": operator.secret}),
        ))
        .await
        .unwrap();
    pb::post_submission_client::PostSubmissionClient::connect(url)
        .await
        .unwrap()
        .process(process(form, json!({})))
        .await
        .unwrap();
    eventually("the backlog alert", || async {
        operator
            .deliveries()
            .iter()
            .any(|d| d.body["type"] == "queue.backlog")
    })
    .await;
    let alert = operator
        .deliveries()
        .into_iter()
        .find(|d| d.body["type"] == "queue.backlog")
        .unwrap();
    assert_eq!(alert.body["kind"], "webhook", "{}", alert.body);
    assert_eq!(alert.body["ready"], 1);
    assert!(
        alert.body["waited_seconds"].as_u64().unwrap() >= 1,
        "{}",
        alert.body
    );
    assert!(alert.signature_ok);
    // The gauges are process-wide, and the proxies of other tests in this binary set the
    // same ones (an empty webhook queue: 0): wait for one of this proxy's polls to show
    // through rather than read a single instant.
    eventually("the backlog in postsub_queue_jobs", || async {
        metrics(http)
            .await
            .contains("postsub_queue_jobs{kind=\"webhook\",state=\"ready\"} 1")
    })
    .await;
    let metrics = metrics(http).await;
    if kind == Backend::Embedded {
        // RabbitMQ does not tell the age over AMQP.
        assert!(metrics.contains("postsub_queue_oldest_ready_seconds{kind=\"webhook\"}"));
    }
    assert!(metrics.contains("postsub_recorder_backlog"));
    stop.cancel();
    running.await.unwrap().unwrap();
    services.stop().await;
}

#[test]
fn an_alert_webhook_without_a_secret_is_refused() {
    let settings = postsub_proxy::settings::DevSettings::from_flags(&[
        "--alert-webhook",
        "http://127.0.0.1:9/alerts",
    ])
    .unwrap();
    let Err(err) = Alerts::start(&settings.alerts) else {
        panic!("an unsigned alert webhook must be refused")
    };
    assert!(err.to_string().contains("POSTSUB_ALERT_SECRET"), "{err}");
}

/// The Grafana dashboard and the Prometheus rules under `deploy/` ask only for metrics the
/// proxy and worker export.
#[test]
fn the_dashboard_and_the_alert_rules_name_only_exported_metrics() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut source = String::new();
    let mut dirs = vec![root.join("proxy/src")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                source += &std::fs::read_to_string(path).unwrap();
            }
        }
    }
    let name = regex::Regex::new(r"postsub_[a-z_]+").unwrap();
    for file in [
        "deploy/grafana/postsub-dashboard.json",
        "deploy/prometheus/postsub-alerts.yml",
    ] {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        let mut names: Vec<&str> = name.find_iter(&text).map(|m| m.as_str()).collect();
        names.dedup();
        assert!(names.len() > 5, "{file} names metrics");
        for metric in names {
            let base = ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|suffix| metric.strip_suffix(suffix))
                .unwrap_or(metric);
            assert!(
                source.contains(&format!("\"{base}\"")),
                "{file} asks for `{metric}`, which postsub does not export"
            );
        }
    }
}
