//! [`Settings`]: everything the binary reads from its command line or environment.

use std::{fmt, net::SocketAddr, str::FromStr, time::Duration};

use clap::Parser;

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

    /// PostgreSQL database of forms and submissions; created at startup if missing.
    #[arg(
        long,
        env = "COLLECT_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/collect"
    )]
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

impl DatabaseUrl {
    /// The full URL, password included: pass it to the driver, never to a log.
    pub fn expose(&self) -> &str {
        &self.0
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
}
