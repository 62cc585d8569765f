//! A local webhook receiver that records deliveries and checks their Standard Webhooks
//! signature, independently of postsub's own signing code. With an answer body it also
//! stands in for a `remote` task's service.

use std::{
    collections::VecDeque,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    routing::post,
};
use base64::{Engine as _, engine::general_purpose::STANDARD as BASE64};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// `webhook-id` header.
    pub id: String,
    /// Parsed JSON body.
    pub body: serde_json::Value,
    /// Whether `webhook-signature` verifies with the receiver's secret.
    pub signature_ok: bool,
}

#[derive(Default)]
struct Inner {
    /// Print each delivery to stdout as it arrives.
    print: bool,
    deliveries: Vec<Delivery>,
    /// Statuses and bodies to answer with, in order, before answering 200 and `answer`.
    scripted: VecDeque<(StatusCode, String)>,
    /// The body of a 200 answer (empty unless set).
    answer: String,
    /// How long each request waits before it is answered.
    latency: Duration,
}

/// A webhook endpoint on 127.0.0.1, port 0.
#[derive(Clone)]
pub struct WebhookReceiver {
    /// URL to bind the webhook task to.
    pub url: String,
    /// The secret to put in the binding config (`whsec_…`).
    pub secret: String,
    inner: Arc<Mutex<Inner>>,
}

impl WebhookReceiver {
    /// Starts a receiver on a port the OS picks, with a fresh secret.
    pub async fn start() -> Self {
        let key: [u8; 24] = std::array::from_fn(|i| (i as u8).wrapping_mul(37).wrapping_add(11));
        let secret = format!("whsec_{}", BASE64.encode(key));
        Self::listen("127.0.0.1:0".parse().expect("an address"), &secret, false)
            .await
            .expect("bind webhook receiver")
    }

    /// Starts a receiver at `addr` (path `/hook`) checking signatures against `secret`
    /// (`whsec_<base64>`), printing each delivery to stdout when `print` is set.
    pub async fn listen(addr: SocketAddr, secret: &str, print: bool) -> std::io::Result<Self> {
        let key = secret
            .strip_prefix("whsec_")
            .and_then(|key| BASE64.decode(key).ok())
            .ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "the secret must be whsec_ followed by base64",
                )
            })?;
        let inner = Arc::new(Mutex::new(Inner {
            print,
            ..Inner::default()
        }));
        let app = Router::new()
            .route("/hook", post(receive))
            .with_state((inner.clone(), key));
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let url = format!("http://{}/hook", listener.local_addr()?);
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(Self {
            url,
            secret: secret.to_owned(),
            inner,
        })
    }

    /// Answers the next requests with these statuses, then 200 again.
    pub fn respond_with(&self, statuses: &[u16]) {
        let answers: Vec<(u16, &str)> = statuses.iter().map(|s| (*s, "")).collect();
        self.answer_with(&answers);
    }

    /// Answers the next requests with these statuses and bodies, then 200 again.
    pub fn answer_with(&self, answers: &[(u16, &str)]) {
        let mut inner = self.inner.lock().expect("receiver lock");
        inner.scripted.extend(answers.iter().map(|(status, body)| {
            (
                StatusCode::from_u16(*status).expect("valid status"),
                (*body).to_owned(),
            )
        }));
    }

    /// Answers 200 with `body` (a `remote` task's answer, say) from now on.
    pub fn set_answer(&self, body: &str) {
        self.inner.lock().expect("receiver lock").answer = body.to_owned();
    }

    /// Answers every request only after `latency` (a slow receiver).
    pub fn set_latency(&self, latency: Duration) {
        self.inner.lock().expect("receiver lock").latency = latency;
    }

    /// Every delivery so far, in arrival order.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.inner.lock().expect("receiver lock").deliveries.clone()
    }

    /// How many deliveries arrived so far, without copying them (for polling a drain).
    pub fn delivery_count(&self) -> usize {
        self.inner.lock().expect("receiver lock").deliveries.len()
    }
}

async fn receive(
    State((inner, key)): State<(Arc<Mutex<Inner>>, Vec<u8>)>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let id = header("webhook-id");
    let timestamp = header("webhook-timestamp");
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("any key length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(&body);
    let expected = format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()));
    let signature_ok = header("webhook-signature")
        .split(' ')
        .any(|candidate| candidate == expected);
    let latency = inner.lock().expect("receiver lock").latency;
    tokio::time::sleep(latency).await;
    let mut inner = inner.lock().expect("receiver lock");
    let delivery = Delivery {
        id,
        body: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
        signature_ok,
    };
    let (status, answer) = inner
        .scripted
        .pop_front()
        .unwrap_or_else(|| (StatusCode::OK, inner.answer.clone()));
    if inner.print {
        println!(
            "{}",
            serde_json::json!({"webhook-id": delivery.id, "signature_ok": signature_ok,
                               "answered": status.as_u16(), "body": delivery.body})
        );
    }
    inner.deliveries.push(delivery);
    (status, answer)
}
