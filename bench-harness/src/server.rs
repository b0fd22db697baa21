//! `bench-harness serve <mode> <port> <redis-url>`: one mode's app on 127.0.0.1:<port>.
//!
//! Every mode runs on the same runtime: Tokio's multi-thread scheduler with ONE worker.
//! The machine has 2 cores and wrk needs one of them; a second server worker would only
//! fight wrk for it and make the figures depend on how the kernel schedules the two.

use std::net::SocketAddr;

use crate::app::{self, Mode};

/// The runtime configuration shared by every mode.
pub const WORKER_THREADS: usize = 1;

pub fn run(mode: Mode, port: u16, redis_url: &str) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKER_THREADS)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        let router = app::router(mode, redis_url).await;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .unwrap_or_else(|err| panic!("bind {addr}: {err}"));
        // The driver waits for this line before it sends anything.
        println!("listening on {addr} ({mode})");
        axum::serve(listener, router).await.expect("server");
    });
}
