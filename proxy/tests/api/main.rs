//! The proxy and worker against the real PostgreSQL and RabbitMQ (each test on its own
//! database and vhost) and on the embedded backend (each test on its own SQLite file); the
//! contract tests run on both. One test binary, modules by subject.

mod alerts;
mod audit;
mod auth;
mod backfill;
mod console;
mod embedded;
mod helpers;
mod history;
mod proxy;
mod remote;
mod retries;
mod store;
