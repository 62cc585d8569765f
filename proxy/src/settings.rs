//! Typed settings of every command, from flags with environment fallbacks.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::Context as _;
use clap::{Args, Parser, ValueEnum};
pub use postsub::Secret;
use postsub_tasks::TargetPolicy;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

/// Where postsub keeps its state, which also chooses the backend (see [`crate::backend`]).
#[derive(Debug, Clone, Args)]
pub struct DatabaseSettings {
    /// postsub's own database. `postgres://…`: PostgreSQL, with the job queue on RabbitMQ
    /// (AMQP_URL). `sqlite://PATH` or a plain path: the embedded backend, store and job
    /// queue in that one file. [default: postgres://postgres@127.0.0.1:5432/postsub; under
    /// `postsub dev`: .postsub/postsub.db]
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// How the embedded backend commits: `full`, a commit survives a power cut; `normal`,
    /// it survives a crash of postsub, and a power cut may lose the last commits.
    #[arg(
        long,
        env = "POSTSUB_SQLITE_SYNCHRONOUS",
        value_enum,
        default_value_t = Synchronous::Full
    )]
    pub sqlite_synchronous: Synchronous,
}

/// SQLite's `synchronous` setting, as the embedded backend offers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Synchronous {
    /// fsync on every commit (WAL): committed jobs survive a power cut.
    Full,
    /// fsync at checkpoints: committed jobs survive a crash, not always a power cut.
    Normal,
}

/// Where RabbitMQ is and how queues are named (PostgreSQL backend only).
#[derive(Debug, Clone, Args)]
pub struct BrokerSettings {
    /// AMQP URL, vhost included (`%2f` is the default vhost); only with a PostgreSQL
    /// DATABASE_URL (the embedded backend's queue is in its file). [default:
    /// amqp://guest:guest@127.0.0.1:5672/%2f]
    #[arg(long, env = "AMQP_URL", hide_env_values = true, value_parser = crate::queue::rabbitmq::parse_amqp_url)]
    pub amqp_url: Option<String>,
    /// Prefix of every queue name (`<prefix>.<kind>`, `<prefix>.<kind>.dead`,
    /// `<prefix>.<kind>.retry.<ms>`).
    #[arg(long, env = "POSTSUB_QUEUE_PREFIX", default_value = "postsub")]
    pub queue_prefix: String,
    /// Declare work and dead-letter queues as quorum queues (replicated, for a RabbitMQ
    /// cluster) instead of classic ones. A queue keeps the type it was first declared with.
    #[arg(long, env = "POSTSUB_QUORUM_QUEUES")]
    pub quorum_queues: bool,
}

/// Settings of the gRPC proxy.
#[derive(Debug, Clone, Args)]
pub struct ProxySettings {
    /// Address of the gRPC server (PostSubmission, TaskAdmin, health, reflection).
    #[arg(long, env = "POSTSUB_GRPC_ADDR", default_value = "127.0.0.1:50051")]
    pub grpc_addr: SocketAddr,
    /// Address of the HTTP server (`/healthz`, `/readyz`).
    #[arg(long, env = "POSTSUB_HTTP_ADDR", default_value = "127.0.0.1:9090")]
    pub http_addr: SocketAddr,
    /// Largest `answers` accepted by Process, in bytes (protobuf-encoded).
    #[arg(long, env = "POSTSUB_MAX_ANSWERS_BYTES", default_value_t = 256 * 1024)]
    pub max_answers_bytes: usize,
    /// Deepest nesting of objects and lists in `answers` accepted by Process.
    #[arg(long, env = "POSTSUB_MAX_ANSWERS_DEPTH", default_value_t = 32)]
    pub max_answers_depth: usize,
    /// Most object keys in `answers` (nested ones included) accepted by Process.
    #[arg(long, env = "POSTSUB_MAX_ANSWERS_KEYS", default_value_t = 10_000)]
    pub max_answers_keys: usize,
    /// How long one sync task may run (`500ms`, `2s`, ...).
    #[arg(long, env = "POSTSUB_SYNC_TIMEOUT", default_value = "2s", value_parser = humantime::parse_duration)]
    pub sync_timeout: Duration,
    /// An admin token taken from the environment besides the stored ones (for compose and
    /// CI, where nobody runs `postsub tokens create` first); at least 32 characters.
    #[arg(long, env = "POSTSUB_ADMIN_TOKEN", hide_env_values = true, value_parser = admin_token)]
    pub admin_token: Option<Secret>,
    /// Answer every call without a token. Only for a proxy that nothing but trusted
    /// callers can reach; a warning is logged every minute it runs.
    #[arg(long, env = "POSTSUB_NO_AUTH")]
    pub no_auth: bool,
    /// Serve gRPC over TLS with this certificate chain (PEM file); with POSTSUB_TLS_KEY.
    #[arg(
        long,
        env = "POSTSUB_TLS_CERT",
        value_name = "PEM",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM file) of POSTSUB_TLS_CERT.
    #[arg(
        long,
        env = "POSTSUB_TLS_KEY",
        value_name = "PEM",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
    /// Answer only clients whose certificate this CA (PEM file) signed (mutual TLS); needs
    /// POSTSUB_TLS_CERT.
    #[arg(
        long,
        env = "POSTSUB_TLS_CLIENT_CA",
        value_name = "PEM",
        requires = "tls_cert"
    )]
    pub tls_client_ca: Option<PathBuf>,
}

impl ProxySettings {
    /// The gRPC server's TLS, read from the PEM files: `None` without POSTSUB_TLS_CERT.
    pub fn server_tls(&self) -> anyhow::Result<Option<ServerTlsConfig>> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Ok(None);
        };
        let read = |path: &PathBuf, setting: &str| {
            std::fs::read(path).with_context(|| format!("cannot read {setting} {}", path.display()))
        };
        let identity = Identity::from_pem(
            read(cert, "POSTSUB_TLS_CERT")?,
            read(key, "POSTSUB_TLS_KEY")?,
        );
        // A client that never finishes its handshake holds a connection for no longer.
        let mut tls = ServerTlsConfig::new()
            .identity(identity)
            .timeout(Duration::from_secs(10));
        if let Some(ca) = &self.tls_client_ca {
            let pem = read(ca, "POSTSUB_TLS_CLIENT_CA")?;
            postsub::tls::check_certificates(&pem)
                .with_context(|| format!("POSTSUB_TLS_CLIENT_CA {}", ca.display()))?;
            tls = tls.client_ca_root(Certificate::from_pem(pem));
        }
        Ok(Some(tls))
    }
}

/// `POSTSUB_ADMIN_TOKEN`: long enough to be a secret.
fn admin_token(s: &str) -> Result<Secret, String> {
    if s.trim().len() < 32 {
        return Err(
            "an admin token must be at least 32 characters long (for one, the output \
                    of `openssl rand -base64 32`)"
                .into(),
        );
    }
    Ok(Secret::from(s.trim().to_owned()))
}

/// Where the calls that bindings choose (webhook URLs) may go.
#[derive(Debug, Clone, Args)]
pub struct TargetSettings {
    /// Address ranges (or addresses) webhooks may reach besides public addresses,
    /// comma-separated: `10.1.0.0/16,192.168.5.7`. Loopback, private, link-local (cloud
    /// metadata), CGNAT, unique-local, multicast and the like are refused otherwise;
    /// `postsub dev` allows loopback too.
    #[arg(long, env = "POSTSUB_ALLOW_TARGETS", default_value = "", value_parser = allowed_targets, hide_default_value = true)]
    pub allow_targets: TargetPolicy,
}

impl TargetSettings {
    /// The policy of `serve` and `worker`: public addresses and the ranges allowed.
    pub fn policy(&self) -> TargetPolicy {
        self.allow_targets.clone()
    }

    /// The policy of `postsub dev`: loopback allowed too.
    pub fn dev_policy(&self) -> TargetPolicy {
        self.allow_targets.and(TargetPolicy::loopback())
    }
}

fn allowed_targets(text: &str) -> Result<TargetPolicy, String> {
    postsub_tasks::targets::parse_ranges(text).map(TargetPolicy::allowing)
}

/// Settings of the worker.
#[derive(Debug, Clone, Args)]
pub struct WorkerSettings {
    /// Unacked jobs the queue hands the worker (RabbitMQ: per kind's queue; embedded: in
    /// all).
    #[arg(long, env = "POSTSUB_WORKER_PREFETCH", default_value_t = 32)]
    pub prefetch: u16,
    /// Jobs the worker runs at once.
    #[arg(long, env = "POSTSUB_WORKER_CONCURRENCY", default_value_t = 16)]
    pub concurrency: usize,
    /// How long one async task may run.
    #[arg(long, env = "POSTSUB_TASK_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    pub task_timeout: Duration,
    /// How long shutdown waits for running jobs before handing them back to the queue.
    #[arg(long, env = "POSTSUB_DRAIN_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub drain_timeout: Duration,
    /// Where `postsub worker` serves `/healthz`, `/readyz` and `/metrics` (under
    /// `postsub dev`, the proxy's HTTP server serves them for both).
    #[arg(
        long,
        env = "POSTSUB_WORKER_HTTP_ADDR",
        default_value = "127.0.0.1:9091"
    )]
    pub worker_http_addr: SocketAddr,
}

/// Everything `postsub dev` runs: proxy and worker in one process.
#[derive(Debug, Clone, Args)]
pub struct DevSettings {
    #[allow(missing_docs)]
    #[command(flatten)]
    pub database: DatabaseSettings,
    #[allow(missing_docs)]
    #[command(flatten)]
    pub broker: BrokerSettings,
    #[allow(missing_docs)]
    #[command(flatten)]
    pub proxy: ProxySettings,
    #[allow(missing_docs)]
    #[command(flatten)]
    pub worker: WorkerSettings,
    #[allow(missing_docs)]
    #[command(flatten)]
    pub targets: TargetSettings,
    #[allow(missing_docs)]
    #[command(flatten)]
    pub alerts: crate::alerts::AlertSettings,
}

impl DevSettings {
    /// The backend `postsub dev` runs on: the embedded one at `.postsub/postsub.db`,
    /// unless DATABASE_URL says otherwise.
    pub fn backend(&self) -> anyhow::Result<crate::backend::Backend> {
        crate::backend::Backend::choose(&self.database, &self.broker, crate::backend::DEV_DATABASE)
    }

    /// The settings `postsub dev` would get from these flags (and the environment), for
    /// embedding postsub in tests or another program without repeating the defaults.
    pub fn from_flags(flags: &[&str]) -> Result<Self, clap::Error> {
        #[derive(Parser)]
        struct Flags {
            #[command(flatten)]
            settings: DevSettings,
        }
        let args = std::iter::once("postsub").chain(flags.iter().copied());
        Flags::try_parse_from(args).map(|flags| flags.settings)
    }

    /// Settings for a run that shares its servers with others: its own PostgreSQL database
    /// and queue prefix, listeners on ports the OS picks, and `extra` flags on top.
    pub fn isolated(
        database_url: &str,
        amqp_url: &str,
        queue_prefix: &str,
        extra: &[&str],
    ) -> Result<Self, clap::Error> {
        let mut flags = vec![
            "--database-url",
            database_url,
            "--amqp-url",
            amqp_url,
            "--queue-prefix",
            queue_prefix,
            "--grpc-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
        ];
        flags.extend_from_slice(extra);
        Self::from_flags(&flags)
    }
}

impl DevSettings {
    /// Settings for a run on the embedded backend in `database` (a path or `sqlite://`
    /// URL), listeners on ports the OS picks, and `extra` flags on top.
    pub fn embedded(database: &str, extra: &[&str]) -> Result<Self, clap::Error> {
        let mut flags = vec![
            "--database-url",
            database,
            "--grpc-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
        ];
        flags.extend_from_slice(extra);
        Self::from_flags(&flags)
    }
}
