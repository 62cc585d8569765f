//! The Sheets emulator driven over real HTTP, the way the Google clients call it.

use std::time::{Duration, Instant};

use postsub_testkit::SheetsEmulator;
use reqwest::Method;
use serde_json::{Value, json};

const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// An emulator and an HTTP client holding one of its tokens.
struct Api {
    emulator: SheetsEmulator,
    http: reqwest::Client,
    token: String,
}

/// One answer: status, `Retry-After`, JSON body (`Null` when there is none).
struct Reply {
    status: u16,
    retry_after: Option<String>,
    body: Value,
}

impl Reply {
    /// Asserts a Google-shaped error and returns its message.
    fn error(&self, code: u16, status: &str) -> &str {
        assert_eq!(self.status, code, "{}", self.body);
        assert_eq!(self.body["error"]["code"], code, "{}", self.body);
        assert_eq!(self.body["error"]["status"], status, "{}", self.body);
        self.body["error"]["message"].as_str().expect("message")
    }
}

fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

async fn api() -> Api {
    let emulator = SheetsEmulator::start().await;
    let http = http();
    let reply: Value = http
        .post(emulator.token_uri())
        .form(&[
            ("grant_type", JWT_BEARER),
            ("assertion", "aGVhZA.Y2xhaW1z.c2ln"),
        ])
        .send()
        .await
        .expect("token request")
        .json()
        .await
        .expect("token JSON");
    let token = reply["access_token"].as_str().expect("token").to_owned();
    Api {
        emulator,
        http,
        token,
    }
}

impl Api {
    /// Calls `base_url + path` with the token; `path` is sent as written (no re-encoding).
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Reply {
        let url = format!("{}{path}", self.emulator.sheets_base_url());
        let mut request = self.http.request(method, url).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        send(request).await
    }

    async fn create(&self, title: &str) -> String {
        let reply = self
            .call(
                Method::POST,
                "v4/spreadsheets?alt=json",
                Some(json!({ "properties": { "title": title } })),
            )
            .await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        reply.body["spreadsheetId"].as_str().expect("id").to_owned()
    }

    async fn append(&self, id: &str, range: &str, values: Value) -> Reply {
        let path = format!(
            "v4/spreadsheets/{id}/values/{range}:append?valueInputOption=RAW&insertDataOption=INSERT_ROWS&alt=json"
        );
        self.call(Method::POST, &path, Some(json!({ "values": values })))
            .await
    }

    async fn get_values(&self, id: &str, range: &str) -> Value {
        let path =
            format!("v4/spreadsheets/{id}/values/{range}?valueRenderOption=UNFORMATTED_VALUE");
        let reply = self.call(Method::GET, &path, None).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        reply.body
    }
}

/// A tab's grid through the inspection API, as one JSON value for easy comparison.
fn grid(api: &Api, id: &str, tab: &str) -> Value {
    api.emulator.values(id, tab).into()
}

async fn send(request: reqwest::RequestBuilder) -> Reply {
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().expect("ascii").to_owned());
    let text = response.text().await.expect("body");
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).expect("JSON body")
    };
    Reply {
        status,
        retry_after,
        body,
    }
}

#[tokio::test]
async fn token_endpoint_issues_tokens_for_jwt_assertions_only() {
    let emulator = SheetsEmulator::start().await;
    let http = http();
    let token = |grant: &'static str, assertion: &'static str| {
        http.post(emulator.token_uri())
            .form(&[("grant_type", grant), ("assertion", assertion)])
    };
    let ok = send(token(JWT_BEARER, "a.b.c")).await;
    assert_eq!(ok.status, 200);
    assert_eq!(
        ok.body,
        json!({ "access_token": "emulator-token-1", "expires_in": 3600, "token_type": "Bearer" })
    );
    let bad_jwt = send(token(JWT_BEARER, "not-a-jwt")).await;
    assert_eq!(bad_jwt.status, 400);
    assert_eq!(bad_jwt.body["error"], "invalid_grant");
    let bad_grant = send(token("password", "a.b.c")).await;
    assert_eq!(bad_grant.status, 400);
    assert_eq!(bad_grant.body["error"], "unsupported_grant_type");
    let second = send(token(JWT_BEARER, "x.y.z")).await;
    assert_eq!(second.body["access_token"], "emulator-token-2");
    assert_eq!(emulator.token_requests(), 4);
    assert_eq!(emulator.api_calls(), 0, "token calls are not API calls");
}

#[tokio::test]
async fn service_account_key_points_at_the_emulator() {
    let emulator = SheetsEmulator::start().await;
    let key = emulator.service_account_key();
    assert_eq!(key["type"], "service_account");
    assert_eq!(key["token_uri"], emulator.token_uri());
    assert_eq!(
        key["client_email"],
        "postsub-test@emulator.iam.gserviceaccount.com"
    );
    let pem = key["private_key"].as_str().expect("pem");
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"), "{pem}");
    let dir = std::env::temp_dir().join(format!("sheets-key-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = emulator.write_service_account_key(&dir);
    let written: Value =
        serde_json::from_slice(&std::fs::read(&path).expect("read key")).expect("key JSON");
    assert_eq!(written, key);
    std::fs::remove_dir_all(&dir).expect("clean up");
}

#[tokio::test]
async fn create_and_get_answer_the_spreadsheet_resource() {
    let api = api().await;
    let reply = api
        .call(
            Method::POST,
            "v4/spreadsheets?alt=json",
            Some(json!({ "properties": { "title": "Answers" } })),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let id = reply.body["spreadsheetId"].as_str().expect("id").to_owned();
    assert_eq!(id.len(), 44);
    assert_eq!(reply.body["properties"]["title"], "Answers");
    assert_eq!(reply.body["properties"]["locale"], "en_US");
    assert_eq!(
        reply.body["sheets"],
        json!([{ "properties": {
            "sheetId": 0, "title": "Sheet1", "index": 0, "sheetType": "GRID",
            "gridProperties": { "rowCount": 1000, "columnCount": 26 },
        }}])
    );
    assert_eq!(
        reply.body["spreadsheetUrl"],
        format!("https://docs.google.com/spreadsheets/d/{id}/edit")
    );
    let got = api
        .call(Method::GET, &format!("v4/spreadsheets/{id}?alt=json"), None)
        .await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body, reply.body);
    assert_eq!(api.emulator.spreadsheets(), [(id, "Answers".to_owned())]);

    let named = api
        .call(
            Method::POST,
            "v4/spreadsheets",
            Some(json!({ "properties": { "title": "T" },
                         "sheets": [{ "properties": { "title": "Data" } }, { "properties": {} }] })),
        )
        .await;
    let titles: Vec<&Value> = named.body["sheets"]
        .as_array()
        .expect("sheets")
        .iter()
        .map(|s| &s["properties"]["title"])
        .collect();
    assert_eq!(titles, [&json!("Data"), &json!("Sheet2")]);
}

#[tokio::test]
async fn appends_land_below_the_table_and_keep_types() {
    let api = api().await;
    let id = api.create("Answers").await;
    let first = api
        .append(
            &id,
            "Sheet1!A1",
            json!([["name", "age", "member"], ["Ada", 36, true]]),
        )
        .await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(
        first.body,
        json!({ "spreadsheetId": id, "updates": {
            "spreadsheetId": id, "updatedRange": "Sheet1!A1:C2",
            "updatedRows": 2, "updatedColumns": 3, "updatedCells": 6,
        }})
    );
    let second = api
        .append(
            &id,
            "Sheet1%21A1",
            json!([["Grace", 85.5, false], ["Linus", null, true]]),
        )
        .await;
    assert_eq!(second.body["tableRange"], "Sheet1!A1:C2");
    assert_eq!(second.body["updates"]["updatedRange"], "Sheet1!A3:C4");
    assert_eq!(
        second.body["updates"]["updatedCells"], 5,
        "null cells are skipped"
    );

    assert_eq!(
        grid(&api, &id, "Sheet1"),
        json!([
            ["name", "age", "member"],
            ["Ada", 36, true],
            ["Grace", 85.5, false],
            ["Linus", "", true],
        ])
    );
    assert_eq!(api.emulator.append_calls(), 2);
    assert_eq!(api.emulator.appended_rows(), 4);
    let grid = api
        .call(Method::GET, &format!("v4/spreadsheets/{id}"), None)
        .await;
    assert_eq!(
        grid.body["sheets"][0]["properties"]["gridProperties"]["rowCount"], 1004,
        "INSERT_ROWS adds rows"
    );
}

#[tokio::test]
async fn values_get_reads_ranges_like_google() {
    let api = api().await;
    let id = api.create("Ranges").await;
    api.append(
        &id,
        "Sheet1",
        json!([["h1", "h2", "h3"], [1, 2, 3], ["x", "", 4.25]]),
    )
    .await;

    let column = api.get_values(&id, "Sheet1!A:A").await;
    assert_eq!(
        column,
        json!({ "range": "Sheet1!A1:A1003", "majorDimension": "ROWS",
                "values": [["h1"], [1], ["x"]] }),
        "open ends stop at the grid, which INSERT_ROWS grew by 3"
    );
    let header = api.get_values(&id, "Sheet1!1:1").await;
    assert_eq!(header["range"], "Sheet1!A1:Z1");
    assert_eq!(header["values"], json!([["h1", "h2", "h3"]]));
    let body = api.get_values(&id, "Sheet1!A2:Z").await;
    assert_eq!(body["values"], json!([[1, 2, 3], ["x", "", 4.25]]));
    let block = api.get_values(&id, "Sheet1!B2:C3").await;
    assert_eq!(block["range"], "Sheet1!B2:C3");
    assert_eq!(block["values"], json!([[2, 3], ["", 4.25]]));
    let empty = api.get_values(&id, "Sheet1!E1:F9").await;
    assert_eq!(
        empty,
        json!({ "range": "Sheet1!E1:F9", "majorDimension": "ROWS" }),
        "no values key for an empty range"
    );
    let bare = api.get_values(&id, "B1:B2").await;
    assert_eq!(
        bare["values"],
        json!([["h2"], [2]]),
        "a bare area is on the first tab"
    );

    let formatted = api
        .call(
            Method::GET,
            &format!("v4/spreadsheets/{id}/values/Sheet1!A2:C3?majorDimension=COLUMNS"),
            None,
        )
        .await;
    assert_eq!(
        formatted.body["values"],
        json!([["1", "x"], ["2"], ["3", "4.25"]]),
        "FORMATTED_VALUE (the default) answers strings"
    );

    let unknown_tab = api
        .call(
            Method::GET,
            &format!("v4/spreadsheets/{id}/values/Nope!A1"),
            None,
        )
        .await;
    assert_eq!(
        unknown_tab.error(400, "INVALID_ARGUMENT"),
        "Unable to parse range: Nope!A1"
    );
    let past_grid = api
        .call(
            Method::GET,
            &format!("v4/spreadsheets/{id}/values/Sheet1!A2000"),
            None,
        )
        .await;
    assert!(
        past_grid
            .error(400, "INVALID_ARGUMENT")
            .contains("exceeds grid limits")
    );
}

#[tokio::test]
async fn update_overwrites_the_header_row() {
    let api = api().await;
    let id = api.create("Header").await;
    api.append(&id, "Sheet1!A1", json!([["a", "b"], [1, 2]]))
        .await;
    let reply = api
        .call(
            Method::PUT,
            &format!("v4/spreadsheets/{id}/values/Sheet1!A1?valueInputOption=RAW&alt=json"),
            Some(json!({ "range": "Sheet1!A1", "majorDimension": "ROWS",
                         "values": [["a", "b", "c"]] })),
        )
        .await;
    assert_eq!(
        reply.body,
        json!({ "spreadsheetId": id, "updatedRange": "Sheet1!A1:C1",
                "updatedRows": 1, "updatedColumns": 3, "updatedCells": 3 })
    );
    assert_eq!(grid(&api, &id, "Sheet1"), json!([["a", "b", "c"], [1, 2]]));

    let missing_option = api
        .call(
            Method::PUT,
            &format!("v4/spreadsheets/{id}/values/Sheet1!A1"),
            Some(json!({ "values": [["x"]] })),
        )
        .await;
    assert_eq!(
        missing_option.error(400, "INVALID_ARGUMENT"),
        "'valueInputOption' is required but not specified"
    );
    let mismatch = api
        .call(
            Method::PUT,
            &format!("v4/spreadsheets/{id}/values/Sheet1!A1?valueInputOption=RAW"),
            Some(json!({ "range": "Sheet1!B1", "values": [["x"]] })),
        )
        .await;
    mismatch.error(400, "INVALID_ARGUMENT");
    let nested = api
        .call(
            Method::PUT,
            &format!("v4/spreadsheets/{id}/values/Sheet1!A1?valueInputOption=RAW"),
            Some(json!({ "values": [[{ "a": 1 }]] })),
        )
        .await;
    nested.error(400, "INVALID_ARGUMENT");
    let broken = api
        .http
        .put(format!(
            "{}v4/spreadsheets/{id}/values/Sheet1!A1?valueInputOption=RAW",
            api.emulator.sheets_base_url()
        ))
        .bearer_auth(&api.token)
        .body("{not json");
    assert!(
        send(broken)
            .await
            .error(400, "INVALID_ARGUMENT")
            .starts_with("Invalid JSON payload received.")
    );
    assert_eq!(
        grid(&api, &id, "Sheet1"),
        json!([["a", "b", "c"], [1, 2]]),
        "refused writes change nothing"
    );
}

#[tokio::test]
async fn add_sheet_adds_tabs_with_unique_titles() {
    let api = api().await;
    let id = api.create("Tabs").await;
    let path = format!("v4/spreadsheets/{id}:batchUpdate?alt=json");
    let add =
        |title: &str| json!({ "requests": [{ "addSheet": { "properties": { "title": title } } }] });
    let reply = api.call(Method::POST, &path, Some(add("My Tab"))).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["spreadsheetId"], id);
    let properties = &reply.body["replies"][0]["addSheet"]["properties"];
    assert_eq!(properties["title"], "My Tab");
    assert_eq!(properties["index"], 1);
    assert!(properties["sheetId"].as_i64().expect("sheetId") > 0);

    let duplicate = api.call(Method::POST, &path, Some(add("my tab"))).await;
    assert!(
        duplicate.error(400, "INVALID_ARGUMENT").ends_with(
            "A sheet with the name \"my tab\" already exists. Please enter another name."
        )
    );
    let half = json!({ "requests": [
        { "addSheet": { "properties": { "title": "Kept?" } } },
        { "deleteSheet": { "sheetId": 0 } },
    ]});
    let unsupported = api.call(Method::POST, &path, Some(half)).await;
    assert!(
        unsupported
            .error(400, "INVALID_ARGUMENT")
            .contains("unsupported by the emulator")
    );
    let sheets = api
        .call(Method::GET, &format!("v4/spreadsheets/{id}"), None)
        .await
        .body["sheets"]
        .as_array()
        .expect("sheets")
        .len();
    assert_eq!(sheets, 2, "a failed batchUpdate applies nothing");

    let appended = api
        .append(&id, "'My%20Tab'!A1", json!([["in the new tab"]]))
        .await;
    assert_eq!(appended.body["updates"]["updatedRange"], "'My Tab'!A1");
    assert_eq!(grid(&api, &id, "My Tab"), json!([["in the new tab"]]));
    assert!(api.emulator.values(&id, "Sheet1").is_empty());
}

#[tokio::test]
async fn drive_permissions_are_recorded_per_spreadsheet() {
    let api = api().await;
    let id = api.create("Shared").await;
    let url = |file: &str| {
        format!(
            "{}files/{file}/permissions?sendNotificationEmail=false&alt=json",
            api.emulator.drive_base_url()
        )
    };
    let grant = json!({ "role": "writer", "type": "user", "emailAddress": "a@b.c" });
    let created = send(api.http.post(url(&id)).bearer_auth(&api.token).json(&grant)).await;
    assert_eq!(created.status, 200, "{}", created.body);
    assert_eq!(created.body["kind"], "drive#permission");
    assert_eq!(created.body["role"], "writer");
    assert_eq!(created.body["type"], "user");
    assert_eq!(created.body["emailAddress"], "a@b.c");
    assert!(created.body["id"].as_str().is_some_and(|id| !id.is_empty()));
    assert_eq!(
        Value::from(api.emulator.permissions(&id)),
        json!([created.body])
    );

    let unknown = send(
        api.http
            .post(url("nope"))
            .bearer_auth(&api.token)
            .json(&grant),
    )
    .await;
    assert_eq!(unknown.error(404, "NOT_FOUND"), "File not found: nope.");
    let no_role = send(
        api.http
            .post(url(&id))
            .bearer_auth(&api.token)
            .json(&json!({ "type": "user", "emailAddress": "a@b.c" })),
    )
    .await;
    no_role.error(400, "INVALID_ARGUMENT");
    assert_eq!(api.emulator.permissions(&id).len(), 1);
}

#[tokio::test]
async fn calls_need_an_issued_token_and_an_existing_spreadsheet() {
    let api = api().await;
    let id = api.create("Private").await;
    let url = format!("{}v4/spreadsheets/{id}", api.emulator.sheets_base_url());
    let anonymous = send(api.http.get(&url)).await;
    assert_eq!(
        anonymous.error(401, "UNAUTHENTICATED"),
        "Request is missing required authentication credential. Expected OAuth 2 access token, \
         login cookie or other valid authentication credential."
    );
    let forged = send(api.http.get(&url).bearer_auth("emulator-token-99")).await;
    forged.error(401, "UNAUTHENTICATED");
    let unknown_path = send(
        api.http
            .get(format!("{}v9/whatever", api.emulator.sheets_base_url())),
    )
    .await;
    unknown_path.error(401, "UNAUTHENTICATED");

    let missing = api
        .call(Method::GET, "v4/spreadsheets/no-such-id?alt=json", None)
        .await;
    assert_eq!(
        missing.error(404, "NOT_FOUND"),
        "Requested entity was not found."
    );
    let missing_values = api.append("no-such-id", "Sheet1!A1", json!([["x"]])).await;
    missing_values.error(404, "NOT_FOUND");
    let unimplemented = api
        .call(Method::DELETE, &format!("v4/spreadsheets/{id}"), None)
        .await;
    unimplemented.error(404, "NOT_FOUND");
    assert_eq!(api.emulator.api_calls(), 7, "refused calls count too");
}

#[tokio::test]
async fn fail_every_rotates_statuses_before_touching_state() {
    let api = api().await;
    let id = api.create("Faults").await;
    api.emulator.fail_every(3, &[429, 500]);
    let mut statuses = Vec::new();
    for row in 0..6 {
        let reply = api.append(&id, "Sheet1!A1", json!([[row]])).await;
        if reply.status == 429 {
            assert_eq!(reply.retry_after.as_deref(), Some("1"));
            assert!(
                reply
                    .error(429, "RESOURCE_EXHAUSTED")
                    .starts_with("Quota exceeded for quota metric 'Write requests'")
            );
        }
        if reply.status == 500 {
            assert_eq!(reply.error(500, "INTERNAL"), "Internal error encountered.");
        }
        statuses.push(reply.status);
    }
    assert_eq!(statuses, [200, 200, 429, 200, 200, 500]);
    assert_eq!(
        grid(&api, &id, "Sheet1"),
        json!([[0], [1], [3], [4]]),
        "failed calls wrote nothing"
    );
    assert_eq!(api.emulator.append_calls(), 4);
    assert_eq!(api.emulator.api_calls(), 7);

    api.emulator.fail_every(0, &[]);
    for _ in 0..4 {
        assert_eq!(
            api.append(&id, "Sheet1!A1", json!([["ok"]])).await.status,
            200
        );
    }
}

#[tokio::test]
async fn fail_next_fails_the_next_calls_then_recovers() {
    let api = api().await;
    let id = api.create("Flaky").await;
    api.emulator.fail_next(2, 503);
    for _ in 0..2 {
        let reply = api.append(&id, "Sheet1!A1", json!([["x"]])).await;
        assert_eq!(
            reply.error(503, "UNAVAILABLE"),
            "The service is currently unavailable."
        );
        assert_eq!(reply.retry_after, None);
    }
    assert_eq!(
        api.append(&id, "Sheet1!A1", json!([["x"]])).await.status,
        200
    );
    assert_eq!(api.emulator.appended_rows(), 1);
    assert_eq!(api.emulator.api_calls(), 4);
}

#[tokio::test]
async fn latency_delays_every_api_call() {
    let api = api().await;
    api.emulator.set_latency(Duration::from_millis(60));
    let started = Instant::now();
    let id = api.create("Slow").await;
    assert!(started.elapsed() >= Duration::from_millis(60));
    api.emulator.set_latency(Duration::ZERO);
    let started = Instant::now();
    api.get_values(&id, "Sheet1").await;
    assert!(started.elapsed() < Duration::from_millis(60));
}
