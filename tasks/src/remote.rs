//! The `remote` task: the work is done by a service of your own, in any language, behind a
//! signed HTTP call. Sync (its flags go back with the submit response, like `validate`'s) or
//! async (retried by the worker).
//!
//! Config: `{"url": "https://…", "secret": "whsec_<base64>"}`, optionally `"timeout": "10s"`
//! and `"settings": {…}`, passed to the service as they are.
//!
//! The request (`POST url`, signed per Standard Webhooks like the `webhook` kind's, with
//! `webhook-id` = the run id, the idempotency key):
//! `{"type": "task.run", "run_id", "attempt", "binding": {"id", "name", "form_id"},
//! "settings", "submission": {"form_id", "submission_id", "answers", "submitted_at",
//! "metadata"}}`.
//!
//! The answer: 200 with `{"status": "ok" | "flagged", "flags": [{"field", "rule",
//! "message"}], "output": …}`. An error is `{"error": "…", "retryable": bool}`. What
//! decides: a body saying `"retryable": false` or any 4xx (but 429) is fatal; 5xx, 429
//! (honouring `Retry-After`), `"retryable": true`, a timeout and a connection error are
//! retryable. A body that is not JSON, an unknown `status`, a flag without `field` or a body
//! over 1 MiB is fatal, quoting the first 200 bytes. docs/writing-a-task.md is the spec.

use std::time::Duration;

use async_trait::async_trait;
use reqwest::{StatusCode, Url};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::{
    ConfigError, Flag, Outcome, RunContext, Submission, TargetPolicy, TaskBase, TaskError,
    outbound::{self, BodyError},
    webhook,
};

/// Largest answer read from a task service.
const MAX_ANSWER_BYTES: usize = 1024 * 1024;

/// The `remote` task kind; holds one HTTP client (connection pool) for all bindings.
#[derive(Debug, Clone)]
pub struct Remote {
    client: reqwest::Client,
    targets: TargetPolicy,
}

impl Remote {
    /// The task kind, calling the addresses `targets` allows (see [`crate::targets`]).
    pub fn with_targets(targets: TargetPolicy) -> Self {
        Self {
            client: outbound::client(&targets),
            targets,
        }
    }
}

/// A `remote` binding's config.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "remote config")]
struct ConfigSpec {
    /// The task service's URL: http(s), a public address unless the operator allows more.
    #[schemars(url)]
    url: String,
    /// The Standard Webhooks secret the calls are signed with, `whsec_` and base64; shown
    /// masked.
    #[schemars(regex(pattern = r"^whsec_[A-Za-z0-9+/]+=*$"), extend("writeOnly" = true))]
    secret: String,
    /// How long one call may take, whole seconds like `10s` (default `10s`; a sync binding's
    /// own timeout still applies).
    #[schemars(regex(pattern = r"^[1-9][0-9]*s$"))]
    timeout: Option<String>,
    /// Passed to the service as `settings`, untouched.
    #[serde(default)]
    settings: Map<String, Value>,
}

/// A parsed `remote` config.
pub struct RemoteConfig {
    url: Url,
    key: Vec<u8>,
    timeout: Duration,
    settings: Value,
}

impl std::fmt::Debug for RemoteConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key signs every call: never print it.
        f.debug_struct("RemoteConfig")
            .field("url", &self.url.as_str())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// What a task service answers.
#[derive(Debug, Deserialize)]
struct Answer {
    status: Option<String>,
    #[serde(default)]
    flags: Vec<AnswerFlag>,
    #[serde(default)]
    output: Value,
    error: Option<String>,
    retryable: Option<bool>,
}

#[derive(Debug, Deserialize)]
struct AnswerFlag {
    field: Option<String>,
    #[serde(default)]
    rule: String,
    #[serde(default)]
    message: String,
}

#[async_trait]
impl TaskBase for Remote {
    type Config = RemoteConfig;

    fn kind(&self) -> &'static str {
        "remote"
    }

    fn description(&self) -> &'static str {
        "Runs the task in a service of your own, any language, over a signed HTTP call"
    }

    fn config_schema(&self) -> Value {
        crate::schema_for::<ConfigSpec>()
    }

    fn parse_config(&self, config: &Value) -> Result<RemoteConfig, ConfigError> {
        let spec = ConfigError::parse::<ConfigSpec>(config)?;
        Ok(RemoteConfig {
            url: outbound::target_url(&spec.url, &self.targets)?,
            key: webhook::signing_key(&spec.secret)
                .map_err(|err| ConfigError::at("secret", err))?,
            timeout: outbound::timeout(spec.timeout.as_deref())?,
            settings: Value::Object(spec.settings),
        })
    }

    fn redact_config(&self, config: &Value) -> Value {
        webhook::redact_secret(config)
    }

    async fn run(
        &self,
        config: &RemoteConfig,
        context: &RunContext,
        submission: &Submission,
    ) -> Result<Outcome, TaskError> {
        let body = json!({
            "type": "task.run",
            "run_id": context.run_id,
            "attempt": context.attempt,
            "binding": {
                "id": context.binding_id,
                "name": context.binding_name,
                "form_id": submission.form_id,
            },
            "settings": config.settings,
            "submission": submission,
        })
        .to_string();
        let request = self.client.post(config.url.clone()).timeout(config.timeout);
        let response = webhook::signed(request, &config.key, &context.run_id.to_string(), body)
            .send()
            .await
            .map_err(|err| outbound::send_error("POST", &config.url, &err))?;
        let status = response.status();
        let retry_after = outbound::retry_after(&response);
        let body = match outbound::body_within(response, MAX_ANSWER_BYTES).await {
            Ok(body) => body,
            Err(BodyError::TooLarge) => {
                return Err(TaskError::fatal(format!(
                    "POST {} answered {status} with a body over {MAX_ANSWER_BYTES} bytes",
                    config.url
                )));
            }
            Err(BodyError::Read(err)) => {
                return Err(outbound::send_error("POST", &config.url, &err));
            }
        };
        read_answer(&config.url, status, retry_after, &body)
    }
}

/// The outcome or error an answer means (see the module's documentation).
fn read_answer(
    url: &Url,
    status: StatusCode,
    retry_after: Option<Duration>,
    body: &[u8],
) -> Result<Outcome, TaskError> {
    let said = |what: &str| {
        format!(
            "POST {url} answered {status}{what}: {}",
            outbound::excerpt(body)
        )
    };
    let answer = serde_json::from_slice::<Answer>(body);
    let retryable_status = outbound::status_retries(status);
    if !status.is_success() {
        // The body's `retryable` overrides what the status suggests; its `error` is the
        // message when it has one.
        let (message, retryable) = match &answer {
            Ok(Answer {
                error: Some(error),
                retryable,
                ..
            }) => (
                format!("POST {url} answered {status}: {error}"),
                retryable.unwrap_or(retryable_status),
            ),
            Ok(Answer { retryable, .. }) => (said(""), retryable.unwrap_or(retryable_status)),
            Err(_) => (said(""), retryable_status),
        };
        return Err(outbound::error(retryable, message, retry_after));
    }
    let answer =
        answer.map_err(|err| TaskError::fatal(said(&format!(" with no answer ({err})"))))?;
    if let Some(error) = answer.error {
        let message = format!("POST {url}: the task failed: {error}");
        return Err(outbound::error(
            answer.retryable == Some(true),
            message,
            retry_after,
        ));
    }
    match answer.status.as_deref() {
        Some("ok" | "flagged") => {}
        Some(other) => {
            return Err(TaskError::fatal(said(&format!(
                " with status `{other}`, not `ok` or `flagged`"
            ))));
        }
        None => return Err(TaskError::fatal(said(" with no `status`"))),
    }
    let flags = answer
        .flags
        .into_iter()
        .enumerate()
        .map(|(index, flag)| match flag.field {
            Some(field) => Ok(Flag {
                field,
                rule: flag.rule,
                message: flag.message,
            }),
            None => Err(TaskError::fatal(said(&format!(
                " with flags[{index}] lacking `field`"
            )))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Outcome {
        output: answer.output,
        flags,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(status: u16, body: &str) -> Result<Outcome, TaskError> {
        let url = Url::parse("https://task.example/run").unwrap();
        read_answer(
            &url,
            StatusCode::from_u16(status).unwrap(),
            Some(Duration::from_secs(7)),
            body.as_bytes(),
        )
    }

    #[test]
    fn answers_are_read_as_the_protocol_says() {
        let outcome = read(
            200,
            r#"{"status": "flagged", "flags": [{"field": "city", "rule": "known_city", "message": "?"}], "output": {"city": null}}"#,
        )
        .unwrap();
        assert_eq!(outcome.flags[0].field, "city");
        assert_eq!(outcome.output, json!({"city": null}));
        assert_eq!(
            read(200, r#"{"status": "ok"}"#).unwrap().output,
            Value::Null
        );

        let fatal = |status, body| read(status, body).unwrap_err();
        assert!(!fatal(400, "bad number").is_retryable());
        assert!(
            fatal(400, "bad number")
                .to_string()
                .ends_with("answered 400 Bad Request: bad number")
        );
        assert!(fatal(200, "<html>").to_string().contains("with no answer"));
        assert!(
            fatal(200, r#"{"status": "maybe"}"#)
                .to_string()
                .contains("status `maybe`")
        );
        assert!(
            fatal(200, r#"{"flags": []}"#)
                .to_string()
                .contains("no `status`")
        );
        assert!(
            fatal(200, r#"{"status": "flagged", "flags": [{"rule": "r"}]}"#)
                .to_string()
                .contains("flags[0] lacking `field`")
        );
        assert!(!fatal(503, r#"{"error": "config", "retryable": false}"#).is_retryable());
        assert!(!fatal(200, r#"{"error": "no such city table"}"#).is_retryable());

        for (status, body) in [
            (500, "oops"),
            (429, ""),
            (200, r#"{"error": "busy", "retryable": true}"#),
            (400, r#"{"error": "later", "retryable": true}"#),
        ] {
            match read(status, body).unwrap_err() {
                TaskError::Retryable { retry_after, .. } => {
                    assert_eq!(retry_after, Some(Duration::from_secs(7)))
                }
                fatal => panic!("{status} {body}: {fatal:?}"),
            }
        }
    }

    #[test]
    fn bad_configs_name_the_path() {
        let remote = Remote::with_targets(TargetPolicy::public_only());
        let err = |config: Value| remote.parse_config(&config).err().unwrap().0;
        assert!(err(json!({"url": "ftp://x/", "secret": "whsec_c2VjcmV0"})).starts_with("url: "));
        assert!(
            err(json!({"url": "http://127.0.0.1/", "secret": "whsec_c2VjcmV0"}))
                .contains("127.0.0.0/8 (loopback)")
        );
        assert!(
            err(json!({"url": "https://x.example/", "secret": "plain"})).starts_with("secret: ")
        );
        assert!(
            err(json!({"url": "https://x.example/", "secret": "whsec_c2VjcmV0", "settings": 3}))
                .starts_with("settings: invalid type")
        );
        let redacted =
            remote.redact_config(&json!({"url": "https://x.example/", "secret": "whsec_c2VjcmV0"}));
        assert_eq!(redacted["secret"], "whsec_********");
    }
}
