//! Where sessions live: the [`SessionStore`] trait and its implementations.
//!
//! A store files each [`Record`] under the [`IdHash`] of its session ID; the raw ID never
//! reaches it. The contract every store keeps (checked by [`conformance`], one suite run
//! against every store):
//!
//! - **Expired is absent.** A record past its [`expires_at`](Record::expires_at) is never
//!   returned, changed, rotated or counted, whether or not a cleanup has removed it yet.
//! - **Deltas are atomic and never resurrect.** [`apply`](SessionStore::apply) changes only
//!   what the [`Delta`] names, as one atomic step, and only if the record still exists;
//!   otherwise it reports `false` and writes nothing. Concurrent deltas on different keys
//!   all survive; on the same key the last one applied wins.
//! - **Rotation is atomic.** [`rotate`](SessionStore::rotate) moves a record to a new key
//!   (applying a delta on the way) so that at no instant do both keys work: once `rotate`
//!   returns, the old key finds nothing. The per-user index entry moves with it. (A store
//!   that cannot move a record in one step, such as Redis Cluster across slots, takes the
//!   record out of the old key atomically first, so a concurrent request on the old key
//!   fails closed rather than writing to a copy.)
//! - **Rotation leaves a tombstone.** For [`ROTATION_TOMBSTONE`] after a rotation,
//!   [`rotated_at`](SessionStore::rotated_at) reports when the old key was rotated away.
//!   The layer uses it to refuse (409, no cookie) a write that arrives with the old ID
//!   from a request that was in flight during the rotation, instead of starting a new
//!   session whose cookie would overwrite the rotated one and silently log the user out;
//!   and a logout that finds the session rotated away, which would otherwise report the
//!   end of a session that lives on under its new ID.
//! - **Per-user operations use an index**, costing O(that user's sessions).
//! - **Corrupt records are absent.** A record that cannot be decoded is logged and treated
//!   as absent, never a panic.
//! - **What is written can be read back.** A value nested deeper than [`MAX_VALUE_DEPTH`]
//!   is refused when written (nothing is written), rather than stored only to make the
//!   whole session unreadable.
//!
//! ```
//! use sessionware::{Delta, Id, MemoryStore, Record, SessionStore};
//! use time::{Duration, OffsetDateTime};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let store = MemoryStore::new();
//! let key = Id::random()?.hash();
//! let now = OffsetDateTime::now_utc();
//! let record = Record::new(now, now + Duration::minutes(30), now + Duration::hours(12));
//! assert!(store.create(&key, &record).await?);
//!
//! let mut delta = Delta::default();
//! delta.set("count", 1.into());
//! assert!(store.apply(&key, &delta).await?);
//! assert_eq!(store.load(&key).await?.unwrap().data["count"], 1);
//!
//! assert!(store.delete(&key).await?);
//! assert!(!store.apply(&key, &delta).await?, "a deleted session is never resurrected");
//! # Ok::<(), sessionware::Error>(()) }).unwrap();
//! ```

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;
use time::{Duration, OffsetDateTime};

use crate::error::Error;
use crate::id::IdHash;
use crate::record::{Delta, Record, SessionInfo};

pub mod caching;
pub mod conformance;
#[cfg(feature = "memory")]
pub mod memory;
#[cfg(feature = "redis")]
pub mod redis;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub mod sql;

/// How long a store remembers that a key was rotated away (see
/// [`SessionStore::rotated_at`]): longer than any request should be in flight.
pub const ROTATION_TOMBSTONE: Duration = Duration::minutes(5);

/// How deeply a session value may nest arrays and objects (an array or object is one
/// level, each array or object inside it one more). The stores that keep values as JSON
/// read them back with serde_json, which refuses more than 127 levels, and the SQL stores
/// keep a session's data as one object, a level more: a deeper value would be stored, then
/// make the whole session unreadable. So every store refuses it when it is written, with
/// an [`ErrorKind::Serialize`](crate::ErrorKind::Serialize) error.
pub const MAX_VALUE_DEPTH: usize = 126;

/// Refuses a value nested deeper than [`MAX_VALUE_DEPTH`]. Walks the value with a stack
/// of its own, not by recursion, so that a value far too deep cannot overflow the thread's.
pub(crate) fn check_depth(value: &Value) -> Result<(), Error> {
    let nests = |value: &Value| value.is_array() || value.is_object();
    // Scalars, by far the most common values, cost no allocation.
    if !nests(value) {
        return Ok(());
    }
    // Only arrays and objects are pushed, each with its level.
    let mut pending = vec![(value, 1)];
    while let Some((value, depth)) = pending.pop() {
        if depth > MAX_VALUE_DEPTH {
            return Err(Error::serialize(serde::ser::Error::custom(format!(
                "a session value nests deeper than {MAX_VALUE_DEPTH} levels"
            ))));
        }
        let below = |child: &'_ Value| nests(child);
        match value {
            Value::Array(items) => {
                pending.extend(items.iter().filter(|c| below(c)).map(|c| (c, depth + 1)))
            }
            Value::Object(map) => {
                pending.extend(map.values().filter(|c| below(c)).map(|c| (c, depth + 1)))
            }
            _ => {}
        }
    }
    Ok(())
}

/// [`check_depth`] on every value `delta` sets.
#[cfg(any(
    feature = "memory",
    feature = "redis",
    feature = "postgres",
    feature = "sqlite"
))]
pub(crate) fn check_delta_depth(delta: &Delta) -> Result<(), Error> {
    delta.sets().try_for_each(|(_, value)| check_depth(value))
}

/// [`check_depth`] on every value of `record`.
#[cfg(any(
    feature = "memory",
    feature = "redis",
    feature = "postgres",
    feature = "sqlite"
))]
pub(crate) fn check_record_depth(record: &Record) -> Result<(), Error> {
    record.data.values().try_for_each(check_depth)
}

/// A place to keep sessions. See the [module docs](self) for the contract.
///
/// Implementations are cheap to clone handles (an `Arc` inside), so an application can keep
/// one for operator work (listing and revoking sessions) while the layer holds another.
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// The record filed under `key`, or `None` if there is none, it has expired, or it
    /// cannot be decoded (logged).
    async fn load(&self, key: &IdHash) -> Result<Option<Record>, Error>;

    /// [`load`](Self::load), as a shared value: what the layer calls on every request.
    /// Stores that keep records in memory override it to hand out a reference-counted
    /// record instead of a copy; the default wraps `load`.
    async fn load_shared(&self, key: &IdHash) -> Result<Option<Arc<Record>>, Error> {
        Ok(self.load(key).await?.map(Arc::new))
    }

    /// Files a new record under `key`. Returns `false`, writing nothing, if a live record
    /// already has that key.
    async fn create(&self, key: &IdHash, record: &Record) -> Result<bool, Error>;

    /// [`create`](Self::create) from a shared record: what the layer calls for a new
    /// session. Stores that keep records in memory override it to file the record itself
    /// instead of a copy; the default passes it to `create`.
    async fn create_shared(&self, key: &IdHash, record: Arc<Record>) -> Result<bool, Error> {
        self.create(key, &record).await
    }

    /// Applies `delta` to the live record under `key`, atomically. Returns `false`,
    /// writing nothing, if there is no live record.
    async fn apply(&self, key: &IdHash, delta: &Delta) -> Result<bool, Error>;

    /// Moves the live record under `from` to `to`, applying `delta` on the way, atomically.
    /// Afterwards `from` finds nothing. Returns `false`, writing nothing, if `from` has no
    /// live record.
    async fn rotate(&self, from: &IdHash, to: &IdHash, delta: &Delta) -> Result<bool, Error>;

    /// When `key` was moved away by [`rotate`](Self::rotate), if that was within the last
    /// [`ROTATION_TOMBSTONE`]; otherwise `None`. The tombstone must exist from the instant
    /// the record leaves `key` (written in the same atomic step), must not be a session (it
    /// is never loaded, listed or counted), and must expire by itself. The instant may be
    /// off by the store's precision (a millisecond), the skew between clocks, or a round
    /// trip to the store; where it must guess, it should guess late.
    async fn rotated_at(&self, key: &IdHash) -> Result<Option<OffsetDateTime>, Error>;

    /// Deletes the record under `key`. Returns whether a live record was there.
    async fn delete(&self, key: &IdHash) -> Result<bool, Error>;

    /// The live sessions of `user_id`, in no particular order.
    async fn list_user(&self, user_id: &str) -> Result<Vec<SessionInfo>, Error>;

    /// Deletes every live session of `user_id` except the one under `keep`, if given.
    /// Returns how many were deleted.
    async fn delete_user(&self, user_id: &str, keep: Option<&IdHash>) -> Result<u64, Error>;

    /// Deletes the session under `key` only if it belongs to `user_id`: what a "revoke this
    /// device" button needs, so that a user cannot end someone else's session by its key.
    /// Returns whether a session was deleted.
    async fn delete_user_session(&self, user_id: &str, key: &IdHash) -> Result<bool, Error> {
        // The owner of a key never changes in place (a login rotates the key), so checking
        // then deleting cannot delete a session that has changed hands in between.
        match self.load(key).await? {
            Some(record) if record.user_id.as_deref() == Some(user_id) => self.delete(key).await,
            _ => Ok(false),
        }
    }

    /// How many live sessions `user_id` has.
    async fn count_user(&self, user_id: &str) -> Result<u64, Error> {
        Ok(self.list_user(user_id).await?.len() as u64)
    }

    /// Removes expired records; returns how many. Stores whose backend expires records by
    /// itself (Redis TTLs) may return 0.
    async fn delete_expired(&self) -> Result<u64, Error>;

    /// How many live sessions the store holds. May count expired records a backend has
    /// not yet removed where counting precisely would need a scan; each store says.
    async fn count(&self) -> Result<u64, Error>;
}

#[async_trait]
impl<T: SessionStore + ?Sized> SessionStore for Arc<T> {
    async fn load(&self, key: &IdHash) -> Result<Option<Record>, Error> {
        (**self).load(key).await
    }
    async fn load_shared(&self, key: &IdHash) -> Result<Option<Arc<Record>>, Error> {
        (**self).load_shared(key).await
    }
    async fn create(&self, key: &IdHash, record: &Record) -> Result<bool, Error> {
        (**self).create(key, record).await
    }
    async fn create_shared(&self, key: &IdHash, record: Arc<Record>) -> Result<bool, Error> {
        (**self).create_shared(key, record).await
    }
    async fn apply(&self, key: &IdHash, delta: &Delta) -> Result<bool, Error> {
        (**self).apply(key, delta).await
    }
    async fn rotate(&self, from: &IdHash, to: &IdHash, delta: &Delta) -> Result<bool, Error> {
        (**self).rotate(from, to, delta).await
    }
    async fn rotated_at(&self, key: &IdHash) -> Result<Option<OffsetDateTime>, Error> {
        (**self).rotated_at(key).await
    }
    async fn delete(&self, key: &IdHash) -> Result<bool, Error> {
        (**self).delete(key).await
    }
    async fn list_user(&self, user_id: &str) -> Result<Vec<SessionInfo>, Error> {
        (**self).list_user(user_id).await
    }
    async fn delete_user(&self, user_id: &str, keep: Option<&IdHash>) -> Result<u64, Error> {
        (**self).delete_user(user_id, keep).await
    }
    async fn delete_user_session(&self, user_id: &str, key: &IdHash) -> Result<bool, Error> {
        (**self).delete_user_session(user_id, key).await
    }
    async fn count_user(&self, user_id: &str) -> Result<u64, Error> {
        (**self).count_user(user_id).await
    }
    async fn delete_expired(&self) -> Result<u64, Error> {
        (**self).delete_expired().await
    }
    async fn count(&self) -> Result<u64, Error> {
        (**self).count().await
    }
}
