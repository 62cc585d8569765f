//! The HTTP API against a real PostgreSQL database (fresh per test) with the postsub proxy
//! down: submissions must still succeed, with `post_submission.error` saying why no task ran.

use collect_backend::{Application, Settings};
use postsub_testkit::TestDatabase;
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};

/// A running backend on its own database.
struct TestApp {
    address: String,
    client: reqwest::Client,
    _db: TestDatabase,
}

impl TestApp {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    async fn post_json(&self, path: &str, body: &Value) -> Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    async fn post_raw(&self, path: &str, body: impl Into<reqwest::Body>) -> Response {
        self.client
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap()
    }

    async fn get(&self, path: &str) -> Response {
        self.client.get(self.url(path)).send().await.unwrap()
    }

    /// Creates a form with one required string question `email` and returns its id.
    async fn create_form(&self) -> String {
        let response = self
            .post_json(
                "/forms",
                &json!({"title": "Newsletter", "questions": [
                    {"key": "email", "label": "Your email", "type": "string", "required": true},
                    {"key": "age", "type": "integer"}
                ]}),
            )
            .await;
        assert_eq!(response.status(), StatusCode::CREATED);
        let form: Value = response.json().await.unwrap();
        form["id"].as_str().unwrap().to_owned()
    }
}

/// Starts the backend on port 0 with a fresh database and a postsub URL nobody listens on.
async fn spawn_app() -> TestApp {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let db = TestDatabase::create("collect").await;
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let settings = Settings {
        addr: "127.0.0.1:0".parse().unwrap(),
        postsub_url: format!("http://127.0.0.1:{closed_port}"),
        database_url: db.url.clone().into(),
        postsub_deadline_ms: 500,
        max_body_bytes: 16 * 1024,
    };
    let application = Application::build(settings).await.expect("backend starts");
    let address = format!("http://{}", application.local_addr());
    tokio::spawn(application.run_until(std::future::pending()));
    TestApp {
        address,
        client: reqwest::Client::new(),
        _db: db,
    }
}

/// The `error` message of a JSON error response with the expected status.
async fn error_of(response: Response, status: StatusCode) -> String {
    assert_eq!(response.status(), status);
    let body: Value = response.json().await.expect("error bodies are JSON");
    let message = body["error"]
        .as_str()
        .expect("an `error` string")
        .to_owned();
    assert!(!message.is_empty());
    message
}

#[tokio::test]
async fn creates_and_gets_a_form() {
    let app = spawn_app().await;
    let id = app.create_form().await;

    let response = app.get(&format!("/forms/{id}")).await;
    assert_eq!(response.status(), StatusCode::OK);
    let form: Value = response.json().await.unwrap();
    assert_eq!(form["id"], id.as_str());
    assert_eq!(form["title"], "Newsletter");
    assert_eq!(
        form["questions"],
        json!([
            {"key": "email", "label": "Your email", "type": "string", "required": true},
            {"key": "age", "label": "age", "type": "integer", "required": false}
        ])
    );
    assert!(form["created_at"].is_string());
}

#[tokio::test]
async fn submit_stores_the_submission_even_when_postsub_is_down() {
    let app = spawn_app().await;
    let form_id = app.create_form().await;
    let answers = json!({"email": "ada@example.com", "age": 36});

    let response = app
        .post_json(
            &format!("/forms/{form_id}/submit"),
            &json!({"answers": answers}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["form_id"], form_id.as_str());
    assert_eq!(body["answers"], answers);
    uuid::Uuid::parse_str(body["id"].as_str().unwrap()).unwrap();
    chrono::DateTime::parse_from_rfc3339(body["created_at"].as_str().unwrap()).unwrap();
    let post_submission = &body["post_submission"];
    assert!(
        post_submission["error"]
            .as_str()
            .is_some_and(|e| !e.is_empty()),
        "{post_submission}"
    );
    assert_eq!(post_submission["sync_results"], json!([]));

    let response = app.get(&format!("/forms/{form_id}/submissions")).await;
    assert_eq!(response.status(), StatusCode::OK);
    let listed: Value = response.json().await.unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["id"], body["id"]);
    assert_eq!(listed[0]["answers"], answers);
}

#[tokio::test]
async fn lists_submissions_newest_first() {
    let app = spawn_app().await;
    let form_id = app.create_form().await;
    for n in 1..=3 {
        let response = app
            .post_json(
                &format!("/forms/{form_id}/submit"),
                &json!({"answers": {"n": n}}),
            )
            .await;
        assert_eq!(response.status(), StatusCode::CREATED);
    }
    let listed: Value = app
        .get(&format!("/forms/{form_id}/submissions"))
        .await
        .json()
        .await
        .unwrap();
    let order: Vec<&Value> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|s| &s["answers"]["n"])
        .collect();
    assert_eq!(order, [&json!(3), &json!(2), &json!(1)]);
}

#[tokio::test]
async fn malformed_json_is_400_with_a_json_error() {
    let app = spawn_app().await;
    let form_id = app.create_form().await;
    let message = error_of(
        app.post_raw(&format!("/forms/{form_id}/submit"), r#"{"answers": {"#)
            .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(message.contains("not valid JSON"), "{message}");
    error_of(
        app.post_raw("/forms", "not json").await,
        StatusCode::BAD_REQUEST,
    )
    .await;
}

#[tokio::test]
async fn missing_answers_is_refused() {
    let app = spawn_app().await;
    let form_id = app.create_form().await;
    let message = error_of(
        app.post_json(
            &format!("/forms/{form_id}/submit"),
            &json!({"email": "a@b.c"}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert!(message.contains("answers"), "{message}");
}

#[tokio::test]
async fn answers_that_are_not_an_object_are_refused() {
    let app = spawn_app().await;
    let form_id = app.create_form().await;
    for answers in [json!("a@b.c"), json!([1, 2]), json!(null)] {
        let message = error_of(
            app.post_json(
                &format!("/forms/{form_id}/submit"),
                &json!({"answers": answers}),
            )
            .await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
        assert!(message.contains("answers"), "{message}");
    }
    // Nothing was stored.
    let listed: Value = app
        .get(&format!("/forms/{form_id}/submissions"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed, json!([]));
}

#[tokio::test]
async fn unknown_form_is_404() {
    let app = spawn_app().await;
    let unknown = uuid::Uuid::new_v4();
    error_of(
        app.get(&format!("/forms/{unknown}")).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    error_of(
        app.get(&format!("/forms/{unknown}/submissions")).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    let message = error_of(
        app.post_json(&format!("/forms/{unknown}/submit"), &json!({"answers": {}}))
            .await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert!(message.contains(&unknown.to_string()), "{message}");
}

#[tokio::test]
async fn bad_uuid_in_the_path_is_400() {
    let app = spawn_app().await;
    let message = error_of(app.get("/forms/not-a-uuid").await, StatusCode::BAD_REQUEST).await;
    assert!(message.contains("not-a-uuid"), "{message}");
    error_of(
        app.post_json("/forms/123/submit", &json!({"answers": {}}))
            .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
}

#[tokio::test]
async fn oversize_body_is_413() {
    let app = spawn_app().await;
    let form_id = app.create_form().await;
    let big = json!({"answers": {"essay": "x".repeat(32 * 1024)}});
    let message = error_of(
        app.post_json(&format!("/forms/{form_id}/submit"), &big)
            .await,
        StatusCode::PAYLOAD_TOO_LARGE,
    )
    .await;
    assert!(message.contains("16384"), "{message}");
}

#[tokio::test]
async fn form_with_duplicate_keys_is_refused() {
    let app = spawn_app().await;
    let question = json!({"key": "email", "type": "string"});
    let message = error_of(
        app.post_json(
            "/forms",
            &json!({"title": "Dup", "questions": [question, question]}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert!(message.contains("email"), "{message}");
}

#[tokio::test]
async fn form_with_a_blank_title_or_unknown_type_is_refused() {
    let app = spawn_app().await;
    error_of(
        app.post_json("/forms", &json!({"title": "  ", "questions": []}))
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    let message = error_of(
        app.post_json(
            "/forms",
            &json!({"title": "T", "questions": [{"key": "k", "type": "date"}]}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert!(message.contains("questions[0].type"), "{message}");
}

#[tokio::test]
async fn healthz_and_unknown_routes() {
    let app = spawn_app().await;
    assert_eq!(app.get("/healthz").await.status(), StatusCode::OK);
    error_of(app.get("/nope").await, StatusCode::NOT_FOUND).await;
}

#[tokio::test]
async fn build_creates_a_missing_database() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let db = TestDatabase::create("collect").await;
    let settings = Settings {
        addr: "127.0.0.1:0".parse().unwrap(),
        postsub_url: "http://127.0.0.1:9".into(),
        database_url: db.sibling_url("created").into(),
        postsub_deadline_ms: 100,
        max_body_bytes: 1024,
    };
    let application = Application::build(settings).await.expect("backend starts");
    let forms: i64 = sqlx::query_scalar("SELECT count(*) FROM forms")
        .fetch_one(application.pool())
        .await
        .unwrap();
    assert_eq!(forms, 0);
    application.pool().close().await;
}
