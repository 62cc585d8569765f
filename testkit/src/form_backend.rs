//! A form backend's submit route behind a [`PostSubmissionLayer`], as a backend mounts it:
//! the route answers with what it stored, the layer adds `post_submission`.

use axum::{Json, Router, routing::post};
use http::StatusCode;
use postsub::PostSubmissionLayer;
use serde_json::{Value, json};
use tower::ServiceExt;
use uuid::Uuid;

/// A submit route answering `status` with `body`, wrapped in `layer`.
pub fn submit_route(layer: PostSubmissionLayer, status: StatusCode, body: Value) -> Router {
    Router::new().route(
        "/submit",
        post(move || async move { (status, Json(body)) }).layer(layer),
    )
}

/// A stored submission of a new form, as a backend's submit route answers it.
pub fn stored_submission(answers: Value) -> Value {
    json!({"id": Uuid::new_v4().to_string(), "form_id": Uuid::new_v4().to_string(),
           "answers": answers, "created_at": "2026-12-02T10:00:00Z"})
}

/// POSTs to `app`'s `/submit`; the status and the JSON body of the answer.
pub async fn submit(app: Router) -> (StatusCode, Value) {
    let request = http::Request::post("/submit")
        .header("user-agent", "postsub-testkit")
        .body(axum::body::Body::empty())
        .expect("a request");
    let response = app.oneshot(request).await.expect("the route answers");
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("the body is read");
    let body = serde_json::from_slice(&bytes).expect("the body is JSON");
    (status, body)
}
