//! Keeps what every process holds in memory (the binding cache, the tokens) as fresh as the
//! store: reloaded when the store's change feed announces a change made by any process
//! (PostgreSQL: `LISTEN`, SQLite: a polled version counter), and after every reconnect of
//! that feed, so a missed notification costs at most one reconnect.

use std::{sync::Arc, time::Duration};

use tokio_util::sync::CancellationToken;

use crate::{
    auth::TokenCache,
    bindings::BindingCache,
    store::{Store, StoreResult},
};

/// What the change feed keeps fresh.
#[derive(Clone)]
pub struct Followed {
    /// The bindings.
    pub bindings: BindingCache,
    /// The API tokens.
    pub tokens: TokenCache,
}

impl Followed {
    async fn reload(&self) -> StoreResult<()> {
        self.bindings.reload().await?;
        self.tokens.reload().await
    }
}

/// Follows the store's changes until `shutdown`, reconnecting with backoff when the feed
/// is lost.
pub async fn follow_changes(
    store: Arc<dyn Store>,
    followed: Followed,
    shutdown: CancellationToken,
) {
    let mut backoff = Duration::from_millis(100);
    while !shutdown.is_cancelled() {
        match listen(&*store, &followed, &shutdown).await {
            Ok(()) => return,
            Err(err) => {
                tracing::warn!(error = %err, ?backoff, "change listener lost; reconnecting");
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

async fn listen(
    store: &dyn Store,
    followed: &Followed,
    shutdown: &CancellationToken,
) -> StoreResult<()> {
    let mut feed = store.changes().await?;
    // Changes made while nobody listened.
    followed.reload().await?;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            changed = feed.changed() => {
                changed?;
                followed.reload().await?;
            }
        }
    }
}
