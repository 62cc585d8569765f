//! The proxy and worker against the real PostgreSQL and RabbitMQ, each test on its own
//! database and vhost (one test binary, modules by subject).

mod helpers;
mod proxy;
mod retries;
