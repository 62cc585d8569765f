//! The task kinds one process knows, by name.

use std::{collections::BTreeMap, sync::Arc};

use serde_json::Value;

use crate::{
    ConfigError, Mode, PreparedTask, TargetPolicy, TaskBase,
    google_sheets::GoogleSheets,
    remote::Remote,
    task::{DynTask, Erased},
    validate::Validate,
    webhook::Webhook,
};

/// Task kinds by name. The proxy and the worker of one deployment must know the same kinds
/// (a worker dead-letters a job of a kind it does not know, naming the kinds it does).
#[derive(Clone, Default)]
pub struct Registry {
    kinds: BTreeMap<&'static str, Arc<dyn DynTask>>,
    /// Kinds [`Registry::register`]ed more than once: [`Registry::check`] refuses them.
    twice: Vec<&'static str>,
}

/// Two kinds registered under one name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "task kind `{0}` is registered twice; give one of them another name (or use \
     Registry::replace to replace a built-in on purpose)"
)]
pub struct DuplicateKind(pub &'static str);

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// A registry with the built-in kinds: `validate`, `webhook` and `remote` (calling public
    /// addresses only) and `google_sheets` (its endpoints from the environment).
    pub fn with_builtins() -> Self {
        Self::with_builtins_for(TargetPolicy::public_only())
    }

    /// [`Registry::with_builtins`], the webhooks reaching what `targets` allows.
    pub fn with_builtins_for(targets: TargetPolicy) -> Self {
        let mut registry = Self::new();
        registry
            .register(Validate::new())
            .register(Webhook::with_targets(targets.clone()))
            .register(Remote::with_targets(targets))
            .register(GoogleSheets::from_env());
        registry
    }

    /// Adds a kind. A second kind of the same name is not added, and [`Registry::check`]
    /// (run when postsub starts) refuses the registry: two crates both calling their task
    /// `sms` is a mistake to hear about at start-up, not a silent replacement.
    pub fn register<T: TaskBase>(&mut self, task: T) -> &mut Self {
        let kind = task.kind();
        if self.kinds.contains_key(kind) {
            self.twice.push(kind);
        } else {
            self.kinds.insert(kind, Arc::new(Erased(Arc::new(task))));
        }
        self
    }

    /// Adds a kind in place of the one of the same name, if any (a built-in configured
    /// differently, say).
    pub fn replace<T: TaskBase>(&mut self, task: T) -> &mut Self {
        self.kinds
            .insert(task.kind(), Arc::new(Erased(Arc::new(task))));
        self
    }

    /// Refuses a registry with a kind [`Registry::register`]ed twice.
    pub fn check(&self) -> Result<(), DuplicateKind> {
        match self.twice.first() {
            Some(kind) => Err(DuplicateKind(kind)),
            None => Ok(()),
        }
    }

    /// The kind named `kind`, if registered.
    pub fn get(&self, kind: &str) -> Option<&Arc<dyn DynTask>> {
        self.kinds.get(kind)
    }

    /// Every registered kind, by name.
    pub fn kinds(&self) -> impl Iterator<Item = &Arc<dyn DynTask>> {
        self.kinds.values()
    }

    /// Checks that `kind` exists and accepts `mode` and `config`, and prepares the task.
    pub fn prepare(
        &self,
        kind: &str,
        mode: Mode,
        config: &Value,
    ) -> Result<Arc<dyn PreparedTask>, ConfigError> {
        let task = self.get(kind).ok_or_else(|| {
            let known: Vec<&str> = self.kinds.keys().copied().collect();
            ConfigError(format!(
                "unknown task kind `{kind}`; known kinds: {}",
                known.join(", ")
            ))
        })?;
        if !task.modes().contains(&mode) {
            return Err(ConfigError(format!(
                "task kind `{kind}` cannot run in {mode} mode"
            )));
        }
        task.prepare(config)
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.kinds.keys()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_kind_names_the_known_ones() {
        let err = Registry::with_builtins()
            .prepare("sheets", Mode::Async, &json!({}))
            .err()
            .unwrap();
        assert_eq!(
            err.0,
            "unknown task kind `sheets`; known kinds: google_sheets, remote, validate, webhook"
        );
    }

    #[test]
    fn a_kind_registered_twice_is_refused_and_a_replaced_one_is_not() {
        let mut registry = Registry::with_builtins();
        assert_eq!(registry.check(), Ok(()));
        registry.replace(Validate::new());
        assert_eq!(registry.check(), Ok(()));
        registry.register(Validate::new());
        let err = registry.check().unwrap_err();
        assert_eq!(err, DuplicateKind("validate"));
        assert!(
            err.to_string()
                .starts_with("task kind `validate` is registered twice")
        );
    }

    #[test]
    fn every_built_in_publishes_an_object_schema() {
        for kind in Registry::with_builtins().kinds() {
            let schema = kind.config_schema();
            assert_eq!(schema["type"], "object", "{}", kind.kind());
            assert!(schema["properties"].is_object(), "{}", kind.kind());
        }
    }

    #[test]
    fn mode_the_kind_does_not_offer_is_refused() {
        let err = Registry::with_builtins()
            .prepare(
                "webhook",
                Mode::Sync,
                &json!({"url": "http://127.0.0.1:1/", "secret": "whsec_c2VjcmV0"}),
            )
            .err()
            .unwrap();
        assert_eq!(err.0, "task kind `webhook` cannot run in sync mode");
    }
}
