//! collect-backend: a demo form backend whose submit route is wrapped in
//! [`postsub::PostSubmissionLayer`], the one line a form backend adds to run post-submission
//! tasks.
//!
//! # Layout
//! - [`settings`]: [`Settings`], the command line and environment of the binary.
//! - [`startup`]: [`Application`], which prepares the database, binds the listener and serves
//!   until told to stop, the same way in tests and in `main`.
//! - [`routes`]: the HTTP API (`/forms`, `/forms/{id}`, `/forms/{id}/submit`,
//!   `/forms/{id}/submissions`, `/healthz`); only the submit route carries the layer.
//! - [`forms`]: the domain types (forms, questions, answers, submissions), parsed at the edge.
//! - [`store`]: [`store::Store`], the SQL of forms and submissions behind one seam, with one
//!   module per backend: SQLite (the default, a file under `.collect/`) and PostgreSQL.
//! - [`extract`]: request extractors whose rejections become [`ApiError`]s.
//! - [`error`]: [`ApiError`], every way a request fails, mapped to a status and a JSON body
//!   in one place.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod error;
pub mod extract;
pub mod forms;
pub mod routes;
pub mod settings;
pub mod startup;
pub mod store;

pub use error::ApiError;
pub use settings::Settings;
pub use startup::Application;
