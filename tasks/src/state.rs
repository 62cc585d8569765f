//! Durable state a task keeps per binding, such as the spreadsheet a binding created on its
//! first run. The proxy keeps it in PostgreSQL; [`MemoryState`] serves tests and embedding.

use std::{collections::HashMap, sync::Mutex};

use async_trait::async_trait;
use serde_json::Value;
use uuid::Uuid;

/// The state store could not be reached; the run should be retried.
#[derive(Debug, Clone, thiserror::Error)]
#[error("task state is unavailable: {0}")]
pub struct StateError(pub String);

/// A task that cannot read or write its state fails retryably: the store may be back on
/// the next attempt.
impl From<StateError> for crate::TaskError {
    fn from(err: StateError) -> Self {
        crate::TaskError::retryable(err.to_string())
    }
}

/// Small key-value state per binding, shared by every proxy and worker.
#[async_trait]
pub trait TaskState: Send + Sync {
    /// The value stored under `key` for the binding, if any.
    async fn get(&self, binding_id: Uuid, key: &str) -> Result<Option<Value>, StateError>;

    /// Stores `value` under `key` unless a value is there already, and returns the stored
    /// value: the first writer wins, so racing runs agree on one value.
    async fn put_if_absent(
        &self,
        binding_id: Uuid,
        key: &str,
        value: Value,
    ) -> Result<Value, StateError>;

    /// Stores `value` under `key`, replacing what is there: the last writer wins.
    async fn put(&self, binding_id: Uuid, key: &str, value: Value) -> Result<(), StateError>;
}

/// [`TaskState`] in process memory.
#[derive(Debug, Default)]
pub struct MemoryState {
    values: Mutex<HashMap<(Uuid, String), Value>>,
}

#[async_trait]
impl TaskState for MemoryState {
    async fn get(&self, binding_id: Uuid, key: &str) -> Result<Option<Value>, StateError> {
        let values = self.values.lock().expect("state lock");
        Ok(values.get(&(binding_id, key.to_owned())).cloned())
    }

    async fn put_if_absent(
        &self,
        binding_id: Uuid,
        key: &str,
        value: Value,
    ) -> Result<Value, StateError> {
        let mut values = self.values.lock().expect("state lock");
        Ok(values
            .entry((binding_id, key.to_owned()))
            .or_insert(value)
            .clone())
    }

    async fn put(&self, binding_id: Uuid, key: &str, value: Value) -> Result<(), StateError> {
        let mut values = self.values.lock().expect("state lock");
        values.insert((binding_id, key.to_owned()), value);
        Ok(())
    }
}
