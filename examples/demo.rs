//! The demo: a counter, login and logout, remember-me and "your devices", on
//! http://127.0.0.1:3000 (set `DEMO_ADDR` to listen elsewhere).
//!
//! ```text
//! cargo run --example demo --features sqlite
//! ```
//!
//! Sessions persist: by default in the SQLite file `sessionware-demo.db` (`DEMO_DB` to put
//! it elsewhere), so a restart keeps everyone logged in. Set `REDIS_URL` to keep them in
//! Redis instead (build with `--features sqlite,redis`), or `DATABASE_URL` for PostgreSQL
//! (`--features sqlite,postgres`).

#[path = "shared/app.rs"]
mod app;

use std::error::Error;
use std::time::Duration;

use axum::Router;
use sessionware::store::sql::CleanupHandle;
use sessionware::SqliteStore;

/// How often the SQL stores' cleanup task removes expired sessions.
const CLEANUP_INTERVAL: Duration = Duration::from_secs(300);
const CLEANUP_BATCH: u32 = 1_000;

/// The demo's router on the store the environment picks, with a description for the log
/// and, for the SQL stores, the cleanup task (which runs while its handle is kept).
async fn router_from_env() -> Result<(Router, String, Option<CleanupHandle>), Box<dyn Error>> {
    if let Ok(url) = std::env::var("REDIS_URL") {
        #[cfg(feature = "redis")]
        {
            let store = sessionware::RedisStore::connect(&url)
                .await?
                .with_prefix("sessionware-demo");
            return Ok((app::router(store), format!("Redis at {url}"), None));
        }
        #[cfg(not(feature = "redis"))]
        return Err(format!("REDIS_URL is set ({url}): run with --features sqlite,redis").into());
    }
    if let Ok(url) = std::env::var("DATABASE_URL") {
        #[cfg(feature = "postgres")]
        {
            let store = sessionware::PostgresStore::connect(&url).await?;
            store.migrate().await?;
            let cleanup = store.start_cleanup(CLEANUP_INTERVAL, CLEANUP_BATCH)?;
            return Ok((app::router(store), "PostgreSQL".to_owned(), Some(cleanup)));
        }
        #[cfg(not(feature = "postgres"))]
        {
            let _ = url;
            return Err("DATABASE_URL is set: run with --features sqlite,postgres".into());
        }
    }
    let path = std::env::var("DEMO_DB").unwrap_or_else(|_| "sessionware-demo.db".into());
    let store = SqliteStore::open(&path).await?;
    store.migrate().await?;
    let cleanup = store.start_cleanup(CLEANUP_INTERVAL, CLEANUP_BATCH)?;
    Ok((
        app::router(store),
        format!("SQLite file {path}"),
        Some(cleanup),
    ))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let (app, store, _cleanup) = router_from_env().await?;
    app::serve(app, &store).await
}
