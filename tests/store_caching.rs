//! `CachingStore`: the conformance suite (a `MemoryStore` cache over `SqliteStore`), and its
//! coherence rules when the cache is shared, per server, or down.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration as StdDuration;

use async_trait::async_trait;
use serde_json::json;
use sessionware::store::conformance::Harness;
use sessionware::{
    CachingStore, Delta, Error, Id, IdHash, MemoryStore, Record, SessionInfo, SessionStore,
    SqliteStore,
};
use time::{Duration, OffsetDateTime};

fn temp_db() -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!("sessionware-caching-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir.join(format!("t{}.db", NEXT.fetch_add(1, Ordering::Relaxed)))
}

async fn sqlite() -> SqliteStore {
    let store = SqliteStore::open(temp_db()).await.expect("open");
    store.migrate().await.expect("migrate");
    store
}

async fn sqlite_twin(store: &SqliteStore) -> SqliteStore {
    let path = store.pool().connect_options().get_filename().to_path_buf();
    SqliteStore::open(path).await.expect("open twin")
}

type Cached = CachingStore<MemoryStore, SqliteStore>;

/// Two servers sharing one cache (as they would share a Redis) and one database file.
struct SharedCache;

impl Harness for SharedCache {
    type Store = Cached;

    async fn fresh(&self) -> Cached {
        CachingStore::new(MemoryStore::new(), sqlite().await)
    }

    async fn twin(&self, store: &Cached) -> Cached {
        CachingStore::new(store.cache().clone(), sqlite_twin(store.backing()).await)
    }
}

sessionware::store_conformance_tests!(SharedCache);

fn key() -> IdHash {
    Id::random().expect("randomness").hash()
}

fn record(user: Option<&str>) -> Record {
    let now = OffsetDateTime::now_utc();
    let mut record = Record::new(now, now + Duration::minutes(30), now + Duration::hours(12));
    record.user_id = user.map(str::to_owned);
    record
}

fn setting(name: &str, value: serde_json::Value) -> Delta {
    let mut delta = Delta::default();
    delta.set(name, value);
    delta
}

#[tokio::test]
async fn reads_are_served_from_the_cache_after_the_first() {
    let flaky = Flaky::new();
    let store = CachingStore::new(flaky.clone(), sqlite().await);
    let k = key();
    assert!(store.create(&k, &record(None)).await.unwrap());
    for _ in 0..5 {
        assert!(store.load(&k).await.unwrap().is_some());
    }
    // Remove the row behind the cache's back: the cached copy is what answers.
    sqlx::query("DELETE FROM sessionware_sessions")
        .execute(store.backing().pool())
        .await
        .unwrap();
    assert!(
        store.load(&k).await.unwrap().is_some(),
        "served by the cache"
    );
    assert_eq!(flaky.loads.load(Ordering::Relaxed), 6);
    assert_eq!(store.fallbacks(), 0);
}

#[tokio::test]
async fn a_write_through_one_server_is_seen_at_once_through_another_sharing_the_cache() {
    let one = CachingStore::new(MemoryStore::new(), sqlite().await);
    let two = CachingStore::new(one.cache().clone(), sqlite_twin(one.backing()).await);
    let k = key();
    assert!(one.create(&k, &record(Some("ann"))).await.unwrap());
    assert!(two.load(&k).await.unwrap().is_some(), "cached by two");
    assert!(one.apply(&k, &setting("x", json!(1))).await.unwrap());
    assert_eq!(two.load(&k).await.unwrap().unwrap().data["x"], 1);
    assert!(one.delete(&k).await.unwrap());
    assert!(
        two.load(&k).await.unwrap().is_none(),
        "a destroyed session was served"
    );
    // Nor can a fill put it back: the invalidation marker refuses it.
    assert!(one.load(&k).await.unwrap().is_none());
}

#[tokio::test]
async fn log_out_everywhere_reaches_cached_copies() {
    let store = CachingStore::new(MemoryStore::new(), sqlite().await);
    let keys = [key(), key(), key()];
    for k in &keys {
        assert!(store.create(k, &record(Some("ann"))).await.unwrap());
        assert!(store.load(k).await.unwrap().is_some());
    }
    assert_eq!(store.delete_user("ann", Some(&keys[0])).await.unwrap(), 2);
    assert!(store.load(&keys[0]).await.unwrap().is_some());
    assert!(store.load(&keys[1]).await.unwrap().is_none());
    assert!(store.load(&keys[2]).await.unwrap().is_none());
}

#[tokio::test]
async fn separate_per_server_caches_lag_by_at_most_one_ttl() {
    // The documented limit: each server's in-process cache learns only of its own writes.
    let ttl = StdDuration::from_millis(300);
    let one = CachingStore::new(MemoryStore::new(), sqlite().await).with_cache_ttl(ttl);
    let two =
        CachingStore::new(MemoryStore::new(), sqlite_twin(one.backing()).await).with_cache_ttl(ttl);
    let k = key();
    assert!(one.create(&k, &record(None)).await.unwrap());
    assert!(two.load(&k).await.unwrap().is_some());
    assert!(one.delete(&k).await.unwrap());
    tokio::time::sleep(ttl + StdDuration::from_millis(100)).await;
    assert!(
        two.load(&k).await.unwrap().is_none(),
        "still stale after one TTL"
    );
}

#[tokio::test]
async fn a_cache_outage_falls_back_to_the_backing_store_and_recovers() {
    let flaky = Flaky::new();
    let ttl = StdDuration::from_millis(400);
    let store = CachingStore::new(flaky.clone(), sqlite().await)
        .with_cache_ttl(ttl)
        .with_retry_interval(StdDuration::from_millis(100));
    let k = key();
    assert!(store.create(&k, &record(None)).await.unwrap());
    assert!(store.load(&k).await.unwrap().is_some(), "cached");

    flaky.down.store(true, Ordering::Relaxed);
    // Served from the database while the cache fails, writes included.
    assert!(store
        .apply(&k, &setting("during", json!("outage")))
        .await
        .unwrap());
    let loaded = store
        .load(&k)
        .await
        .unwrap()
        .expect("served by the backing store");
    assert_eq!(loaded.data["during"], "outage");
    assert!(store.cache_is_down());
    assert!(store.fallbacks() >= 1);
    assert!(store.cache_errors() >= 1);

    flaky.down.store(false, Ordering::Relaxed);
    // The cache still holds the copy from before the write: it must never be served.
    for _ in 0..10 {
        let loaded = store.load(&k).await.unwrap().unwrap();
        assert_eq!(
            loaded.data.get("during"),
            Some(&json!("outage")),
            "stale copy served"
        );
        tokio::time::sleep(StdDuration::from_millis(100)).await;
    }
    // One TTL later the cache is trusted again and answers reads.
    let before = flaky.loads.load(Ordering::Relaxed);
    let fallbacks = store.fallbacks();
    for _ in 0..3 {
        assert_eq!(
            store.load(&k).await.unwrap().unwrap().data["during"],
            "outage"
        );
    }
    assert!(!store.cache_is_down());
    assert_eq!(store.fallbacks(), fallbacks, "the cache is used again");
    assert!(flaky.loads.load(Ordering::Relaxed) > before);
}

#[tokio::test]
async fn a_slow_cache_counts_as_down() {
    let flaky = Flaky::new();
    let store = CachingStore::new(flaky.clone(), sqlite().await)
        .with_cache_timeout(StdDuration::from_millis(50));
    let k = key();
    assert!(store.create(&k, &record(None)).await.unwrap());
    flaky.slow.store(true, Ordering::Relaxed);
    let started = std::time::Instant::now();
    assert!(store.load(&k).await.unwrap().is_some());
    assert!(
        started.elapsed() < StdDuration::from_secs(3),
        "the cache timeout did not apply"
    );
    assert!(store.cache_is_down());
    assert_eq!(
        store.fallbacks(),
        1,
        "the timed-out lookup fell back to the database"
    );
    let calls = flaky.calls.load(Ordering::Relaxed);
    assert!(store.load(&k).await.unwrap().is_some());
    assert_eq!(
        flaky.calls.load(Ordering::Relaxed),
        calls,
        "a down cache is skipped"
    );
    assert_eq!(store.fallbacks(), 2);
}

/// A write whose caller stops waiting once the backing store has it (the layer's store
/// timeout, a client gone away) still invalidates the cached copies: a session deleted,
/// revoked or rotated away in the database is never served from the cache afterwards.
#[tokio::test]
async fn a_write_abandoned_before_its_invalidation_still_invalidates() {
    let flaky = Flaky::new();
    let one = CachingStore::new(flaky.clone(), sqlite().await);
    let two = CachingStore::new(flaky.clone(), sqlite_twin(one.backing()).await);
    let (deleted, revoked, rotated, changed) = (key(), key(), key(), key());
    for k in [&deleted, &revoked, &rotated, &changed] {
        assert!(one.create(k, &record(Some("ann"))).await.unwrap());
        assert!(two.load(k).await.unwrap().is_some(), "cached");
    }
    let beas = [key(), key()];
    for k in &beas {
        assert!(one.create(k, &record(Some("bea"))).await.unwrap());
        assert!(two.load(k).await.unwrap().is_some(), "cached");
    }
    // Each cache call now takes 100 ms (well within the cache timeout), and each caller
    // gives up after 50 ms: long after the database answered, before the cache did.
    flaky.lag_ms.store(100, Ordering::Relaxed);
    let give_up = StdDuration::from_millis(50);
    let new = key();
    let abandoned = [
        tokio::time::timeout(give_up, one.delete(&deleted))
            .await
            .is_err(),
        tokio::time::timeout(give_up, one.delete_user_session("ann", &revoked))
            .await
            .is_err(),
        tokio::time::timeout(give_up, one.rotate(&rotated, &new, &Delta::default()))
            .await
            .is_err(),
        tokio::time::timeout(give_up, one.apply(&changed, &setting("x", json!(1))))
            .await
            .is_err(),
        tokio::time::timeout(give_up, one.delete_user("bea", None))
            .await
            .is_err(),
    ];
    assert_eq!(abandoned, [true; 5], "each caller gave up mid-invalidation");
    let backing = one.backing();
    assert!(backing.load(&deleted).await.unwrap().is_none());
    assert!(backing.load(&revoked).await.unwrap().is_none());
    assert!(backing.load(&rotated).await.unwrap().is_none());
    assert_eq!(backing.load(&changed).await.unwrap().unwrap().data["x"], 1);

    flaky.lag_ms.store(0, Ordering::Relaxed);
    tokio::time::sleep(StdDuration::from_millis(500)).await;
    assert!(
        two.load(&deleted).await.unwrap().is_none(),
        "deleted, yet served"
    );
    assert!(
        two.load(&revoked).await.unwrap().is_none(),
        "revoked, yet served"
    );
    assert!(
        two.load(&rotated).await.unwrap().is_none(),
        "rotated away, yet served"
    );
    for k in &beas {
        assert!(
            two.load(k).await.unwrap().is_none(),
            "logged out, yet served"
        );
    }
    assert_eq!(
        two.load(&changed).await.unwrap().unwrap().data.get("x"),
        Some(&json!(1)),
        "a stale copy hid a write"
    );
}

/// A `MemoryStore` whose calls fail (as an unreachable server's would) or stall on demand,
/// and which counts the calls made to it and the loads it answered.
#[derive(Clone)]
struct Flaky {
    inner: MemoryStore,
    down: Arc<AtomicBool>,
    slow: Arc<AtomicBool>,
    /// Milliseconds every call takes (within the cache timeout, unlike `slow`).
    lag_ms: Arc<AtomicU64>,
    loads: Arc<AtomicU64>,
    calls: Arc<AtomicU64>,
}

impl Flaky {
    fn new() -> Self {
        Self {
            inner: MemoryStore::new(),
            down: Arc::default(),
            slow: Arc::default(),
            lag_ms: Arc::default(),
            loads: Arc::default(),
            calls: Arc::default(),
        }
    }

    async fn check(&self) -> Result<(), Error> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if self.slow.load(Ordering::Relaxed) {
            tokio::time::sleep(StdDuration::from_secs(5)).await;
        }
        let lag = self.lag_ms.load(Ordering::Relaxed);
        if lag > 0 {
            tokio::time::sleep(StdDuration::from_millis(lag)).await;
        }
        if self.down.load(Ordering::Relaxed) {
            return Err(Error::unavailable(std::io::Error::other(
                "connection refused",
            )));
        }
        Ok(())
    }
}

#[async_trait]
impl SessionStore for Flaky {
    async fn load(&self, key: &IdHash) -> Result<Option<Record>, Error> {
        self.check().await?;
        self.loads.fetch_add(1, Ordering::Relaxed);
        self.inner.load(key).await
    }
    async fn create(&self, key: &IdHash, record: &Record) -> Result<bool, Error> {
        self.check().await?;
        self.inner.create(key, record).await
    }
    async fn apply(&self, key: &IdHash, delta: &Delta) -> Result<bool, Error> {
        self.check().await?;
        self.inner.apply(key, delta).await
    }
    async fn rotate(&self, from: &IdHash, to: &IdHash, delta: &Delta) -> Result<bool, Error> {
        self.check().await?;
        self.inner.rotate(from, to, delta).await
    }
    async fn rotated_at(&self, key: &IdHash) -> Result<Option<OffsetDateTime>, Error> {
        self.check().await?;
        self.inner.rotated_at(key).await
    }
    async fn delete(&self, key: &IdHash) -> Result<bool, Error> {
        self.check().await?;
        self.inner.delete(key).await
    }
    async fn list_user(&self, user_id: &str) -> Result<Vec<SessionInfo>, Error> {
        self.check().await?;
        self.inner.list_user(user_id).await
    }
    async fn delete_user(&self, user_id: &str, keep: Option<&IdHash>) -> Result<u64, Error> {
        self.check().await?;
        self.inner.delete_user(user_id, keep).await
    }
    async fn delete_expired(&self) -> Result<u64, Error> {
        self.check().await?;
        self.inner.delete_expired().await
    }
    async fn count(&self) -> Result<u64, Error> {
        self.check().await?;
        self.inner.count().await
    }
}

/// A real cache that goes down and comes back: a `RedisStore` on a `redis-server` this test
/// runs on a free loopback port, killed and restarted.
#[cfg(feature = "redis")]
mod redis_cache {
    use std::net::TcpListener;
    use std::path::PathBuf;
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration as StdDuration, Instant};

    use serde_json::json;
    use sessionware::{CachingStore, RedisStore, SessionStore};

    use super::{key, record, setting, sqlite};

    /// A `redis-server` owned by the test. It persists every write (append-only file,
    /// fsynced), so after a restart it holds what it held before: stale cached copies
    /// included, which is the hard case for coherence.
    struct Redis {
        port: u16,
        dir: PathBuf,
        child: Option<Child>,
    }

    impl Redis {
        fn start() -> Self {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|listener| listener.local_addr())
                .expect("a free loopback port")
                .port();
            let dir = std::env::temp_dir().join(format!(
                "sessionware-cache-redis-{}-{port}",
                std::process::id()
            ));
            std::fs::create_dir_all(&dir).expect("redis data dir");
            let mut redis = Self {
                port,
                dir,
                child: None,
            };
            redis.spawn();
            redis
        }

        fn spawn(&mut self) {
            let child = Command::new("redis-server")
                .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
                .args([
                    "--save",
                    "",
                    "--appendonly",
                    "yes",
                    "--appendfsync",
                    "always",
                ])
                .arg("--dir")
                .arg(&self.dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|err| panic!("cannot run redis-server (is it installed?): {err}"));
            self.child = Some(child);
            let deadline = Instant::now() + StdDuration::from_secs(10);
            while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
                assert!(Instant::now() < deadline, "redis-server did not start");
                std::thread::sleep(StdDuration::from_millis(20));
            }
        }

        fn kill(&mut self) {
            if let Some(mut child) = self.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }

        fn url(&self) -> String {
            format!("redis://127.0.0.1:{}/", self.port)
        }
    }

    impl Drop for Redis {
        fn drop(&mut self) {
            self.kill();
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_cache_down_and_back() {
        let mut redis = Redis::start();
        let cache = RedisStore::connect(&redis.url())
            .await
            .expect("connect to the test's redis-server")
            .with_prefix("cache");
        let ttl = StdDuration::from_millis(800);
        let store = CachingStore::new(cache, sqlite().await)
            .with_cache_ttl(ttl)
            .with_cache_timeout(StdDuration::from_millis(300))
            .with_retry_interval(StdDuration::from_millis(200));
        let k = key();
        assert!(store.create(&k, &record(Some("ann"))).await.unwrap());
        assert!(store.load(&k).await.unwrap().is_some());
        assert!(
            store.cache().load(&k).await.unwrap().is_some(),
            "the session is cached in Redis"
        );

        redis.kill();
        let started = Instant::now();
        for i in 0..5 {
            let loaded = store.load(&k).await.expect("served from SQLite");
            assert!(loaded.is_some());
            assert!(store
                .apply(&k, &setting(&format!("k{i}"), json!(i)))
                .await
                .unwrap());
        }
        assert!(
            started.elapsed() < StdDuration::from_secs(8),
            "slow while the cache is down"
        );
        assert!(store.cache_is_down());
        assert!(
            store.fallbacks() >= 5,
            "fallbacks counted: {}",
            store.fallbacks()
        );

        // Redis comes back holding the copy cached before the writes: never served.
        redis.spawn();
        let back = Instant::now();
        loop {
            let loaded = store.load(&k).await.unwrap().expect("the session");
            assert_eq!(
                loaded.data.get("k4"),
                Some(&json!(4)),
                "a stale copy was served"
            );
            let fallbacks = store.fallbacks();
            tokio::time::sleep(StdDuration::from_millis(50)).await;
            let _ = store.load(&k).await.unwrap();
            if !store.cache_is_down() && store.fallbacks() == fallbacks {
                break;
            }
            assert!(
                back.elapsed() < StdDuration::from_secs(10),
                "the cache was never used again"
            );
        }
        // Used again: the next reads are answered from Redis, filled with the fresh record.
        let cached = store.cache().load(&k).await.unwrap();
        assert!(cached.is_some(), "refilled after the outage");
        let loaded = store.load(&k).await.unwrap().unwrap();
        assert_eq!(loaded.data["k4"], 4);
        assert!(store.delete(&k).await.unwrap());
        assert!(store.load(&k).await.unwrap().is_none());
    }
}

/// The conformance suite on the production pairing: a `RedisStore` cache (the test Redis
/// at `SESSIONWARE_REDIS_URL`, default 127.0.0.1:6380, which `scripts/test.sh` starts) in
/// front of a `PostgresStore` (`SESSIONWARE_POSTGRES_URL`). Fails if either is down.
#[cfg(all(feature = "redis", feature = "postgres"))]
mod redis_over_postgres {
    use sessionware::store::conformance::Harness;
    use sessionware::{CachingStore, PostgresStore, RedisStore};

    type Store = CachingStore<RedisStore, PostgresStore>;

    fn redis_url() -> String {
        std::env::var("SESSIONWARE_REDIS_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:6380/".to_owned())
    }

    fn postgres_url() -> String {
        std::env::var("SESSIONWARE_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5433/sessionware".to_owned())
    }

    async fn redis(prefix: &str) -> RedisStore {
        let url = redis_url();
        RedisStore::connect(&url)
            .await
            .unwrap_or_else(|err| {
                panic!("test Redis unreachable at {url} ({err}); run scripts/test.sh or scripts/redis.sh start")
            })
            .with_prefix(prefix)
    }

    async fn postgres(table: &str) -> PostgresStore {
        let url = postgres_url();
        PostgresStore::connect(&url)
            .await
            .unwrap_or_else(|err| {
                panic!("PostgreSQL unreachable at {url} ({err}); run scripts/postgres.sh start")
            })
            .with_table(table)
            .expect("valid table name")
    }

    struct RedisOverPostgres;

    impl Harness for RedisOverPostgres {
        type Store = Store;

        async fn fresh(&self) -> Store {
            let unique = sessionware::Id::random().unwrap().hash().to_string();
            let table = format!("sqltest_cache_{}", &unique[..16]);
            let backing = postgres(&table).await;
            backing.migrate().await.expect("migrate");
            CachingStore::new(
                redis(&format!("swtest:cache:{}", &unique[..16])).await,
                backing,
            )
        }

        async fn twin(&self, store: &Store) -> Store {
            // Another server: its own Redis connection and its own PostgreSQL pool.
            CachingStore::new(
                redis(store.cache().prefix()).await,
                postgres(store.backing().table()).await,
            )
        }
    }

    sessionware::store_conformance_tests!(RedisOverPostgres);
}
