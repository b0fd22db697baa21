//! The conformance suite on `PostgresStore`, each test on a table of its own in the
//! database at `SESSIONWARE_POSTGRES_URL` (default: the server `scripts/postgres.sh start`
//! runs). These tests fail, never skip, when the server is unreachable.

use sessionware::store::conformance::Harness;
use sessionware::{Id, PostgresStore};

#[path = "support/postgres.rs"]
mod support;
use support::connect;

/// A table name no other test uses.
fn fresh_table() -> String {
    let random = Id::random().expect("randomness").hash().to_string();
    format!("conformance_{}", &random[..16])
}

/// Drops the tables earlier runs of these tests left behind (over an hour old), once per
/// run, so the test database does not grow without bound.
async fn sweep_old_tables(store: &PostgresStore) {
    static SWEPT: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    SWEPT
        .get_or_init(|| async {
            let old: Vec<String> = sqlx::query_scalar(
                "SELECT table_name FROM sessionware_schema \
                 WHERE (table_name LIKE 'conformance\\_%' OR table_name LIKE 'sqltest\\_%') \
                 AND updated_at < now() - interval '1 hour'",
            )
            .fetch_all(store.pool())
            .await
            .unwrap_or_default();
            for table in old {
                let drop = format!("DROP TABLE IF EXISTS \"{table}\", \"{table}_rotated\"");
                let forget = "DELETE FROM sessionware_schema WHERE table_name = $1";
                let _ = sqlx::query(&drop).execute(store.pool()).await;
                let _ = sqlx::query(forget).bind(&table).execute(store.pool()).await;
            }
        })
        .await;
}

struct Postgres;

impl Harness for Postgres {
    type Store = PostgresStore;

    async fn fresh(&self) -> PostgresStore {
        let store = connect()
            .await
            .with_table(&fresh_table())
            .expect("valid name");
        store.migrate().await.expect("migrate");
        sweep_old_tables(&store).await;
        store
    }

    async fn twin(&self, store: &PostgresStore) -> PostgresStore {
        // A second pool on the same table, as a second app server would have.
        connect()
            .await
            .with_table(store.table())
            .expect("valid name")
    }
}

sessionware::store_conformance_tests!(Postgres);
