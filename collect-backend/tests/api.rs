//! The HTTP API against a real database, fresh per test, with the postsub proxy down:
//! submissions must still succeed, with `post_submission.error` saying why no task ran.
//!
//! Every test runs on both backends: each is an `async fn(Db)`, and `on_every_backend!`
//! turns it into `<test>::postgres` (a fresh database on the local server) and
//! `<test>::sqlite` (a fresh file in a temp directory).

use collect_backend::{Application, Settings};
use postsub_testkit::{TestDatabase, TestSqlite};
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection, SqliteConnection};

/// For each test `fn name(db: Db)`, a module `name` with one `#[tokio::test]` per backend.
macro_rules! on_every_backend {
    ($test:ident) => {
        mod $test {
            #[tokio::test]
            async fn postgres() {
                super::$test(super::Db::Postgres).await;
            }

            #[tokio::test]
            async fn sqlite() {
                super::$test(super::Db::Sqlite).await;
            }
        }
    };
}

/// The backend a test runs on.
#[derive(Debug, Clone, Copy)]
enum Db {
    Postgres,
    Sqlite,
}

/// A fresh, not yet migrated database on one backend, removed when this drops.
enum TestDb {
    Postgres(TestDatabase),
    Sqlite(TestSqlite),
}

impl TestDb {
    async fn create(db: Db) -> Self {
        match db {
            Db::Postgres => Self::Postgres(TestDatabase::create("collect").await),
            Db::Sqlite => Self::Sqlite(TestSqlite::create("collect")),
        }
    }

    fn url(&self) -> String {
        match self {
            Self::Postgres(db) => db.url.clone(),
            Self::Sqlite(db) => db.url.clone(),
        }
    }
}

/// Settings on `database_url` with a postsub URL nobody listens on.
fn settings(database_url: String) -> Settings {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    Settings {
        addr: "127.0.0.1:0".parse().unwrap(),
        postsub_url: format!("http://127.0.0.1:{closed_port}"),
        postsub_token: None,
        postsub_ca_cert: None,
        postsub_client_cert: None,
        postsub_client_key: None,
        database_url: database_url.into(),
        postsub_deadline_ms: 500,
        max_body_bytes: 16 * 1024,
    }
}

/// A running backend on its own database.
struct TestApp {
    address: String,
    client: reqwest::Client,
    _db: TestDb,
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

/// Starts the backend on port 0 with a fresh database on `db` and a postsub URL nobody
/// listens on.
async fn spawn_app(db: Db) -> TestApp {
    let test_db = TestDb::create(db).await;
    let application = Application::build(settings(test_db.url()))
        .await
        .expect("backend starts");
    let address = format!("http://{}", application.local_addr());
    tokio::spawn(application.run_until(std::future::pending()));
    TestApp {
        address,
        client: reqwest::Client::new(),
        _db: test_db,
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

async fn creates_and_gets_a_form(db: Db) {
    let app = spawn_app(db).await;
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
on_every_backend!(creates_and_gets_a_form);

async fn submit_stores_the_submission_even_when_postsub_is_down(db: Db) {
    let app = spawn_app(db).await;
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
    let listed = &listed["submissions"];
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["id"], body["id"]);
    assert_eq!(listed[0]["answers"], answers);
}
on_every_backend!(submit_stores_the_submission_even_when_postsub_is_down);

/// The `n` answers of a listing's page, and its `next` cursor.
async fn page(app: &TestApp, path: &str) -> (Vec<i64>, Option<String>) {
    let response = app.get(path).await;
    assert_eq!(response.status(), StatusCode::OK, "{path}");
    let page: Value = response.json().await.unwrap();
    let order = page["submissions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["answers"]["n"].as_i64().unwrap())
        .collect();
    (order, page["next"].as_str().map(str::to_owned))
}

async fn lists_submissions_oldest_first_in_pages_and_by_time(db: Db) {
    let app = spawn_app(db).await;
    let form_id = app.create_form().await;
    let mut stored_at = Vec::new();
    for n in 1..=5 {
        let response = app
            .post_json(
                &format!("/forms/{form_id}/submit"),
                &json!({"answers": {"n": n}}),
            )
            .await;
        assert_eq!(response.status(), StatusCode::CREATED);
        let body: Value = response.json().await.unwrap();
        stored_at.push(body["created_at"].as_str().unwrap().to_owned());
    }
    let all = format!("/forms/{form_id}/submissions");
    assert_eq!(page(&app, &all).await, (vec![1, 2, 3, 4, 5], None));

    // Pages of two, following `next`, until it is null.
    let (first, next) = page(&app, &format!("{all}?limit=2")).await;
    assert_eq!(first, [1, 2]);
    let (second, next) = page(&app, &format!("{all}?limit=2&after={}", next.unwrap())).await;
    assert_eq!(second, [3, 4]);
    let (last, next) = page(&app, &format!("{all}?limit=2&after={}", next.unwrap())).await;
    assert_eq!((last, next), (vec![5], None));

    // since is inclusive, until exclusive: the seed's from/to.
    let enc = |t: &str| t.replace('+', "%2B");
    let since = format!("{all}?since={}", enc(&stored_at[1]));
    assert_eq!(page(&app, &since).await.0, [2, 3, 4, 5]);
    let range = format!("{since}&until={}", enc(&stored_at[3]));
    assert_eq!(page(&app, &range).await.0, [2, 3]);

    for (query, says) in [
        ("limit=0", "limit: `0` is not a number from 1 to 1000"),
        ("limit=many", "limit: `many` is not a number"),
        ("after=nope", "after: `nope` is not a cursor"),
        (
            "since=yesterday",
            "since: `yesterday` is not an RFC 3339 time",
        ),
        (
            "since=2026-12-03T10:00:00Z&until=2026-12-02T10:00:00Z",
            "must be before until",
        ),
    ] {
        let message = error_of(
            app.get(&format!("{all}?{query}")).await,
            StatusCode::BAD_REQUEST,
        )
        .await;
        assert!(message.contains(says), "{query}: {message}");
    }
}
on_every_backend!(lists_submissions_oldest_first_in_pages_and_by_time);

async fn malformed_json_is_400_with_a_json_error(db: Db) {
    let app = spawn_app(db).await;
    let form_id = app.create_form().await;
    let message = error_of(
        app.post_raw(&format!("/forms/{form_id}/submit"), r#"{"answers": {"#)
            .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(message.contains("not valid JSON"), "{message}");
    let trailing_comma = error_of(
        app.post_raw(
            &format!("/forms/{form_id}/submit"),
            r#"{"answers": {"a": 5,}}"#,
        )
        .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(
        trailing_comma.contains("(trailing comma at line 1 column 21)")
            && !trailing_comma.contains("answers."),
        "{trailing_comma}"
    );
    error_of(
        app.post_raw("/forms", "not json").await,
        StatusCode::BAD_REQUEST,
    )
    .await;
}
on_every_backend!(malformed_json_is_400_with_a_json_error);

async fn missing_answers_is_refused(db: Db) {
    let app = spawn_app(db).await;
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
on_every_backend!(missing_answers_is_refused);

async fn answers_that_are_not_an_object_are_refused(db: Db) {
    let app = spawn_app(db).await;
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
    assert_eq!(listed, json!({"submissions": [], "next": null}));
}
on_every_backend!(answers_that_are_not_an_object_are_refused);

async fn unknown_form_is_404(db: Db) {
    let app = spawn_app(db).await;
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
on_every_backend!(unknown_form_is_404);

async fn bad_uuid_in_the_path_is_400(db: Db) {
    let app = spawn_app(db).await;
    let message = error_of(app.get("/forms/not-a-uuid").await, StatusCode::BAD_REQUEST).await;
    assert!(message.contains("not-a-uuid"), "{message}");
    error_of(
        app.post_json("/forms/123/submit", &json!({"answers": {}}))
            .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
}
on_every_backend!(bad_uuid_in_the_path_is_400);

async fn oversize_body_is_413(db: Db) {
    let app = spawn_app(db).await;
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
on_every_backend!(oversize_body_is_413);

async fn form_with_duplicate_keys_is_refused(db: Db) {
    let app = spawn_app(db).await;
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
on_every_backend!(form_with_duplicate_keys_is_refused);

async fn form_with_a_blank_title_or_unknown_type_is_refused(db: Db) {
    let app = spawn_app(db).await;
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
on_every_backend!(form_with_a_blank_title_or_unknown_type_is_refused);

async fn healthz_and_unknown_routes(db: Db) {
    let app = spawn_app(db).await;
    assert_eq!(app.get("/healthz").await.status(), StatusCode::OK);
    error_of(app.get("/nope").await, StatusCode::NOT_FOUND).await;
}
on_every_backend!(healthz_and_unknown_routes);

async fn build_creates_a_missing_database(db: Db) {
    let test_db = TestDb::create(db).await;
    // A database that does not exist yet: a sibling on the server, or the file not yet made.
    let url = match &test_db {
        TestDb::Postgres(db) => db.sibling_url("created"),
        TestDb::Sqlite(db) => {
            assert!(!db.path.exists());
            db.url.clone()
        }
    };
    let application = Application::build(settings(url.clone()))
        .await
        .expect("backend starts");
    assert_eq!(count_forms(db, &url).await, 0);
    application.store().close().await;
}
on_every_backend!(build_creates_a_missing_database);

#[tokio::test]
async fn sqlite_creates_the_directory_of_a_bare_path_and_uses_wal() {
    let tmp = TestSqlite::create("collect");
    // Like the default `sqlite://.collect/collect.db`, without the scheme.
    let path = tmp.path.with_file_name(".collect").join("collect.db");
    let application = Application::build(settings(path.display().to_string()))
        .await
        .expect("backend starts");
    assert!(path.is_file(), "{} was not created", path.display());
    assert_eq!(application.store().backend(), "sqlite");
    assert_eq!(application.store().location(), path.display().to_string());
    let address = format!("http://{}", application.local_addr());
    tokio::spawn(application.run_until(std::future::pending()));
    let app = TestApp {
        address,
        client: reqwest::Client::new(),
        _db: TestDb::Sqlite(tmp),
    };
    let id = app.create_form().await;
    assert_eq!(
        app.get(&format!("/forms/{id}")).await.status(),
        StatusCode::OK
    );

    let url = format!("sqlite://{}", path.display());
    assert_eq!(count_forms(Db::Sqlite, &url).await, 1);
    let mut connection = SqliteConnection::connect(&url).await.unwrap();
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut connection)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
}

#[tokio::test]
async fn sqlite_path_whose_directory_cannot_be_created_is_refused_naming_it() {
    let tmp = TestSqlite::create("collect");
    let file = tmp.path.with_file_name("not-a-directory");
    std::fs::write(&file, "a regular file").unwrap();
    let path = file.join("data").join("collect.db");
    let err = Application::build(settings(format!("sqlite://{}", path.display())))
        .await
        .expect_err("a directory cannot be made under a regular file");
    let message = format!("{err:#}");
    assert!(
        message.contains(&path.display().to_string()),
        "the error does not name {}: {message}",
        path.display()
    );
    assert!(message.contains("COLLECT_DATABASE_URL"), "{message}");
}

/// The number of forms in the database at `url`, read without the backend.
async fn count_forms(db: Db, url: &str) -> i64 {
    const COUNT: &str = "SELECT count(*) FROM forms";
    match db {
        Db::Postgres => {
            let mut connection = PgConnection::connect(url).await.unwrap();
            sqlx::query_scalar(COUNT)
                .fetch_one(&mut connection)
                .await
                .unwrap()
        }
        Db::Sqlite => {
            let mut connection = SqliteConnection::connect(url).await.unwrap();
            sqlx::query_scalar(COUNT)
                .fetch_one(&mut connection)
                .await
                .unwrap()
        }
    }
}
