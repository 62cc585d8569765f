//! The `webhook` task: a signed HTTP POST of the submission, following Standard Webhooks.
//!
//! Config: `{"url": "https://…", "secret": "whsec_<base64>"}`, optionally `"timeout": "10s"`.
//!
//! The body is `{"type": "submission.created", "timestamp": …, "data": {form_id,
//! submission_id, answers, submitted_at, metadata}}`. Headers: `webhook-id` (the run id:
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
use reqwest::{StatusCode, Url, header};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::Sha256;

use crate::{
    ConfigError, Mode, Outcome, RunContext, Submission, TargetPolicy, TaskBase, TaskError,
};

const SECRET_PREFIX: &str = "whsec_";
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

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
        crate::install_crypto_provider();
        let client = reqwest::Client::builder()
            .user_agent(concat!("postsub/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(5))
            .dns_resolver(targets.resolver())
            // A redirect could lead anywhere, the private network included: a webhook
            // answers the URL it was given, and a 3xx is its answer.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("the HTTP client has a crypto provider and no bad settings");
        Self { client, targets }
    }
}

impl Default for Webhook {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigSpec {
    url: String,
    secret: String,
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

    fn parse_config(&self, config: &Value) -> Result<WebhookConfig, ConfigError> {
        let spec = ConfigError::parse::<ConfigSpec>(config)?;
        let url = Url::parse(&spec.url)
            .map_err(|err| ConfigError(format!("url `{}` does not parse: {err}", spec.url)))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(ConfigError(format!(
                "url `{url}` must start with http:// or https://"
            )));
        }
        self.targets
            .check_url(&url)
            .map_err(|refused| ConfigError(format!("url `{url}`: {refused}")))?;
        let key = signing_key(&spec.secret).map_err(ConfigError)?;
        let timeout = match spec.timeout.as_deref() {
            None => DEFAULT_TIMEOUT,
            Some(text) => parse_seconds(text).ok_or_else(|| {
                ConfigError(format!(
                    "timeout `{text}` does not parse: write whole seconds like `10s`"
                ))
            })?,
        };
        Ok(WebhookConfig { url, key, timeout })
    }

    fn redact_config(&self, config: &Value) -> Value {
        let mut config = config.clone();
        if let Some(secret) = config.get_mut("secret") {
            *secret = Value::String(format!("{SECRET_PREFIX}********"));
        }
        config
    }

    async fn run(
        &self,
        config: &WebhookConfig,
        context: &RunContext,
        submission: &Submission,
    ) -> Result<Outcome, TaskError> {
        let body = json!({
            "type": "submission.created",
            "timestamp": chrono::Utc::now().to_rfc3339(),
            "data": submission,
        })
        .to_string();
        let request = self.client.post(config.url.clone()).timeout(config.timeout);
        let response = signed(request, &config.key, &context.run_id.to_string(), body)
            .send()
            .await
            .map_err(|err| match crate::targets::refused_in(&err) {
                // Another attempt would be refused the same way.
                Some(refused) => {
                    TaskError::fatal(format!("POST {} refused: {refused}", config.url))
                }
                None => TaskError::retryable(format!(
                    "POST {} failed: {}",
                    config.url,
                    crate::error_chain(&err)
                )),
            })?;
        let status = response.status();
        if status.is_success() {
            return Ok(Outcome {
                output: json!({"status": status.as_u16()}),
                flags: Vec::new(),
            });
        }
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let text = response.text().await.unwrap_or_default();
        let message = format!(
            "POST {} answered {status}: {}",
            config.url,
            text.chars().take(200).collect::<String>()
        );
        if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            Err(TaskError::Retryable {
                message,
                retry_after,
            })
        } else {
            Err(TaskError::fatal(message))
        }
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

fn parse_seconds(text: &str) -> Option<Duration> {
    let seconds: u64 = text.strip_suffix('s')?.parse().ok()?;
    (seconds > 0).then(|| Duration::from_secs(seconds))
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
                .contains("timeout `soon`")
        );
    }
}
