//! The `postsub` command line: server commands and the admin client.

use std::{future::Future, io::IsTerminal as _, pin::Pin, process::ExitCode};

use clap::{Args, Parser, Subcommand};
use postsub_tasks::{Registry, TargetPolicy};
use tokio_util::sync::CancellationToken;

use crate::{
    alerts::AlertSettings,
    app::{DevStack, Launch, Proxy, Services},
    backend::{Backend, Database, SERVER_DATABASE},
    backfill::BackfillArgs,
    client::{self, AuditCommand, BindingsCommand, DlqCommand, KindsArgs, RunsCommand},
    settings::{
        BrokerSettings, DatabaseSettings, DevSettings, ProxySettings, TargetSettings,
        WorkerSettings,
    },
    tokens::{self, TokensCommand},
};

/// postsub: post-submission tasks for form backends.
#[derive(Debug, Parser)]
#[command(name = "postsub", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    server: client::ServerArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create the database (or SQLite file) if missing and apply migrations.
    Migrate(DatabaseSettings),
    /// Run the gRPC proxy.
    Serve(ServeArgs),
    /// Run a worker.
    Worker(WorkerArgs),
    /// Migrate, then run the proxy and a worker in one process (for a first run: on the
    /// embedded backend in .postsub/postsub.db unless DATABASE_URL names another).
    Dev(DevSettings),
    /// Manage bindings of tasks to forms.
    #[command(subcommand)]
    Bindings(BindingsCommand),
    /// List the task kinds the proxy knows (`--json`: with their config schemas).
    Kinds(KindsArgs),
    /// Look at the run history; retry a dead run.
    #[command(subcommand)]
    Runs(RunsCommand),
    /// Work with the dead-letter queues.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Run bindings over stored submissions: old ones through a new binding, or those the
    /// proxy missed while it was down (from a file or the backend's listing).
    Backfill(BackfillArgs),
    /// What the job queue holds, per task kind.
    Queues(client::QueuesArgs),
    /// Make, list and revoke API tokens (in the database itself: DATABASE_URL).
    #[command(subcommand)]
    Tokens(TokensCommand),
    /// Read the audit log: who changed what, and when.
    #[command(subcommand)]
    Audit(AuditCommand),
}

#[derive(Debug, Args)]
struct ServeArgs {
    #[command(flatten)]
    database: DatabaseSettings,
    #[command(flatten)]
    broker: BrokerSettings,
    #[command(flatten)]
    proxy: ProxySettings,
    #[command(flatten)]
    targets: TargetSettings,
    #[command(flatten)]
    alerts: AlertSettings,
}

#[derive(Debug, Args)]
struct WorkerArgs {
    #[command(flatten)]
    database: DatabaseSettings,
    #[command(flatten)]
    broker: BrokerSettings,
    #[command(flatten)]
    worker: WorkerSettings,
    #[command(flatten)]
    targets: TargetSettings,
    #[command(flatten)]
    alerts: AlertSettings,
}

/// Adds a task author's kinds to the built-in ones; called with the outbound-target policy
/// the operator set, for kinds that call addresses a binding names.
pub trait ExtendRegistry: Fn(&mut Registry, &TargetPolicy) {}

impl<F: Fn(&mut Registry, &TargetPolicy)> ExtendRegistry for F {}

/// Parses the command line and runs the command: the whole `postsub` command line, with
/// the built-in task kinds and those `extend` registers. The `postsub` binary is
/// `postsub_proxy::main(|_registry, _targets| {})`; a binary with a task kind of its own
/// registers it in the closure (`registry.register(SmsReceipt::new(targets));` in
/// examples/sms-receipt). A kind registered twice stops the start with an error.
pub async fn main(extend: impl ExtendRegistry) -> ExitCode {
    boxed_run(&extend).await
}

/// `run` behind a `dyn Future` made here: a binary that awaited `run`'s future itself would
/// compile every future it awaits once more in its own crate (rustc exports no code of a
/// library's async fn bodies), which took the `postsub` binary's release build 44 s.
fn boxed_run(extend: &dyn ExtendRegistry) -> Pin<Box<dyn Future<Output = ExitCode> + '_>> {
    Box::pin(run(extend))
}

async fn run(extend: &dyn ExtendRegistry) -> ExitCode {
    let cli = Cli::parse();
    let server = !matches!(
        cli.command,
        Command::Bindings(_)
            | Command::Kinds(_)
            | Command::Runs(_)
            | Command::Dlq(_)
            | Command::Backfill(_)
            | Command::Queues(_)
            | Command::Tokens(_)
            | Command::Audit(_)
    );
    init_tracing(if server { "info" } else { "warn" });
    let kinds = Kinds(extend);
    let result = match cli.command {
        Command::Migrate(database) => migrate(database).await,
        Command::Serve(args) => serve(args, kinds).await,
        Command::Worker(args) => worker(args, kinds).await,
        Command::Dev(args) => dev(args, kinds).await,
        Command::Bindings(command) => client::bindings(&cli.server, command).await,
        Command::Kinds(args) => client::kinds(&cli.server, args).await,
        Command::Runs(command) => client::runs(&cli.server, command).await,
        Command::Dlq(command) => client::dlq(&cli.server, command).await,
        Command::Backfill(args) => crate::backfill::backfill(&cli.server, args).await,
        Command::Queues(args) => client::queues(&cli.server, args).await,
        Command::Tokens(command) => tokens::tokens(command).await,
        Command::Audit(command) => client::audit(&cli.server, command).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, not in a log file.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

async fn migrate(settings: DatabaseSettings) -> anyhow::Result<()> {
    let database = Database::from_settings(&settings, SERVER_DATABASE)?;
    database.migrate().await?;
    tracing::info!("migrated {}", database.describe());
    Ok(())
}

/// The backend of `serve` and `worker`, announced.
fn server_backend(database: &DatabaseSettings, broker: &BrokerSettings) -> anyhow::Result<Backend> {
    let backend = Backend::choose(database, broker, SERVER_DATABASE)?;
    tracing::info!("backend: {}", backend.describe());
    Ok(backend)
}

async fn serve(args: ServeArgs, kinds: Kinds<'_>) -> anyhow::Result<()> {
    let backend = server_backend(&args.database, &args.broker)?;
    let services = Services::start(&backend, kinds.registry(args.targets.policy()))
        .await?
        .with_alerts(&args.alerts)?;
    let proxy = Proxy::build(&services, &args.proxy, Launch::Serve).await?;
    announce(&proxy);
    proxy.run(shutdown_signal()).await?;
    services.stop().await;
    Ok(())
}

async fn worker(args: WorkerArgs, kinds: Kinds<'_>) -> anyhow::Result<()> {
    let backend = server_backend(&args.database, &args.broker)?;
    let services = Services::start(&backend, kinds.registry(args.targets.policy()))
        .await?
        .with_alerts(&args.alerts)?;
    let worker = services.worker(&args.worker)?;
    let shutdown = shutdown_signal();
    let http = services
        .serve_worker_http(args.worker.worker_http_addr, shutdown.clone())
        .await?;
    tracing::info!(http = %args.worker.worker_http_addr, "worker listening");
    worker.run(shutdown).await;
    let _ = http.await;
    services.stop().await;
    Ok(())
}

async fn dev(settings: DevSettings, kinds: Kinds<'_>) -> anyhow::Result<()> {
    tracing::info!("backend: {}", settings.backend()?.describe());
    let targets = settings.targets.dev_policy();
    let stack = DevStack::start(&settings, kinds.registry(targets), shutdown_signal()).await?;
    tracing::info!(grpc = %stack.grpc_addr(), http = %stack.http_addr(),
        console = %format!("http://{}/ui", stack.http_addr()), "listening");
    stack.wait().await
}

/// The task kinds of this binary: the built-in ones and the author's.
#[derive(Clone, Copy)]
struct Kinds<'a>(&'a dyn ExtendRegistry);

impl Kinds<'_> {
    /// The registry, the calls of its kinds reaching what `targets` allows (said at start).
    fn registry(self, targets: TargetPolicy) -> Registry {
        tracing::info!("webhooks and remote tasks may call {targets}");
        let mut registry = Registry::with_builtins_for(targets.clone());
        (self.0)(&mut registry, &targets);
        registry
    }
}

fn announce(proxy: &Proxy) {
    tracing::info!(grpc = %proxy.grpc_addr(), http = %proxy.http_addr(),
        console = %format!("http://{}/ui", proxy.http_addr()), "listening");
}

/// Cancelled on Ctrl-C or SIGTERM.
fn shutdown_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        let terminate = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut signal) => {
                    signal.recv().await;
                }
                Err(_) => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let terminate = std::future::pending::<()>();
        tokio::select! {
            _ = ctrl_c => {}
            () = terminate => {}
        }
        tracing::info!("shutting down");
        cancel.cancel();
        // A second Ctrl-C while draining means "now".
        if tokio::signal::ctrl_c().await.is_ok() {
            std::process::exit(130);
        }
    });
    token
}
