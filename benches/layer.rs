//! Per-request cost of the session layer beside a bare axum handler, in one run.
//!
//! Every case drives the same router shape with `tower::ServiceExt::oneshot`, so what
//! differs is the layer's work: `bare` (no layer), `untouched` (layer, handler ignores its
//! session), `read` (an existing session read), `write` (an existing session read and
//! written back), `new` (a new session created and its cookie set). After the run it prints
//! each case's time as a ratio of `bare`, read from criterion's own estimates.
//!
//! ```text
//! cargo bench --bench layer
//! ```

#[path = "support/estimates.rs"]
mod estimates;

use std::hint::black_box;

use axum::body::Body;
use axum::routing::get;
use axum::Router;
use criterion::{Criterion, Throughput};
use http::Request;
use sessionware::{MemoryStore, Session, SessionLayer};
use time::Duration;
use tower::ServiceExt;

const GROUP: &str = "layer";
const CASES: [&str; 5] = ["bare", "untouched", "read", "write", "new"];

async fn read(session: Session) -> String {
    let n: u64 = session.get("n").await.unwrap().unwrap_or(0);
    n.to_string()
}

async fn write(session: Session) -> String {
    let n: u64 = session.get("n").await.unwrap().unwrap_or(0) + 1;
    session.insert("n", n).await.unwrap();
    n.to_string()
}

fn routes() -> Router {
    Router::new()
        .route("/untouched", get(|| async { "0" }))
        .route("/read", get(read))
        .route("/write", get(write))
}

fn request(path: &str, cookie: Option<&str>) -> Request<Body> {
    let mut request = Request::get(path);
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    request.body(Body::empty()).unwrap()
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // `with_state(())` builds every route once, as `axum::serve` does; without it axum
    // would rebuild each route, layers included, on every call.
    let existing = routes()
        .layer(SessionLayer::new(MemoryStore::new()).with_idle_timeout(Duration::hours(1)))
        .with_state(());
    // The `new` case creates a session per iteration: its own store, with a short idle
    // timeout and a frequent purge, keeps that store's size steady.
    let fresh_store = MemoryStore::with_purge_interval(std::time::Duration::from_secs(1));
    let fresh = routes()
        .layer(SessionLayer::new(fresh_store).with_idle_timeout(Duration::seconds(2)))
        .with_state(());
    let bare = routes().with_state(());
    let cookie = runtime.block_on(async {
        let response = existing
            .clone()
            .oneshot(request("/write", None))
            .await
            .unwrap();
        let set_cookie = response.headers()["set-cookie"].to_str().unwrap();
        set_cookie.split(';').next().unwrap().to_owned()
    });
    let still_alive = || {
        runtime.block_on(async {
            let response = existing
                .clone()
                .oneshot(request("/read", Some(&cookie)))
                .await
                .unwrap();
            let body = axum::body::to_bytes(response.into_body(), 64)
                .await
                .unwrap();
            assert_ne!(
                &body[..],
                b"0",
                "the benchmark session ended: the figures are void"
            );
        })
    };

    let mut group = c.benchmark_group(GROUP);
    group.throughput(Throughput::Elements(1));
    let cases: [(&str, &Router, &str, Option<&str>); 5] = [
        ("bare", &bare, "/untouched", Some(&cookie)),
        ("untouched", &existing, "/untouched", Some(&cookie)),
        ("read", &existing, "/read", Some(&cookie)),
        ("write", &existing, "/write", Some(&cookie)),
        ("new", &fresh, "/write", None),
    ];
    for (name, app, path, cookie) in cases {
        group.bench_function(name, |b| {
            b.to_async(&runtime).iter(|| async {
                let response = app.clone().oneshot(request(path, cookie)).await.unwrap();
                black_box(response);
            })
        });
    }
    group.finish();
    still_alive();
}

fn mean_ns(case: &str) -> Option<f64> {
    estimates::mean_ns(GROUP, case)
}

fn print_ratios() {
    let Some(bare) = mean_ns("bare") else {
        return;
    };
    println!("\ncase        mean/request   requests/s vs bare");
    for case in CASES {
        if let Some(ns) = mean_ns(case) {
            println!("{case:<11} {:>9.2} µs   {:>8.2}x", ns / 1000.0, bare / ns);
        }
    }
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    bench(&mut criterion);
    criterion.final_summary();
    print_ratios();
}
