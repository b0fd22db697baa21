//! The conformance suite on `SqliteStore`, plus what is particular to SQLite: file
//! permissions, WAL mode, migrations, corrupt rows and the cleanup task.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use sessionware::store::conformance::Harness;
use sessionware::SqliteStore;

/// A fresh database file per test, under the system temp dir.
fn temp_db() -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!("sessionware-sqlite-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir.join(format!("t{}.db", NEXT.fetch_add(1, Ordering::Relaxed)))
}

struct Sqlite;

impl Harness for Sqlite {
    type Store = SqliteStore;

    async fn fresh(&self) -> SqliteStore {
        let store = SqliteStore::open(temp_db()).await.expect("open");
        store.migrate().await.expect("migrate");
        store
    }

    async fn twin(&self, store: &SqliteStore) -> SqliteStore {
        // A second pool on the same file, as a second process would open it.
        let path = store.pool().connect_options().get_filename().to_path_buf();
        SqliteStore::open(path).await.expect("open twin")
    }
}

sessionware::store_conformance_tests!(Sqlite);
