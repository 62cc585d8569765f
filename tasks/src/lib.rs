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
//! - [`remote`]: the `remote` kind: a task served by a service of your own, over a signed
//!   HTTP call.
//! - [`outbound`]: what the kinds calling a binding's URL share (client, checks, timeouts,
//!   which failures retry), public for task authors' kinds.
//! - [`google_sheets`]: the `google_sheets` kind: one row per submission in a Google Sheet.
//!
//! # Writing a task
//! Implement [`TaskBase`] for a type, then `registry.register(MyTask)`: the proxy checks
//! each binding's config with [`TaskBase::parse_config`] when the binding is created, keeps
//! the parsed config, and calls [`TaskBase::run`] once per submission (per attempt, for
//! asynchronous bindings). Return [`TaskError::Retryable`] only where another attempt can
//! help; the worker decides what happens next. docs/writing-a-task.md walks through it.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod google_sheets;
pub mod outbound;
pub mod registry;
pub mod remote;
pub mod state;
pub mod targets;
pub mod task;
pub mod validate;
pub mod webhook;

pub use registry::{DuplicateKind, Registry};
pub use state::{MemoryState, StateError, TaskState};
pub use targets::TargetPolicy;
pub use task::{
    ConfigError, Event, Events, Flag, Mode, Outcome, PreparedTask, RunContext, Submission,
    TaskBase, TaskError, schema_for,
};

/// Installs ring as the process's TLS crypto provider unless one is installed: the HTTP
/// clients here are built without one of their own, so that sqlx, lapin, reqwest and the
/// Google clients share ring (two providers in one process panic at run time).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// An error with its causes, each said once, joined by `: `. The top-level message of an
/// HTTP client's error says little (reqwest's "error sending request", tonic's "transport
/// error"), the causes say why, and some repeat the one above them (hyper's `tcp connect
/// error: …`), which is said once.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut said: Vec<String> = vec![err.to_string()];
    let mut cause = err.source();
    while let Some(error) = cause {
        let text = error.to_string();
        match said.last_mut() {
            Some(last) if text.starts_with(last.as_str()) => *last = text,
            Some(last) if last.contains(&text) => {}
            _ => said.push(text),
        }
        cause = error.source();
    }
    said.join(": ")
}

#[cfg(test)]
mod tests {
    use std::fmt;

    use super::error_chain;

    /// An error saying `text`, caused by `cause`.
    #[derive(Debug)]
    struct Layered(&'static str, Option<Box<Layered>>);

    impl fmt::Display for Layered {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Layered {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|cause| cause as _)
        }
    }

    #[test]
    fn each_cause_is_said_once() {
        let refused = Layered("Connection refused", None);
        let connect = Layered("tcp connect error", Some(Box::new(refused)));
        let top = Layered("transport error", Some(Box::new(connect)));
        assert_eq!(
            error_chain(&top),
            "transport error: tcp connect error: Connection refused"
        );
        let repeated = Layered(
            "tcp connect error: Connection refused",
            Some(Box::new(Layered("Connection refused", None))),
        );
        let top = Layered("tcp connect error", Some(Box::new(repeated)));
        assert_eq!(error_chain(&top), "tcp connect error: Connection refused");
    }
}
