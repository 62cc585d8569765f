//! The tokens in memory: every call is checked here, never against the database.
//!
//! Like the binding cache, the set is swapped in whole and reloaded when the store's change
//! feed announces a change made by any process, so a revoke takes effect on every proxy
//! within the feed's delay (PostgreSQL: at once; SQLite: its 250 ms poll). When a token was
//! last used is kept here and written back every few seconds, not on every call.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};
use subtle::ConstantTimeEq as _;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::Scope;
use crate::store::{Store, StoreResult};

/// How often the last-used times are written to the store.
const LAST_USED_FLUSH: Duration = Duration::from_secs(5);

/// A token as the proxy checks it.
struct Known {
    name: String,
    scope: Scope,
    hash: [u8; 32],
}

/// Who made a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's name.
    pub name: String,
    /// The token's scope.
    pub scope: Scope,
}

/// Shared view of the stored tokens; cheap to clone.
#[derive(Clone)]
pub struct TokenCache {
    store: Arc<dyn Store>,
    known: Arc<ArcSwap<Vec<Known>>>,
    used: Arc<Mutex<HashMap<String, DateTime<Utc>>>>,
}

impl TokenCache {
    /// Loads every stored token once.
    pub async fn load(store: Arc<dyn Store>) -> StoreResult<Self> {
        let cache = Self {
            store,
            known: Arc::default(),
            used: Arc::default(),
        };
        cache.reload().await?;
        Ok(cache)
    }

    /// Reads the tokens from the store and swaps them in.
    pub async fn reload(&self) -> StoreResult<()> {
        let tokens = self.store.tokens().await?;
        let known = tokens
            .into_iter()
            .filter_map(|token| {
                let hash = <[u8; 32]>::try_from(token.hash.as_slice()).ok()?;
                Some(Known {
                    name: token.name,
                    scope: token.scope,
                    hash,
                })
            })
            .collect();
        self.known.store(Arc::new(known));
        Ok(())
    }

    /// Whether the store holds no token at all.
    pub fn is_empty(&self) -> bool {
        self.known.load().is_empty()
    }

    /// The stored token whose hash is `hash`, noted as used now. Every stored hash is
    /// compared in constant time, so how long this takes says nothing of the tokens.
    pub fn check(&self, hash: &[u8; 32]) -> Option<Caller> {
        let known = self.known.load();
        let mut found = None;
        for token in known.iter() {
            if bool::from(token.hash.ct_eq(hash)) {
                found = Some(token);
            }
        }
        let token = found?;
        self.used
            .lock()
            .expect("last-used map poisoned")
            .insert(token.name.clone(), Utc::now());
        Some(Caller {
            name: token.name.clone(),
            scope: token.scope,
        })
    }

    /// Writes the last-used times noted since the previous write.
    pub async fn flush_last_used(&self) -> StoreResult<()> {
        let used: Vec<_> = std::mem::take(&mut *self.used.lock().expect("last-used map poisoned"))
            .into_iter()
            .collect();
        if used.is_empty() {
            return Ok(());
        }
        self.store.touch_tokens(&used).await
    }

    /// Writes the last-used times every few seconds until the task is finished.
    pub fn start_flushing(&self) -> TokenCacheTask {
        let stop = CancellationToken::new();
        let (cache, stopped) = (self.clone(), stop.clone());
        let task = tokio::spawn(async move {
            let mut every = tokio::time::interval(LAST_USED_FLUSH);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = stopped.cancelled() => break,
                    _ = every.tick() => {}
                }
                if let Err(err) = cache.flush_last_used().await {
                    tracing::warn!(error = %err, "could not record when tokens were last used");
                }
            }
        });
        TokenCacheTask {
            cache: self.clone(),
            stop,
            task,
        }
    }
}

/// The background writer of last-used times.
pub struct TokenCacheTask {
    cache: TokenCache,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl TokenCacheTask {
    /// Stops the writer and writes what it has not yet.
    pub async fn finish(self) {
        self.stop.cancel();
        let _ = self.task.await;
        if let Err(err) = self.cache.flush_last_used().await {
            tracing::warn!(error = %err, "could not record when tokens were last used");
        }
    }
}
