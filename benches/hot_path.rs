//! The per-request hot path, piece by piece: what every request with a session pays before
//! and after any store call.
//!
//! - `id/*`: a fresh ID from the OS CSPRNG, parsing the 43 characters a client sends, and
//!   the SHA-256 stores key records by;
//! - `record/*`: a typical record's JSON encoding and decoding (what a store that keeps
//!   JSON pays per load and create);
//! - `delta/apply_to`: a write-back's reference application to a record;
//! - `cookies/*`: a request through the layer whose handler never touches its session,
//!   carrying no cookie, only the session cookie, or the session cookie among several
//!   others (as a browser sends them), so the difference is cookie handling; and the same
//!   six-cookie request to the same route without the layer (`no_layer_six_cookies`).
//!
//! ```text
//! cargo bench --bench hot_path
//! ```

use std::hint::black_box;

use axum::body::Body;
use axum::routing::get;
use axum::Router;
use criterion::Criterion;
use http::Request;
use serde_json::json;
use sessionware::{Delta, Id, MemoryStore, Record, Session, SessionLayer};
use time::{Duration, OffsetDateTime};
use tower::ServiceExt;

fn ids(c: &mut Criterion) {
    let mut group = c.benchmark_group("id");
    let id = Id::random().unwrap();
    let text = id.expose_secret();
    group.bench_function("random", |b| b.iter(|| Id::random().unwrap()));
    group.bench_function("parse", |b| {
        b.iter(|| Id::parse(black_box(text.as_bytes())).unwrap())
    });
    group.bench_function("hash", |b| b.iter(|| black_box(&id).hash()));
    group.bench_function("expose_secret", |b| {
        b.iter(|| black_box(&id).expose_secret())
    });
    group.finish();
}

/// A record as a logged-in user's session might hold: a counter, a small object, a user.
fn typical_record() -> Record {
    let now = OffsetDateTime::now_utc();
    let mut record = Record::new(now, now + Duration::hours(1), now + Duration::hours(12));
    record.data.insert("n".into(), json!(42));
    record.data.insert(
        "cart".into(),
        json!({ "items": [1, 2, 3], "total_cents": 1999 }),
    );
    record.data.insert("theme".into(), json!("dark"));
    record.user_id = Some("user-42".into());
    record.ip = Some("203.0.113.7".into());
    record.user_agent = Some("Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0".into());
    record
}

fn records(c: &mut Criterion) {
    let mut group = c.benchmark_group("record");
    let record = typical_record();
    let encoded = serde_json::to_vec(&record).unwrap();
    group.bench_function("json_encode", |b| {
        b.iter(|| serde_json::to_vec(black_box(&record)).unwrap())
    });
    group.bench_function("json_decode", |b| {
        b.iter(|| serde_json::from_slice::<Record>(black_box(&encoded)).unwrap())
    });
    group.finish();
}

fn deltas(c: &mut Criterion) {
    let mut group = c.benchmark_group("delta");
    let record = typical_record();
    // What an `/incr` request writes back: one key and a moved idle deadline.
    let mut delta = Delta::default();
    delta.set("n", json!(43));
    delta.last_seen = Some(OffsetDateTime::now_utc());
    // The record is cloned per iteration so every application starts from the same state;
    // `clone` is measured on its own to subtract.
    group.bench_function("clone_record", |b| b.iter(|| black_box(&record).clone()));
    group.bench_function("apply_to", |b| {
        b.iter(|| {
            let mut target = record.clone();
            black_box(&delta).apply_to(&mut target);
            target
        })
    });
    group.finish();
}

async fn write(session: Session) -> &'static str {
    session.insert("n", 1u64).await.unwrap();
    "ok"
}

fn cookies(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // `with_state(())` builds the routes once, as `axum::serve` does.
    let app = Router::new()
        .route("/plain", get(|| async { "ok" }))
        .route("/write", get(write))
        .layer(SessionLayer::new(MemoryStore::new()).with_idle_timeout(Duration::hours(1)))
        .with_state(());
    // A real session, started by a write, so the cookie names a live record.
    let session_cookie = runtime.block_on(async {
        let request = Request::get("/write").body(Body::empty()).unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        let set_cookie = response.headers()["set-cookie"].to_str().unwrap();
        set_cookie.split(';').next().unwrap().to_owned()
    });
    // Several cookies as a browser sends them, the session cookie in the middle.
    let many = format!("_ga=GA1.2.1234567890.1700000000; theme=dark; {session_cookie}; csrftoken=Zm9vYmFyYmF6cXV4; lang=en-GB; consent=analytics%3Dno");

    // The same route without the layer: the floor the layer's cases are read against.
    let bare = Router::new()
        .route("/plain", get(|| async { "ok" }))
        .with_state(());

    let mut group = c.benchmark_group("cookies");
    let cases: [(&str, &Router, Option<&str>); 4] = [
        ("no_layer_six_cookies", &bare, Some(&many)),
        ("no_cookie", &app, None),
        ("session_cookie_only", &app, Some(&session_cookie)),
        ("six_cookies", &app, Some(&many)),
    ];
    for (name, app, cookie) in cases {
        group.bench_function(name, |b| {
            b.to_async(&runtime).iter(|| async {
                let mut request = Request::get("/plain");
                if let Some(cookie) = cookie {
                    request = request.header("cookie", cookie);
                }
                let response = app
                    .clone()
                    .oneshot(request.body(Body::empty()).unwrap())
                    .await
                    .unwrap();
                black_box(response)
            })
        });
    }
    group.finish();
}

// A plain `main` rather than `criterion_group!`, whose generated function would trip the
// crate's `missing_docs` lint.
fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    ids(&mut criterion);
    records(&mut criterion);
    deltas(&mut criterion);
    cookies(&mut criterion);
    criterion.final_summary();
}
