//! [`TaskState`] in PostgreSQL (`task_state`): first writer wins, by primary key.

use async_trait::async_trait;
use postsub_tasks::{StateError, TaskState};
use serde_json::Value;
use sqlx::{PgPool, types::Json};
use uuid::Uuid;

/// Task state in the proxy's database.
pub struct PgTaskState {
    pool: PgPool,
}

impl PgTaskState {
    /// State over `pool`.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

fn unavailable(err: sqlx::Error) -> StateError {
    StateError(err.to_string())
}

#[async_trait]
impl TaskState for PgTaskState {
    async fn get(&self, binding_id: Uuid, key: &str) -> Result<Option<Value>, StateError> {
        let value: Option<Json<Value>> =
            sqlx::query_scalar("SELECT value FROM task_state WHERE binding_id = $1 AND key = $2")
                .bind(binding_id)
                .bind(key)
                .fetch_optional(&self.pool)
                .await
                .map_err(unavailable)?;
        Ok(value.map(|v| v.0))
    }

    async fn put_if_absent(
        &self,
        binding_id: Uuid,
        key: &str,
        value: Value,
    ) -> Result<Value, StateError> {
        // The no-op update makes RETURNING yield the stored row when the key exists.
        let stored: Json<Value> = sqlx::query_scalar(
            "INSERT INTO task_state (binding_id, key, value) VALUES ($1, $2, $3)
             ON CONFLICT (binding_id, key) DO UPDATE SET key = task_state.key
             RETURNING value",
        )
        .bind(binding_id)
        .bind(key)
        .bind(Json(value))
        .fetch_one(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(stored.0)
    }
}
