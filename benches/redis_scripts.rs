//! Redis-side CPU per script call: drives `RedisStore` directly (no HTTP layer) with N
//! creations and N write-backs of each common kind on a private, non-persistent
//! `redis-server` on a free loopback port, and reads `INFO commandstats` around each batch:
//! `usec_per_call` of `EVALSHA` (the whole script, its inner commands included) next to the
//! time its inner commands took. A measurement, not a check, so it is a benchmark:
//!
//! ```text
//! cargo bench --features redis --bench redis_scripts
//! ```
//!
//! `SESSIONWARE_SCRIPT_COST_N` sets N (default 20000). Figures are kept in BENCHMARKS.md.
#[path = "../tests/support/redis.rs"]
mod support;

use std::collections::BTreeMap;

use serde_json::json;
use sessionware::{Deadlines, Delta, Id, IdHash, Record, RedisStore, SessionStore};
use time::{Duration, OffsetDateTime};

/// Calls in flight at once, as from a server's concurrent requests.
const CONCURRENCY: usize = 16;

/// `calls` and `usec` of every command, from `INFO commandstats`.
async fn command_stats(
    conn: &mut redis::aio::MultiplexedConnection,
) -> BTreeMap<String, (u64, u64)> {
    let info = support::info(conn, "commandstats").await;
    info.lines()
        .filter_map(|line| {
            let (name, rest) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let mut calls = None;
            let mut usec = None;
            for part in rest.split(',') {
                if let Some(n) = part.strip_prefix("calls=") {
                    calls = n.parse().ok();
                } else if let Some(n) = part.strip_prefix("usec=") {
                    usec = n.parse().ok();
                }
            }
            Some((name.to_owned(), (calls?, usec?)))
        })
        .collect()
}

/// Redis's own CPU time so far (user + system), in µs, from `INFO cpu`.
async fn cpu_usec(conn: &mut redis::aio::MultiplexedConnection) -> f64 {
    let info = support::info(conn, "cpu").await;
    info.lines()
        .filter_map(|line| {
            let (name, value) = line.trim().split_once(':')?;
            ["used_cpu_user", "used_cpu_sys"]
                .contains(&name)
                .then(|| value.parse::<f64>().ok())?
        })
        .sum::<f64>()
        * 1e6
}

/// One batch's cost: EVALSHA µs per call, inner commands' µs per call, and their mix; and
/// Redis's whole CPU time per call (network included), which preemption does not inflate
/// as it does the wall-clock `usec` of `INFO commandstats`.
struct Cost {
    name: &'static str,
    evalsha: f64,
    inner: f64,
    cpu: f64,
    mix: String,
}

async fn measure<F, Fut>(
    conn: &mut redis::aio::MultiplexedConnection,
    name: &'static str,
    n: usize,
    run: F,
) -> Cost
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(conn)
        .await
        .expect("CONFIG RESETSTAT");
    let cpu_before = cpu_usec(conn).await;
    run().await;
    let cpu = cpu_usec(conn).await - cpu_before;
    let stats = command_stats(conn).await;
    let (calls, usec) = stats.get("evalsha").copied().unwrap_or_default();
    assert_eq!(calls, n as u64, "{name}: one EVALSHA per call");
    let mut inner_usec = 0;
    let mut mix = Vec::new();
    for (command, (c, u)) in &stats {
        if ["evalsha", "config|resetstat", "info"].contains(&command.as_str()) {
            continue;
        }
        inner_usec += u;
        mix.push(format!(
            "{} {:.2}",
            command.to_uppercase(),
            *c as f64 / n as f64
        ));
    }
    Cost {
        name,
        evalsha: usec as f64 / n as f64,
        inner: inner_usec as f64 / n as f64,
        cpu: cpu / n as f64,
        mix: if mix.is_empty() {
            "none".into()
        } else {
            mix.join(", ")
        },
    }
}

/// Runs `call` for every key, `CONCURRENCY` calls in flight at a time on the store's one
/// multiplexed connection, so Redis runs the scripts back to back as it does under load.
async fn each<F, Fut>(store: &RedisStore, keys: &[IdHash], call: F)
where
    F: Fn(RedisStore, usize, IdHash) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let mut tasks = tokio::task::JoinSet::new();
    for (i, key) in keys.iter().enumerate() {
        if tasks.len() == CONCURRENCY {
            tasks.join_next().await.unwrap().unwrap();
        }
        tasks.spawn(call(store.clone(), i, *key));
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
}

fn record(now: OffsetDateTime, user: Option<String>) -> Record {
    let mut record = Record::new(now, now + Duration::minutes(30), now + Duration::hours(12));
    record.data.insert("n".into(), json!("1"));
    record.user_id = user;
    record
}

fn main() {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a Tokio runtime")
        .block_on(redis_cpu_per_script_call());
}

async fn redis_cpu_per_script_call() {
    let n: usize = std::env::var("SESSIONWARE_SCRIPT_COST_N")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20_000);
    let server = support::OwnServer::start_volatile("script-cost");
    let store = RedisStore::connect(&server.url())
        .await
        .expect("the private redis-server");
    let mut conn = support::raw(&server.url()).await;

    let keys = |n: usize| -> Vec<IdHash> { (0..n).map(|_| Id::random().unwrap().hash()).collect() };
    // Warm up: the server learns every script (NOSCRIPT, then SCRIPT LOAD) before counting.
    let warm = keys(1)[0];
    let now = OffsetDateTime::now_utc();
    assert!(store.create(&warm, &record(now, None)).await.unwrap());
    assert!(store.apply(&warm, &Delta::default()).await.unwrap());

    let (anonymous, users) = (keys(n), keys(n));
    let mut costs = Vec::new();
    costs.push(
        measure(&mut conn, "CREATE, anonymous (new session)", n, || {
            each(&store, &anonymous, |store, _, key| async move {
                let record = record(OffsetDateTime::now_utc(), None);
                assert!(store.create(&key, &record).await.unwrap());
            })
        })
        .await,
    );
    costs.push(
        measure(&mut conn, "CREATE, with a user", n, || {
            each(&store, &users, |store, i, key| async move {
                let user = Some(format!("user{}", i % 1000));
                let record = record(OffsetDateTime::now_utc(), user);
                assert!(store.create(&key, &record).await.unwrap());
            })
        })
        .await,
    );
    costs.push(
        measure(&mut conn, "APPLY, set one key (write)", n, || {
            each(&store, &anonymous, |store, _, key| async move {
                let mut delta = Delta::default();
                delta.set("n", json!("2"));
                assert!(store.apply(&key, &delta).await.unwrap());
            })
        })
        .await,
    );
    costs.push(
        measure(
            &mut conn,
            "APPLY, set one key and slide the deadline",
            n,
            || {
                each(&store, &users, |store, _, key| async move {
                    let now = OffsetDateTime::now_utc();
                    let mut delta = Delta::default();
                    delta.set("n", json!("3"));
                    delta.deadlines = Some(Deadlines::new(
                        now + Duration::minutes(31),
                        now + Duration::hours(12),
                        false,
                    ));
                    delta.last_seen = Some(now);
                    assert!(store.apply(&key, &delta).await.unwrap());
                })
            },
        )
        .await,
    );

    println!("\nN = {n} calls per row");
    println!(
        "| script call | EVALSHA µs/call | inner commands µs/call | Redis CPU µs/call | inner commands per call |"
    );
    println!("|---|---|---|---|---|");
    for cost in &costs {
        println!(
            "| {} | {:.2} | {:.2} | {:.2} | {} |",
            cost.name, cost.evalsha, cost.inner, cost.cpu, cost.mix
        );
    }
}
