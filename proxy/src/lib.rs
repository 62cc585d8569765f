//! The postsub proxy and worker, and [`main`]: the whole `postsub` command line, for the
//! `postsub` binary and for a task author's own binary with more task kinds.
//!
//! # Layout
//! - [`cli`]: the `postsub` command line; [`client`]: its admin-client commands;
//!   [`backfill`]: `postsub backfill`, old submissions through new bindings.
//! - [`settings`]: typed settings from flags and environment.
//! - [`app`]: start-up and shutdown of the shared [`app::Services`], the [`app::Proxy`]
//!   servers and the worker (tests start them the same way, on port 0).
//! - [`dispatch`]: `Process`: sync tasks inline, async tasks to the queue.
//! - [`worker`]: consumes jobs, runs them, retries or dead-letters them; [`claimer`]: its
//!   claims of runs in batches; [`execute`]: running one task once, shared by both.
//! - [`bindings`]: the in-memory binding cache; [`follow`]: keeping it and the tokens fresh
//!   from the store's change feed.
//! - [`auth`]: API tokens and scopes, checked by a tower layer in front of every gRPC
//!   service; [`tokens`]: the `postsub tokens` commands.
//! - [`console`]: the operators' console, pages under `/ui` on the proxy's HTTP port;
//!   [`alerts`]: grouped alerts to an operator's webhook, and the queue gauges.
//! - [`recorder`]: the batching run-history writer; [`run`]: runs, their ids and attempts;
//!   [`job`]: the job message.
//!
//! The two seams, and the backends below them (chosen by the database URL in [`backend`]):
//! - [`store`]: the [`store::Store`] trait (bindings and their change feed, run history,
//!   claims, the jobs stored with runs, task state); [`store::postgres`] and
//!   [`store::sqlite`] (one file, one group-commit writer).
//! - [`queue`]: the [`queue::JobQueue`] trait (enqueue durably, consume with a prefetch
//!   bound, ack, retry later, dead-letter, replay, per-kind counts);
//!   [`queue::rabbitmq`] (topology, confirms, delay and dead-letter queues, the outbox for
//!   broker outages) and [`queue::embedded`] (a lease queue in the SQLite file).
//! - [`options`]: binding options (retry policy, timeout, delay, expiry), parsed at the edge.
//! - [`admin`]: the `TaskAdmin` gRPC API; [`requeue`]: putting dead runs back to work
//!   (`RetryRun`, `ReplayDeadLetters`); [`ids`]: ids parsed at the edge.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod admin;
pub mod alerts;
pub mod app;
pub mod auth;
pub mod backend;
pub mod backfill;
pub mod bindings;
pub mod claimer;
pub mod cli;
pub mod client;
pub mod console;
pub mod dispatch;
pub mod execute;
pub mod follow;
pub mod ids;
pub mod job;
pub mod options;
pub mod queue;
pub mod recorder;
pub mod requeue;
pub mod run;
pub mod settings;
pub mod store;
pub mod telemetry;
pub mod tokens;
pub mod worker;

pub use cli::main;
