//! Store cost as the number of live sessions grows: memory per session, read latency,
//! listing and revoking one user's sessions, and a cleanup pass with 10% expired.
//!
//! `bench-harness scale <memory|redis> <live> <redis-url>` runs ONE measurement in its
//! own process (so resident-memory deltas start from a clean heap) and prints one JSON
//! line the driver collects. Sessions are seeded through the `SessionStore` API, not HTTP.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use sessionware::{Id, IdHash, MemoryStore, Record, RedisStore, SessionStore};
use time::OffsetDateTime;

use crate::proc_stats;
use crate::redis_stats::Redis;

/// Seeding stops after this long; the row then reports how many it reached.
const SEED_BUDGET: Duration = Duration::from_secs(150);
/// Concurrent `create` calls in flight while seeding Redis (redis-rs pipelines them on its
/// one multiplexed connection).
const SEED_CONCURRENCY: usize = 64;
/// The user whose sessions are listed and revoked, and how many sessions they have.
const MEASURED_USER: &str = "measured-user";
const MEASURED_USER_SESSIONS: usize = 5;
/// Short-lived sessions expire this long after their creation, for the cleanup pass.
const SHORT_LIFE: time::Duration = time::Duration::seconds(2);
const READ_SAMPLES: usize = 2000;

pub fn run(store_kind: &str, live: usize, redis_url: &str) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let row = runtime.block_on(async {
        match store_kind {
            "memory" => {
                // No background purge during the measurement: the cleanup pass is timed.
                let store = MemoryStore::with_purge_interval(Duration::from_secs(24 * 3600));
                measure(Arc::new(store), store_kind, live, None).await
            }
            "redis" => {
                let mut redis = Redis::connect(redis_url);
                redis.flush();
                let store = RedisStore::connect(redis_url)
                    .await
                    .expect("RedisStore connects");
                measure(Arc::new(store), store_kind, live, Some(redis)).await
            }
            other => panic!("unknown store {other:?}"),
        }
    });
    println!("SCALE {row}");
}

fn record(user: String, life: time::Duration) -> Record {
    let now = OffsetDateTime::now_utc();
    let mut record = Record::new(now, now + life, now + time::Duration::hours(12));
    record.data.insert("n".into(), 1.into());
    record.user_id = Some(user);
    record
}

/// The `i`-th other session: two sessions per user, as if users had a phone and a laptop.
fn other_record(i: usize, life: time::Duration) -> Record {
    record(format!("user-{}", i / 2), life)
}

/// Seeds `count` sessions starting at index `first`; returns the keys, or fewer if the
/// budget ran out.
async fn seed(
    store: Arc<dyn SessionStore>,
    first: usize,
    count: usize,
    life: time::Duration,
    deadline: Instant,
) -> Vec<IdHash> {
    let workers: Vec<_> = (0..SEED_CONCURRENCY)
        .map(|worker| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut keys = Vec::new();
                for i in (first + worker..first + count).step_by(SEED_CONCURRENCY) {
                    if keys.len() % 256 == 0 && Instant::now() > deadline {
                        break;
                    }
                    let key = Id::random().expect("randomness").hash();
                    assert!(store
                        .create(&key, &other_record(i, life))
                        .await
                        .expect("create"));
                    keys.push(key);
                }
                keys
            })
        })
        .collect();
    let mut keys = Vec::with_capacity(count);
    for worker in workers {
        keys.extend(worker.await.expect("seed task"));
    }
    keys
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    percentile(&values, 0.5)
}

async fn seed_measured_user(store: &dyn SessionStore) {
    for _ in 0..MEASURED_USER_SESSIONS {
        let key = Id::random().unwrap().hash();
        store
            .create(
                &key,
                &record(MEASURED_USER.into(), time::Duration::hours(1)),
            )
            .await
            .unwrap();
    }
}

async fn measure(
    store: Arc<dyn SessionStore>,
    kind: &str,
    live: usize,
    mut redis: Option<Redis>,
) -> serde_json::Value {
    let expiring = live / 9; // so that the expired ones are 10% of all seeded
    let rss_before = proc_stats::own_rss_bytes();
    let redis_before = redis.as_mut().map(Redis::used_memory);
    let started = Instant::now();
    let deadline = started + SEED_BUDGET;

    let live_keys = seed(store.clone(), 0, live, time::Duration::hours(1), deadline).await;
    let expiring_keys = seed(store.clone(), live, expiring, SHORT_LIFE, deadline).await;
    seed_measured_user(&*store).await;
    let seed_secs = started.elapsed().as_secs_f64();
    let seeded = live_keys.len() + expiring_keys.len() + MEASURED_USER_SESSIONS;

    let rss_delta = proc_stats::own_rss_bytes().saturating_sub(rss_before);
    let redis_delta = redis
        .as_mut()
        .map(|r| r.used_memory().saturating_sub(redis_before.unwrap()));
    let stored_delta = redis_delta.unwrap_or(rss_delta);

    // Reads: a spread of live keys, one at a time, each timed.
    let stride = (live_keys.len() / READ_SAMPLES).max(1);
    let mut read_us: Vec<f64> = Vec::with_capacity(READ_SAMPLES);
    for key in live_keys.iter().step_by(stride).cycle().take(READ_SAMPLES) {
        let t = Instant::now();
        let found = store.load(key).await.expect("load");
        read_us.push(t.elapsed().as_secs_f64() * 1e6);
        assert!(found.is_some(), "a seeded session is missing");
    }
    read_us.sort_by(f64::total_cmp);

    // One user's sessions: list (50 times), then revoke all of them (20 times, re-seeding
    // between, only the revoke timed).
    let mut list_us = Vec::new();
    for _ in 0..50 {
        let t = Instant::now();
        let sessions = store.list_user(MEASURED_USER).await.expect("list_user");
        list_us.push(t.elapsed().as_secs_f64() * 1e6);
        assert_eq!(sessions.len(), MEASURED_USER_SESSIONS);
    }
    let mut revoke_us = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let revoked = store
            .delete_user(MEASURED_USER, None)
            .await
            .expect("delete_user");
        revoke_us.push(t.elapsed().as_secs_f64() * 1e6);
        assert_eq!(revoked as usize, MEASURED_USER_SESSIONS);
        seed_measured_user(&*store).await;
    }

    // Cleanup: wait until every short-lived session is past its deadline, then one pass.
    let wait = SHORT_LIFE.unsigned_abs() + Duration::from_millis(200);
    tokio::time::sleep(wait).await;
    let t = Instant::now();
    let removed = store.delete_expired().await.expect("delete_expired");
    let cleanup_us = t.elapsed().as_secs_f64() * 1e6;

    json!({
        "store": kind,
        "live_requested": live,
        "live_seeded": live_keys.len(),
        "expiring_seeded": expiring_keys.len(),
        "seed_secs": seed_secs,
        "memory_source": if redis.is_some() { "redis used_memory" } else { "VmRSS" },
        "memory_delta_bytes": stored_delta,
        "bytes_per_session": stored_delta as f64 / seeded as f64,
        "read_p50_us": percentile(&read_us, 0.5),
        "read_p99_us": percentile(&read_us, 0.99),
        "list_user_us": median(list_us),
        "delete_user_us": median(revoke_us),
        "cleanup_us": cleanup_us,
        "cleanup_removed": removed,
    })
}
