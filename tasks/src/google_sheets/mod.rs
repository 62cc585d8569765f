//! The `google_sheets` task: every submission becomes a row of a Google Sheet.
//!
//! Config (all optional):
//! ```json
//! {"spreadsheet_id": "1AbC…", "title": "Budget responses", "sheet": "Responses",
//!  "share_with": ["ops@example.org"], "columns": ["email", "age"],
//!  "labels": {"email": "E-mail"}, "credentials_file": "/etc/postsub/sa.json",
//!  "max_writes_per_minute": 50, "batch_rows": 500, "batch_wait": "200ms",
//!  "on_delete": "delete"}
//! ```
//! Without `spreadsheet_id`, the first run creates a spreadsheet named `title` (default
//! "postsub form <form id>"), shares it with `share_with` (Drive permissions, as writer),
//! and keeps its id in the binding's task state, so every later run appends to that one.
//! Row 1 is the header: `submission_id`, `submitted_at`, then answer keys (`columns` first,
//! then new keys as they appear, at the end, sorted); `labels` replace keys in the header.
//!
//! The service-account key is read from `credentials_file`, else from the file named by
//! `GOOGLE_APPLICATION_CREDENTIALS`; it is never logged. Endpoints come from
//! `GOOGLE_SHEETS_BASE_URL` / `GOOGLE_DRIVE_BASE_URL` (see [`Endpoints`]).
//!
//! Exactly one row per submission: a first attempt appends; any later attempt (a retry, or a
//! redelivery after a worker died between the append and the ack) first looks the
//! submission id up in column A and appends only if it is not there.
//!
//! Edits and deletions (a binding whose `events` take `updated` / `deleted`): an edit
//! rewrites the submission's row in place, found by its id in column A, or appends it when
//! absent; a deletion removes the row, or with `"on_delete": "mark"` writes the time into a
//! `deleted_at` column. The binding's task state keeps the newest revision written of each
//! edited submission, so an older edit arriving after a newer one (or after the deletion),
//! and a creation arriving after an edit, change nothing: their runs succeed with
//! `"action": "superseded"`.

mod client;
mod rows;
mod writer;

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use google_drive3::api::Permission;
use google_sheets4::api::{Scope, Sheet, SheetProperties, Spreadsheet, SpreadsheetProperties};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::sync::{OnceCell, mpsc, oneshot};

pub use client::Endpoints;
use client::{Google, RetryAfter, task_error};
use writer::{Change, PendingRow, Revisions, SheetTarget, WriterSettings};

use crate::{ConfigError, Event, Mode, Outcome, RunContext, Submission, TaskBase, TaskError};

/// State key of the spreadsheet a binding created.
const SPREADSHEET_KEY: &str = "spreadsheet_id";
/// State key set once the created spreadsheet is shared with everyone in `share_with`.
const SHARED_KEY: &str = "shared";

/// The `google_sheets` task kind. Holds one client per service-account key and one writer
/// per sheet, shared by all bindings.
pub struct GoogleSheets {
    endpoints: Endpoints,
    clients: tokio::sync::Mutex<HashMap<PathBuf, Arc<Google>>>,
    writers: Mutex<HashMap<SheetTarget, mpsc::Sender<PendingRow>>>,
    /// Held while a binding's spreadsheet is created, so that runs of one binding in this
    /// process create one, even across a reload of the binding (which prepares its config
    /// anew).
    creating: tokio::sync::Mutex<()>,
}

impl GoogleSheets {
    /// The task kind talking to `endpoints`.
    pub fn new(endpoints: Endpoints) -> Self {
        Self {
            endpoints,
            clients: tokio::sync::Mutex::default(),
            writers: Mutex::default(),
            creating: tokio::sync::Mutex::default(),
        }
    }

    /// The task kind talking to the endpoints named in the environment (Google's own by
    /// default).
    pub fn from_env() -> Self {
        Self::new(Endpoints::from_env())
    }

    async fn client(&self, key_path: PathBuf) -> Result<Arc<Google>, TaskError> {
        let mut clients = self.clients.lock().await;
        if let Some(client) = clients.get(&key_path) {
            return Ok(client.clone());
        }
        let client = Arc::new(Google::connect(&self.endpoints, &key_path).await?);
        clients.insert(key_path, client.clone());
        Ok(client)
    }

    fn writer(
        &self,
        google: &Arc<Google>,
        target: SheetTarget,
        config: &SheetsConfig,
    ) -> mpsc::Sender<PendingRow> {
        let mut writers = self.writers.lock().expect("writers lock");
        writers
            .entry(target.clone())
            .or_insert_with(|| {
                writer::spawn(
                    google.clone(),
                    target,
                    WriterSettings {
                        max_rows: config.batch_rows,
                        linger: config.batch_wait,
                        min_interval: Duration::from_secs(60) / config.max_writes_per_minute,
                        columns: config.columns.clone(),
                        labels: config.labels.clone(),
                    },
                )
            })
            .clone()
    }
}

/// A `google_sheets` binding's config; every field is optional.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "google_sheets config")]
struct ConfigSpec {
    /// The spreadsheet to append to (the part of its URL after `/d/`); without it, the
    /// first run creates one and keeps its id in the binding's task state.
    #[schemars(regex(pattern = r"^[A-Za-z0-9_-]+$"))]
    spreadsheet_id: Option<String>,
    /// The name of a created spreadsheet (default "postsub form <form id>").
    title: Option<String>,
    /// The tab rows go to (default "Responses").
    sheet: Option<String>,
    /// E-mail addresses a created spreadsheet is shared with, as writers.
    #[serde(default)]
    share_with: Vec<String>,
    /// Answer keys that come first in the header, in this order.
    #[serde(default)]
    columns: Vec<String>,
    /// Header labels that replace answer keys (`{"email": "E-mail"}`).
    #[serde(default)]
    #[schemars(with = "std::collections::BTreeMap<String, String>")]
    labels: Map<String, Value>,
    /// The service-account key file (default: GOOGLE_APPLICATION_CREDENTIALS).
    credentials_file: Option<PathBuf>,
    /// Most writes per minute to this spreadsheet (default 50; Google allows 60).
    #[schemars(range(min = 1))]
    max_writes_per_minute: Option<u32>,
    /// Most rows one write appends (default 500).
    #[schemars(range(min = 1, max = 10_000))]
    batch_rows: Option<usize>,
    /// How long a row waits for others to share its write, like `200ms` (default).
    batch_wait: Option<String>,
    /// What a deleted submission does to its row (a binding taking `deleted`): `delete` it
    /// (default) or `mark` it, writing the time into a `deleted_at` column.
    #[serde(default)]
    on_delete: OnDelete,
}

/// See [`ConfigSpec::on_delete`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
enum OnDelete {
    #[default]
    Delete,
    Mark,
}

/// A parsed `google_sheets` config, with the spreadsheet it resolved to once known.
pub struct SheetsConfig {
    spreadsheet_id: Option<String>,
    title: Option<String>,
    sheet: String,
    share_with: Vec<String>,
    columns: Vec<String>,
    labels: Map<String, Value>,
    credentials_file: Option<PathBuf>,
    max_writes_per_minute: u32,
    batch_rows: usize,
    batch_wait: Duration,
    on_delete: OnDelete,
    /// The spreadsheet id, once found, made or checked (per config version, so an updated
    /// binding resolves again).
    resolved: OnceCell<String>,
}

#[async_trait]
impl TaskBase for GoogleSheets {
    type Config = SheetsConfig;

    fn kind(&self) -> &'static str {
        "google_sheets"
    }

    fn description(&self) -> &'static str {
        "Appends each submission as a row of a Google Sheet (created and shared on first use); rewrites or removes it on edits and deletes"
    }

    fn modes(&self) -> &'static [Mode] {
        &[Mode::Async]
    }

    fn config_schema(&self) -> Value {
        crate::schema_for::<ConfigSpec>()
    }

    fn parse_config(&self, config: &Value) -> Result<SheetsConfig, ConfigError> {
        let spec = ConfigError::parse::<ConfigSpec>(config)?;
        let sheet = spec.sheet.unwrap_or_else(|| "Responses".into());
        if sheet.trim().is_empty() {
            return Err(ConfigError::at("sheet", "cannot be empty"));
        }
        if let Some(id) = &spec.spreadsheet_id
            && (id.is_empty()
                || !id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        {
            return Err(ConfigError::at(
                "spreadsheet_id",
                format_args!(
                    "`{id}` is not a spreadsheet id (the part of the sheet's URL after /d/)"
                ),
            ));
        }
        if let Some((index, bad)) = spec
            .share_with
            .iter()
            .enumerate()
            .find(|(_, e)| !e.contains('@'))
        {
            return Err(ConfigError::at(
                format_args!("share_with[{index}]"),
                format_args!("`{bad}` is not an e-mail address"),
            ));
        }
        if let Some((key, _)) = spec.labels.iter().find(|(_, label)| !label.is_string()) {
            return Err(ConfigError::at(
                format_args!("labels.{key}"),
                "a label must be a string",
            ));
        }
        let max_writes_per_minute = spec.max_writes_per_minute.unwrap_or(50);
        if max_writes_per_minute == 0 {
            return Err(ConfigError::at(
                "max_writes_per_minute",
                "must be at least 1",
            ));
        }
        let batch_rows = spec.batch_rows.unwrap_or(500);
        if !(1..=10_000).contains(&batch_rows) {
            return Err(ConfigError::at("batch_rows", "must be between 1 and 10000"));
        }
        let batch_wait = match spec.batch_wait.as_deref() {
            None => Duration::from_millis(200),
            Some(text) => humantime::parse_duration(text).map_err(|err| {
                ConfigError::at("batch_wait", format_args!("`{text}` does not parse: {err}"))
            })?,
        };
        Ok(SheetsConfig {
            spreadsheet_id: spec.spreadsheet_id,
            title: spec.title,
            sheet,
            share_with: spec.share_with,
            columns: spec.columns,
            labels: spec.labels,
            credentials_file: spec.credentials_file,
            max_writes_per_minute,
            batch_rows,
            batch_wait,
            on_delete: spec.on_delete,
            resolved: OnceCell::new(),
        })
    }

    async fn run(
        &self,
        config: &SheetsConfig,
        context: &RunContext,
        submission: &Submission,
    ) -> Result<Outcome, TaskError> {
        let key_path = config
            .credentials_file
            .clone()
            .or_else(|| std::env::var_os("GOOGLE_APPLICATION_CREDENTIALS").map(PathBuf::from))
            .ok_or_else(|| {
                TaskError::fatal(
                    "no service-account key: set GOOGLE_APPLICATION_CREDENTIALS or the binding's credentials_file",
                )
            })?;
        let google = self.client(key_path).await?;
        let spreadsheet_id = config
            .resolved
            .get_or_try_init(|| resolve(&google, config, context, submission, &self.creating))
            .await?
            .clone();
        let target = SheetTarget {
            spreadsheet_id: spreadsheet_id.clone(),
            sheet: config.sheet.clone(),
        };
        let (reply, answer) = oneshot::channel();
        let change = match (submission.event, config.on_delete) {
            (Event::Created, _) => Change::Append,
            (Event::Updated, _) => Change::Rewrite,
            (Event::Deleted, OnDelete::Delete) => Change::Delete,
            (Event::Deleted, OnDelete::Mark) => Change::Mark,
        };
        let row = PendingRow {
            submission_id: submission.submission_id.to_string(),
            submitted_at: submission.submitted_at.to_rfc3339(),
            answers: submission.answers.clone(),
            change,
            check_existing: context.attempt > 1,
            revisions: context.events.follows_edits().then(|| Revisions {
                state: context.state.clone(),
                binding_id: context.binding_id,
                revision: submission.revision,
            }),
            reply,
        };
        self.writer(&google, target, config)
            .send(row)
            .await
            .map_err(|_| TaskError::retryable("the sheet writer stopped"))?;
        let written = answer
            .await
            .map_err(|_| TaskError::retryable("the sheet writer stopped"))??;
        Ok(Outcome {
            output: json!({
                "spreadsheet_id": spreadsheet_id,
                "sheet": config.sheet,
                "action": written.action.as_str(),
                "rows_in_call": written.rows_in_call,
                "already_present": written.action == writer::Action::AlreadyPresent,
            }),
            flags: Vec::new(),
        })
    }
}

/// The spreadsheet of a binding: the configured one (its tab made if missing), or the one
/// the binding created earlier, or a new one, created, remembered and shared now.
async fn resolve(
    google: &Google,
    config: &SheetsConfig,
    context: &RunContext,
    submission: &Submission,
    creating: &tokio::sync::Mutex<()>,
) -> Result<String, TaskError> {
    if let Some(id) = &config.spreadsheet_id {
        ensure_tab(google, id, &config.sheet).await?;
        return Ok(id.clone());
    }
    let stored = || async {
        context
            .state
            .get(context.binding_id, SPREADSHEET_KEY)
            .await
            .map_err(TaskError::from)
    };
    let mut known = stored().await?;
    let creating_guard = match known {
        Some(Value::String(_)) => None,
        // Another run of this process may be creating it: wait, then look again.
        _ => {
            let guard = creating.lock().await;
            known = stored().await?;
            Some(guard)
        }
    };
    let id = match known {
        Some(Value::String(id)) => id,
        _ => {
            let title = config
                .title
                .clone()
                .unwrap_or_else(|| format!("postsub form {}", submission.form_id));
            let created = create(google, &title, &config.sheet).await?;
            let stored = context
                .state
                .put_if_absent(
                    context.binding_id,
                    SPREADSHEET_KEY,
                    Value::String(created.clone()),
                )
                .await
                .map_err(TaskError::from)?;
            let stored = stored.as_str().unwrap_or(&created).to_owned();
            if stored != created {
                tracing::warn!(spreadsheet_id = %created,
                    "another worker created this binding's spreadsheet first; this one stays unused");
            }
            stored
        }
    };
    let shared = || async {
        context
            .state
            .get(context.binding_id, SHARED_KEY)
            .await
            .map_err(TaskError::from)
    };
    if shared().await?.is_none() {
        // The run that created it may still be sharing it: share under the same lock, and
        // only if nobody has meanwhile.
        let _sharing = match creating_guard {
            Some(guard) => guard,
            None => creating.lock().await,
        };
        if shared().await?.is_some() {
            return Ok(id);
        }
        for email in &config.share_with {
            share(google, &id, email).await?;
        }
        context
            .state
            .put_if_absent(context.binding_id, SHARED_KEY, Value::Bool(true))
            .await
            .map_err(TaskError::from)?;
    }
    Ok(id)
}

async fn create(google: &Google, title: &str, sheet: &str) -> Result<String, TaskError> {
    let request = Spreadsheet {
        properties: Some(SpreadsheetProperties {
            title: Some(title.to_owned()),
            ..SpreadsheetProperties::default()
        }),
        sheets: Some(vec![Sheet {
            properties: Some(SheetProperties {
                title: Some(sheet.to_owned()),
                ..SheetProperties::default()
            }),
            ..Sheet::default()
        }]),
        ..Spreadsheet::default()
    };
    let mut retry_after = RetryAfter::default();
    let result = google
        .sheets
        .spreadsheets()
        .create(request)
        .add_scope(Scope::Spreadsheet)
        .delegate(&mut retry_after)
        .doit()
        .await;
    let (_, spreadsheet) =
        result.map_err(|err| task_error("creating the spreadsheet", err, retry_after))?;
    let id = spreadsheet
        .spreadsheet_id
        .ok_or_else(|| TaskError::retryable("creating the spreadsheet: Google returned no id"))?;
    tracing::info!(spreadsheet_id = %id, %title, "created a spreadsheet");
    Ok(id)
}

/// Makes the tab in an existing spreadsheet unless it is there.
async fn ensure_tab(google: &Google, spreadsheet_id: &str, sheet: &str) -> Result<(), TaskError> {
    let mut retry_after = RetryAfter::default();
    let result = google
        .sheets
        .spreadsheets()
        .get(spreadsheet_id)
        .add_scope(Scope::Spreadsheet)
        .delegate(&mut retry_after)
        .doit()
        .await;
    let (_, spreadsheet) = result.map_err(|err| {
        task_error(
            &format!("opening spreadsheet {spreadsheet_id}"),
            err,
            retry_after,
        )
    })?;
    let exists = spreadsheet
        .sheets
        .unwrap_or_default()
        .iter()
        .any(|s| s.properties.as_ref().and_then(|p| p.title.as_deref()) == Some(sheet));
    if exists {
        return Ok(());
    }
    let request = google_sheets4::api::BatchUpdateSpreadsheetRequest {
        requests: Some(vec![google_sheets4::api::Request {
            add_sheet: Some(google_sheets4::api::AddSheetRequest {
                properties: Some(SheetProperties {
                    title: Some(sheet.to_owned()),
                    ..SheetProperties::default()
                }),
            }),
            ..google_sheets4::api::Request::default()
        }]),
        ..Default::default()
    };
    let mut retry_after = RetryAfter::default();
    google
        .sheets
        .spreadsheets()
        .batch_update(request, spreadsheet_id)
        .add_scope(Scope::Spreadsheet)
        .delegate(&mut retry_after)
        .doit()
        .await
        .map(drop)
        .map_err(|err| task_error(&format!("adding the tab `{sheet}`"), err, retry_after))
}

async fn share(google: &Google, spreadsheet_id: &str, email: &str) -> Result<(), TaskError> {
    let permission = Permission {
        role: Some("writer".into()),
        type_: Some("user".into()),
        email_address: Some(email.to_owned()),
        ..Permission::default()
    };
    let mut retry_after = RetryAfter::default();
    google
        .drive
        .permissions()
        .create(permission, spreadsheet_id)
        .delegate(&mut retry_after)
        .doit()
        .await
        .map(drop)
        .map_err(|err| {
            task_error(
                &format!("sharing the spreadsheet with {email}"),
                err,
                retry_after,
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(config: Value) -> Result<SheetsConfig, String> {
        GoogleSheets::new(Endpoints::from_env())
            .parse_config(&config)
            .map_err(|err| err.0)
    }

    #[test]
    fn defaults() {
        let config = parse(json!({})).unwrap();
        assert_eq!(config.sheet, "Responses");
        assert_eq!(config.max_writes_per_minute, 50);
        assert_eq!(config.batch_rows, 500);
        assert_eq!(config.batch_wait, Duration::from_millis(200));
        assert!(config.spreadsheet_id.is_none());
    }

    #[test]
    fn bad_configs_are_refused_with_the_reason() {
        let err = |config: Value| parse(config).err().unwrap();
        assert!(
            err(json!({"spreadsheet_id": "https://docs.google.com/x"}))
                .contains("not a spreadsheet id")
        );
        assert_eq!(
            err(json!({"share_with": ["a@b.org", "ops"]})),
            "share_with[1]: `ops` is not an e-mail address"
        );
        assert_eq!(err(json!({"sheet": " "})), "sheet: cannot be empty");
        assert_eq!(
            err(json!({"labels": {"a": 1}})),
            "labels.a: a label must be a string"
        );
        assert_eq!(
            err(json!({"max_writes_per_minute": 0})),
            "max_writes_per_minute: must be at least 1"
        );
        assert!(
            err(json!({"batch_wait": "soon"})).starts_with("batch_wait: `soon` does not parse")
        );
        assert!(err(json!({"spreadsheet": "x"})).contains("unknown field `spreadsheet`"));
    }
}
