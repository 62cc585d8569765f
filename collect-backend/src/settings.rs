//! [`Settings`]: everything the binary reads from its command line or environment.

use std::{fmt, net::SocketAddr, path::PathBuf, str::FromStr, time::Duration};

use clap::Parser;
use postsub::Secret;

/// Where forms are kept when `COLLECT_DATABASE_URL` is not set: a SQLite file under the
/// working directory, so the backend runs with nothing installed.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://.collect/collect.db";

/// Settings of collect-backend; each flag falls back to an environment variable.
#[derive(Debug, Clone, Parser)]
#[command(version, about)]
pub struct Settings {
    /// Address the HTTP API listens on (port 0 picks a free port).
    #[arg(long, env = "COLLECT_ADDR", default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,

    /// URL of the postsub proxy's gRPC endpoint, called after every submission.
    #[arg(long, env = "POSTSUB_URL", default_value = "http://127.0.0.1:50051")]
    pub postsub_url: String,

    /// The `submit` token the proxy asks for (`postsub tokens create --scope submit`); none
    /// for `postsub dev` on loopback without tokens.
    #[arg(long, env = "POSTSUB_TOKEN", hide_env_values = true)]
    pub postsub_token: Option<Secret>,

    /// CA certificate (PEM file) the proxy's certificate is checked against, for an
    /// `https://` POSTSUB_URL with a private CA; the system's roots otherwise.
    #[arg(long, env = "POSTSUB_CA_CERT")]
    pub postsub_ca_cert: Option<PathBuf>,

    /// Client certificate (PEM file) for a proxy that requires one (mutual TLS); with
    /// POSTSUB_CLIENT_KEY.
    #[arg(long, env = "POSTSUB_CLIENT_CERT", requires = "postsub_client_key")]
    pub postsub_client_cert: Option<PathBuf>,

    /// The client certificate's private key (PEM file).
    #[arg(long, env = "POSTSUB_CLIENT_KEY", requires = "postsub_client_cert")]
    pub postsub_client_key: Option<PathBuf>,

    /// Database of forms and submissions, created at startup if missing: `sqlite://PATH` or a
    /// bare PATH for a SQLite file (its directory is created too), `postgres://…` for
    /// PostgreSQL.
    #[arg(long, env = "COLLECT_DATABASE_URL", default_value = DEFAULT_DATABASE_URL)]
    pub database_url: DatabaseUrl,

    /// How long a submit waits for the proxy before answering without post-submission results.
    #[arg(long, env = "POSTSUB_DEADLINE_MS", default_value_t = 2000)]
    pub postsub_deadline_ms: u64,

    /// Largest request body accepted, in bytes; larger bodies get 413.
    #[arg(long, env = "COLLECT_MAX_BODY_BYTES", default_value_t = 256 * 1024)]
    pub max_body_bytes: usize,
}

impl Settings {
    /// [`Settings::postsub_deadline_ms`] as a duration.
    pub fn postsub_deadline(&self) -> Duration {
        Duration::from_millis(self.postsub_deadline_ms)
    }
}

/// A database URL whose password never shows up in `Debug` output or logs.
#[derive(Clone)]
pub struct DatabaseUrl(String);

/// The database backend a [`DatabaseUrl`] names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// A PostgreSQL server (`postgres://` or `postgresql://`).
    Postgres,
    /// A SQLite file (`sqlite://PATH`, `sqlite:PATH` or a bare PATH).
    Sqlite(PathBuf),
}

impl DatabaseUrl {
    /// The full URL, password included: pass it to the driver, never to a log.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Which backend the URL names, and for SQLite the file. Fails, saying what to write
    /// instead, on another scheme, on a SQLite URL without a path, and on SQLite URL options
    /// (the backend sets its own: WAL, foreign keys).
    pub fn backend(&self) -> anyhow::Result<Backend> {
        let url = self.0.trim();
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Backend::Postgres);
        }
        let path = match url.strip_prefix("sqlite:") {
            Some(rest) => rest.strip_prefix("//").unwrap_or(rest),
            None if url.contains("://") => anyhow::bail!(
                "COLLECT_DATABASE_URL {self:?} has a scheme collect-backend does not know; use \
                 sqlite://PATH (or a bare PATH) for a SQLite file, or postgres://USER@HOST/DB"
            ),
            None => url,
        };
        if path.contains('?') {
            anyhow::bail!(
                "COLLECT_DATABASE_URL {self:?} has options after `?`; give only the path of the \
                 SQLite file (collect-backend turns on WAL and foreign keys itself)"
            );
        }
        if path.is_empty() || path == ":memory:" {
            anyhow::bail!(
                "COLLECT_DATABASE_URL {self:?} names no SQLite file; give a path such as \
                 {DEFAULT_DATABASE_URL}"
            );
        }
        Ok(Backend::Sqlite(PathBuf::from(path)))
    }
}

impl From<String> for DatabaseUrl {
    fn from(url: String) -> Self {
        Self(url)
    }
}

impl FromStr for DatabaseUrl {
    type Err = std::convert::Infallible;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        Ok(Self(url.to_owned()))
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `scheme://user:password@host/...`: keep everything but the password.
        let (scheme, rest) = self.0.split_once("://").unwrap_or(("", &self.0));
        match rest.split_once('@') {
            Some((userinfo, host)) if userinfo.contains(':') => {
                let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
                write!(f, "{scheme}://{user}:***@{host}")
            }
            _ => f.write_str(&self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_password() {
        let url = DatabaseUrl::from("postgres://app:s3cret@db:5432/collect".to_owned());
        assert_eq!(format!("{url:?}"), "postgres://app:***@db:5432/collect");
        let url = DatabaseUrl::from("postgres://postgres@127.0.0.1/collect".to_owned());
        assert_eq!(format!("{url:?}"), "postgres://postgres@127.0.0.1/collect");
    }

    fn backend(url: &str) -> anyhow::Result<Backend> {
        DatabaseUrl::from(url.to_owned()).backend()
    }

    fn sqlite(path: &str) -> Backend {
        Backend::Sqlite(PathBuf::from(path))
    }

    #[test]
    fn the_default_is_a_sqlite_file_under_the_working_directory() {
        assert_eq!(
            backend(DEFAULT_DATABASE_URL).unwrap(),
            sqlite(".collect/collect.db")
        );
    }

    #[test]
    fn sqlite_urls_and_bare_paths_name_a_file() {
        assert_eq!(backend("sqlite:///tmp/c.db").unwrap(), sqlite("/tmp/c.db"));
        assert_eq!(backend("sqlite:data/c.db").unwrap(), sqlite("data/c.db"));
        assert_eq!(backend("data/c.db").unwrap(), sqlite("data/c.db"));
        assert_eq!(backend("/var/lib/c.db").unwrap(), sqlite("/var/lib/c.db"));
    }

    #[test]
    fn postgres_urls_name_postgres() {
        for url in [
            "postgres://postgres@127.0.0.1/collect",
            "postgresql://a:b@db/c",
        ] {
            assert_eq!(backend(url).unwrap(), Backend::Postgres, "{url}");
        }
    }

    #[test]
    fn other_schemes_empty_paths_and_options_are_refused() {
        for url in [
            "mysql://db/collect",
            "sqlite://",
            "sqlite::memory:",
            "sqlite://c.db?mode=ro",
        ] {
            let err = backend(url).unwrap_err().to_string();
            assert!(err.contains("COLLECT_DATABASE_URL"), "{url}: {err}");
        }
        let err = backend("mysql://app:s3cret@db/c").unwrap_err().to_string();
        assert!(!err.contains("s3cret"), "{err}");
    }
}
