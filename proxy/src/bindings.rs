//! The in-memory binding cache: `Process` and the worker read bindings from here, never from
//! the database.
//!
//! A snapshot of all bindings, with each config already prepared by its task kind (rules
//! compiled, clients built), is swapped in atomically. It is rebuilt when PostgreSQL
//! announces a change (`LISTEN postsub_bindings`, sent by a trigger on the table) and after
//! every reconnect of that listener, so a missed notification costs at most one reconnect.

use std::{collections::HashMap, sync::Arc, time::Duration};

use arc_swap::ArcSwap;
use postsub_tasks::{PreparedTask, Registry};
use sqlx::{PgPool, postgres::PgListener};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::store::{self, Binding};

/// The channel the `bindings_changed` trigger notifies.
const CHANNEL: &str = "postsub_bindings";

/// A binding with its task ready to run.
pub struct LiveBinding {
    /// The stored binding.
    pub binding: Binding,
    /// The prepared task, or why the stored config no longer prepares (say, a kind this
    /// process does not know): runs of it fail with that reason instead of vanishing.
    pub task: Result<Arc<dyn PreparedTask>, String>,
}

#[derive(Default)]
struct Snapshot {
    /// Enabled bindings per form, in creation order.
    by_form: HashMap<Uuid, Arc<[Arc<LiveBinding>]>>,
    by_id: HashMap<Uuid, Arc<LiveBinding>>,
}

/// Shared, lock-free view of the bindings.
#[derive(Clone)]
pub struct BindingCache {
    snapshot: Arc<ArcSwap<Snapshot>>,
    registry: Registry,
    pool: PgPool,
}

impl BindingCache {
    /// Loads every binding once.
    pub async fn load(pool: PgPool, registry: Registry) -> sqlx::Result<Self> {
        let cache = Self {
            snapshot: Arc::default(),
            registry,
            pool,
        };
        cache.reload().await?;
        Ok(cache)
    }

    /// The enabled bindings of a form, in creation order.
    pub fn for_form(&self, form_id: Uuid) -> Option<Arc<[Arc<LiveBinding>]>> {
        self.snapshot.load().by_form.get(&form_id).cloned()
    }

    /// A binding by id, enabled or not.
    pub fn get(&self, id: Uuid) -> Option<Arc<LiveBinding>> {
        self.snapshot.load().by_id.get(&id).cloned()
    }

    /// Reads all bindings from the database and swaps them in.
    pub async fn reload(&self) -> sqlx::Result<()> {
        let bindings = store::all_bindings(&self.pool).await?;
        let mut snapshot = Snapshot::default();
        let mut by_form: HashMap<Uuid, Vec<Arc<LiveBinding>>> = HashMap::new();
        for binding in bindings {
            let task = self
                .registry
                .prepare(&binding.kind, binding.mode, &binding.config)
                .map_err(|err| {
                    tracing::warn!(binding_id = %binding.id, kind = %binding.kind, error = %err,
                        "stored binding does not prepare; its runs will fail");
                    err.0
                });
            let live = Arc::new(LiveBinding { binding, task });
            if live.binding.enabled {
                by_form
                    .entry(live.binding.form_id)
                    .or_default()
                    .push(live.clone());
            }
            snapshot.by_id.insert(live.binding.id, live);
        }
        snapshot.by_form = by_form
            .into_iter()
            .map(|(form, list)| (form, list.into()))
            .collect();
        self.snapshot.store(Arc::new(snapshot));
        Ok(())
    }

    /// Keeps the cache fresh until `shutdown`: reloads on every change notification, and
    /// after reconnecting when the database connection drops.
    pub async fn follow_changes(self, shutdown: CancellationToken) {
        let mut backoff = Duration::from_millis(100);
        while !shutdown.is_cancelled() {
            match self.listen(&shutdown).await {
                Ok(()) => return,
                Err(err) => {
                    tracing::warn!(error = %err, ?backoff, "binding change listener lost; reconnecting");
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    async fn listen(&self, shutdown: &CancellationToken) -> sqlx::Result<()> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(CHANNEL).await?;
        // Changes made while nobody listened.
        self.reload().await?;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                notification = listener.try_recv() => {
                    match notification? {
                        // One reload covers every change queued so far.
                        Some(_) => while listener.next_buffered().is_some() {},
                        // The connection dropped; the listener reconnects on the next call,
                        // and notifications sent meanwhile are lost: reload.
                        None => tracing::info!("binding change listener reconnecting"),
                    }
                    self.reload().await?;
                }
            }
        }
    }
}
