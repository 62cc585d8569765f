//! A throwaway SQLite file per test, for the embedded backend.

use std::path::PathBuf;

/// A fresh directory holding `<prefix>.db` (not created: the code under test creates it),
/// removed with everything in it (the WAL and shared-memory files too) when this drops.
#[derive(Debug)]
pub struct TestSqlite {
    /// Path of the database file.
    pub path: PathBuf,
    /// `sqlite://<path>`.
    pub url: String,
    dir: PathBuf,
}

impl TestSqlite {
    /// A new, empty directory under the system's temp directory.
    pub fn create(prefix: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "postsub-test-{prefix}-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).expect("create the test's temp directory");
        let path = dir.join(format!("{prefix}.db"));
        Self {
            url: format!("sqlite://{}", path.display()),
            path,
            dir,
        }
    }
}

impl Drop for TestSqlite {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
