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

use sessionware::RedisStore;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into());
    let store = RedisStore::connect(&url)
        .await?
        .with_prefix("sessionware-demo");
    app::serve(app::router(store), &format!("Redis at {url}")).await
}
