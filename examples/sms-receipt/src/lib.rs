//! The `sms_receipt` task kind: texts the respondent a receipt through a Twilio-compatible
//! REST API, a worked example of a task crate (docs/writing-a-task.md walks through it).
//!
//! Config:
//! ```json
//! {"phone_answer": "phone", "from": "+15550001111",
//!  "body": "Thanks {{name}}! Your receipt: {{submission_id}}",
//!  "account_sid": "AC…", "auth_token": "…", "base_url": "https://api.twilio.com"}
//! ```
//! It sends `POST {base_url}/2010-04-01/Accounts/{account_sid}/Messages.json` (form-encoded
//! `To`, `From`, `Body`, basic auth). 429, 5xx, timeouts and connection errors are retried;
//! any other 4xx (a bad number, say) fails the run for good.
//!
//! **Never twice for one run.** The API takes no idempotency key, so the task keeps what it
//! did in the binding's task state, keyed by the run id: before sending it notes that it is
//! sending; after Twilio's answer it notes the message's sid. An attempt that finds the sid
//! is done at once. One that finds only the note (an earlier attempt died, or its answer
//! was lost, after a send that may have happened) first lists the messages sent to that
//! number from that sender and takes a message with the same body as its own; the default
//! body names the submission id, which makes every body unique.

mod template;

use std::time::Duration;

use async_trait::async_trait;
use postsub_tasks::{
    ConfigError, Mode, Outcome, RunContext, Submission, TargetPolicy, TaskBase, TaskError, outbound,
};
use reqwest::Url;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

pub use template::Template;

/// How long one call to the API may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The `sms_receipt` task kind; one HTTP client for every binding.
#[derive(Debug, Clone)]
pub struct SmsReceipt {
    client: reqwest::Client,
    targets: TargetPolicy,
}

impl SmsReceipt {
    /// The kind, its calls reaching what `targets` allows (the operator's setting).
    pub fn new(targets: &TargetPolicy) -> Self {
        Self {
            client: targets.http_client(),
            targets: targets.clone(),
        }
    }
}

/// An `sms_receipt` binding's config.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "sms_receipt config")]
struct ConfigSpec {
    /// The answer holding the respondent's phone number, in E.164 (`+15550100`).
    phone_answer: String,
    /// The sending number (or messaging service sid).
    from: String,
    /// The message, with `{{answer_key}}` and `{{submission_id}}` placeholders.
    #[serde(default = "default_body")]
    body: String,
    /// The account sid (`AC…`).
    account_sid: String,
    /// The account's auth token; shown masked.
    #[schemars(extend("writeOnly" = true))]
    auth_token: String,
    /// The API's base URL (default `https://api.twilio.com`).
    #[serde(default = "default_base_url")]
    #[schemars(url)]
    base_url: String,
}

fn default_body() -> String {
    "Thank you! We received your answers (receipt {{submission_id}}).".into()
}

fn default_base_url() -> String {
    "https://api.twilio.com".into()
}

/// A parsed `sms_receipt` config.
pub struct SmsConfig {
    phone_answer: String,
    from: String,
    body: Template,
    account_sid: String,
    auth_token: String,
    messages_url: Url,
}

impl std::fmt::Debug for SmsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The auth token sends messages on the account's bill: never print it.
        f.debug_struct("SmsConfig")
            .field("messages_url", &self.messages_url.as_str())
            .finish_non_exhaustive()
    }
}

/// What Twilio answers about one message.
#[derive(Debug, Deserialize)]
struct MessageAnswer {
    sid: String,
    #[serde(default)]
    body: String,
}

#[derive(Debug, Deserialize)]
struct MessageList {
    messages: Vec<MessageAnswer>,
}

#[async_trait]
impl TaskBase for SmsReceipt {
    type Config = SmsConfig;

    fn kind(&self) -> &'static str {
        "sms_receipt"
    }

    fn description(&self) -> &'static str {
        "Texts the respondent a receipt through a Twilio-compatible API, once per submission"
    }

    fn modes(&self) -> &'static [Mode] {
        &[Mode::Async]
    }

    fn config_schema(&self) -> Value {
        postsub_tasks::schema_for::<ConfigSpec>()
    }

    fn parse_config(&self, config: &Value) -> Result<SmsConfig, ConfigError> {
        let spec = ConfigError::parse::<ConfigSpec>(config)?;
        for (path, value) in [
            ("phone_answer", &spec.phone_answer),
            ("from", &spec.from),
            ("account_sid", &spec.account_sid),
            ("auth_token", &spec.auth_token),
        ] {
            if value.trim().is_empty() {
                return Err(ConfigError::at(path, "cannot be empty"));
            }
        }
        let base = Url::parse(&spec.base_url)
            .ok()
            .filter(|url| matches!(url.scheme(), "http" | "https"))
            .ok_or_else(|| {
                ConfigError::at(
                    "base_url",
                    format_args!("`{}` is not an http(s) URL", spec.base_url),
                )
            })?;
        self.targets
            .check_url(&base)
            .map_err(|refused| ConfigError::at("base_url", refused))?;
        let path = format!(
            "{}/2010-04-01/Accounts/{}/Messages.json",
            base.path().trim_end_matches('/'),
            spec.account_sid
        );
        let mut messages_url = base;
        messages_url.set_path(&path);
        Ok(SmsConfig {
            phone_answer: spec.phone_answer,
            from: spec.from,
            body: Template::parse(&spec.body)?,
            account_sid: spec.account_sid,
            auth_token: spec.auth_token,
            messages_url,
        })
    }

    fn redact_config(&self, config: &Value) -> Value {
        let mut config = config.clone();
        if let Some(token) = config.get_mut("auth_token") {
            *token = Value::String("********".into());
        }
        config
    }

    async fn run(
        &self,
        config: &SmsConfig,
        context: &RunContext,
        submission: &Submission,
    ) -> Result<Outcome, TaskError> {
        let to = match submission.answers.get(&config.phone_answer) {
            Some(Value::String(phone)) if !phone.trim().is_empty() => phone.trim(),
            _ => {
                return Err(TaskError::fatal(format!(
                    "no phone number: the answer `{}` is missing or not text",
                    config.phone_answer
                )));
            }
        };
        let body = config.body.render(submission)?;
        let sent_key = format!("sms/{}/sid", context.run_id);
        if let Some(sid) = state_get(context, &sent_key).await? {
            return Ok(sent(&sid, "sent by an earlier attempt"));
        }
        if self.may_have_sent(context).await?
            && let Some(sid) = self.find_sent(config, to, &body).await?
        {
            state_put(context, &sent_key, &sid).await?;
            return Ok(sent(
                &sid,
                "found: sent by an earlier attempt that was not recorded",
            ));
        }
        let sid = self.send(config, to, &body).await?;
        state_put(context, &sent_key, &sid).await?;
        Ok(sent(&sid, "sent"))
    }
}

impl SmsReceipt {
    /// Notes that this run is sending; true when an earlier attempt had noted it already,
    /// so its message may have gone out.
    async fn may_have_sent(&self, context: &RunContext) -> Result<bool, TaskError> {
        let key = format!("sms/{}/sending", context.run_id);
        let mine = json!({"attempt": context.attempt, "nonce": uuid::Uuid::new_v4()});
        let stored = context
            .state
            .put_if_absent(context.binding_id, &key, mine.clone())
            .await?;
        Ok(stored != mine)
    }

    async fn send(&self, config: &SmsConfig, to: &str, body: &str) -> Result<String, TaskError> {
        let request = self
            .client
            .post(config.messages_url.clone())
            .basic_auth(&config.account_sid, Some(&config.auth_token))
            .form(&[("To", to), ("From", &config.from), ("Body", body)]);
        let message: MessageAnswer = self.call("POST", request, &config.messages_url).await?;
        Ok(message.sid)
    }

    /// The sid of a message with `body` sent to `to` from the binding's number, if any.
    async fn find_sent(
        &self,
        config: &SmsConfig,
        to: &str,
        body: &str,
    ) -> Result<Option<String>, TaskError> {
        let request = self
            .client
            .get(config.messages_url.clone())
            .basic_auth(&config.account_sid, Some(&config.auth_token))
            .query(&[("To", to), ("From", &config.from)]);
        let list: MessageList = self.call("GET", request, &config.messages_url).await?;
        Ok(list
            .messages
            .into_iter()
            .find(|message| message.body == body)
            .map(|message| message.sid))
    }

    /// Sends `request` (a `method` call to `url`) and reads its JSON answer; the error says
    /// whether to retry (429, 5xx, a timeout or a broken connection do).
    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        method: &str,
        request: reqwest::RequestBuilder,
        url: &Url,
    ) -> Result<T, TaskError> {
        let response = request
            .timeout(TIMEOUT)
            .send()
            .await
            .map_err(|err| outbound::send_error(method, url, &err))?;
        let status = response.status();
        let retry_after = outbound::retry_after(&response);
        let text = response
            .text()
            .await
            .map_err(|err| TaskError::retryable(format!("{url}: reading the answer: {err}")))?;
        if status.is_success() {
            return serde_json::from_str(&text).map_err(|err| {
                TaskError::fatal(format!("{url} answered {status} with no message: {err}"))
            });
        }
        // Twilio's errors say what is wrong in `message` (a bad number: code 21211).
        let said: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        let detail = said
            .get("message")
            .and_then(Value::as_str)
            .map_or_else(|| said.to_string(), str::to_owned);
        let message = format!("{url} answered {status}: {detail}");
        Err(outbound::error(
            outbound::status_retries(status),
            message,
            retry_after,
        ))
    }
}

fn sent(sid: &str, how: &str) -> Outcome {
    Outcome {
        output: json!({"message_sid": sid, "delivery": how}),
        flags: Vec::new(),
    }
}

async fn state_get(context: &RunContext, key: &str) -> Result<Option<String>, TaskError> {
    let value = context.state.get(context.binding_id, key).await?;
    Ok(value.and_then(|value| value.as_str().map(str::to_owned)))
}

async fn state_put(context: &RunContext, key: &str, sid: &str) -> Result<(), TaskError> {
    context
        .state
        .put_if_absent(context.binding_id, key, Value::String(sid.to_owned()))
        .await?;
    Ok(())
}
