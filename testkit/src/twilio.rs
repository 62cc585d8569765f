//! A local stand-in for Twilio's Messages API (the parts an SMS task uses), counting what it
//! is asked to send:
//! - `POST /2010-04-01/Accounts/{sid}/Messages.json`, form-encoded `To`, `From`, `Body`,
//!   HTTP basic auth `sid:token`: 201 with the message (`sid`, `to`, `from`, `body`,
//!   `status`, `date_created`); 400 with Twilio's error JSON (code 21211) for a `To` that
//!   is not an E.164 number; 401 for wrong credentials.
//! - `GET` of the same path, `?To=…&From=…`: `{"messages": […]}`, newest first.
//!
//! Scripted statuses (429, 500, …) answer the next sends instead; a delay after recording a
//! message lets a test kill its sender between the send and its answer.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Form, Json, Router,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::post,
};
use base64::{Engine as _, engine::general_purpose::STANDARD as BASE64};
use serde::Deserialize;
use serde_json::{Value, json};

/// One message the fake accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// `SM…`, as Twilio names messages.
    pub sid: String,
    /// `To`.
    pub to: String,
    /// `From`.
    pub from: String,
    /// `Body`.
    pub body: String,
}

#[derive(Default)]
struct Inner {
    messages: Vec<Message>,
    scripted: VecDeque<StatusCode>,
    /// How long a send waits, after the message is recorded, before it is answered.
    delay: Duration,
    /// Requests of any kind, answered or not.
    requests: usize,
}

/// The fake, on 127.0.0.1 at a port the OS picked.
#[derive(Clone)]
pub struct TwilioFake {
    /// What an SMS task's `base_url` should be.
    pub base_url: String,
    /// The account sid it accepts.
    pub account_sid: String,
    /// The auth token it accepts.
    pub auth_token: String,
    inner: Arc<Mutex<Inner>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SendForm {
    to: String,
    from: String,
    body: String,
}

impl TwilioFake {
    /// Starts the fake with a fresh account.
    pub async fn start() -> Self {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let fake = |base_url| Self {
            base_url,
            account_sid: format!("AC{}", uuid::Uuid::new_v4().simple()),
            auth_token: uuid::Uuid::new_v4().simple().to_string(),
            inner: inner.clone(),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the Twilio fake");
        let addr = listener.local_addr().expect("a local address");
        let this = fake(format!("http://{addr}"));
        let app = Router::new()
            .route(
                "/2010-04-01/Accounts/{sid}/Messages.json",
                post(send).get(list),
            )
            .with_state(this.clone());
        tokio::spawn(async move {
            axum::serve(listener, app)
                .await
                .expect("the Twilio fake serves");
        });
        this
    }

    /// Every message accepted, in order.
    pub fn messages(&self) -> Vec<Message> {
        self.lock().messages.clone()
    }

    /// Answers the next sends with `statuses` (recording nothing), then goes back to 201.
    pub fn script(&self, statuses: &[u16]) {
        self.lock().scripted.extend(
            statuses
                .iter()
                .map(|s| StatusCode::from_u16(*s).expect("a status code")),
        );
    }

    /// Waits `delay` after recording each message before answering.
    pub fn set_delay(&self, delay: Duration) {
        self.lock().delay = delay;
    }

    /// Requests received, of any kind.
    pub fn requests(&self) -> usize {
        self.lock().requests
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("Twilio fake lock")
    }

    fn authorized(&self, sid: &str, headers: &HeaderMap) -> bool {
        let expected = format!(
            "Basic {}",
            BASE64.encode(format!("{}:{}", self.account_sid, self.auth_token))
        );
        sid == self.account_sid
            && headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                == Some(expected.as_str())
    }
}

fn twilio_error(status: StatusCode, code: u32, message: &str) -> Response {
    (
        status,
        Json(
            json!({"code": code, "message": message, "status": status.as_u16(),
            "more_info": format!("https://www.twilio.com/docs/errors/{code}")}),
        ),
    )
        .into_response()
}

fn message_json(message: &Message) -> Value {
    json!({"sid": message.sid, "to": message.to, "from": message.from, "body": message.body,
        "status": "queued", "date_created": "Thu, 03 Dec 2026 10:00:00 +0000"})
}

async fn send(
    State(fake): State<TwilioFake>,
    Path(sid): Path<String>,
    headers: HeaderMap,
    Form(form): Form<SendForm>,
) -> Response {
    let (scripted, delay) = {
        let mut inner = fake.lock();
        inner.requests += 1;
        (inner.scripted.pop_front(), inner.delay)
    };
    if !fake.authorized(&sid, &headers) {
        return twilio_error(StatusCode::UNAUTHORIZED, 20003, "Authenticate");
    }
    if let Some(status) = scripted {
        return twilio_error(status, 20500, "scripted failure");
    }
    let e164 = form.to.strip_prefix('+').is_some_and(|digits| {
        (8..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit())
    });
    if !e164 {
        return twilio_error(
            StatusCode::BAD_REQUEST,
            21211,
            &format!("The 'To' number {} is not a valid phone number.", form.to),
        );
    }
    let message = {
        let mut inner = fake.lock();
        let message = Message {
            sid: format!("SM{:032x}", inner.messages.len() + 1),
            to: form.to,
            from: form.from,
            body: form.body,
        };
        inner.messages.push(message.clone());
        message
    };
    tokio::time::sleep(delay).await;
    (StatusCode::CREATED, Json(message_json(&message))).into_response()
}

async fn list(
    State(fake): State<TwilioFake>,
    Path(sid): Path<String>,
    headers: HeaderMap,
    Query(filter): Query<HashMap<String, String>>,
) -> Response {
    fake.lock().requests += 1;
    if !fake.authorized(&sid, &headers) {
        return twilio_error(StatusCode::UNAUTHORIZED, 20003, "Authenticate");
    }
    let messages: Vec<Value> = fake
        .messages()
        .iter()
        .rev()
        .filter(|m| filter.get("To").is_none_or(|to| *to == m.to))
        .filter(|m| filter.get("From").is_none_or(|from| *from == m.from))
        .map(message_json)
        .collect();
    Json(json!({"messages": messages})).into_response()
}
