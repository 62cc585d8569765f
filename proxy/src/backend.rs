//! Choosing the backend: the database URL decides, and nothing above the seams knows which.
//!
//! | DATABASE_URL | store | job queue |
//! |---|---|---|
//! | `postgres://…` | [`PgStore`] | [`RabbitQueue`] at AMQP_URL, outbox in PostgreSQL |
//! | `sqlite://PATH`, or a plain path | [`SqliteStore`] in that file | [`EmbeddedQueue`] in the same file |
//!
//! An AMQP_URL given with a SQLite database is refused: the embedded queue lives in the
//! file, and a broker named there would be silently unused.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::{Context as _, bail};
use sqlx::sqlite::SqliteSynchronous;

use crate::{
    queue::{
        JobQueue,
        embedded::EmbeddedQueue,
        rabbitmq::{QueueSettings, RabbitQueue},
    },
    recorder::{Recorder, RecorderTask},
    settings::{BrokerSettings, DatabaseSettings, Synchronous},
    store::{
        Store,
        postgres::PgStore,
        sqlite::{SqliteSettings, SqliteStore},
    },
};

/// `serve`, `worker` and `migrate` without DATABASE_URL.
pub const SERVER_DATABASE: &str = "postgres://postgres@127.0.0.1:5432/postsub";
/// `dev` without DATABASE_URL: the embedded backend in the working directory.
pub const DEV_DATABASE: &str = ".postsub/postsub.db";
/// RabbitMQ without AMQP_URL, for a PostgreSQL database.
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// postsub's database, parsed from its URL.
#[derive(Debug, Clone)]
pub enum Database {
    /// PostgreSQL at this URL.
    Postgres(String),
    /// The embedded backend's SQLite file.
    Sqlite(SqliteSettings),
}

impl Database {
    /// The database `settings` name, or `default` when they name none.
    pub fn from_settings(settings: &DatabaseSettings, default: &str) -> anyhow::Result<Self> {
        let url = settings.database_url.as_deref().unwrap_or(default);
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Database::Postgres(url.to_owned()));
        }
        let path = match url
            .strip_prefix("sqlite://")
            .or(url.strip_prefix("sqlite:"))
        {
            Some(path) => path,
            None if url.contains("://") => bail!(
                "DATABASE_URL `{}` is neither PostgreSQL (postgres://…) nor SQLite (sqlite://PATH, \
                 or a plain file path)",
                redact(url)
            ),
            None => url,
        };
        if path.is_empty() || path.contains(":memory:") || path.contains('?') {
            bail!(
                "DATABASE_URL `{url}` does not name a SQLite file: give a path such as \
                 sqlite://.postsub/postsub.db (no options; in-memory databases would lose every \
                 job at exit)"
            );
        }
        Ok(Database::Sqlite(SqliteSettings {
            path: PathBuf::from(path),
            synchronous: match settings.sqlite_synchronous {
                Synchronous::Full => SqliteSynchronous::Full,
                Synchronous::Normal => SqliteSynchronous::Normal,
            },
        }))
    }

    /// Creates the database if it does not exist and applies every pending migration.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        match self {
            Database::Postgres(url) => PgStore::migrate(url).await,
            Database::Sqlite(settings) => SqliteStore::migrate(settings).await,
        }
    }

    /// Opens the store of a migrated database, without the queue.
    pub async fn open_store(&self) -> anyhow::Result<Arc<dyn Store>> {
        Ok(match self {
            Database::Postgres(url) => Arc::new(PgStore::connect_migrated(url).await?),
            Database::Sqlite(settings) => Arc::new(SqliteStore::open(settings).await?),
        })
    }

    /// What it is and where, passwords hidden, for people to read.
    pub fn describe(&self) -> String {
        match self {
            Database::Postgres(url) => format!("PostgreSQL at {}", redact(url)),
            Database::Sqlite(settings) => format!(
                "the embedded backend (store and job queue in {}, synchronous={})",
                absolute(&settings.path).display(),
                match settings.synchronous {
                    SqliteSynchronous::Normal => "normal",
                    _ => "full",
                }
            ),
        }
    }
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}

/// A URL with its password replaced by `***`.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.split_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***@{host}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// Where RabbitMQ is and how its queues are named.
#[derive(Debug, Clone)]
pub struct Broker {
    /// AMQP URL, vhost included.
    pub url: String,
    /// Prefix of every queue name.
    pub prefix: String,
    /// Work and dead-letter queues are quorum queues.
    pub quorum: bool,
}

/// The store and the job queue postsub runs on.
#[derive(Debug, Clone)]
pub struct Backend {
    /// The store, and for the embedded backend the queue too.
    pub database: Database,
    /// RabbitMQ, for a PostgreSQL database; `None` for the embedded backend.
    pub broker: Option<Broker>,
}

/// An open backend, with its run recorder started.
pub struct Opened {
    /// The store.
    pub store: Arc<dyn Store>,
    /// The job queue.
    pub queue: Arc<dyn JobQueue>,
    /// The batching run-history writer over the store.
    pub recorder: Recorder,
    /// The recorder's task, to stop it after the last record.
    pub recorder_task: RecorderTask,
}

impl Backend {
    /// The backend the settings name (the database `default` when they name none).
    pub fn choose(
        database: &DatabaseSettings,
        broker: &BrokerSettings,
        default: &str,
    ) -> anyhow::Result<Self> {
        let database = Database::from_settings(database, default)?;
        let broker = match &database {
            Database::Postgres(_) => Some(Broker {
                url: broker
                    .amqp_url
                    .clone()
                    .unwrap_or_else(|| DEFAULT_AMQP_URL.to_owned()),
                prefix: broker.queue_prefix.clone(),
                quorum: broker.quorum_queues,
            }),
            Database::Sqlite(settings) => {
                if let Some(url) = &broker.amqp_url {
                    bail!(
                        "AMQP_URL ({}) is set, but DATABASE_URL names a SQLite file ({}): the \
                         embedded backend keeps its job queue in that file, so RabbitMQ would \
                         not be used. Unset AMQP_URL for the embedded backend, or use a \
                         postgres:// DATABASE_URL to run on PostgreSQL and RabbitMQ",
                        redact(url),
                        settings.path.display()
                    );
                }
                if broker.quorum_queues {
                    bail!(
                        "--quorum-queues applies to RabbitMQ; the embedded backend ({}) has no \
                         RabbitMQ queues",
                        settings.path.display()
                    );
                }
                None
            }
        };
        Ok(Self { database, broker })
    }

    /// What it is and where, passwords hidden, for people to read.
    pub fn describe(&self) -> String {
        match &self.broker {
            Some(broker) => format!(
                "{} and RabbitMQ at {} (queues {}.<kind>: deployments sharing a vhost need \
                 one POSTSUB_QUEUE_PREFIX each)",
                self.database.describe(),
                redact(&broker.url),
                broker.prefix
            ),
            None => self.database.describe(),
        }
    }

    /// Opens a migrated database, the queue for the task kinds `kinds` and those of the
    /// stored bindings, and the recorder (holding up to `recorder_capacity` records).
    ///
    /// The queue serves the bindings' kinds too so that a worker takes a job of a kind it
    /// does not know (its proxy knew it) and dead-letters it, saying so, instead of leaving
    /// it waiting unseen.
    pub async fn open(
        &self,
        kinds: Vec<String>,
        recorder_capacity: usize,
    ) -> anyhow::Result<Opened> {
        match (&self.database, &self.broker) {
            (Database::Postgres(url), Some(broker)) => {
                let store = Arc::new(PgStore::connect_migrated(url).await?);
                let kinds = with_bound_kinds(store.as_ref(), kinds).await?;
                let outbox = store.outbox();
                let store: Arc<dyn Store> = store;
                let (recorder, recorder_task) = Recorder::start(store.clone(), recorder_capacity);
                let queue = RabbitQueue::new(
                    QueueSettings {
                        url: broker.url.clone(),
                        prefix: broker.prefix.clone(),
                        kinds,
                        quorum: broker.quorum,
                    },
                    outbox,
                    recorder.clone(),
                );
                Ok(Opened {
                    store,
                    queue: Arc::new(queue),
                    recorder,
                    recorder_task,
                })
            }
            (Database::Sqlite(settings), None) => {
                let store = SqliteStore::open(settings).await?;
                let kinds = with_bound_kinds(&store, kinds).await?;
                let queue = EmbeddedQueue::new(&store, kinds);
                let store: Arc<dyn Store> = Arc::new(store);
                let (recorder, recorder_task) = Recorder::start(store.clone(), recorder_capacity);
                Ok(Opened {
                    store,
                    queue: Arc::new(queue),
                    recorder,
                    recorder_task,
                })
            }
            _ => bail!("a PostgreSQL database needs RabbitMQ, the embedded one none"),
        }
    }
}

/// `kinds` and, after them, the other kinds the stored bindings use (said in the log).
async fn with_bound_kinds(
    store: &dyn Store,
    mut kinds: Vec<String>,
) -> anyhow::Result<Vec<String>> {
    let bindings = store.all_bindings().await.context("reading the bindings")?;
    for binding in bindings {
        if !kinds.contains(&binding.kind) {
            tracing::warn!(kind = %binding.kind, binding_id = %binding.id,
                "a binding uses a task kind this process does not know: its jobs will be \
                 dead-lettered here");
            kinds.push(binding.kind);
        }
    }
    Ok(kinds)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(url: Option<&str>) -> DatabaseSettings {
        DatabaseSettings {
            database_url: url.map(str::to_owned),
            sqlite_synchronous: Synchronous::Full,
        }
    }

    fn broker(amqp_url: Option<&str>) -> BrokerSettings {
        BrokerSettings {
            amqp_url: amqp_url.map(str::to_owned),
            queue_prefix: "postsub".into(),
            quorum_queues: false,
        }
    }

    #[test]
    fn the_url_chooses_the_backend() {
        let choose = |url, amqp| Backend::choose(&settings(url), &broker(amqp), DEV_DATABASE);
        let dev = choose(None, None).unwrap();
        assert!(
            matches!(&dev.database, Database::Sqlite(s) if s.path == Path::new(".postsub/postsub.db"))
        );
        assert!(dev.broker.is_none());
        for url in ["sqlite://data/p.db", "sqlite:data/p.db", "data/p.db"] {
            let backend = choose(Some(url), None).unwrap();
            assert!(
                matches!(&backend.database, Database::Sqlite(s) if s.path == Path::new("data/p.db")),
                "{url}"
            );
        }
        let pg = choose(Some("postgres://u:secret@db/postsub"), None).unwrap();
        assert_eq!(pg.broker.as_ref().unwrap().url, DEFAULT_AMQP_URL);
        assert_eq!(
            pg.describe(),
            "PostgreSQL at postgres://u:***@db/postsub and RabbitMQ at \
             amqp://guest:***@127.0.0.1:5672/%2f (queues postsub.<kind>: deployments sharing \
             a vhost need one POSTSUB_QUEUE_PREFIX each)"
        );
    }

    #[test]
    fn contradictory_or_unusable_urls_are_refused_with_the_reason() {
        let choose = |url, amqp| Backend::choose(&settings(url), &broker(amqp), DEV_DATABASE);
        let err = choose(Some("sqlite://x.db"), Some("amqp://g:pw@h/%2f")).unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("the embedded backend keeps its job queue in that file"),
            "{message}"
        );
        assert!(
            message.contains("amqp://g:***@h/%2f") && !message.contains("pw"),
            "{message}"
        );
        for url in [
            "mysql://h/db",
            "sqlite::memory:",
            "sqlite://x.db?mode=ro",
            "sqlite://",
        ] {
            assert!(choose(Some(url), None).is_err(), "{url}");
        }
    }
}
