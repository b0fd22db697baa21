//! Shared by the PostgreSQL test binaries: where the test server is, and a connection that
//! fails the test, saying what to do, when it is down.

use sessionware::PostgresStore;

/// The database the tests use: `SESSIONWARE_POSTGRES_URL`, or the server
/// `scripts/postgres.sh start` runs.
pub(crate) fn url() -> String {
    std::env::var("SESSIONWARE_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5433/sessionware".to_owned())
}

/// A store on the test database; panics with directions if it is unreachable.
pub(crate) async fn connect() -> PostgresStore {
    let url = url();
    PostgresStore::connect(&url).await.unwrap_or_else(|err| {
        panic!(
            "PostgreSQL is unreachable at {url} ({err}). Start the test server with \
             `scripts/postgres.sh start`, or point SESSIONWARE_POSTGRES_URL at another."
        )
    })
}
