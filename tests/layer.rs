//! `PostSubmissionLayer` around a small axum route, calling a stand-in `PostSubmission`
//! server over real gRPC on loopback.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::http::StatusCode;
use postsub::{
    PostSubmissionLayer, RetryPolicy, RetryStats,
    json::to_proto_value,
    pb::{
        self,
        post_submission_server::{PostSubmission, PostSubmissionServer},
    },
};
use postsub_testkit::form_backend::{submit, submit_route};
use serde_json::{Value, json};

/// Answers `Process` with one flagged result and one job, after `delay` (or with `refuse`),
/// and keeps the requests it got.
#[derive(Clone, Default)]
struct StandIn {
    requests: Arc<Mutex<Vec<pb::ProcessRequest>>>,
    delay: Duration,
    refuse: Option<tonic::Code>,
}

#[tonic::async_trait]
impl PostSubmission for StandIn {
    async fn process(
        &self,
        request: tonic::Request<pb::ProcessRequest>,
    ) -> Result<tonic::Response<pb::ProcessResponse>, tonic::Status> {
        tokio::time::sleep(self.delay).await;
        self.requests.lock().unwrap().push(request.into_inner());
        if let Some(code) = self.refuse {
            return Err(tonic::Status::new(code, "refused by the stand-in"));
        }
        Ok(tonic::Response::new(pb::ProcessResponse {
            sync_results: vec![pb::SyncResult {
                binding_id: "b1".into(),
                name: "checks".into(),
                kind: "validate".into(),
                status: pb::SyncStatus::Flagged.into(),
                flags: vec![pb::Flag {
                    field: "age".into(),
                    rule: "max".into(),
                    message: "must be at most 150".into(),
                }],
                output: Some(to_proto_value(json!({"fields_checked": 1}))),
                error: String::new(),
                run_id: "r1".into(),
            }],
            jobs: vec![pb::QueuedJob {
                run_id: "r2".into(),
                binding_id: "b2".into(),
                name: "hook".into(),
                kind: "webhook".into(),
            }],
        }))
    }

    async fn run_bindings(
        &self,
        _request: tonic::Request<pb::RunBindingsRequest>,
    ) -> Result<tonic::Response<pb::RunBindingsResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented(
            "the stand-in answers Process only",
        ))
    }
}

async fn start_stand_in(stand_in: StandIn) -> SocketAddr {
    start_stand_in_at(stand_in, "127.0.0.1:0".parse().unwrap()).await
}

async fn start_stand_in_at(stand_in: StandIn, addr: SocketAddr) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(PostSubmissionServer::new(stand_in))
            .serve_with_incoming(
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            ),
    );
    addr
}

const SUBMISSION: &str = "7d9f4f0e-3c55-4b8e-9d2a-3c1f0b6f1a11";
const FORM: &str = "0b1e8a52-9a3f-4f43-8f8e-5b7a0d2c6e90";

fn stored() -> Value {
    json!({"id": SUBMISSION, "form_id": FORM, "answers": {"age": 200},
           "created_at": "2026-11-22T10:00:00Z"})
}

#[tokio::test]
async fn merges_the_reply_under_post_submission() {
    let stand_in = StandIn::default();
    let addr = start_stand_in(stand_in.clone()).await;
    let layer = PostSubmissionLayer::connect_lazy(&format!("http://{addr}")).unwrap();
    let (status, body) = submit(submit_route(layer, StatusCode::CREATED, stored())).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(body["id"], SUBMISSION, "the route's own fields stay");
    assert_eq!(
        body["post_submission"],
        json!({
            "sync_results": [{"run_id": "r1", "binding_id": "b1", "name": "checks", "kind": "validate",
                              "status": "flagged",
                              "flags": [{"field": "age", "rule": "max", "message": "must be at most 150"}],
                              "output": {"fields_checked": 1}}],
            "jobs": [{"run_id": "r2", "binding_id": "b2", "name": "hook", "kind": "webhook"}]
        })
    );
    let requests = stand_in.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.form_id, FORM);
    assert_eq!(request.submission_id, SUBMISSION);
    assert_eq!(
        request.submitted_at,
        Some(prost_types::Timestamp {
            seconds: 1_795_341_600,
            nanos: 0
        })
    );
    assert_eq!(
        request.metadata.get("user-agent").map(String::as_str),
        Some("postsub-testkit")
    );
    let answers = postsub::json::from_proto_struct(request.answers.clone().unwrap());
    assert_eq!(Value::Object(answers), json!({"age": 200}));
}

/// The method says the event: a PUT and a PATCH are edits, a DELETE a deletion, each with
/// the body's revision (a number, or an RFC 3339 time in microseconds) or else the layer's
/// clock; a GET on the same route passes through without a call.
#[tokio::test]
async fn the_method_says_the_event_and_the_body_the_revision() {
    use axum::routing::any;
    use tower::ServiceExt as _;

    let stand_in = StandIn::default();
    let addr = start_stand_in(stand_in.clone()).await;
    let layer = PostSubmissionLayer::connect_lazy(&format!("http://{addr}")).unwrap();
    let call = |method: &str, body: Value| {
        let app = axum::Router::new().route(
            "/submission",
            any(move || async move { (StatusCode::OK, axum::Json(body)) }).layer(layer.clone()),
        );
        let request = http::Request::builder()
            .method(method)
            .uri("/submission")
            .body(axum::body::Body::empty())
            .unwrap();
        async move {
            let response = app.oneshot(request).await.unwrap();
            let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
                .await
                .unwrap();
            serde_json::from_slice::<Value>(&bytes).unwrap()
        }
    };
    let with = |revision: Value| {
        let mut body = stored();
        body["revision"] = revision;
        body
    };
    let before = chrono::Utc::now().timestamp_micros() as u64;
    call("POST", with(json!(1))).await;
    call("PUT", with(json!(2))).await;
    call("PATCH", with(json!("2026-12-03T10:00:00.000001Z"))).await;
    call("DELETE", stored()).await;
    let listed = call("GET", stored()).await;
    assert!(listed.get("post_submission").is_none(), "{listed}");
    let bad = call("PUT", with(json!(-3))).await;
    assert_eq!(
        bad["post_submission"]["error"],
        "the submit response's `revision` is neither a whole number ≥ 0 nor an RFC 3339 time"
    );
    // A creation does not need a revision: one of another meaning is no error.
    call("POST", with(json!("v7"))).await;

    let requests = stand_in.requests.lock().unwrap().clone();
    let seen: Vec<(pb::SubmissionEvent, u64)> = requests
        .iter()
        .map(|request| (request.event(), request.revision))
        .collect();
    assert_eq!(
        seen.len(),
        5,
        "GET and the bad revision made no call: {seen:?}"
    );
    assert_eq!(seen[4], (pb::SubmissionEvent::Created, 0));
    assert_eq!(seen[0], (pb::SubmissionEvent::Created, 1));
    assert_eq!(seen[1], (pb::SubmissionEvent::Updated, 2));
    assert_eq!(
        seen[2],
        (pb::SubmissionEvent::Updated, 1_796_292_000_000_001)
    );
    assert_eq!(seen[3].0, pb::SubmissionEvent::Deleted);
    assert!(
        seen[3].1 >= before,
        "no revision in the body: the layer's clock"
    );
}

#[tokio::test]
async fn failed_submissions_pass_through_without_a_call() {
    let stand_in = StandIn::default();
    let addr = start_stand_in(stand_in.clone()).await;
    let layer = PostSubmissionLayer::connect_lazy(&format!("http://{addr}")).unwrap();
    let error = json!({"error": "unknown form"});
    let (status, body) = submit(submit_route(layer, StatusCode::NOT_FOUND, error.clone())).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body, error);
    assert!(stand_in.requests.lock().unwrap().is_empty());
}

#[tokio::test]
async fn submission_succeeds_when_the_proxy_is_down() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let layer = PostSubmissionLayer::connect_lazy(&format!("http://{closed}")).unwrap();
    let (status, body) = submit(submit_route(layer, StatusCode::CREATED, stored())).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(body["id"], SUBMISSION);
    let error = body["post_submission"]["error"].as_str().unwrap();
    assert!(
        error.starts_with("post-submission tasks did not run"),
        "{error}"
    );
    assert_eq!(body["post_submission"]["sync_results"], json!([]));
}

#[tokio::test]
async fn submission_succeeds_when_the_proxy_is_slow() {
    let stand_in = StandIn {
        delay: Duration::from_secs(5),
        ..StandIn::default()
    };
    let addr = start_stand_in(stand_in).await;
    let layer = PostSubmissionLayer::connect_lazy(&format!("http://{addr}"))
        .unwrap()
        .deadline(Duration::from_millis(200));
    let (status, body) = submit(submit_route(layer, StatusCode::CREATED, stored())).await;
    assert_eq!(status, StatusCode::CREATED);
    let error = body["post_submission"]["error"].as_str().unwrap();
    assert!(
        error.contains("did not answer within 200ms")
            || error.contains("Cancelled")
            || error.contains("DeadlineExceeded"),
        "{error}"
    );
}

#[tokio::test]
async fn a_body_that_does_not_describe_a_submission_says_so() {
    let addr = start_stand_in(StandIn::default()).await;
    let layer = PostSubmissionLayer::connect_lazy(&format!("http://{addr}")).unwrap();
    let (status, body) = submit(submit_route(
        layer,
        StatusCode::CREATED,
        json!({"id": SUBMISSION, "answers": {}}),
    ))
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(
        body["post_submission"]["error"],
        "the submit response has no string field `form_id`"
    );
}

/// Quick background retries, for tests.
fn quick(attempts: u32, capacity: usize) -> RetryPolicy {
    RetryPolicy {
        attempts,
        backoff: Duration::from_millis(100),
        max_backoff: Duration::from_millis(400),
        capacity,
    }
}

/// A submission of a new id, as the route stores it.
fn stored_as(id: &str) -> Value {
    json!({"id": id, "form_id": FORM, "answers": {"age": 30},
           "created_at": "2026-11-22T10:00:00Z"})
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_failed_process_is_retried_in_the_background_once_the_proxy_is_back() {
    // Nothing listens here until the stand-in starts.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let layer = PostSubmissionLayer::connect_lazy(&format!("http://{addr}"))
        .unwrap()
        .background_retries(quick(30, 100));
    let ids = [
        "7d9f4f0e-3c55-4b8e-9d2a-3c1f0b6f1a21",
        "7d9f4f0e-3c55-4b8e-9d2a-3c1f0b6f1a22",
        "7d9f4f0e-3c55-4b8e-9d2a-3c1f0b6f1a23",
    ];
    for id in ids {
        let started = std::time::Instant::now();
        let (status, body) = submit(submit_route(
            layer.clone(),
            StatusCode::CREATED,
            stored_as(id),
        ))
        .await;
        assert_eq!(status, StatusCode::CREATED);
        let error = body["post_submission"]["error"].as_str().unwrap();
        assert!(
            error.ends_with("; the layer retries it in the background"),
            "{error}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "the response waits for no retry"
        );
    }
    assert_eq!(layer.retry_stats().pending, 3);

    let stand_in = StandIn::default();
    start_stand_in_at(stand_in.clone(), addr).await;
    wait_until("the retries to go through", || {
        layer.retry_stats().delivered == 3
    })
    .await;
    let mut got: Vec<String> = stand_in
        .requests
        .lock()
        .unwrap()
        .iter()
        .map(|r| r.submission_id.clone())
        .collect();
    got.sort();
    assert_eq!(got, ids);
    assert_eq!(
        layer.retry_stats(),
        RetryStats {
            pending: 0,
            delivered: 3,
            gave_up: 0,
            dropped: 0
        }
    );
}

#[tokio::test]
async fn background_retries_are_bounded_and_count_what_they_give_up() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let layer = PostSubmissionLayer::connect_lazy(&format!("http://{closed}"))
        .unwrap()
        .background_retries(quick(2, 2));
    for n in 1..=3 {
        let id = format!("7d9f4f0e-3c55-4b8e-9d2a-3c1f0b6f1a3{n}");
        submit(submit_route(
            layer.clone(),
            StatusCode::CREATED,
            stored_as(&id),
        ))
        .await;
    }
    // Two wait for a retry; the third found no room.
    assert_eq!(layer.retry_stats().dropped, 1);
    wait_until("the retries to give up", || {
        layer.retry_stats().gave_up == 2
    })
    .await;
    assert_eq!(layer.retry_stats().pending, 0);
}

#[tokio::test]
async fn a_refusal_a_retry_cannot_change_is_not_retried() {
    let stand_in = StandIn {
        refuse: Some(tonic::Code::InvalidArgument),
        ..StandIn::default()
    };
    let addr = start_stand_in(stand_in.clone()).await;
    let layer = PostSubmissionLayer::connect_lazy(&format!("http://{addr}"))
        .unwrap()
        .background_retries(quick(5, 10));
    let (_, body) = submit(submit_route(layer.clone(), StatusCode::CREATED, stored())).await;
    let error = body["post_submission"]["error"].as_str().unwrap();
    assert!(error.ends_with("(InvalidArgument)"), "{error}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(stand_in.requests.lock().unwrap().len(), 1);
    assert_eq!(layer.retry_stats(), RetryStats::default());
}
