//! [`PostSubmissionLayer`]: runs post-submission tasks after a successful submit.
//!
//! Wrap a form backend's submit route in this layer and change nothing else. When the route
//! answers 2xx with a JSON object describing the stored submission, the layer calls the
//! proxy's `Process` RPC under a deadline and adds the reply to that object. The request's
//! method says what happened to the submission: `POST` created it, `PUT` and `PATCH`
//! updated it, `DELETE` deleted it (the route answers with the deleted submission); other
//! methods (a `GET` of the same path) pass through untouched.
//!
//! ```json
//! {"id": "…", "form_id": "…", "answers": {…}, "created_at": "…",
//!  "post_submission": {"sync_results": [...], "jobs": [...]}}
//! ```
//!
//! Unlike a timeout or tracing middleware, this one never turns a response into an error:
//! the submission is already stored when the layer sees it, so a proxy that is down, slow or
//! refuses the call still yields the route's own status, with `post_submission.error` saying
//! why no task ran. Responses that are not 2xx JSON objects pass through untouched and
//! unbuffered.
//!
//! The submission is read from the response body: `form_id`, `id` (the submission id),
//! `answers`, `created_at` (RFC 3339) and `revision` (an integer, or an RFC 3339 update
//! time, taken in microseconds), as the field names can be changed with
//! [`PostSubmissionLayer::fields`]. An edit or a deletion without a revision gets the
//! layer's clock, in microseconds, so the later of two edits is the newer.

use std::{
    collections::HashMap,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, header};
use http_body::Body;
use http_body_util::{BodyExt, Either, Full};
use serde_json::{Map, Value, json};
use tonic::{
    metadata::{Ascii, MetadataValue},
    transport::{Channel, Endpoint},
};
use tower::Layer;

use crate::{
    json::{from_proto_value, to_proto_struct, to_proto_timestamp},
    pb::{self, post_submission_client::PostSubmissionClient},
    retry::{Failure, Retries, RetryPolicy, RetryStats},
    tls::{ClientTls, TlsError},
};

/// The body type of responses from [`PostSubmission`]: the route's own body when passed
/// through, or the rewritten JSON.
pub type PostSubmissionBody<B> = Either<B, Full<Bytes>>;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Request headers copied into `Process` metadata (lower-case names).
const FORWARDED_HEADERS: [&str; 2] = ["x-request-id", "user-agent"];

/// Names of the response-body fields that describe the stored submission.
#[derive(Debug, Clone)]
pub struct SubmissionFields {
    /// Field holding the form id (default `form_id`).
    pub form_id: String,
    /// Field holding the submission id (default `id`).
    pub submission_id: String,
    /// Field holding the answers object (default `answers`).
    pub answers: String,
    /// Field holding the RFC 3339 submission time (default `created_at`); optional in the body.
    pub submitted_at: String,
    /// Field holding the submission's revision (default `revision`): an integer, or an RFC
    /// 3339 update time; optional in the body.
    pub revision: String,
}

impl Default for SubmissionFields {
    fn default() -> Self {
        Self {
            form_id: "form_id".into(),
            submission_id: "id".into(),
            answers: "answers".into(),
            submitted_at: "created_at".into(),
            revision: "revision".into(),
        }
    }
}

#[derive(Debug, Clone)]
struct Settings {
    deadline: Duration,
    max_body_bytes: usize,
    fields: SubmissionFields,
    /// `Bearer <token>`, marked sensitive.
    bearer: Option<MetadataValue<Ascii>>,
}

/// Layer that calls the postsub proxy's `Process` after every successful submission.
///
/// ```no_run
/// # fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use postsub::PostSubmissionLayer;
/// let layer = PostSubmissionLayer::connect_lazy("http://127.0.0.1:50051")?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct PostSubmissionLayer {
    client: PostSubmissionClient<Channel>,
    settings: Arc<Settings>,
    retries: Retries,
    /// Where the channel goes, when the layer made it: TLS settings remake it.
    proxy: Option<(String, ClientTls)>,
}

impl PostSubmissionLayer {
    /// A layer calling `Process` over `channel`.
    pub fn new(channel: Channel) -> Self {
        Self {
            client: PostSubmissionClient::new(channel),
            settings: Arc::new(Settings {
                deadline: Duration::from_secs(2),
                bearer: None,
                max_body_bytes: 1024 * 1024,
                fields: SubmissionFields::default(),
            }),
            retries: Retries::new(RetryPolicy::default()),
            proxy: None,
        }
    }

    /// A layer for the proxy at `url`: `http://host:port`, or `https://host:port` checked
    /// against the system's roots (or the CA of [`Self::ca_certificate`]). Connects on first
    /// use and reconnects by itself, so the backend starts even when the proxy is not up yet.
    pub fn connect_lazy(url: &str) -> Result<Self, TlsError> {
        let tls = ClientTls::default();
        let mut layer = Self::new(lazy_channel(tls.endpoint(url)?));
        layer.proxy = Some((url.to_owned(), tls));
        Ok(layer)
    }

    /// Reaches the proxy with these TLS settings (e.g. [`ClientTls::from_pem_files`]).
    /// Fails on an `http://` URL, a CA file with no certificate, or a layer made by
    /// [`Self::new`].
    pub fn tls(self, tls: ClientTls) -> Result<Self, TlsError> {
        self.with_tls(|_| tls)
    }

    /// Trusts the proxy's certificate when this CA (PEM) signed it, instead of the system's
    /// roots: for a proxy with a private CA's certificate. Fails on a file with no
    /// certificate, an `http://` URL, or a layer made by [`Self::new`].
    pub fn ca_certificate(self, pem: impl AsRef<[u8]>) -> Result<Self, TlsError> {
        self.with_tls(|tls| tls.ca_certificate(pem))
    }

    /// Shows this certificate and key (PEM) to a proxy that requires client certificates
    /// (mutual TLS, `POSTSUB_TLS_CLIENT_CA`).
    pub fn client_identity(
        self,
        cert_pem: impl AsRef<[u8]>,
        key_pem: impl AsRef<[u8]>,
    ) -> Result<Self, TlsError> {
        self.with_tls(|tls| tls.identity(cert_pem, key_pem))
    }

    fn with_tls(mut self, change: impl FnOnce(ClientTls) -> ClientTls) -> Result<Self, TlsError> {
        let (url, tls) = self.proxy.take().ok_or(TlsError::OwnChannel)?;
        let tls = change(tls);
        self.client = PostSubmissionClient::new(lazy_channel(tls.endpoint(&url)?));
        self.proxy = Some((url, tls));
        Ok(self)
    }

    /// How long the layer waits for `Process` before answering without it (default 2 s).
    pub fn deadline(mut self, deadline: Duration) -> Self {
        Arc::make_mut(&mut self.settings).deadline = deadline;
        self
    }

    /// Largest response body the layer buffers to add `post_submission` (default 1 MiB);
    /// larger bodies pass through untouched.
    pub fn max_body_bytes(mut self, limit: usize) -> Self {
        Arc::make_mut(&mut self.settings).max_body_bytes = limit;
        self
    }

    /// Calls `Process` with `authorization: Bearer <token>`: a token of the `submit` scope
    /// (`postsub tokens create --scope submit`). Fails when the token holds characters a
    /// header cannot carry.
    pub fn bearer_token(
        mut self,
        token: &str,
    ) -> Result<Self, tonic::metadata::errors::InvalidMetadataValue> {
        let mut value = MetadataValue::try_from(format!("Bearer {}", token.trim()))?;
        // Kept out of `Debug` output, so a logged layer shows no token.
        value.set_sensitive(true);
        Arc::make_mut(&mut self.settings).bearer = Some(value);
        Ok(self)
    }

    /// Names of the response-body fields that describe the submission.
    pub fn fields(mut self, fields: SubmissionFields) -> Self {
        Arc::make_mut(&mut self.settings).fields = fields;
        self
    }

    /// How a `Process` call that failed for a reason that may pass (the proxy unreachable,
    /// busy or slow) is retried in the background; see [`crate::retry`]. On by default
    /// ([`RetryPolicy::default`]); `attempts: 0` turns it off.
    pub fn background_retries(mut self, policy: RetryPolicy) -> Self {
        self.retries = Retries::new(policy);
        self
    }

    /// What the background retries did so far (this layer's and its services').
    pub fn retry_stats(&self) -> RetryStats {
        self.retries.stats()
    }
}

/// The layer's channel: connected on first use, giving up on a connect after 1 s.
fn lazy_channel(endpoint: Endpoint) -> Channel {
    endpoint
        .connect_timeout(Duration::from_secs(1))
        .tcp_nodelay(true)
        .connect_lazy()
}

impl<S> Layer<S> for PostSubmissionLayer {
    type Service = PostSubmission<S>;

    fn layer(&self, inner: S) -> Self::Service {
        PostSubmission {
            inner,
            client: self.client.clone(),
            settings: self.settings.clone(),
            retries: self.retries.clone(),
        }
    }
}

/// Service made by [`PostSubmissionLayer`]; see the module docs.
#[derive(Debug, Clone)]
pub struct PostSubmission<S> {
    inner: S,
    client: PostSubmissionClient<Channel>,
    settings: Arc<Settings>,
    retries: Retries,
}

impl<S, ReqBody, ResBody> tower::Service<Request<ReqBody>> for PostSubmission<S>
where
    S: tower::Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<PostSubmissionBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let event = match *request.method() {
            Method::POST => Some(pb::SubmissionEvent::Created),
            Method::PUT | Method::PATCH => Some(pb::SubmissionEvent::Updated),
            Method::DELETE => Some(pb::SubmissionEvent::Deleted),
            _ => None,
        };
        let metadata: HashMap<String, String> = FORWARDED_HEADERS
            .iter()
            .filter_map(|name| {
                let value = request.headers().get(*name)?.to_str().ok()?;
                Some(((*name).to_owned(), value.to_owned()))
            })
            .collect();
        let response = self.inner.call(request);
        let caller = Caller {
            client: self.client.clone(),
            settings: self.settings.clone(),
            retries: self.retries.clone(),
        };
        ResponseFuture {
            inner: Box::pin(async move {
                let response = response.await?;
                Ok(match event {
                    Some(event) => add_post_submission(response, caller, event, metadata).await,
                    None => response.map(Either::Left),
                })
            }),
        }
    }
}

/// Response future of [`PostSubmission`]. Boxed because, after the route answers, it awaits
/// the body and a gRPC call; the box is one allocation per submission, not per request byte.
pub struct ResponseFuture<B, E> {
    inner: BoxedResponse<B, E>,
}

type BoxedResponse<B, E> =
    Pin<Box<dyn Future<Output = Result<Response<PostSubmissionBody<B>>, E>> + Send>>;

impl<B, E> Future for ResponseFuture<B, E> {
    type Output = Result<Response<PostSubmissionBody<B>>, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

impl<B, E> std::fmt::Debug for ResponseFuture<B, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

/// What calls `Process` for one submission, and retries it.
struct Caller {
    client: PostSubmissionClient<Channel>,
    settings: Arc<Settings>,
    retries: Retries,
}

async fn add_post_submission<B>(
    response: Response<B>,
    caller: Caller,
    event: pb::SubmissionEvent,
    metadata: HashMap<String, String>,
) -> Response<PostSubmissionBody<B>>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let settings = caller.settings.clone();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let too_large = response
        .body()
        .size_hint()
        .upper()
        .is_some_and(|n| n > settings.max_body_bytes as u64);
    if !response.status().is_success() || !is_json || too_large {
        return response.map(Either::Left);
    }

    let (mut parts, body) = response.into_parts();
    let bytes = match http_body_util::Limited::new(body, settings.max_body_bytes)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(err) => {
            // The route's body broke after it stored the submission: say so rather than
            // hand back a truncated body.
            tracing::error!(error = %err, "reading the submit response body failed");
            parts.status = http::StatusCode::INTERNAL_SERVER_ERROR;
            parts.headers.remove(header::CONTENT_LENGTH);
            let body = json!({"error": format!("reading the response body failed: {err}")});
            return Response::from_parts(parts, Either::Right(Full::new(body.to_string().into())));
        }
    };
    let Ok(Value::Object(mut object)) = serde_json::from_slice::<Value>(&bytes) else {
        return Response::from_parts(parts, Either::Right(Full::new(bytes)));
    };

    let build =
        |object: &Map<String, Value>| process_request(object, &settings.fields, event, &metadata);
    let post_submission = match build(&object) {
        Ok(request) => match send(caller.client.clone(), request, &settings).await {
            Ok(reply) => reply_to_json(reply),
            // Built again for a retry rather than cloned for every call in case one fails.
            Err(error) => caller.failed(&error, || build(&object).ok()),
        },
        Err(reason) => failed(reason),
    };
    object.insert("post_submission".into(), post_submission);
    let body = Bytes::from(Value::Object(object).to_string());
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    Response::from_parts(parts, Either::Right(Full::new(body)))
}

fn process_request(
    object: &Map<String, Value>,
    fields: &SubmissionFields,
    event: pb::SubmissionEvent,
    metadata: &HashMap<String, String>,
) -> Result<pb::ProcessRequest, String> {
    let text = |name: &str| match object.get(name) {
        Some(Value::String(s)) => Ok(s.clone()),
        _ => Err(format!("the submit response has no string field `{name}`")),
    };
    let answers = match object.get(&fields.answers) {
        Some(Value::Object(answers)) => answers.clone(),
        _ => {
            return Err(format!(
                "the submit response has no object field `{}`",
                fields.answers
            ));
        }
    };
    let submitted_at = object
        .get(&fields.submitted_at)
        .and_then(Value::as_str)
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        .map(|t| to_proto_timestamp(&t));
    let revision = match (
        revision(object.get(&fields.revision), &fields.revision),
        event,
    ) {
        (Ok(Some(revision)), _) => revision,
        // Only edits need an order: a creation's revision is kept when it reads, never an
        // error (a backend may well have a `revision` of its own meaning).
        (_, pb::SubmissionEvent::Created) => 0,
        (Err(reason), _) => return Err(reason),
        // Without the backend's revision, the time the layer saw the edit.
        (Ok(None), _) => u64::try_from(chrono::Utc::now().timestamp_micros()).unwrap_or(0),
    };
    Ok(pb::ProcessRequest {
        form_id: text(&fields.form_id)?,
        submission_id: text(&fields.submission_id)?,
        answers: Some(to_proto_struct(answers)),
        submitted_at,
        metadata: metadata.clone(),
        event: event.into(),
        revision,
    })
}

/// The revision in a response body's `field`: a whole number, or an RFC 3339 time in
/// microseconds; `None` when absent.
fn revision(value: Option<&Value>, field: &str) -> Result<Option<u64>, String> {
    let unreadable = || {
        format!(
            "the submit response's `{field}` is neither a whole number ≥ 0 nor an RFC 3339 time"
        )
    };
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n.as_u64().map(Some).ok_or_else(unreadable),
        Some(Value::String(s)) => chrono::DateTime::parse_from_rfc3339(s)
            .ok()
            .and_then(|t| u64::try_from(t.timestamp_micros()).ok())
            .map(Some)
            .ok_or_else(unreadable),
        Some(_) => Err(unreadable()),
    }
}

/// Why one `Process` call failed.
enum CallError {
    Status(tonic::Status),
    TimedOut(Duration),
}

impl Caller {
    /// What the submit response says of a failed call; the call is retried in the
    /// background (with the request `request` builds again) when another try may work.
    fn failed(
        self,
        error: &CallError,
        request: impl FnOnce() -> Option<pb::ProcessRequest>,
    ) -> Value {
        let reason = describe(error);
        if !self.retries.takes(&error.failure()) {
            return failed(reason);
        }
        let Some(request) = request() else {
            return failed(reason);
        };
        let Caller {
            client,
            settings,
            retries,
        } = self;
        retries.retry(request, move |request| {
            let (client, settings) = (client.clone(), settings.clone());
            async move {
                send(client, request, &settings)
                    .await
                    .map(drop)
                    .map_err(|error| error.failure())
            }
        });
        failed(format!("{reason}; the layer retries it in the background"))
    }
}

impl CallError {
    fn failure(&self) -> Failure {
        match self {
            CallError::Status(status) => Failure::of(status.code()),
            CallError::TimedOut(_) => Failure::Transient,
        }
    }
}

/// One `Process` call under the layer's deadline, with its token.
async fn send(
    mut client: PostSubmissionClient<Channel>,
    request: pb::ProcessRequest,
    settings: &Settings,
) -> Result<pb::ProcessResponse, CallError> {
    let deadline = settings.deadline;
    let mut request = tonic::Request::new(request);
    // Sent as `grpc-timeout` so the proxy stops working on a call nobody waits for.
    request.set_timeout(deadline);
    if let Some(bearer) = &settings.bearer {
        request
            .metadata_mut()
            .insert("authorization", bearer.clone());
    }
    match tokio::time::timeout(deadline, client.process(request)).await {
        Ok(Ok(reply)) => Ok(reply.into_inner()),
        Ok(Err(status)) => Err(CallError::Status(status)),
        Err(_) => Err(CallError::TimedOut(deadline)),
    }
}

/// What the submit response says of a failed call; logged, a refused token at ERROR.
fn describe(error: &CallError) -> String {
    match error {
        CallError::Status(status)
            if matches!(
                status.code(),
                tonic::Code::Unauthenticated | tonic::Code::PermissionDenied
            ) =>
        {
            tracing::error!(code = ?status.code(), message = status.message(),
                "the postsub proxy refused this backend's token");
            format!(
                "post-submission tasks did not run: the postsub proxy refused the token: {} ({:?})",
                status.message(),
                status.code()
            )
        }
        CallError::Status(status) => {
            tracing::warn!(code = ?status.code(), message = status.message(), "Process failed");
            format!(
                "post-submission tasks did not run: {} ({:?})",
                status.message(),
                status.code()
            )
        }
        CallError::TimedOut(deadline) => {
            tracing::warn!(?deadline, "Process timed out");
            format!(
                "post-submission tasks did not run: the postsub proxy did not answer within {deadline:?}"
            )
        }
    }
}

fn failed(reason: String) -> Value {
    json!({"sync_results": [], "jobs": [], "error": reason})
}

fn reply_to_json(reply: pb::ProcessResponse) -> Value {
    let sync_results: Vec<Value> = reply
        .sync_results
        .into_iter()
        .map(|result| {
            let status = match result.status() {
                pb::SyncStatus::Ok => "ok",
                pb::SyncStatus::Flagged => "flagged",
                pb::SyncStatus::Failed => "failed",
                pb::SyncStatus::TimedOut => "timed_out",
                pb::SyncStatus::Unspecified => "unspecified",
            };
            let flags: Vec<Value> = result
                .flags
                .into_iter()
                .map(|f| json!({"field": f.field, "rule": f.rule, "message": f.message}))
                .collect();
            let mut entry = json!({
                "run_id": result.run_id,
                "binding_id": result.binding_id,
                "name": result.name,
                "kind": result.kind,
                "status": status,
                "flags": flags,
                "output": result.output.map_or(Value::Null, from_proto_value),
            });
            if !result.error.is_empty() {
                entry["error"] = Value::String(result.error);
            }
            entry
        })
        .collect();
    let jobs: Vec<Value> = reply
        .jobs
        .into_iter()
        .map(|job| {
            json!({"run_id": job.run_id, "binding_id": job.binding_id, "name": job.name, "kind": job.kind})
        })
        .collect();
    json!({"sync_results": sync_results, "jobs": jobs})
}
