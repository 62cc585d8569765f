//! A throwaway PostgreSQL database per test.

use sqlx::{Connection, Executor, PgConnection};

/// Server the throwaway databases are made on: `TEST_DATABASE_URL`, else the local server.
fn admin_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A database named `<prefix>_<uuid>`, created empty and dropped when this value drops.
#[derive(Debug)]
pub struct TestDatabase {
    /// Connection URL of the new database.
    pub url: String,
    name: String,
}

impl TestDatabase {
    /// Creates a fresh, empty database.
    pub async fn create(prefix: &str) -> Self {
        let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
        let admin = admin_url();
        let mut conn = PgConnection::connect(&admin)
            .await
            .expect("PostgreSQL must answer at TEST_DATABASE_URL or 127.0.0.1:5432");
        conn.execute(sqlx::AssertSqlSafe(format!(r#"CREATE DATABASE "{name}""#)))
            .await
            .expect("create test database");
        let base = admin
            .rsplit_once('/')
            .map_or(admin.as_str(), |(base, _)| base);
        Self {
            url: format!("{base}/{name}"),
            name,
        }
    }

    /// Name of a second database on the same server that does not exist yet, dropped with
    /// this one (for code that creates its own database).
    pub fn sibling_url(&self, suffix: &str) -> String {
        format!("{}_{suffix}", self.url)
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        crate::block_on_cleanup(async move {
            let Ok(mut conn) = PgConnection::connect(&admin_url()).await else {
                return;
            };
            // Siblings first: `name_%` matches the databases made from sibling_url.
            let siblings: Vec<(String,)> =
                sqlx::query_as("SELECT datname FROM pg_database WHERE datname LIKE $1 || '\\_%'")
                    .bind(&name)
                    .fetch_all(&mut conn)
                    .await
                    .unwrap_or_default();
            for db in siblings.into_iter().map(|(db,)| db).chain([name]) {
                let _ = conn
                    .execute(sqlx::AssertSqlSafe(format!(
                        r#"DROP DATABASE IF EXISTS "{db}" WITH (FORCE)"#
                    )))
                    .await;
            }
        });
    }
}
