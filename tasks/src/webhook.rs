//! The `webhook` task: a signed HTTP POST of the submission, following Standard Webhooks.
//!
//! Config: `{"url": "https://…", "secret": "whsec_<base64>"}`, optionally `"timeout": "10s"`.
//!
//! The body is `{"type": "submission.created", "timestamp": …, "data": {form_id,
//! submission_id, answers, submitted_at, metadata}}`; for an edit or a deletion (a binding
//! taking those events) the type is `submission.updated` / `submission.deleted` and `data`
//! also holds `event` and `revision`. Headers: `webhook-id` (the run id:
//! the same on every attempt, so a receiver can drop repeats), `webhook-timestamp` (Unix
//! seconds) and `webhook-signature` (`v1,` + base64 HMAC-SHA256 of `id.timestamp.body` keyed
//! with the decoded secret).
//!
//! 2xx succeeds. 429 and 5xx are retryable (honouring `Retry-After` in seconds), as are
//! timeouts and connection errors; any other status fails the run at once.
//!
//! The admin API shows the secret masked; an update must give it again.

use std::time::Duration;

use async_trait::async_trait;
use base64::{Engine as _, engine::general_purpose::STANDARD as BASE64};
use hmac::{Hmac, Mac};
use reqwest::{Url, header};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::Sha256;

use crate::{
    ConfigError, Mode, Outcome, RunContext, Submission, TargetPolicy, TaskBase, TaskError, outbound,
};

const SECRET_PREFIX: &str = "whsec_";

/// The `webhook` task kind; holds one HTTP client (connection pool) for all bindings.
#[derive(Debug, Clone)]
pub struct Webhook {
    client: reqwest::Client,
    targets: TargetPolicy,
}

impl Webhook {
    /// The task kind, calling public addresses only.
    pub fn new() -> Self {
        Self::with_targets(TargetPolicy::public_only())
    }

    /// The task kind, calling the addresses `targets` allows (see [`crate::targets`]).
    pub fn with_targets(targets: TargetPolicy) -> Self {
        Self {
            client: outbound::client(&targets),
            targets,
        }
    }
}

impl Default for Webhook {
    fn default() -> Self {
        Self::new()
    }
}

/// A `webhook` binding's config.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "webhook config")]
struct ConfigSpec {
    /// Where to POST: http(s), a public address unless the operator allows more.
    #[schemars(url)]
    url: String,
    /// The Standard Webhooks signing secret, `whsec_` and base64; shown masked.
    #[schemars(regex(pattern = r"^whsec_[A-Za-z0-9+/]+=*$"), extend("writeOnly" = true))]
    secret: String,
    /// How long one delivery may take, whole seconds like `10s` (default `10s`).
    #[schemars(regex(pattern = r"^[1-9][0-9]*s$"))]
    timeout: Option<String>,
}

/// A parsed `webhook` config.
#[derive(Clone)]
pub struct WebhookConfig {
    url: Url,
    key: Vec<u8>,
    timeout: Duration,
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key signs every delivery: never print it.
        f.debug_struct("WebhookConfig")
            .field("url", &self.url.as_str())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl TaskBase for Webhook {
    type Config = WebhookConfig;

    fn kind(&self) -> &'static str {
        "webhook"
    }

    fn description(&self) -> &'static str {
        "POSTs the submission to a URL, signed per Standard Webhooks"
    }

    fn modes(&self) -> &'static [Mode] {
        &[Mode::Async]
    }

    fn config_schema(&self) -> Value {
        crate::schema_for::<ConfigSpec>()
    }

    fn parse_config(&self, config: &Value) -> Result<WebhookConfig, ConfigError> {
        let spec = ConfigError::parse::<ConfigSpec>(config)?;
        Ok(WebhookConfig {
            url: outbound::target_url(&spec.url, &self.targets)?,
            key: signing_key(&spec.secret).map_err(|err| ConfigError::at("secret", err))?,
            timeout: outbound::timeout(spec.timeout.as_deref())?,
        })
    }

    fn redact_config(&self, config: &Value) -> Value {
        redact_secret(config)
    }

    async fn run(
        &self,
        config: &WebhookConfig,
        context: &RunContext,
        submission: &Submission,
    ) -> Result<Outcome, TaskError> {
        let body = json!({
            "type": format!("submission.{}", submission.event),
            "timestamp": chrono::Utc::now().to_rfc3339(),
            "data": submission,
        })
        .to_string();
        let request = self.client.post(config.url.clone()).timeout(config.timeout);
        let response = signed(request, &config.key, &context.run_id.to_string(), body)
            .send()
            .await
            .map_err(|err| outbound::send_error("POST", &config.url, &err))?;
        let status = response.status();
        if status.is_success() {
            return Ok(Outcome {
                output: json!({"status": status.as_u16()}),
                flags: Vec::new(),
            });
        }
        let retry_after = outbound::retry_after(&response);
        let text = response.bytes().await.unwrap_or_default();
        let message = format!(
            "POST {} answered {status}: {}",
            config.url,
            outbound::excerpt(&text)
        );
        Err(outbound::error(
            outbound::status_retries(status),
            message,
            retry_after,
        ))
    }
}

/// The HMAC key of a Standard Webhooks secret (`whsec_<base64>`), or why it is not one.
pub fn signing_key(secret: &str) -> Result<Vec<u8>, String> {
    let encoded = secret
        .strip_prefix(SECRET_PREFIX)
        .ok_or("secret must look like `whsec_<base64>` (Standard Webhooks)")?;
    let key = BASE64
        .decode(encoded)
        .map_err(|err| format!("secret after `whsec_` is not base64: {err}"))?;
    if key.is_empty() {
        return Err("secret is empty".into());
    }
    Ok(key)
}

/// `request` carrying `body` (JSON) as the Standard Webhooks message `id`, signed with
/// `key` (see [`signing_key`]): `webhook-id`, `webhook-timestamp`, `webhook-signature`.
pub fn signed(
    request: reqwest::RequestBuilder,
    key: &[u8],
    id: &str,
    body: String,
) -> reqwest::RequestBuilder {
    let timestamp = chrono::Utc::now().timestamp();
    let signature = sign(key, id, timestamp, &body);
    request
        .header(header::CONTENT_TYPE, "application/json")
        .header("webhook-id", id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(body)
}

/// The `webhook-signature` value of a message: `v1,` and the base64 HMAC-SHA256 of
/// `id.timestamp.body` keyed with `key`.
fn sign(key: &[u8], id: &str, timestamp: i64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()))
}

/// `config` with its `secret` masked, as the admin API shows it.
pub(crate) fn redact_secret(config: &Value) -> Value {
    let mut config = config.clone();
    if let Some(secret) = config.get_mut("secret") {
        *secret = Value::String(format!("{SECRET_PREFIX}********"));
    }
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_the_standard_webhooks_example() {
        // The example from the Standard Webhooks specification.
        let key = BASE64.decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = r#"{"test": 2432232314}"#;
        assert_eq!(
            sign(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn bad_configs_are_refused_with_the_reason() {
        let err = |config: Value| Webhook::new().parse_config(&config).err().unwrap().0;
        assert!(
            err(json!({"url": "not a url", "secret": "whsec_c2VjcmV0"})).contains("does not parse")
        );
        assert!(err(json!({"url": "ftp://x/", "secret": "whsec_c2VjcmV0"})).contains("http://"));
        assert!(err(json!({"url": "http://x/", "secret": "c2VjcmV0"})).contains("whsec_"));
        assert!(err(json!({"url": "http://x/", "secret": "whsec_!!"})).contains("not base64"));
        assert!(err(json!({"url": "http://x/"})).contains("missing field `secret`"));
        assert!(
            err(json!({"url": "http://x/", "secret": "whsec_c2VjcmV0", "timeout": "soon"}))
                .starts_with("timeout: `soon`")
        );
        assert!(err(json!({"url": "http://x/", "secret": 7})).starts_with("secret: invalid type"));
    }
}
