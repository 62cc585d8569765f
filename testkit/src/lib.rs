//! Test support for postsub's integration tests: throwaway resources on the real servers and
//! local stand-ins for outside services that speak the real protocol.
//!
//! # Layout
//! - [`database`]: a fresh PostgreSQL database per test, dropped afterwards (even on panic).
//! - [`broker`]: a fresh RabbitMQ vhost (and queue prefix) per test, deleted afterwards.
//! - [`sqlite`]: a fresh SQLite file per test (the embedded backend), removed afterwards.
//! - [`webhook`]: a webhook receiver that checks Standard Webhooks signatures.
//! - [`sheets`]: a Google Sheets v4 + Drive v3 + OAuth token endpoint emulator.
//! - [`twilio`]: a Twilio Messages API stand-in that counts the SMS it is asked to send.
//! - [`form_backend`]: a form backend's submit route behind a `PostSubmissionLayer`.
//! - [`task`]: the task author's harness: a task kind run with no server.
//! - [`process`]: a postsub binary run as a process, waited for, stopped or killed.
#![forbid(unsafe_code)]

pub mod broker;
pub mod database;
pub mod form_backend;
pub mod process;
pub mod sheets;
pub mod sqlite;
pub mod task;
pub mod twilio;
pub mod webhook;

pub use broker::TestBroker;
pub use database::TestDatabase;
pub use sheets::SheetsEmulator;
pub use sqlite::TestSqlite;
pub use task::TaskHarness;
pub use twilio::TwilioFake;
pub use webhook::{Delivery, WebhookReceiver};

/// Runs `cleanup` to completion from a `Drop`, which may run inside or outside a runtime
/// and during a panic: a scoped thread with its own small runtime does the work.
pub(crate) fn block_on_cleanup<F: std::future::Future<Output = ()> + Send>(cleanup: F) {
    std::thread::scope(|scope| {
        scope.spawn(|| {
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime.block_on(cleanup),
                Err(err) => eprintln!("testkit cleanup could not start a runtime: {err}"),
            }
        });
    });
}
