//! What the SQL stores cost per request beside `MemoryStore`, in one run, and how long
//! one cleanup pass takes on a million rows.
//!
//! Part 1 (criterion): the same router through the real `SessionLayer` with
//! `tower::ServiceExt::oneshot`, on each store: `read` (an existing session read, nothing
//! written back) and `write` (an existing session read and one key written back). After
//! the run it prints each case's mean and its cost as a multiple of the same operation on
//! `MemoryStore`, read from criterion's own estimates.
//!
//! Part 2: 1,000,000 sessions seeded in one `INSERT ... SELECT` (10% of them expired),
//! then one pass of the real cleanup task (batches of 1,000) timed to completion, with the
//! longest single batch; for SQLite and for PostgreSQL.
//!
//! ```text
//! scripts/postgres.sh start
//! cargo bench --bench sql --features postgres,sqlite
//! ```
//!
//! PostgreSQL comes from `SESSIONWARE_POSTGRES_URL` (default: the server
//! `scripts/postgres.sh` runs); the bench fails if it cannot connect.

#[path = "support/estimates.rs"]
mod estimates;

use std::hint::black_box;
use std::time::{Duration as StdDuration, Instant};

use axum::body::Body;
use axum::routing::get;
use axum::Router;
use criterion::{Criterion, Throughput};
use http::Request;
use sessionware::{
    CachingStore, MemoryStore, PostgresStore, Session, SessionLayer, SessionStore, SqliteStore,
};
use time::Duration;
use tower::ServiceExt;

const GROUP: &str = "sql";
const STORES: [&str; 4] = ["memory", "sqlite", "postgres", "cached_sqlite"];
const OPERATIONS: [&str; 2] = ["read", "write"];
const CLEANUP_ROWS: i64 = 1_000_000;
const CLEANUP_BATCH: u32 = 1_000;

async fn read(session: Session) -> String {
    let n: u64 = session.get("n").await.unwrap().unwrap_or(0);
    n.to_string()
}

async fn write(session: Session) -> String {
    let n: u64 = session.get("n").await.unwrap().unwrap_or(0) + 1;
    session.insert("n", n).await.unwrap();
    n.to_string()
}

fn app(store: impl SessionStore) -> Router {
    Router::new()
        .route("/read", get(read))
        .route("/write", get(write))
        .layer(SessionLayer::new(store).with_idle_timeout(Duration::hours(1)))
        // Builds every route once, as `axum::serve` does.
        .with_state(())
}

fn request(path: &str, cookie: Option<&str>) -> Request<Body> {
    let mut request = Request::get(path);
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    request.body(Body::empty()).unwrap()
}

/// A session on `app`, as the cookie a client would send back.
async fn session_cookie(app: &Router) -> String {
    let response = app.clone().oneshot(request("/write", None)).await.unwrap();
    let set_cookie = response.headers()["set-cookie"].to_str().unwrap();
    set_cookie.split(';').next().unwrap().to_owned()
}

fn postgres_url() -> String {
    std::env::var("SESSIONWARE_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5433/sessionware".to_owned())
}

async fn postgres(table: &str) -> PostgresStore {
    let url = postgres_url();
    let store = PostgresStore::connect(&url)
        .await
        .unwrap_or_else(|err| {
            panic!("PostgreSQL unreachable at {url}: {err}; run scripts/postgres.sh start")
        })
        .with_table(table)
        .unwrap();
    store.migrate().await.unwrap();
    sqlx::query(&format!("TRUNCATE \"{table}\""))
        .execute(store.pool())
        .await
        .unwrap();
    store
}

async fn sqlite(name: &str) -> SqliteStore {
    let path = std::env::temp_dir().join(format!("sessionware-bench-{name}.db"));
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    let store = SqliteStore::open(&path).await.unwrap();
    store.migrate().await.unwrap();
    store
}

fn per_request(c: &mut Criterion, runtime: &tokio::runtime::Runtime) {
    let apps: Vec<(&str, Router)> = runtime.block_on(async {
        let sqlite_store = sqlite("requests").await;
        let cached = CachingStore::new(MemoryStore::new(), sqlite("cached").await)
            .with_cache_ttl(StdDuration::from_secs(5));
        vec![
            ("memory", app(MemoryStore::new())),
            ("sqlite", app(sqlite_store)),
            ("postgres", app(postgres("bench_sessions").await)),
            ("cached_sqlite", app(cached)),
        ]
    });
    let mut group = c.benchmark_group(GROUP);
    group.throughput(Throughput::Elements(1));
    group.warm_up_time(StdDuration::from_secs(1));
    group.measurement_time(StdDuration::from_secs(3));
    for (store, app) in &apps {
        let cookie = runtime.block_on(session_cookie(app));
        for operation in OPERATIONS {
            let path = format!("/{operation}");
            group.bench_function(format!("{store}_{operation}"), |b| {
                b.to_async(runtime).iter(|| async {
                    let response = app
                        .clone()
                        .oneshot(request(&path, Some(&cookie)))
                        .await
                        .unwrap();
                    assert_eq!(response.status(), 200, "{store} {operation}");
                    black_box(response);
                })
            });
        }
    }
    group.finish();
}

fn mean_ns(case: &str) -> Option<f64> {
    estimates::mean_ns(GROUP, case)
}

fn print_ratios() {
    println!("\nstore          op      mean/request   x MemoryStore");
    for operation in OPERATIONS {
        let Some(memory) = mean_ns(&format!("memory_{operation}")) else {
            continue;
        };
        for store in STORES {
            if let Some(ns) = mean_ns(&format!("{store}_{operation}")) {
                println!(
                    "{store:<14} {operation:<6} {:>9.1} µs   {:>8.1}x",
                    ns / 1000.0,
                    ns / memory
                );
            }
        }
    }
}

/// Seeds `CLEANUP_ROWS` sessions, every tenth expired, then times one cleanup pass.
async fn cleanup_pass<S>(
    name: &str,
    store: &S,
    start: impl FnOnce() -> sessionware::store::sql::CleanupHandle,
) where
    S: SessionStore,
{
    let live_before = store.count().await.unwrap();
    let started = Instant::now();
    let handle = start();
    while handle.stats().passes == 0 {
        assert_eq!(handle.stats().failures, 0, "a cleanup batch failed");
        tokio::time::sleep(StdDuration::from_millis(5)).await;
    }
    let took = started.elapsed();
    let stats = handle.stats();
    handle.stop().await;
    let live_after = store.count().await.unwrap();
    assert_eq!(live_before, live_after, "cleanup removed live sessions");
    println!(
        "{name:<9} cleanup of {} expired among {CLEANUP_ROWS} rows: pass {:.2} s, \
         longest batch ({CLEANUP_BATCH} rows) {:.1} ms",
        stats.deleted,
        took.as_secs_f64(),
        stats.longest_batch.as_secs_f64() * 1000.0,
    );
}

async fn cleanup_benchmarks() {
    println!();
    let now = time::OffsetDateTime::now_utc();
    let ms = |t: time::OffsetDateTime| (t.unix_timestamp_nanos() / 1_000_000) as i64;

    let lite = sqlite("cleanup").await;
    let seeded = Instant::now();
    sqlx::query(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1) \
         INSERT INTO sessionware_sessions (key, user_id, data, created_at, last_seen, \
            idle_deadline, absolute_deadline) \
         SELECT randomblob(32), 'user' || (i % 10000), '{\"n\":1}', ?2, ?2, \
            CASE WHEN i % 10 = 0 THEN ?3 ELSE ?4 END, ?4 FROM n",
    )
    .bind(CLEANUP_ROWS)
    .bind(ms(now))
    .bind(ms(now - Duration::hours(1)))
    .bind(ms(now + Duration::hours(1)))
    .execute(lite.pool())
    .await
    .unwrap();
    println!(
        "sqlite    seeded {CLEANUP_ROWS} rows in {:.1} s",
        seeded.elapsed().as_secs_f64()
    );
    cleanup_pass("sqlite", &lite, || {
        lite.start_cleanup(StdDuration::from_secs(3600), CLEANUP_BATCH)
            .unwrap()
    })
    .await;

    let pg = postgres("bench_cleanup").await;
    let seeded = Instant::now();
    sqlx::query(
        "INSERT INTO bench_cleanup (key, user_id, data, created_at, last_seen, idle_deadline, \
            absolute_deadline) \
         SELECT sha256(int8send(i)), 'user' || (i % 10000), '{\"n\":1}', $2, $2, \
            CASE WHEN i % 10 = 0 THEN $3 ELSE $4 END, $4 \
         FROM generate_series(1, $1) AS i",
    )
    .bind(CLEANUP_ROWS)
    .bind(now)
    .bind(now - Duration::hours(1))
    .bind(now + Duration::hours(1))
    .execute(pg.pool())
    .await
    .unwrap();
    sqlx::query("ANALYZE bench_cleanup")
        .execute(pg.pool())
        .await
        .unwrap();
    println!(
        "postgres  seeded {CLEANUP_ROWS} rows in {:.1} s",
        seeded.elapsed().as_secs_f64()
    );
    cleanup_pass("postgres", &pg, || {
        pg.start_cleanup(StdDuration::from_secs(3600), CLEANUP_BATCH)
            .unwrap()
    })
    .await;
    sqlx::query("TRUNCATE bench_cleanup")
        .execute(pg.pool())
        .await
        .unwrap();
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut criterion = Criterion::default().configure_from_args();
    per_request(&mut criterion, &runtime);
    criterion.final_summary();
    print_ratios();
    runtime.block_on(cleanup_benchmarks());
}
