//! The demo: a counter, login and logout, remember-me and "your devices", on
//! http://127.0.0.1:3000 (set `DEMO_ADDR` to listen elsewhere).
//!
//! ```text
//! cargo run --example demo
//! ```

#[path = "shared/app.rs"]
mod app;

use std::net::SocketAddr;

use sessionware::MemoryStore;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sessionware=debug".into()),
        )
        .init();

    let addr = std::env::var("DEMO_ADDR").unwrap_or_else(|_| "127.0.0.1:3000".into());
    let store = MemoryStore::new();
    let app = app::router(store);

    let listener = tokio::net::TcpListener::bind(&addr).await?;
    tracing::info!("demo listening on http://{}", listener.local_addr()?);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await?;
    Ok(())
}
