//! The demo app (counter, login, logout, remember-me, "your devices") with its sessions in
//! Redis, on http://127.0.0.1:3000 (`DEMO_ADDR` to listen elsewhere).
//!
//! ```text
//! REDIS_URL=redis://127.0.0.1:6379/ cargo run --example redis --features redis
//! ```
//!
//! Restart the example and you stay logged in: the sessions are in Redis, not in the
//! process. Stop Redis and requests get a 503 until it is back.

#[path = "shared/app.rs"]
mod app;

use std::net::SocketAddr;

use sessionware::RedisStore;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sessionware=debug".into()),
        )
        .init();

    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into());
    let store = RedisStore::connect(&url)
        .await?
        .with_prefix("sessionware-demo");
    let app = app::router(store);

    let addr = std::env::var("DEMO_ADDR").unwrap_or_else(|_| "127.0.0.1:3000".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    tracing::info!(
        "demo on Redis at {url}, listening on http://{}",
        listener.local_addr()?
    );
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await?;
    Ok(())
}
