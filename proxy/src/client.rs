//! The admin client commands (`postsub bindings|kinds|runs|dlq`): they speak to a proxy's
//! `TaskAdmin` API and print JSON (or a table for `runs list` without `--json`).

use std::{io::IsTerminal as _, path::PathBuf};

use anyhow::{Context as _, anyhow};
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use postsub::{
    ClientTls,
    json::{
        from_proto_struct, from_proto_timestamp, from_proto_value, to_proto_struct,
        to_proto_timestamp,
    },
    pb::{self, post_submission_client::PostSubmissionClient, task_admin_client::TaskAdminClient},
};
use postsub_tasks::{Event, Mode};
use serde_json::{Value, json};
use tonic::{
    metadata::{Ascii, MetadataValue},
    service::{Interceptor, interceptor::InterceptedService},
    transport::Channel,
};

use crate::{
    run::{AttemptStatus, RunStatus, mode_from_proto, mode_to_proto},
    settings::Secret,
};

/// Which proxy to talk to: flags of every client command, before or after its name.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// The proxy's gRPC address: `http://host:port`, `https://…`, or `host:port` for
    /// `http://host:port`.
    #[arg(
        long,
        global = true,
        env = "POSTSUB_SERVER",
        default_value = "http://127.0.0.1:50051"
    )]
    server: String,
    /// The API token to call it with (`postsub tokens create`); `read` scope for lists,
    /// `admin` for changes.
    #[arg(long, global = true, env = "POSTSUB_TOKEN", hide_env_values = true)]
    token: Option<Secret>,
    /// CA certificate (PEM file) to check an `https://` proxy against, instead of the
    /// system's roots.
    #[arg(long, global = true, env = "POSTSUB_CA_CERT", value_name = "PEM")]
    ca_cert: Option<PathBuf>,
    /// Client certificate (PEM file), for a proxy that requires one (mutual TLS).
    #[arg(
        long,
        global = true,
        env = "POSTSUB_CLIENT_CERT",
        value_name = "PEM",
        requires = "client_key"
    )]
    client_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM file).
    #[arg(
        long,
        global = true,
        env = "POSTSUB_CLIENT_KEY",
        value_name = "PEM",
        requires = "client_cert"
    )]
    client_key: Option<PathBuf>,
}

/// Binding options, flags named as in the API; the proxy checks them. Durations are
/// written `500ms`, `10s`, `5m`, `1h`, `1d`; `default` sets one back to its default.
#[derive(Debug, Clone, Default, Args)]
pub struct OptionsArgs {
    /// Attempts in all, the first included (async; default 5).
    #[arg(long)]
    max_attempts: Option<u32>,
    /// Wait after the first failed attempt, doubling per attempt (default 1s).
    #[arg(long)]
    backoff_initial: Option<String>,
    /// Longest wait between attempts (default 5m).
    #[arg(long)]
    backoff_max: Option<String>,
    /// How long one attempt may run (default: the proxy's --sync-timeout or the worker's
    /// --task-timeout).
    #[arg(long)]
    timeout: Option<String>,
    /// Run no earlier than this long after the submission (async).
    #[arg(long)]
    delay: Option<String>,
    /// Give up on a job not started this long after the submission: the run is `expired`.
    #[arg(long)]
    expires_after: Option<String>,
    /// The submission events the binding runs on, comma-separated: created, updated,
    /// deleted (default created).
    #[arg(long, value_name = "EVENTS")]
    events: Option<String>,
}

impl From<OptionsArgs> for pb::BindingOptions {
    fn from(args: OptionsArgs) -> Self {
        pb::BindingOptions {
            max_attempts: args.max_attempts,
            backoff_initial: args.backoff_initial.unwrap_or_default(),
            backoff_max: args.backoff_max.unwrap_or_default(),
            timeout: args.timeout.unwrap_or_default(),
            delay: args.delay.unwrap_or_default(),
            expires_after: args.expires_after.unwrap_or_default(),
            events: args.events.unwrap_or_default(),
        }
    }
}

/// `postsub bindings …`
#[allow(missing_docs)] // the fields document themselves in `--help`
#[derive(Debug, Subcommand)]
pub enum BindingsCommand {
    /// Bind a task kind to a form; prints the binding.
    Create {
        /// Form id (UUID).
        #[arg(long)]
        form: String,
        /// Name, unique per form.
        #[arg(long)]
        name: String,
        /// Task kind (`postsub kinds` lists them).
        #[arg(long)]
        kind: String,
        /// `sync` (inline, result in the submit response) or `async` (queued).
        #[arg(long)]
        mode: Mode,
        /// The kind's config, as a JSON object (`{}` for a kind that needs none); `postsub
        /// kinds` lists the kinds.
        #[arg(long)]
        config: String,
        /// Create it disabled.
        #[arg(long)]
        disabled: bool,
        #[command(flatten)]
        options: OptionsArgs,
    },
    /// List bindings, of one form or all.
    List {
        /// Only this form's bindings.
        #[arg(long)]
        form: Option<String>,
    },
    /// Show one binding.
    Get {
        /// Binding id.
        id: String,
    },
    /// Change a binding; only the given fields change.
    Update {
        /// Binding id.
        id: String,
        /// New name.
        #[arg(long)]
        name: Option<String>,
        /// New mode.
        #[arg(long)]
        mode: Option<Mode>,
        /// New config, as JSON (replaces the old one whole).
        #[arg(long)]
        config: Option<String>,
        /// Enable (`true`) or disable (`false`).
        #[arg(long)]
        enabled: Option<bool>,
        #[command(flatten)]
        options: OptionsArgs,
    },
    /// Delete a binding (its runs stay in the history).
    Delete {
        /// Binding id.
        id: String,
    },
}

/// `postsub runs …`
#[allow(missing_docs)] // the fields document themselves in `--help`
#[derive(Debug, Subcommand)]
pub enum RunsCommand {
    /// List runs, newest first.
    List {
        #[command(flatten)]
        filter: RunFilterArgs,
        /// At most this many runs.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Print a JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Count runs (those `runs list` would list) per binding, kind, status or flag rule.
    Stats {
        #[command(flatten)]
        filter: RunFilterArgs,
        /// What to count them by: binding, kind, status, or flag_rule (runs with at least
        /// one flag of each rule).
        #[arg(long, default_value = "binding")]
        by: String,
        /// Print a JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one run as JSON, with every attempt.
    Get {
        /// Run id.
        run_id: String,
    },
    /// Queue a dead (or failed or expired) async run again, for a new round of attempts;
    /// prints it.
    Retry {
        /// Run id.
        run_id: String,
    },
    /// Retry every dead run of a binding (of one cause, as the console's Dead letters page
    /// groups them); says how many first and, at a terminal, asks.
    RetryDead {
        /// The binding.
        #[arg(long)]
        binding: String,
        /// Only runs that died of this, e.g. `HTTP 5xx (server error)`, `HTTP 429 (rate
        /// limit or quota)`, `connection refused`, `timed out`.
        #[arg(long)]
        cause: Option<String>,
        /// Do not ask.
        #[arg(long)]
        yes: bool,
    },
}

/// The history filters of `runs list` and `runs stats`; they combine with AND.
#[derive(Debug, Args)]
pub struct RunFilterArgs {
    /// Only runs of this form.
    #[arg(long)]
    form: Option<String>,
    /// Only runs of this submission.
    #[arg(long)]
    submission: Option<String>,
    /// Only runs of this binding.
    #[arg(long)]
    binding: Option<String>,
    /// Only runs in this status (queued, running, succeeded, failed, dead, expired).
    #[arg(long)]
    status: Option<RunStatus>,
    /// Only runs of this task kind.
    #[arg(long)]
    kind: Option<String>,
    /// Only runs with a flag on this field or of this rule.
    #[arg(long)]
    flag: Option<String>,
    /// Only runs with a flag on this field (answer key).
    #[arg(long)]
    flag_field: Option<String>,
    /// Only runs with a flag of this rule (with --flag-field: one flag on that field).
    #[arg(long)]
    flag_rule: Option<String>,
    /// Only runs whose error contains this text (case ignored).
    #[arg(long, visible_alias = "error-contains")]
    error: Option<String>,
    /// Only runs for this submission event (created, updated, deleted).
    #[arg(long)]
    event: Option<Event>,
    /// Only runs created at or after this time: RFC 3339 or an age (`1d`: a day ago).
    #[arg(long, value_parser = time_or_age)]
    since: Option<DateTime<Utc>>,
    /// Only runs created before this time: RFC 3339 or an age.
    #[arg(long, value_parser = time_or_age)]
    until: Option<DateTime<Utc>>,
}

impl RunFilterArgs {
    /// The `ListRuns` request of these filters.
    fn request(self) -> anyhow::Result<pb::ListRunsRequest> {
        check_range(self.since, self.until)?;
        let status = self
            .status
            .map_or(pb::RunStatus::Unspecified, pb::RunStatus::from);
        Ok(pb::ListRunsRequest {
            form_id: self.form.unwrap_or_default(),
            submission_id: self.submission.unwrap_or_default(),
            binding_id: self.binding.unwrap_or_default(),
            status: status.into(),
            kind: self.kind.unwrap_or_default(),
            flag: self.flag.unwrap_or_default(),
            flag_field: self.flag_field.unwrap_or_default(),
            flag_rule: self.flag_rule.unwrap_or_default(),
            error_contains: self.error.unwrap_or_default(),
            event: self
                .event
                .map(|event| event.to_string())
                .unwrap_or_default(),
            created_after: self.since.as_ref().map(to_proto_timestamp),
            created_before: self.until.as_ref().map(to_proto_timestamp),
            ..Default::default()
        })
    }
}

/// `postsub dlq …`
#[allow(missing_docs)] // the fields document themselves in `--help`
#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// Move dead-lettered jobs back to their work queues, each for a new round of attempts.
    Replay {
        /// Only this task kind's dead-letter queue.
        #[arg(long)]
        kind: Option<String>,
        /// Only jobs of this form (UUID).
        #[arg(long)]
        form: Option<String>,
        /// Replay every dead letter without asking (without --kind or --form, the command
        /// asks first when it runs at a terminal).
        #[arg(long, short = 'y')]
        yes: bool,
    },
}

/// `postsub audit …`
#[allow(missing_docs)] // the fields document themselves in `--help`
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Changes made through the admin API or `postsub tokens`, newest first.
    List {
        /// Only entries since this time: RFC 3339 (`2026-12-02T10:00:00Z`) or an age
        /// (`30m`, `1d`: that long ago).
        #[arg(long, value_parser = time_or_age)]
        since: Option<DateTime<Utc>>,
        /// At most this many entries.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Print a JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// Refuses a `--since` that is not before `--until`.
pub(crate) fn check_range(
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
) -> anyhow::Result<()> {
    if let (Some(since), Some(until)) = (since, until)
        && since >= until
    {
        anyhow::bail!("--since {since} is not before --until {until}");
    }
    Ok(())
}

/// `--since` and `--until`: a time, or an age back from now.
pub(crate) fn time_or_age(text: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Ok(at.with_timezone(&Utc));
    }
    let age = humantime::parse_duration(text).map_err(|_| {
        format!("`{text}` is neither an RFC 3339 time nor an age such as 30m or 1d")
    })?;
    chrono::Duration::from_std(age)
        .ok()
        .and_then(|age| Utc::now().checked_sub_signed(age))
        .ok_or_else(|| format!("`{text}` reaches too far back"))
}

/// `postsub queues`
#[derive(Debug, Clone, Args)]
pub struct QueuesArgs {
    /// Print a JSON array instead of a table.
    #[arg(long)]
    json: bool,
}

/// `--server`: a URL, `host:port` taken as `http://host:port`.
fn server_url(server: &str) -> Result<String, String> {
    let url = if server.contains("://") {
        server.to_owned()
    } else {
        format!("http://{server}")
    };
    tonic::transport::Endpoint::from_shared(url.clone())
        .map_err(|_| format!("`{server}` is not an address: use http://host:port or host:port"))?;
    Ok(url)
}

/// The admin client, every call carrying the token.
pub(crate) type Client = TaskAdminClient<InterceptedService<Channel, Bearer>>;

async fn connect(server: &ServerArgs) -> anyhow::Result<Client> {
    let (channel, bearer) = channel(server).await?;
    Ok(TaskAdminClient::with_interceptor(channel, bearer))
}

/// The `PostSubmission` client (for `RunBindings`), every call carrying the token.
pub(crate) type SubmitClient = PostSubmissionClient<InterceptedService<Channel, Bearer>>;

/// Both clients over one connection.
pub(crate) async fn connect_both(server: &ServerArgs) -> anyhow::Result<(Client, SubmitClient)> {
    let (channel, bearer) = channel(server).await?;
    Ok((
        TaskAdminClient::with_interceptor(channel.clone(), bearer.clone()),
        PostSubmissionClient::with_interceptor(channel, bearer),
    ))
}

/// A connection to the proxy at `--server`, and the token's header.
async fn channel(server: &ServerArgs) -> anyhow::Result<(Channel, Bearer)> {
    let bearer = match &server.token {
        Some(token) => {
            let mut value = MetadataValue::try_from(format!("Bearer {}", token.expose()))
                .context("the token holds characters a header cannot carry")?;
            value.set_sensitive(true);
            Some(value)
        }
        None => None,
    };
    // Parsed here, not by clap: the flags are global, and a server command must not fail
    // on a POSTSUB_SERVER it does not use.
    let url = server_url(&server.server).map_err(anyhow::Error::msg)?;
    let identity = server
        .client_cert
        .as_deref()
        .zip(server.client_key.as_deref());
    let channel = ClientTls::from_pem_files(server.ca_cert.as_deref(), identity)
        .and_then(|tls| tls.endpoint(&url))
        .map_err(|err| anyhow!("{}", postsub_tasks::error_chain(&err)))?
        .connect()
        .await
        .map_err(|err| {
            anyhow!(
                "cannot reach the postsub proxy at {url}: {}",
                postsub_tasks::error_chain(&err)
            )
        })?;
    Ok((channel, Bearer(bearer)))
}

/// Adds `authorization: Bearer <token>` to every call, when there is a token.
#[derive(Clone)]
pub(crate) struct Bearer(Option<MetadataValue<Ascii>>);

impl Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// A gRPC error as the person at the terminal should read it.
pub(crate) fn status_error(status: tonic::Status) -> anyhow::Error {
    if status.code() == tonic::Code::Unauthenticated {
        return anyhow!(
            "{} ({:?}); the CLI sends the token given with --token or POSTSUB_TOKEN",
            status.message(),
            status.code()
        );
    }
    // A call that failed on the connection (a TLS alert, a closed stream) says why only
    // in its source.
    match std::error::Error::source(&status) {
        Some(cause) => anyhow!(
            "the call failed on its connection: {}. A proxy serving TLS needs an https:// \
             --server; one that requires client certificates, --client-cert and --client-key",
            postsub_tasks::error_chain(cause)
        ),
        None => anyhow!("{} ({:?})", status.message(), status.code()),
    }
}

fn parse_config(text: &str) -> anyhow::Result<prost_types::Struct> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => Ok(to_proto_struct(map)),
        Ok(_) => Err(anyhow!("--config must be a JSON object")),
        Err(err) => Err(anyhow!("--config is not valid JSON: {err}")),
    }
}

fn mode_name(mode: i32) -> &'static str {
    mode_from_proto(mode).map_or("unspecified", Mode::as_str)
}

fn status_name(status: i32) -> &'static str {
    pb::RunStatus::try_from(status)
        .ok()
        .and_then(RunStatus::from_proto)
        .map_or("unspecified", RunStatus::as_str)
}

fn attempt_status_name(status: i32) -> &'static str {
    pb::AttemptStatus::try_from(status)
        .ok()
        .and_then(AttemptStatus::from_proto)
        .map_or("unspecified", AttemptStatus::as_str)
}

/// An empty string as JSON `null`.
fn text_or_null(text: String) -> Value {
    if text.is_empty() {
        Value::Null
    } else {
        Value::String(text)
    }
}

fn time(t: Option<prost_types::Timestamp>) -> Value {
    t.and_then(from_proto_timestamp)
        .map_or(Value::Null, |t| Value::String(t.to_rfc3339()))
}

fn binding_json(binding: pb::Binding) -> Value {
    json!({
        "id": binding.id,
        "form_id": binding.form_id,
        "name": binding.name,
        "kind": binding.kind,
        "mode": mode_name(binding.mode),
        "config": Value::Object(binding.config.map(from_proto_struct).unwrap_or_default()),
        "enabled": binding.enabled,
        "options": binding.options.map_or(Value::Null, options_json),
        "created_at": time(binding.created_at),
        "updated_at": time(binding.updated_at),
    })
}

fn options_json(options: pb::BindingOptions) -> Value {
    json!({
        "max_attempts": options.max_attempts,
        "backoff_initial": text_or_null(options.backoff_initial),
        "backoff_max": text_or_null(options.backoff_max),
        "timeout": text_or_null(options.timeout),
        "delay": text_or_null(options.delay),
        "expires_after": text_or_null(options.expires_after),
        "events": text_or_null(options.events),
    })
}

fn run_json(run: pb::Run) -> Value {
    let flags: Vec<Value> = run
        .flags
        .into_iter()
        .map(|f| json!({"field": f.field, "rule": f.rule, "message": f.message}))
        .collect();
    let history: Vec<Value> = run
        .attempt_history
        .into_iter()
        .map(|a| {
            json!({
                "attempt": a.attempt,
                "status": attempt_status_name(a.status),
                "error": text_or_null(a.error),
                "started_at": time(a.started_at),
                "finished_at": time(a.finished_at),
            })
        })
        .collect();
    let mut json = json!({
        "run_id": run.run_id,
        "binding_id": run.binding_id,
        "form_id": run.form_id,
        "submission_id": run.submission_id,
        "kind": run.kind,
        "event": run.event,
        "mode": mode_name(run.mode),
        "status": status_name(run.status),
        "attempts": run.attempts,
        "output": run.output.map_or(Value::Null, from_proto_value),
        "flags": flags,
        "error": text_or_null(run.error),
        "created_at": time(run.created_at),
        "started_at": time(run.started_at),
        "finished_at": time(run.finished_at),
        "updated_at": time(run.updated_at),
    });
    if !history.is_empty() {
        json["attempt_history"] = Value::Array(history);
    }
    json
}

pub(crate) fn print_json(value: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("JSON values serialize")
    );
}

/// Runs a `postsub bindings` command.
pub async fn bindings(server: &ServerArgs, command: BindingsCommand) -> anyhow::Result<()> {
    match command {
        BindingsCommand::Create {
            form,
            name,
            kind,
            mode,
            config,
            disabled,
            options,
        } => {
            let request = pb::CreateBindingRequest {
                form_id: form,
                name,
                kind,
                mode: mode_to_proto(mode).into(),
                config: Some(parse_config(&config)?),
                enabled: Some(!disabled),
                options: Some(options.into()),
            };
            let binding = connect(server)
                .await?
                .create_binding(request)
                .await
                .map_err(status_error)?;
            print_json(&binding_json(binding.into_inner()));
        }
        BindingsCommand::List { form } => {
            let request = pb::ListBindingsRequest {
                form_id: form.clone().unwrap_or_default(),
            };
            let bindings = connect(server)
                .await?
                .list_bindings(request)
                .await
                .map_err(status_error)?
                .into_inner()
                .bindings;
            if let Some(form) = form.filter(|_| bindings.is_empty()) {
                eprintln!(
                    "form {form} has no bindings: Process answers its submissions with no \
                     results and runs nothing (`postsub bindings create --form {form} …`)"
                );
            }
            print_json(&Value::Array(
                bindings.into_iter().map(binding_json).collect(),
            ));
        }
        BindingsCommand::Get { id } => {
            let binding = connect(server)
                .await?
                .get_binding(pb::GetBindingRequest { id })
                .await
                .map_err(status_error)?;
            print_json(&binding_json(binding.into_inner()));
        }
        BindingsCommand::Update {
            id,
            name,
            mode,
            config,
            enabled,
            options,
        } => {
            let request = pb::UpdateBindingRequest {
                id,
                name,
                mode: mode.map(|m| mode_to_proto(m).into()),
                config: config.as_deref().map(parse_config).transpose()?,
                enabled,
                options: Some(options.into()),
            };
            let binding = connect(server)
                .await?
                .update_binding(request)
                .await
                .map_err(status_error)?;
            print_json(&binding_json(binding.into_inner()));
        }
        BindingsCommand::Delete { id } => {
            connect(server)
                .await?
                .delete_binding(pb::DeleteBindingRequest { id: id.clone() })
                .await
                .map_err(status_error)?;
            print_json(&json!({"deleted": id}));
        }
    }
    Ok(())
}

/// `postsub kinds`.
#[derive(Debug, clap::Args)]
pub struct KindsArgs {
    /// Print a JSON array with each kind's config schema (JSON Schema) instead of a table.
    #[arg(long)]
    json: bool,
}

/// Runs `postsub kinds`.
pub async fn kinds(server: &ServerArgs, args: KindsArgs) -> anyhow::Result<()> {
    let kinds = connect(server)
        .await?
        .list_task_kinds(pb::ListTaskKindsRequest {})
        .await
        .map_err(status_error)?
        .into_inner()
        .kinds;
    let kinds: Vec<Value> = kinds
        .into_iter()
        .map(|k| {
            let modes: Vec<&str> = k.modes.iter().map(|m| mode_name(*m)).collect();
            let schema = k.config_schema.map_or(Value::Null, |schema| {
                Value::Object(from_proto_struct(schema))
            });
            json!({"name": k.name, "description": k.description, "modes": modes,
                "config_schema": schema})
        })
        .collect();
    if args.json {
        print_json(&Value::Array(kinds));
    } else {
        print!("{}", kinds_table(&kinds));
    }
    Ok(())
}

/// `runs stats` as a table: the key's column as wide as its longest value.
fn stats_table(by: &str, counts: &[pb::RunCount]) -> String {
    let header = by.to_ascii_uppercase();
    let width = counts
        .iter()
        .map(|count| count.key.chars().count())
        .chain([header.len()])
        .max()
        .unwrap_or_default();
    let mut table = format!("{header:<width$}  {:>8}\n", "RUNS");
    for count in counts {
        table += &format!("{:<width$}  {:>8}\n", count.key, count.runs);
    }
    table
}

fn kinds_table(kinds: &[Value]) -> String {
    let mut table = format!("{:<16}  {:<10}  {}\n", "KIND", "MODES", "DESCRIPTION");
    for kind in kinds {
        let modes: Vec<&str> = kind["modes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        table += &format!(
            "{:<16}  {:<10}  {}\n",
            kind["name"].as_str().unwrap_or_default(),
            modes.join(","),
            kind["description"].as_str().unwrap_or_default()
        );
    }
    table
}

/// Runs a `postsub runs` command.
pub async fn runs(server: &ServerArgs, command: RunsCommand) -> anyhow::Result<()> {
    match command {
        RunsCommand::List {
            filter,
            limit,
            json,
        } => {
            let request = pb::ListRunsRequest {
                page_size: limit,
                ..filter.request()?
            };
            let runs = connect(server)
                .await?
                .list_runs(request)
                .await
                .map_err(status_error)?
                .into_inner()
                .runs;
            let runs: Vec<Value> = runs.into_iter().map(run_json).collect();
            if json {
                print_json(&Value::Array(runs));
            } else {
                print_table(&runs);
            }
        }
        RunsCommand::Stats { filter, by, json } => {
            let request = pb::RunStatsRequest {
                filter: Some(filter.request()?),
                by: by.clone(),
            };
            let counts = connect(server)
                .await?
                .run_stats(request)
                .await
                .map_err(status_error)?
                .into_inner()
                .counts;
            if json {
                let counts = counts
                    .iter()
                    .map(|count| json!({&by: count.key, "runs": count.runs}))
                    .collect();
                print_json(&Value::Array(counts));
            } else {
                print!("{}", stats_table(&by, &counts));
            }
        }
        RunsCommand::Get { run_id } => {
            let run = connect(server)
                .await?
                .get_run(pb::GetRunRequest { run_id })
                .await
                .map_err(status_error)?;
            print_json(&run_json(run.into_inner()));
        }
        RunsCommand::Retry { run_id } => {
            let run = connect(server)
                .await?
                .retry_run(pb::RetryRunRequest { run_id })
                .await
                .map_err(status_error)?;
            print_json(&run_json(run.into_inner()));
        }
        RunsCommand::RetryDead {
            binding,
            cause,
            yes,
        } => retry_dead(server, binding, cause, yes).await?,
    }
    Ok(())
}

/// `postsub runs retry-dead`: every dead run of `binding` (of `cause`), one `RetryRun`
/// each; a run no longer dead when its turn comes is skipped.
async fn retry_dead(
    server: &ServerArgs,
    binding: String,
    cause: Option<String>,
    yes: bool,
) -> anyhow::Result<()> {
    let mut client = connect(server).await?;
    let mut runs = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_runs(pb::ListRunsRequest {
                binding_id: binding.clone(),
                status: pb::RunStatus::Dead.into(),
                page_size: 1000,
                page_token,
                ..Default::default()
            })
            .await
            .map_err(status_error)?
            .into_inner();
        runs.extend(
            page.runs
                .into_iter()
                .filter(|run| {
                    let error = (!run.error.is_empty()).then_some(run.error.as_str());
                    cause
                        .as_deref()
                        .is_none_or(|cause| crate::run::error_cause(error) == cause)
                })
                .map(|run| run.run_id),
        );
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    let of_cause = cause.map_or_else(String::new, |cause| format!(" that died of {cause}"));
    eprintln!(
        "{} dead runs of binding {binding}{of_cause} at {}",
        runs.len(),
        server.server
    );
    if !runs.is_empty() && !confirmed(yes, &format!("Retry {} runs?", runs.len()))? {
        return Err(anyhow!("nothing retried (--yes skips this question)"));
    }
    let (mut retried, mut skipped, mut failed) = (0, 0, Vec::new());
    for run_id in runs {
        match client
            .retry_run(pb::RetryRunRequest {
                run_id: run_id.clone(),
            })
            .await
        {
            Ok(_) => retried += 1,
            Err(status) if status.code() == tonic::Code::FailedPrecondition => skipped += 1,
            Err(status) => failed.push(format!("{run_id}: {}", status.message())),
        }
    }
    print_json(&json!({"retried": retried, "skipped": skipped, "failed": failed}));
    if failed.is_empty() {
        Ok(())
    } else {
        Err(anyhow!("{} runs could not be retried", failed.len()))
    }
}

/// Whether to go on: `yes`, or stdin is not a terminal, or the person at it says so.
fn confirmed(yes: bool, question: &str) -> anyhow::Result<bool> {
    if yes || !std::io::stdin().is_terminal() {
        return Ok(true);
    }
    eprint!("{question} [y/N] ");
    let mut answer = String::new();
    std::io::stdin()
        .read_line(&mut answer)
        .context("reading the answer")?;
    Ok(matches!(
        answer.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}

/// Runs a `postsub audit` command.
pub async fn audit(server: &ServerArgs, command: AuditCommand) -> anyhow::Result<()> {
    let AuditCommand::List { since, limit, json } = command;
    let request = pb::ListAuditEntriesRequest {
        since: since.map(|t| postsub::json::to_proto_timestamp(&t)),
        page_size: limit,
        page_token: String::new(),
    };
    let entries: Vec<Value> = connect(server)
        .await?
        .list_audit_entries(request)
        .await
        .map_err(status_error)?
        .into_inner()
        .entries
        .into_iter()
        .map(|entry| {
            json!({"id": entry.id, "at": time(entry.at), "actor": entry.actor,
                   "action": entry.action, "target": entry.target,
                   "before": entry.before.map_or(Value::Null, from_proto_value),
                   "after": entry.after.map_or(Value::Null, from_proto_value)})
        })
        .collect();
    if json {
        print_json(&Value::Array(entries));
        return Ok(());
    }
    println!("{:<20}  {:<24}  {:<14}  TARGET", "AT", "ACTOR", "ACTION");
    for entry in &entries {
        let text = |key: &str| entry[key].as_str().unwrap_or("").to_owned();
        println!(
            "{:<20}  {:<24}  {:<14}  {}",
            table_time(&entry["at"]),
            text("actor"),
            text("action"),
            text("target")
        );
    }
    Ok(())
}

/// Runs a `postsub dlq` command.
pub async fn dlq(server: &ServerArgs, command: DlqCommand) -> anyhow::Result<()> {
    match command {
        DlqCommand::Replay { kind, form, yes } => {
            let mut client = connect(server).await?;
            if kind.is_none() && form.is_none() {
                confirm_replay_of_everything(&mut client, &server.server, yes).await?;
            }
            let request = pb::ReplayDeadLettersRequest {
                kind: kind.unwrap_or_default(),
                form_id: form.unwrap_or_default(),
            };
            let answer = client
                .replay_dead_letters(request)
                .await
                .map_err(status_error)?
                .into_inner();
            if answer.unknown > 0 {
                eprintln!(
                    "{} dead letters belong to runs this deployment does not know, and were left \
                     in place: another deployment shares these queues (give each its own vhost \
                     or POSTSUB_QUEUE_PREFIX)",
                    answer.unknown
                );
            }
            print_json(&json!({ "replayed": answer.replayed, "unknown": answer.unknown }));
        }
    }
    Ok(())
}

/// Says what a replay without a filter touches (dead letters per kind) and, at a terminal
/// without `--yes`, asks before going on.
async fn confirm_replay_of_everything(
    client: &mut Client,
    server: &str,
    yes: bool,
) -> anyhow::Result<()> {
    let queues = client
        .list_queues(pb::ListQueuesRequest {})
        .await
        .map_err(status_error)?
        .into_inner()
        .queues;
    let counts: Vec<String> = queues
        .iter()
        .map(|q| format!("{} {}", q.kind, q.dead))
        .collect();
    eprintln!(
        "replaying the dead letters of every kind and form at {server}: {}",
        counts.join(", ")
    );
    if confirmed(yes, "Replay them all?")? {
        Ok(())
    } else {
        Err(anyhow!(
            "nothing replayed (--kind or --form narrow the replay; --yes skips this question)"
        ))
    }
}

/// Runs `postsub queues`: per task kind, the jobs ready, held by workers, waiting for a
/// retry or a delay, and dead (`-` where the queue cannot tell).
pub async fn queues(server: &ServerArgs, args: QueuesArgs) -> anyhow::Result<()> {
    let queues = connect(server)
        .await?
        .list_queues(pb::ListQueuesRequest {})
        .await
        .map_err(status_error)?
        .into_inner()
        .queues;
    if args.json {
        let rows: Vec<Value> = queues
            .into_iter()
            .map(|q| {
                json!({"kind": q.kind, "ready": q.ready, "in_flight": q.in_flight,
                       "waiting": q.waiting, "dead": q.dead, "consumers": q.consumers,
                       "oldest_ready_ms": q.oldest_ready_ms})
            })
            .collect();
        print_json(&Value::from(rows));
        return Ok(());
    }
    let known = |n: Option<u64>| n.map_or_else(|| "-".to_owned(), |n| n.to_string());
    println!(
        "{:<16}  {:>8}  {:>9}  {:>8}  {:>8}  {:>9}  OLDEST_READY",
        "KIND", "READY", "IN_FLIGHT", "WAITING", "DEAD", "CONSUMERS"
    );
    for q in queues {
        let oldest = q.oldest_ready_ms.map_or_else(
            || "-".to_owned(),
            |ms| humantime::format_duration(std::time::Duration::from_millis(ms)).to_string(),
        );
        println!(
            "{:<16}  {:>8}  {:>9}  {:>8}  {:>8}  {:>9}  {oldest}",
            q.kind,
            q.ready,
            known(q.in_flight),
            known(q.waiting),
            q.dead,
            known(q.consumers),
        );
    }
    Ok(())
}

fn print_table(runs: &[Value]) {
    print!("{}", runs_table(runs));
}

/// The runs as a table whose columns line up: times to the second, and the flags a sync
/// run raised counted, since such a run `succeeded` though its submit said `flagged`.
fn runs_table(runs: &[Value]) -> String {
    let line = |cells: [&str; 10]| {
        format!(
            "{:<36}  {:<9}  {:<13}  {:<5}  {:<7}  {:>8}  {:>5}  {:<36}  {:<20}  {}\n",
            cells[0],
            cells[1],
            cells[2],
            cells[3],
            cells[4],
            cells[5],
            cells[6],
            cells[7],
            cells[8],
            cells[9]
        )
    };
    let mut table = line([
        "RUN_ID",
        "STATUS",
        "KIND",
        "MODE",
        "EVENT",
        "ATTEMPTS",
        "FLAGS",
        "SUBMISSION_ID",
        "CREATED_AT",
        "ERROR",
    ]);
    for run in runs {
        let text = |key: &str| run[key].as_str().unwrap_or("").to_owned();
        let attempts = run["attempts"].as_u64().unwrap_or_default().to_string();
        let flags = run["flags"].as_array().map_or(0, Vec::len).to_string();
        table += &line([
            &text("run_id"),
            &text("status"),
            &text("kind"),
            &text("mode"),
            &text("event"),
            &attempts,
            &flags,
            &text("submission_id"),
            &table_time(&run["created_at"]),
            &text("error"),
        ]);
    }
    table
}

/// A time of the JSON output, to the second, for a table.
fn table_time(time: &Value) -> String {
    time.as_str()
        .and_then(|text| DateTime::parse_from_rfc3339(text).ok())
        .map(|at| {
            at.to_utc()
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_runs_table_lines_up_and_counts_flags() {
        let run = |kind: &str, flags: Value| {
            json!({"run_id": uuid::Uuid::nil().to_string(), "status": "succeeded", "kind": kind,
                   "mode": "sync", "event": "updated", "attempts": 1, "flags": flags,
                   "submission_id": uuid::Uuid::nil().to_string(),
                   "created_at": "2026-12-02T10:00:00.123456789+00:00", "error": null})
        };
        let table = runs_table(&[
            run("validate", json!([{"field": "n"}, {"field": "m"}])),
            run("google_sheets", json!([])),
        ]);
        let lines: Vec<&str> = table.lines().collect();
        let column = |line: &str, name: &str| line.find(name).unwrap();
        let header = lines[0];
        for line in &lines[1..] {
            assert_eq!(
                column(line, "2026-12-02T10:00:00Z"),
                column(header, "CREATED_AT")
            );
            assert_eq!(column(line, "sync"), column(header, "MODE"));
            assert_eq!(column(line, "updated"), column(header, "EVENT"));
        }
        assert_eq!(
            lines[1].split_whitespace().nth(6),
            Some("2"),
            "two flags: {table}"
        );
    }
}
