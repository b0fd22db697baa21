//! [`MemoryStore`]: sessions in this process's memory.
//!
//! For development, tests, and single-instance services that accept losing sessions on a
//! restart. Records sit in 256 independently locked shards (chosen by the ID hash, which
//! is uniform), so concurrent requests on different sessions rarely contend and no lock is
//! ever held across an `.await`. A per-user index makes per-user operations cost
//! O(that user's sessions). Expired records are invisible at once and removed by a
//! background task that takes one shard lock at a time, so a purge never stalls requests.
//!
//! ```
//! use sessionware::{MemoryStore, SessionLayer};
//!
//! let store = MemoryStore::new();
//! // Keep a handle for operator work; the layer holds another.
//! let layer = SessionLayer::new(store.clone());
//! ```

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hasher, RandomState};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use async_trait::async_trait;
use time::OffsetDateTime;

use super::{check_delta_depth, check_record_depth, SessionStore, ROTATION_TOMBSTONE};
use crate::error::Error;
use crate::id::IdHash;
use crate::record::{Delta, Record, SessionInfo};

const SHARDS: usize = 256;
const DEFAULT_PURGE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

type UserIndex = HashMap<String, HashSet<IdHash, KeyHasher>>;
// Records are shared with the requests reading them: a read costs a reference count, not a
// copy; a write copies only if a request still holds the old version.
type Sessions = HashMap<IdHash, Arc<Record>, KeyHasher>;

/// Hashes an [`IdHash`] by eight of its bytes, 8 to 15. They are SHA-256 output, uniform
/// by construction, and only IDs the server generated are ever inserted, so no client can
/// choose keys that collide; a general-purpose keyed hash would only cost time.
///
/// Not the first eight: byte 0 picks the shard, so every key in a shard shares it, and the
/// table starts probing at the hash's low bits. Hashed by bytes 0 to 7 (byte 0 the lowest),
/// a shard's keys would all start at the same few slots and pile up there.
#[derive(Clone, Copy, Default)]
struct KeyHasher;

impl BuildHasher for KeyHasher {
    type Hasher = KeyBytesHasher;

    fn build_hasher(&self) -> KeyBytesHasher {
        KeyBytesHasher(0)
    }
}

#[derive(Clone, Copy)]
struct KeyBytesHasher(u64);

impl Hasher for KeyBytesHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        match bytes.get(8..16).and_then(|part| part.first_chunk::<8>()) {
            Some(part) => self.0 = u64::from_ne_bytes(*part),
            None => {
                for byte in bytes {
                    self.0 = self.0.rotate_left(8) ^ u64::from(*byte);
                }
            }
        }
    }

    // The length prefix a slice hashes first carries no information about the key.
    fn write_usize(&mut self, _: usize) {}
}

/// One lock's worth of sessions, with the rotation tombstones of keys in the same shard
/// (so a rotation writes both under one lock).
#[derive(Default)]
struct Shard {
    sessions: Sessions,
    /// Keys rotated away, and until when to say so.
    tombstones: HashMap<IdHash, OffsetDateTime, KeyHasher>,
}

/// An in-process session store. Cheap to clone: clones share the same sessions.
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

struct Inner {
    shards: Box<[Mutex<Shard>]>,
    users: Box<[Mutex<UserIndex>]>,
    user_hasher: RandomState,
    purge_interval: std::time::Duration,
    purge_started: AtomicBool,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("purge_interval", &self.inner.purge_interval)
            .finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // No code path panics while holding a shard lock; should one ever, the shard's maps
    // are still consistent record by record, so carrying on beats failing every request.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl MemoryStore {
    /// An empty store that purges expired sessions every 60 seconds.
    pub fn new() -> Self {
        Self::with_purge_interval(DEFAULT_PURGE_INTERVAL)
    }

    /// An empty store that purges expired sessions at the given interval. The purge task
    /// starts on the first session created inside a Tokio runtime and stops when the last
    /// clone of the store is dropped.
    pub fn with_purge_interval(interval: std::time::Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
                users: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
                user_hasher: RandomState::new(),
                purge_interval: interval,
                purge_started: AtomicBool::new(false),
            }),
        }
    }

    fn start_purge_task(&self) {
        if self.inner.purge_started.load(Ordering::Relaxed) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.inner.purge_started.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        let interval = self.inner.purge_interval;
        runtime.spawn(async move {
            loop {
                tokio::time::sleep(interval).await;
                let Some(inner) = weak.upgrade() else { break };
                let purged = inner.purge_expired(OffsetDateTime::now_utc()).await;
                if purged > 0 {
                    tracing::debug!(purged, "purged expired sessions");
                }
            }
        });
    }
}

impl Inner {
    fn shard(&self, key: &IdHash) -> usize {
        // SHA-256 output is uniform, so its first byte spreads keys evenly.
        usize::from(key.as_bytes()[0]) % SHARDS
    }

    fn lock_shard(&self, key: &IdHash) -> MutexGuard<'_, Shard> {
        lock(&self.shards[self.shard(key)])
    }

    fn user_shard(&self, user_id: &str) -> usize {
        self.user_hasher.hash_one(user_id) as usize % SHARDS
    }

    fn users(&self, user_id: &str) -> MutexGuard<'_, UserIndex> {
        lock(&self.users[self.user_shard(user_id)])
    }

    /// Locks the index entries of the users given (a session's owner before and after a
    /// rotation), in shard order, so that two rotations cannot deadlock. Taken before any
    /// record shard, as [`delete_user`](SessionStore::delete_user) takes them.
    fn lock_users(&self, users: [Option<&str>; 2]) -> UserLocks<'_> {
        let mut shards: Vec<usize> = users.iter().flatten().map(|u| self.user_shard(u)).collect();
        shards.sort_unstable();
        shards.dedup();
        UserLocks {
            inner: self,
            guards: shards
                .into_iter()
                .map(|n| (n, lock(&self.users[n])))
                .collect(),
        }
    }

    fn unindex(&self, user_id: &str, key: &IdHash) {
        unindex_in(&mut self.users(user_id), user_id, key);
    }

    /// Applies a delta that sets or clears the user, moving the index entry with the
    /// owners' entries locked first, as a rotation does: so concurrent changes of owner
    /// leave exactly the final owner's entry, and a revocation of either owner sees the
    /// session on one side of the change. Returns whether a live record was there.
    fn apply_changing_owner(&self, key: &IdHash, delta: &Delta, after: Option<&str>) -> bool {
        loop {
            let now = OffsetDateTime::now_utc();
            let Some(owner) = self.live_owner(key, now) else {
                return false;
            };
            let mut users = self.lock_users([owner.as_deref(), after]);
            {
                let mut shard = self.lock_shard(key);
                let Some(record) = shard.sessions.get_mut(key).filter(|r| !r.is_expired(now))
                else {
                    return false;
                };
                if record.user_id != owner {
                    continue; // changed hands since it was read: lock the right entries
                }
                delta.apply_to(Arc::make_mut(record));
            }
            users.move_entry(owner.as_deref(), key, after, *key);
            return true;
        }
    }

    /// The owner of the live record under `key` (`Some(None)` for an anonymous session),
    /// or `None` if there is none: read to know whose index entries to lock, and checked
    /// again once they are locked.
    fn live_owner(&self, key: &IdHash, now: OffsetDateTime) -> Option<Option<String>> {
        self.lock_shard(key)
            .sessions
            .get(key)
            .filter(|record| !record.is_expired(now))
            .map(|record| record.user_id.clone())
    }

    /// The keys the index holds for a user (some may have expired or moved since).
    fn user_keys(&self, user_id: &str) -> Vec<IdHash> {
        self.users(user_id)
            .get(user_id)
            .map(|keys| keys.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Takes the record under `key` out of its shard if `remove_if` says so (the index is
    /// left to the caller, which may hold the owner's entry already).
    fn take_where(
        &self,
        key: &IdHash,
        remove_if: impl FnOnce(&Record) -> bool,
    ) -> Option<Arc<Record>> {
        let mut shard = self.lock_shard(key);
        match shard.sessions.get(key) {
            Some(record) if remove_if(record) => shard.sessions.remove(key),
            _ => None,
        }
    }

    /// Removes the record under `key` if `remove_if` says so and unindexes it; returns
    /// whether it was live.
    fn remove_where(&self, key: &IdHash, remove_if: impl FnOnce(&Record) -> bool) -> bool {
        let now = OffsetDateTime::now_utc();
        match self.take_where(key, remove_if) {
            Some(record) => {
                if let Some(user) = &record.user_id {
                    self.unindex(user, key);
                }
                !record.is_expired(now)
            }
            None => false,
        }
    }

    /// Rotates with the owners' index entries already locked: returns `None` (changing
    /// nothing) if `from` has no live record, `Some(false)` if its owner is no longer
    /// `owner`, else `Some(true)` once the record has moved.
    fn move_with_owner(
        &self,
        from: &IdHash,
        to: &IdHash,
        delta: &Delta,
        owner: Option<&str>,
        now: OffsetDateTime,
    ) -> Option<bool> {
        let (from_shard, to_shard) = (self.shard(from), self.shard(to));
        if from_shard == to_shard {
            let mut shard = lock(&self.shards[from_shard]);
            return move_record(&mut shard, None, from, to, delta, owner, now);
        }
        // Two shards: lock in index order so two opposite rotations cannot deadlock.
        let (first, second) = (from_shard.min(to_shard), from_shard.max(to_shard));
        let mut low = lock(&self.shards[first]);
        let mut high = lock(&self.shards[second]);
        let (source, target) = if from_shard < to_shard {
            (&mut *low, &mut *high)
        } else {
            (&mut *high, &mut *low)
        };
        move_record(source, Some(target), from, to, delta, owner, now)
    }

    async fn purge_expired(&self, now: OffsetDateTime) -> u64 {
        let mut purged = 0;
        for shard in self.shards.iter() {
            let expired_owners = {
                let mut shard = lock(shard);
                shard.tombstones.retain(|_, until| *until > now);
                let mut owners = Vec::new();
                shard.sessions.retain(|key, record| {
                    let keep = !record.is_expired(now);
                    if !keep {
                        if let Some(user) = &record.user_id {
                            owners.push((user.clone(), *key));
                        }
                        purged += 1;
                    }
                    keep
                });
                owners
            };
            for (user, key) in expired_owners {
                self.unindex(&user, &key);
            }
            // One shard at a time, yielding between them: a large purge never holds the
            // executor thread long enough to stall requests.
            tokio::task::yield_now().await;
        }
        purged
    }
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn load(&self, key: &IdHash) -> Result<Option<Record>, Error> {
        let now = OffsetDateTime::now_utc();
        let shard = self.inner.lock_shard(key);
        Ok(shard
            .sessions
            .get(key)
            .filter(|record| !record.is_expired(now))
            .map(|record| Record::clone(record)))
    }

    async fn load_shared(&self, key: &IdHash) -> Result<Option<Arc<Record>>, Error> {
        let now = OffsetDateTime::now_utc();
        let shard = self.inner.lock_shard(key);
        Ok(shard
            .sessions
            .get(key)
            .filter(|record| !record.is_expired(now))
            .cloned())
    }

    async fn create(&self, key: &IdHash, record: &Record) -> Result<bool, Error> {
        self.create_shared(key, Arc::new(record.clone())).await
    }

    /// Files the shared record itself: a new session costs no copy.
    async fn create_shared(&self, key: &IdHash, record: Arc<Record>) -> Result<bool, Error> {
        check_record_depth(&record)?;
        self.start_purge_task();
        let owner = record.user_id.clone();
        // The owner's index entry is locked before the record is filed and indexed, as a
        // revocation locks it: a session is never live yet unknown to its user's entry.
        let mut users = owner
            .as_deref()
            .map(|user| self.inner.lock_users([Some(user), None]));
        // The clock is read only when the key is taken, which a fresh ID's never is.
        let replaced = match self.inner.lock_shard(key).sessions.entry(*key) {
            Entry::Occupied(old) if !old.get().is_expired(OffsetDateTime::now_utc()) => {
                return Ok(false)
            }
            Entry::Occupied(mut old) => Some(old.insert(record)),
            Entry::Vacant(slot) => {
                slot.insert(record);
                None
            }
        };
        if let (Some(users), Some(user)) = (users.as_mut(), owner.as_deref()) {
            users.index(user, *key);
        }
        drop(users);
        // An expired record of another owner was replaced: its entry goes too.
        if let Some(before) = replaced.as_ref().and_then(|old| old.user_id.as_deref()) {
            if Some(before) != owner.as_deref() {
                self.inner.unindex(before, key);
            }
        }
        Ok(true)
    }

    async fn apply(&self, key: &IdHash, delta: &Delta) -> Result<bool, Error> {
        check_delta_depth(delta)?;
        if let Some(after) = &delta.user_id {
            return Ok(self
                .inner
                .apply_changing_owner(key, delta, after.as_deref()));
        }
        // The common write: the owner stays, so the index does too.
        let now = OffsetDateTime::now_utc();
        let mut shard = self.inner.lock_shard(key);
        let Some(record) = shard.sessions.get_mut(key).filter(|r| !r.is_expired(now)) else {
            return Ok(false);
        };
        delta.apply_to(Arc::make_mut(record));
        Ok(true)
    }

    /// Moves the record and its index entry while holding its owner's index entry, which
    /// [`delete_user`](SessionStore::delete_user) holds too: a session cannot rotate out of
    /// reach of its user's revocation.
    async fn rotate(&self, from: &IdHash, to: &IdHash, delta: &Delta) -> Result<bool, Error> {
        check_delta_depth(delta)?;
        loop {
            let now = OffsetDateTime::now_utc();
            let Some(owner) = self.inner.live_owner(from, now) else {
                return Ok(false);
            };
            let after = match &delta.user_id {
                Some(user) => user.clone(),
                None => owner.clone(),
            };
            let mut users = self.inner.lock_users([owner.as_deref(), after.as_deref()]);
            match self
                .inner
                .move_with_owner(from, to, delta, owner.as_deref(), now)
            {
                None => return Ok(false),
                Some(false) => continue,
                Some(true) => {}
            }
            users.move_entry(owner.as_deref(), from, after.as_deref(), *to);
            return Ok(true);
        }
    }

    async fn rotated_at(&self, key: &IdHash) -> Result<Option<OffsetDateTime>, Error> {
        let now = OffsetDateTime::now_utc();
        let shard = self.inner.lock_shard(key);
        Ok(shard
            .tombstones
            .get(key)
            .filter(|until| **until > now)
            .map(|until| *until - ROTATION_TOMBSTONE))
    }

    async fn delete(&self, key: &IdHash) -> Result<bool, Error> {
        Ok(self.inner.remove_where(key, |_| true))
    }

    async fn list_user(&self, user_id: &str) -> Result<Vec<SessionInfo>, Error> {
        let now = OffsetDateTime::now_utc();
        Ok(self
            .inner
            .user_keys(user_id)
            .into_iter()
            .filter_map(|key| {
                let shard = self.inner.lock_shard(&key);
                shard
                    .sessions
                    .get(&key)
                    .filter(|r| !r.is_expired(now) && r.user_id.as_deref() == Some(user_id))
                    .map(|r| r.info(key))
            })
            .collect())
    }

    /// Holds the user's index entry throughout, as a rotation of one of the user's
    /// sessions does: read first and deleted after, a session could otherwise be rotated to
    /// a key the reading never saw, and outlive its user's revocation.
    async fn delete_user(&self, user_id: &str, keep: Option<&IdHash>) -> Result<u64, Error> {
        let now = OffsetDateTime::now_utc();
        let mut users = self.inner.users(user_id);
        let keys: Vec<IdHash> = match users.get(user_id) {
            Some(keys) => keys.iter().copied().collect(),
            None => return Ok(0),
        };
        let mut deleted = 0;
        for key in keys.iter().filter(|key| Some(*key) != keep) {
            let removed = self
                .inner
                .take_where(key, |r| r.user_id.as_deref() == Some(user_id));
            // The entry goes either way: its session is gone now, or was gone or another
            // user's already.
            unindex_in(&mut users, user_id, key);
            if removed.is_some_and(|record| !record.is_expired(now)) {
                deleted += 1;
            }
        }
        Ok(deleted)
    }

    async fn delete_user_session(&self, user_id: &str, key: &IdHash) -> Result<bool, Error> {
        Ok(self
            .inner
            .remove_where(key, |r| r.user_id.as_deref() == Some(user_id)))
    }

    async fn delete_expired(&self) -> Result<u64, Error> {
        Ok(self.inner.purge_expired(OffsetDateTime::now_utc()).await)
    }

    async fn count(&self) -> Result<u64, Error> {
        let now = OffsetDateTime::now_utc();
        let mut live = 0;
        for shard in self.inner.shards.iter() {
            let shard = lock(shard);
            live += shard
                .sessions
                .values()
                .filter(|r| !r.is_expired(now))
                .count() as u64;
        }
        Ok(live)
    }
}

/// Takes the live record under `from` out of `source`, leaves a tombstone in its place,
/// applies `delta`, and files the record under `to` (in `target`, or in `source` when both
/// keys share a shard). Returns `None` (changing nothing) when `from` has no live record,
/// `Some(false)` (changing nothing) when its owner is not `owner`, else `Some(true)`.
fn move_record(
    source: &mut Shard,
    target: Option<&mut Shard>,
    from: &IdHash,
    to: &IdHash,
    delta: &Delta,
    owner: Option<&str>,
    now: OffsetDateTime,
) -> Option<bool> {
    let record = source.sessions.get(from).filter(|r| !r.is_expired(now))?;
    if record.user_id.as_deref() != owner {
        return Some(false);
    }
    let mut record = source.sessions.remove(from)?;
    source.tombstones.insert(*from, now + ROTATION_TOMBSTONE);
    delta.apply_to(Arc::make_mut(&mut record));
    target.unwrap_or(source).sessions.insert(*to, record);
    Some(true)
}

/// The index entries of up to two users, locked (see [`Inner::lock_users`]).
struct UserLocks<'a> {
    inner: &'a Inner,
    guards: Vec<(usize, MutexGuard<'a, UserIndex>)>,
}

impl UserLocks<'_> {
    fn entry(&mut self, user_id: &str) -> &mut UserIndex {
        let shard = self.inner.user_shard(user_id);
        let (_, guard) = self
            .guards
            .iter_mut()
            .find(|(n, _)| *n == shard)
            .expect("the user's index shard was locked");
        guard
    }

    fn index(&mut self, user_id: &str, key: IdHash) {
        index_in(self.entry(user_id), user_id, key);
    }

    fn unindex(&mut self, user_id: &str, key: &IdHash) {
        unindex_in(self.entry(user_id), user_id, key);
    }

    /// Moves a session's index entry from `owner`'s under `from` to `after`'s under `to`
    /// (a rotation moves the key, an owner change the user, a login both).
    fn move_entry(&mut self, owner: Option<&str>, from: &IdHash, after: Option<&str>, to: IdHash) {
        if owner == after && *from == to {
            return;
        }
        if let Some(user) = owner {
            self.unindex(user, from);
        }
        if let Some(user) = after {
            self.index(user, to);
        }
    }
}

fn index_in(users: &mut UserIndex, user_id: &str, key: IdHash) {
    users.entry(user_id.to_owned()).or_default().insert(key);
}

fn unindex_in(users: &mut UserIndex, user_id: &str, key: &IdHash) {
    if let Some(keys) = users.get_mut(user_id) {
        keys.remove(key);
        if keys.is_empty() {
            users.remove(user_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::Id;
    use time::Duration;

    fn record(user: Option<&str>, lifetime: Duration) -> Record {
        let now = OffsetDateTime::now_utc();
        let mut record = Record::new(now, now + lifetime, now + Duration::hours(12));
        record.user_id = user.map(str::to_owned);
        record
    }

    fn key() -> IdHash {
        Id::random().unwrap().hash()
    }

    #[test]
    fn keys_of_one_shard_start_their_probes_all_over_the_table() {
        let inner = MemoryStore::new().inner;
        let in_shard_seven: Vec<IdHash> = std::iter::repeat_with(|| {
            let mut bytes = *key().as_bytes();
            bytes[0] = 7;
            IdHash::from_bytes(bytes)
        })
        .take(2048)
        .collect();
        assert!(in_shard_seven.iter().all(|key| inner.shard(key) == 7));
        // The table's first probe slot is the hash's low bits: for a table of 1,024 slots,
        // 2,048 uniform keys leave very few of the 1,024 possible starts unused.
        let starts: HashSet<u64> = in_shard_seven
            .iter()
            .map(|key| KeyHasher.hash_one(key) & 1023)
            .collect();
        assert!(starts.len() > 800, "only {} of 1024 starts", starts.len());
    }

    #[tokio::test]
    async fn purge_removes_expired_records_and_their_index_entries() {
        let store = MemoryStore::new();
        let (dead, live) = (key(), key());
        store
            .create(&dead, &record(Some("ann"), Duration::milliseconds(1)))
            .await
            .unwrap();
        store
            .create(&live, &record(Some("ann"), Duration::minutes(5)))
            .await
            .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        assert_eq!(store.delete_expired().await.unwrap(), 1);
        assert_eq!(store.inner.user_keys("ann"), vec![live]);
        assert_eq!(store.count().await.unwrap(), 1);
    }

    #[tokio::test]
    async fn background_purge_runs_and_stops_with_the_store() {
        let store = MemoryStore::with_purge_interval(std::time::Duration::from_millis(20));
        let dead = key();
        store
            .create(&dead, &record(None, Duration::milliseconds(1)))
            .await
            .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert!(!store.inner.lock_shard(&dead).sessions.contains_key(&dead));
        let weak = Arc::downgrade(&store.inner);
        drop(store);
        tokio::time::sleep(std::time::Duration::from_millis(60)).await;
        assert!(
            weak.upgrade().is_none(),
            "the purge task let go of the store"
        );
    }

    /// Every user index entry that lists `key`.
    fn owners_listing(inner: &Inner, key: &IdHash) -> Vec<String> {
        let mut owners = Vec::new();
        for shard in inner.users.iter() {
            for (user, keys) in lock(shard).iter() {
                if keys.contains(key) {
                    owners.push(user.clone());
                }
            }
        }
        owners
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_changes_of_owner_leave_only_the_final_owners_entry() {
        let store = MemoryStore::new();
        for round in 0..200 {
            let key = key();
            store
                .create(&key, &record(Some("start"), Duration::minutes(5)))
                .await
                .unwrap();
            let changes: Vec<_> = (0..4)
                .map(|writer| {
                    let store = store.clone();
                    tokio::spawn(async move {
                        let delta = Delta {
                            user_id: Some(match writer {
                                0 => None,
                                _ => Some(format!("user{round}-{writer}")),
                            }),
                            ..Delta::default()
                        };
                        store.apply(&key, &delta).await.unwrap()
                    })
                })
                .collect();
            for change in changes {
                assert!(change.await.unwrap());
            }
            let owner = store.load(&key).await.unwrap().unwrap().user_id;
            assert_eq!(
                owners_listing(&store.inner, &key),
                owner.into_iter().collect::<Vec<_>>(),
                "round {round}: the index disagrees with the record's owner"
            );
            assert!(store.delete(&key).await.unwrap());
        }
    }

    #[tokio::test]
    async fn rotation_across_and_within_shards_moves_the_index() {
        let store = MemoryStore::new();
        for _ in 0..64 {
            let (from, to) = (key(), key());
            store
                .create(&from, &record(Some("bo"), Duration::minutes(5)))
                .await
                .unwrap();
            assert!(store.rotate(&from, &to, &Delta::default()).await.unwrap());
            assert_eq!(store.inner.user_keys("bo"), vec![to]);
            assert!(store.delete(&to).await.unwrap());
        }
        assert!(store.inner.users("bo").is_empty());
    }
}
