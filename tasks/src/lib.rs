//! Post-submission tasks: the [`TaskBase`] trait task authors implement, the [`Registry`]
//! the proxy looks kinds up in, and the built-in kinds.
//!
//! # Layout
//! - [`task`]: [`TaskBase`], what a task receives ([`Submission`], [`RunContext`]) and
//!   returns ([`Outcome`], [`TaskError`]), and its type-erased form the registry stores.
//! - [`registry`]: the task kinds one process knows, by name.
//! - [`state`]: durable per-binding state a task may keep ([`TaskState`]).
//! - [`targets`]: which addresses the calls a binding chooses may reach ([`TargetPolicy`]).
//! - [`validate`]: the `validate` kind: per-field checks and CEL rules across fields.
//! - [`webhook`]: the `webhook` kind: a signed POST (Standard Webhooks) of the submission.
//! - [`google_sheets`]: the `google_sheets` kind: one row per submission in a Google Sheet.
//!
//! # Writing a task
//! Implement [`TaskBase`] for a type, then `registry.register(MyTask)`: the proxy checks
//! each binding's config with [`TaskBase::parse_config`] when the binding is created, keeps
//! the parsed config, and calls [`TaskBase::run`] once per submission (per attempt, for
//! asynchronous bindings). Return [`TaskError::Retryable`] only where another attempt can
//! help; the worker decides what happens next.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod google_sheets;
pub mod registry;
pub mod state;
pub mod targets;
pub mod task;
pub mod validate;
pub mod webhook;

pub use registry::Registry;
pub use state::{MemoryState, StateError, TaskState};
pub use targets::TargetPolicy;
pub use task::{
    ConfigError, Flag, Mode, Outcome, PreparedTask, RunContext, Submission, TaskBase, TaskError,
};

/// Installs ring as the process's TLS crypto provider unless one is installed: the HTTP
/// clients here are built without one of their own, so that sqlx, lapin, reqwest and the
/// Google clients share ring (two providers in one process panic at run time).
pub(crate) fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
