//! [`CachingStore`]: a fast store in front of a durable one.
//!
//! Typically a [`MemoryStore`](crate::MemoryStore) or a `RedisStore` caching a
//! `PostgresStore` or `SqliteStore`: sessions are read on nearly every request and written
//! on few, so serving reads from the cache takes most of the load off the database while
//! the database stays the one source of truth.
//!
//! # Coherence rules
//! - **Reads** try the cache first. A miss loads from the backing store and fills the
//!   cache with a copy that expires after the cache TTL (5 seconds unless set), or at the
//!   session's own expiry if sooner.
//! - **Writes** (deltas, rotations, deletes, revocations) go to the backing store first;
//!   only then is the cache entry *invalidated*: turned, in one cache call, into a marker
//!   that lives for one cache TTL and that no fill can overwrite. A request that read the
//!   old record before the write therefore cannot put it back into the cache afterwards,
//!   in this process or (with a cache shared by several servers, such as Redis) in any
//!   other. So no request sees a session the backing store has destroyed, and no write is
//!   hidden by an older cached copy. A write whose caller stops waiting before the
//!   invalidation is done (the layer's store timeout, a client gone away), or whose backing
//!   call fails with its fate unknown, has the invalidation finished in a task of its own.
//! - **Counting and listing** (`list_user`, `count`, ...) and
//!   [`rotated_at`](crate::SessionStore::rotated_at) always ask the backing store.
//!
//! # When the cache is down
//! A cache call that fails (an [`ErrorKind::StoreUnavailable`](crate::ErrorKind) or
//! `StoreTimeout`, or any other error) or takes longer than the cache timeout (250 ms
//! unless set) is logged once per outage, counted ([`cache_errors`](CachingStore::cache_errors)),
//! and the request is served from the backing store
//! ([`fallbacks`](CachingStore::fallbacks) counts those). While the cache is down, calls
//! to it are skipped, and one is tried again after the retry interval (1 second unless
//! set); the first that succeeds ends the outage. A write whose invalidation failed or
//! was skipped may have left a stale copy in the cache, so reads keep going to the
//! backing store for one cache TTL after it, by which time every copy filled before it
//! has expired.
//!
//! # Limits
//! - Each server's in-process cache only learns of its own writes. With several servers,
//!   each with its own [`MemoryStore`](crate::MemoryStore) cache, a session ended on one
//!   server stays readable from another server's cache for up to one cache TTL. Use a
//!   shared cache (Redis) for several servers, or keep the TTL short.
//! - With a shared cache, a server that could not invalidate (the cache unreachable from
//!   it alone) cannot tell the other servers; their copies still expire within one TTL.
//! - "Log out everywhere" invalidates the sessions the backing store listed for the user
//!   just before deleting them, and then every cached copy the cache indexes under the
//!   user; a session of that user created during the call may stay cached for one TTL.
//! - Copies in the cache carry a reserved data key (`__sessionware_cache__`); a session
//!   whose own data uses that key is never cached, only served from the backing store.
//!
//! ```
//! # #[cfg(feature = "memory")]
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use std::time::Duration;
//! use sessionware::{CachingStore, MemoryStore, SessionLayer};
//!
//! // In production the backing store is a PostgresStore or SqliteStore.
//! let durable = MemoryStore::new();
//! let store = CachingStore::new(MemoryStore::new(), durable)
//!     .with_cache_ttl(Duration::from_secs(2));
//! let layer = SessionLayer::new(store.clone());
//! assert_eq!(store.fallbacks(), 0);
//! # drop(layer);
//! # });
//! ```

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::{json, Value};
use time::OffsetDateTime;

use super::SessionStore;
use crate::error::Error;
use crate::id::IdHash;
use crate::record::{Deadlines, Delta, Record, SessionInfo};

/// The data key under which a cached copy keeps what the cache must not change: the
/// record's real deadlines (the copy's own are cut to the cache TTL), or the mark of an
/// invalidated entry.
const RESERVED: &str = "__sessionware_cache__";
/// The value of [`RESERVED`] in an invalidation marker.
const INVALIDATED: &str = "invalidated";
/// How many times an invalidation retries when a concurrent fill keeps slipping in.
const INVALIDATE_ATTEMPTS: usize = 3;

const DEFAULT_TTL: Duration = Duration::from_secs(5);
const DEFAULT_CACHE_TIMEOUT: Duration = Duration::from_millis(250);
const DEFAULT_RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// A session store that serves reads from `Cache` and keeps `Backing` the source of
/// truth. See the [module docs](self) for its coherence rules and limits.
///
/// Cheap to clone: clones share the two stores, the outage state and the counters.
pub struct CachingStore<Cache, Backing> {
    cache: Cache,
    backing: Backing,
    settings: Settings,
    shared: Arc<Shared>,
}

#[derive(Debug, Clone, Copy)]
struct Settings {
    ttl: Duration,
    cache_timeout: Duration,
    retry_interval: Duration,
}

#[derive(Default)]
struct Shared {
    health: Mutex<Health>,
    fallbacks: AtomicU64,
    cache_errors: AtomicU64,
}

#[derive(Default)]
struct Health {
    /// The last cache call failed; calls are skipped until `retry_at`.
    down: bool,
    retry_at: Option<Instant>,
    /// Reads must not trust cached copies until then (an invalidation failed or was
    /// skipped, so a copy may be stale).
    distrust_until: Option<Instant>,
}

/// What a cache entry turned out to hold.
enum Cached {
    Record(Record),
    Invalidated,
    Unusable,
}

/// The cache work a write still owes once it has gone to the backing store.
enum Owed {
    /// Invalidate this key.
    Key(IdHash),
    /// Invalidate these keys (a user's sessions), then sweep the user's copies.
    User {
        user_id: String,
        keep: Option<IdHash>,
        keys: Vec<IdHash>,
    },
}

/// Armed before a write goes to the backing store, disarmed once the cache has been told.
/// Should the caller stop polling in between (the layer's store timeout, a client gone
/// away), or the backing store fail with the write's fate unknown, dropping it finishes
/// the invalidation in a task of its own: otherwise a session the database no longer has,
/// or no longer has in that shape, would be served from the cache for a whole TTL.
struct Unfinished<'a, C, B>
where
    C: SessionStore + Clone,
    B: SessionStore + Clone,
{
    store: &'a CachingStore<C, B>,
    owed: Option<Owed>,
}

impl<C, B> Unfinished<'_, C, B>
where
    C: SessionStore + Clone,
    B: SessionStore + Clone,
{
    /// Tells the cache what the write owes it. Stopped part way, it is done again whole in
    /// a task of its own (invalidating twice is harmless).
    async fn pay(mut self) {
        if let Some(owed) = &self.owed {
            self.store.settle(owed).await;
        }
        self.owed = None;
    }

    /// The write changed nothing (a session that was not there): nothing is owed.
    fn forgive(mut self) {
        self.owed = None;
    }
}

impl<C, B> Drop for Unfinished<'_, C, B>
where
    C: SessionStore + Clone,
    B: SessionStore + Clone,
{
    fn drop(&mut self) {
        let Some(owed) = self.owed.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // No runtime to finish on: at least stop this process serving copies.
            self.store.distrust_cache();
            return;
        };
        let store = self.store.clone();
        runtime.spawn(async move { store.settle(&owed).await });
    }
}

// Written by hand: a derive would require the stores to be `Debug`.
impl<C, B> fmt::Debug for CachingStore<C, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachingStore")
            .field("settings", &self.settings)
            .field("fallbacks", &self.fallbacks())
            .field("cache_errors", &self.cache_errors())
            .finish_non_exhaustive()
    }
}

// Written by hand: a derive would put the bounds on the struct's users, not just here.
impl<C: Clone, B: Clone> Clone for CachingStore<C, B> {
    fn clone(&self) -> Self {
        Self {
            cache: self.cache.clone(),
            backing: self.backing.clone(),
            settings: self.settings,
            shared: self.shared.clone(),
        }
    }
}

impl<C, B> CachingStore<C, B> {
    /// `cache` in front of `backing`, with a cache TTL of 5 seconds, a cache timeout of
    /// 250 ms and a retry interval of 1 second.
    pub fn new(cache: C, backing: B) -> Self {
        Self {
            cache,
            backing,
            settings: Settings {
                ttl: DEFAULT_TTL,
                cache_timeout: DEFAULT_CACHE_TIMEOUT,
                retry_interval: DEFAULT_RETRY_INTERVAL,
            },
            shared: Arc::default(),
        }
    }

    /// How long a cached copy (and an invalidation marker) lives: the most a server's
    /// in-process cache can lag behind another server's writes. At least 1 ms.
    pub fn with_cache_ttl(mut self, ttl: Duration) -> Self {
        self.settings.ttl = ttl.max(Duration::from_millis(1));
        self
    }

    /// How long one cache call may take before the cache counts as down.
    pub fn with_cache_timeout(mut self, timeout: Duration) -> Self {
        self.settings.cache_timeout = timeout;
        self
    }

    /// How long to leave a cache that failed alone before trying it again.
    pub fn with_retry_interval(mut self, interval: Duration) -> Self {
        self.settings.retry_interval = interval;
        self
    }

    /// The cache store.
    pub fn cache(&self) -> &C {
        &self.cache
    }

    /// The backing store.
    pub fn backing(&self) -> &B {
        &self.backing
    }

    /// How many loads were served from the backing store because the cache was down,
    /// failed, or could not be trusted (ordinary misses are not counted).
    pub fn fallbacks(&self) -> u64 {
        self.shared.fallbacks.load(Ordering::Relaxed)
    }

    /// How many cache calls failed or timed out.
    pub fn cache_errors(&self) -> u64 {
        self.shared.cache_errors.load(Ordering::Relaxed)
    }

    /// Whether the cache is currently considered down (its calls skipped).
    pub fn cache_is_down(&self) -> bool {
        self.health().down
    }

    fn health(&self) -> std::sync::MutexGuard<'_, Health> {
        // No code panics while holding this lock; a poisoned one still holds valid state.
        self.shared
            .health
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether cache calls should be made now: the cache is up, or its retry is due.
    fn cache_callable(&self) -> bool {
        let health = self.health();
        !health.down || health.retry_at.is_none_or(|at| Instant::now() >= at)
    }

    /// Whether a cached copy may be served now.
    fn cache_trusted(&self) -> bool {
        let health = self.health();
        health
            .distrust_until
            .is_none_or(|until| Instant::now() >= until)
    }

    /// Reads must not trust the cache for one TTL: some copy in it may be stale.
    fn distrust_cache(&self) {
        let until = Instant::now() + self.settings.ttl;
        let mut health = self.health();
        health.distrust_until = Some(health.distrust_until.map_or(until, |t| t.max(until)));
    }

    /// Runs one cache call under the cache timeout; `None` (logged, counted) if it fails.
    async fn cache_call<T>(
        &self,
        operation: &'static str,
        call: impl Future<Output = Result<T, Error>>,
    ) -> Option<T> {
        let result = tokio::time::timeout(self.settings.cache_timeout, call)
            .await
            .unwrap_or_else(|_| Err(Error::timeout()));
        match result {
            Ok(value) => {
                let mut health = self.health();
                if health.down {
                    health.down = false;
                    health.retry_at = None;
                    tracing::info!("session cache reachable again");
                }
                Some(value)
            }
            Err(err) => {
                self.shared.cache_errors.fetch_add(1, Ordering::Relaxed);
                let mut health = self.health();
                if !health.down {
                    tracing::warn!(
                        error = %err,
                        kind = ?err.kind(),
                        operation,
                        "session cache failed; serving from the backing store"
                    );
                }
                health.down = true;
                health.retry_at = Some(Instant::now() + self.settings.retry_interval);
                None
            }
        }
    }
}

impl<C: SessionStore, B: SessionStore> CachingStore<C, B> {
    /// Looks `key` up in the cache. `None`: not usable now (down, distrusted, failed).
    async fn cache_lookup(&self, key: &IdHash) -> Option<Cached> {
        if !self.cache_trusted() || !self.cache_callable() {
            return None;
        }
        let entry = self.cache_call("load", self.cache.load(key)).await?;
        Some(match entry {
            None => Cached::Unusable,
            Some(copy) => from_cached_copy(copy),
        })
    }

    /// Puts a copy of `record` in the cache, unless an entry (an invalidation marker
    /// included) is already there.
    async fn fill(&self, key: &IdHash, record: &Record) {
        if !self.cache_callable() {
            return;
        }
        if let Some(copy) = cached_copy(record, self.settings.ttl) {
            // `create` refuses a live entry: that is what keeps a marker in place.
            self.cache_call("fill", self.cache.create(key, &copy)).await;
        }
    }

    /// Replaces whatever the cache holds under `key` by an invalidation marker.
    async fn invalidate(&self, key: &IdHash) {
        if !self.cache_callable() {
            self.distrust_cache();
            return;
        }
        let now = OffsetDateTime::now_utc();
        let until = now + ttl_of(self.settings.ttl);
        let mut marker_delta = Delta::default();
        marker_delta.clear_data();
        marker_delta.set(RESERVED, json!(INVALIDATED));
        marker_delta.user_id = Some(None);
        marker_delta.deadlines = Some(Deadlines::new(until, until, false));
        let mut marker = Record::new(now, until, until);
        marker.data.insert(RESERVED.to_owned(), json!(INVALIDATED));
        for _ in 0..INVALIDATE_ATTEMPTS {
            // An entry there (a copy, or a marker) is overwritten in one step; with none,
            // a marker is created, unless a fill slipped in since, and then we go again.
            let Some(replaced) = self
                .cache_call("invalidate", self.cache.apply(key, &marker_delta))
                .await
            else {
                self.distrust_cache();
                return;
            };
            if replaced {
                return;
            }
            match self
                .cache_call("invalidate", self.cache.create(key, &marker))
                .await
            {
                Some(true) => return,
                Some(false) => continue,
                None => {
                    self.distrust_cache();
                    return;
                }
            }
        }
        tracing::warn!(session = %key.short(), "session cache entry kept changing; distrusting the cache");
        self.distrust_cache();
    }
}

impl<C: SessionStore + Clone, B: SessionStore + Clone> CachingStore<C, B> {
    /// A debt of `owed`, armed before a write to the backing store: see [`Unfinished`].
    fn owe(&self, owed: Owed) -> Unfinished<'_, C, B> {
        Unfinished {
            store: self,
            owed: Some(owed),
        }
    }

    /// Tells the cache what a write owes it.
    async fn settle(&self, owed: &Owed) {
        match owed {
            Owed::Key(key) => self.invalidate(key).await,
            Owed::User {
                user_id,
                keep,
                keys,
            } => {
                for key in keys {
                    self.invalidate(key).await;
                }
                // Copies the cache holds under this user that the listing missed.
                if self.cache_callable() {
                    let swept = self
                        .cache_call(
                            "delete_user",
                            self.cache.delete_user(user_id, keep.as_ref()),
                        )
                        .await;
                    if swept.is_none() {
                        self.distrust_cache();
                    }
                } else {
                    self.distrust_cache();
                }
            }
        }
    }
}

/// `ttl` as a `time` duration (saturating).
fn ttl_of(ttl: Duration) -> time::Duration {
    time::Duration::try_from(ttl).unwrap_or(time::Duration::MAX)
}

fn nanos(at: OffsetDateTime) -> Option<i64> {
    i64::try_from(at.unix_timestamp_nanos()).ok()
}

/// The copy of `record` the cache keeps: its deadlines cut to `ttl` from now (so the
/// cache drops it by then), the real ones kept under [`RESERVED`]. `None` for a record
/// that cannot be cached (it uses the reserved key itself).
fn cached_copy(record: &Record, ttl: Duration) -> Option<Record> {
    if record.data.contains_key(RESERVED) {
        return None;
    }
    let until = OffsetDateTime::now_utc() + ttl_of(ttl);
    let real = json!({
        "idle": nanos(record.idle_deadline)?,
        "absolute": nanos(record.absolute_deadline)?,
    });
    let mut copy = record.clone();
    copy.data.insert(RESERVED.to_owned(), real);
    copy.idle_deadline = record.idle_deadline.min(until);
    copy.absolute_deadline = record.absolute_deadline.min(until);
    Some(copy)
}

/// Reads a cache entry back: the record with its real deadlines, a marker, or something
/// this store did not write (treated as a miss).
fn from_cached_copy(mut copy: Record) -> Cached {
    let Some(reserved) = copy.data.remove(RESERVED) else {
        return Cached::Unusable;
    };
    if reserved == INVALIDATED {
        return Cached::Invalidated;
    }
    let instant = |name: &str| {
        reserved
            .get(name)
            .and_then(Value::as_i64)
            .and_then(|n| OffsetDateTime::from_unix_timestamp_nanos(i128::from(n)).ok())
    };
    match (instant("idle"), instant("absolute")) {
        (Some(idle), Some(absolute)) => {
            copy.idle_deadline = idle;
            copy.absolute_deadline = absolute;
            Cached::Record(copy)
        }
        _ => Cached::Unusable,
    }
}

#[async_trait]
impl<C: SessionStore + Clone, B: SessionStore + Clone> SessionStore for CachingStore<C, B> {
    async fn load(&self, key: &IdHash) -> Result<Option<Record>, Error> {
        let may_fill = match self.cache_lookup(key).await {
            Some(Cached::Record(record)) => {
                if !record.is_expired(OffsetDateTime::now_utc()) {
                    return Ok(Some(record));
                }
                false
            }
            Some(Cached::Invalidated) => false,
            Some(Cached::Unusable) => true,
            None => {
                self.shared.fallbacks.fetch_add(1, Ordering::Relaxed);
                false
            }
        };
        let started = Instant::now();
        let found = self.backing.load(key).await?;
        // A copy read long ago may predate a write whose marker has expired since.
        let fresh_enough = started.elapsed() < self.settings.ttl / 2;
        if let (true, true, Some(record)) = (may_fill, fresh_enough, &found) {
            self.fill(key, record).await;
        }
        Ok(found)
    }

    async fn create(&self, key: &IdHash, record: &Record) -> Result<bool, Error> {
        let created = self.backing.create(key, record).await?;
        if created && self.cache_trusted() {
            self.fill(key, record).await;
        }
        Ok(created)
    }

    async fn apply(&self, key: &IdHash, delta: &Delta) -> Result<bool, Error> {
        let debt = self.owe(Owed::Key(*key));
        let applied = self.backing.apply(key, delta).await?;
        debt.pay().await;
        Ok(applied)
    }

    async fn rotate(&self, from: &IdHash, to: &IdHash, delta: &Delta) -> Result<bool, Error> {
        let debt = self.owe(Owed::Key(*from));
        let rotated = self.backing.rotate(from, to, delta).await?;
        if rotated {
            debt.pay().await;
        } else {
            debt.forgive();
        }
        Ok(rotated)
    }

    async fn rotated_at(&self, key: &IdHash) -> Result<Option<OffsetDateTime>, Error> {
        self.backing.rotated_at(key).await
    }

    async fn delete(&self, key: &IdHash) -> Result<bool, Error> {
        let debt = self.owe(Owed::Key(*key));
        let deleted = self.backing.delete(key).await?;
        debt.pay().await;
        Ok(deleted)
    }

    async fn list_user(&self, user_id: &str) -> Result<Vec<SessionInfo>, Error> {
        self.backing.list_user(user_id).await
    }

    async fn delete_user(&self, user_id: &str, keep: Option<&IdHash>) -> Result<u64, Error> {
        let listed = self.backing.list_user(user_id).await?;
        let owed = Owed::User {
            user_id: user_id.to_owned(),
            keep: keep.copied(),
            keys: listed
                .iter()
                .map(|info| info.key)
                .filter(|key| Some(key) != keep)
                .collect(),
        };
        let debt = self.owe(owed);
        let deleted = self.backing.delete_user(user_id, keep).await?;
        debt.pay().await;
        Ok(deleted)
    }

    async fn delete_user_session(&self, user_id: &str, key: &IdHash) -> Result<bool, Error> {
        let debt = self.owe(Owed::Key(*key));
        let deleted = self.backing.delete_user_session(user_id, key).await?;
        if deleted {
            debt.pay().await;
        } else {
            debt.forgive();
        }
        Ok(deleted)
    }

    async fn count_user(&self, user_id: &str) -> Result<u64, Error> {
        self.backing.count_user(user_id).await
    }

    /// Cleans the backing store; the cache drops its copies by itself (they expire no
    /// later than the records they copy).
    async fn delete_expired(&self) -> Result<u64, Error> {
        self.backing.delete_expired().await
    }

    async fn count(&self) -> Result<u64, Error> {
        self.backing.count().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record {
        let now = OffsetDateTime::now_utc();
        let mut record = Record::new(
            now,
            now + time::Duration::minutes(30),
            now + time::Duration::hours(12),
        );
        record.data.insert("k".into(), json!(1));
        record
    }

    #[test]
    fn cached_copies_expire_early_and_restore_real_deadlines() {
        let record = record();
        let copy = cached_copy(&record, Duration::from_secs(5)).unwrap();
        assert!(copy.expires_at() < record.expires_at());
        assert!(copy.expires_at() <= OffsetDateTime::now_utc() + time::Duration::seconds(5));
        match from_cached_copy(copy) {
            Cached::Record(back) => assert_eq!(back, record),
            _ => panic!("a copy reads back as the record"),
        }
    }

    #[test]
    fn reserved_key_and_foreign_entries_are_never_served() {
        let mut record = record();
        assert!(matches!(from_cached_copy(record.clone()), Cached::Unusable));
        record.data.insert(RESERVED.into(), json!({"idle": "x"}));
        assert!(cached_copy(&record, DEFAULT_TTL).is_none());
        assert!(matches!(from_cached_copy(record.clone()), Cached::Unusable));
        record.data.insert(RESERVED.into(), json!(INVALIDATED));
        assert!(matches!(from_cached_copy(record), Cached::Invalidated));
    }
}
