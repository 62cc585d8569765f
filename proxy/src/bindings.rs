//! The in-memory binding cache: `Process` and the worker read bindings from here, never from
//! the database.
//!
//! A snapshot of all bindings, with each config already prepared by its task kind (rules
//! compiled, clients built), is swapped in atomically. [`crate::follow`] rebuilds it when
//! the store's change feed announces a change made by any process.

use std::{collections::HashMap, sync::Arc};

use arc_swap::ArcSwap;
use postsub_tasks::{PreparedTask, Registry, Submission};
use uuid::Uuid;

use crate::store::{Binding, Store, StoreResult};

/// A binding with its task ready to run.
pub struct LiveBinding {
    /// The stored binding.
    pub binding: Binding,
    /// The prepared task, or why the stored config no longer prepares (say, a kind this
    /// process does not know): runs of it fail with that reason instead of vanishing.
    pub task: Result<Arc<dyn PreparedTask>, String>,
}

impl LiveBinding {
    /// Whether the binding runs on this submission's event: one that does not has no run
    /// for it, and that is no error.
    pub fn takes(&self, submission: &Submission) -> bool {
        self.binding.options.events().contains(submission.event)
    }
}

#[derive(Default)]
struct Snapshot {
    /// Enabled bindings per form, in creation order.
    by_form: HashMap<Uuid, Arc<[Arc<LiveBinding>]>>,
    by_id: HashMap<Uuid, Arc<LiveBinding>>,
}

/// Why a run of a binding of `kind`, which `registry` lacks, fails, and what to do.
fn unknown_kind(registry: &Registry, kind: &str) -> String {
    let known: Vec<&str> = registry.kinds().map(|task| task.kind()).collect();
    format!(
        "this process does not know the task kind `{kind}` (it knows {}): run a worker built \
         with it, then `postsub dlq replay --kind {kind}`",
        known.join(", ")
    )
}

/// Shared, lock-free view of the bindings.
#[derive(Clone)]
pub struct BindingCache {
    snapshot: Arc<ArcSwap<Snapshot>>,
    registry: Registry,
    store: Arc<dyn Store>,
}

impl BindingCache {
    /// Loads every binding once.
    pub async fn load(store: Arc<dyn Store>, registry: Registry) -> StoreResult<Self> {
        let cache = Self {
            snapshot: Arc::default(),
            registry,
            store,
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
    pub async fn reload(&self) -> StoreResult<()> {
        let bindings = self.store.all_bindings().await?;
        let mut snapshot = Snapshot::default();
        let mut by_form: HashMap<Uuid, Vec<Arc<LiveBinding>>> = HashMap::new();
        for binding in bindings {
            let task = self
                .registry
                .prepare(&binding.kind, binding.mode, &binding.config)
                .map_err(|err| {
                    tracing::warn!(binding_id = %binding.id, kind = %binding.kind, error = %err,
                        "stored binding does not prepare; its runs will fail");
                    match self.registry.get(&binding.kind) {
                        Some(_) => err.0,
                        None => unknown_kind(&self.registry, &binding.kind),
                    }
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
}
