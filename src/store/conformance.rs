//! The conformance suite: the [`SessionStore`] contract as tests, written once and run
//! against every store, ours and yours.
//!
//! Each public function checks one rule and panics with a message naming it when the
//! store breaks it. A store's test file implements [`Harness`] (how to get a fresh,
//! empty store, and a second handle on the same backend, as another server would have)
//! and invokes [`store_conformance_tests!`](crate::store_conformance_tests), which expands
//! to one `#[tokio::test]` per rule (the test crate needs `tokio` with the `macros` and
//! `rt-multi-thread` features):
//!
//! ```
//! struct Memory;
//!
//! impl sessionware::store::conformance::Harness for Memory {
//!     type Store = sessionware::MemoryStore;
//!     async fn fresh(&self) -> Self::Store { sessionware::MemoryStore::new() }
//!     async fn twin(&self, store: &Self::Store) -> Self::Store { store.clone() }
//! }
//!
//! sessionware::store_conformance_tests!(Memory);
//! ```
//!
//! The layer-level rules (the four concurrency rules of the design) drive a real
//! [`SessionLayer`] over the store with concurrent requests, alternating between two
//! store handles.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration as StdDuration;

use http::{Request, Response, StatusCode};
use serde_json::{json, Value};
use time::{Duration, OffsetDateTime};
use tower::ServiceExt;
use tower_layer::Layer;
use tower_service::Service;

use super::SessionStore;
use crate::id::{Id, IdHash};
use crate::record::{Deadlines, Delta, Record};
use crate::session::Session;
use crate::SessionLayer;

/// How a store's tests get stores to check.
pub trait Harness: Send + Sync + 'static {
    /// The store under test.
    type Store: SessionStore + Clone;

    /// A store with no sessions in it, isolated from every other test's (its own key
    /// prefix, table or database).
    fn fresh(&self) -> impl Future<Output = Self::Store> + Send;

    /// A second, independent handle on the same backend as `store`, the way a second
    /// server would connect to it. In-process stores return a clone.
    fn twin(&self, store: &Self::Store) -> impl Future<Output = Self::Store> + Send;
}

/// Expands to one `#[tokio::test]` per rule of the conformance suite, run against the
/// [`Harness`] given.
#[macro_export]
macro_rules! store_conformance_tests {
    ($harness:expr) => {
        $crate::store_conformance_tests!(@tests $harness;
            round_trip_keeps_every_field,
            create_refuses_a_live_key,
            create_shared_files_like_create,
            missing_key_loads_none,
            apply_changes_only_named_keys,
            apply_to_a_missing_session_writes_nothing,
            clear_removes_every_key_then_sets,
            identity_change_moves_the_user_index,
            expired_sessions_are_absent_before_cleanup,
            ending_an_expired_session_ends_nothing,
            extended_deadline_keeps_a_session_alive,
            delta_times_change_only_what_they_name,
            extended_session_stays_listed_and_revocable,
            rotate_moves_record_and_index,
            rotate_of_a_missing_session_writes_nothing,
            rotation_leaves_a_tombstone_that_is_not_a_session,
            delete_reports_whether_a_session_was_there,
            per_user_listing_counting_and_revocation,
            revoking_by_key_checks_the_owner,
            delete_expired_leaves_live_sessions,
            count_counts_live_sessions,
            unicode_and_nested_values_round_trip,
            a_delta_of_hundreds_of_keys_lands_whole,
            a_value_too_deep_to_read_back_is_refused,
            concurrent_deltas_on_distinct_keys_all_survive,
            delete_racing_with_deltas_never_resurrects,
            rotate_racing_with_deltas_leaves_one_record,
            revoking_a_user_ends_a_session_rotating_meanwhile,
            layer_concurrent_requests_keep_all_keys,
            layer_logout_racing_with_writes_leaves_no_record,
            layer_rotation_racing_with_writes_leaves_one_live_record,
            layer_same_key_last_writer_wins,
            layer_login_rotates_and_logout_destroys,
        );
    };
    (@tests $harness:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                $crate::store::conformance::$name(&$harness).await;
            }
        )*
    };
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

fn key() -> IdHash {
    Id::random().expect("OS randomness").hash()
}

fn record_for(user: Option<&str>) -> Record {
    let now = now();
    let mut record = Record::new(now, now + Duration::minutes(30), now + Duration::hours(12));
    record.user_id = user.map(str::to_owned);
    record
}

fn delta_setting(key: &str, value: Value) -> Delta {
    let mut delta = Delta::default();
    delta.set(key, value);
    delta
}

async fn created<S: SessionStore>(store: &S, record: &Record) -> IdHash {
    let key = key();
    assert!(
        store.create(&key, record).await.expect("create"),
        "create of a new key must succeed"
    );
    key
}

async fn load<S: SessionStore>(store: &S, key: &IdHash) -> Option<Record> {
    store.load(key).await.expect("load")
}

/// Timestamps may lose sub-millisecond precision in a store; everything else must survive.
fn assert_same_record(got: &Record, want: &Record) {
    let ms = |t: OffsetDateTime| t.unix_timestamp_nanos() / 1_000_000;
    assert_eq!(got.data, want.data, "data");
    assert_eq!(got.user_id, want.user_id, "user_id");
    assert_eq!(ms(got.created_at), ms(want.created_at), "created_at");
    assert_eq!(ms(got.last_seen), ms(want.last_seen), "last_seen");
    assert_eq!(
        ms(got.idle_deadline),
        ms(want.idle_deadline),
        "idle_deadline"
    );
    assert_eq!(
        ms(got.absolute_deadline),
        ms(want.absolute_deadline),
        "absolute_deadline"
    );
    assert_eq!(got.remember_me, want.remember_me, "remember_me");
    assert_eq!(got.ip, want.ip, "ip");
    assert_eq!(got.user_agent, want.user_agent, "user_agent");
}

/// Every field of a record comes back as it was filed.
pub async fn round_trip_keeps_every_field<H: Harness>(harness: &H) {
    let store = harness.fresh().await;
    let mut record = record_for(Some("ann"));
    record.data.insert("n".into(), json!(7));
    record
        .data
        .insert("prefs".into(), json!({"theme": "dark", "sizes": [1, 2]}));
    record.remember_me = true;
    record.ip = Some("203.0.113.9".into());
    record.user_agent = Some("Mozilla/5.0 (X11; Linux x86_64)".into());
    let key = created(&store, &record).await;
    let loaded = load(&store, &key).await.expect("the record just created");
    assert_same_record(&loaded, &record);
    let shared = store.load_shared(&key).await.unwrap();
    assert_same_record(&shared.expect("load_shared agrees with load"), &record);
    assert!(store.load_shared(&self::key()).await.unwrap().is_none());
}

/// `create` never overwrites a live session.
pub async fn create_refuses_a_live_key<H: Harness>(harness: &H) {
    let store = harness.fresh().await;
    let mut first = record_for(None);
    first.data.insert("owner".into(), json!("first"));
    let key = created(&store, &first).await;
    let mut second = record_for(Some("mallory"));
    second.data.insert("owner".into(), json!("second"));
    assert!(
        !store.create(&key, &second).await.unwrap(),
        "create over a live key"
    );
    assert_eq!(load(&store, &key).await.unwrap().data["owner"], "first");
    assert!(store.list_user("mallory").await.unwrap().is_empty());
}

/// `create_shared` files a record as `create` does, and refuses a live key as well.
pub async fn create_shared_files_like_create<H: Harness>(harness: &H) {
    let store = harness.fresh().await;
    let mut record = record_for(Some("ann"));
    record.data.insert("owner".into(), json!("first"));
    let key = self::key();
    let shared = std::sync::Arc::new(record.clone());
    assert!(
        store.create_shared(&key, shared).await.unwrap(),
        "create_shared of a new key"
    );
    assert_same_record(
        &load(&store, &key).await.expect("the record just filed"),
        &record,
    );
    assert_eq!(
        store.list_user("ann").await.unwrap().len(),
        1,
        "indexed under its user"
    );
    let mut second = record_for(Some("mallory"));
    second.data.insert("owner".into(), json!("second"));
    let second = std::sync::Arc::new(second);
    assert!(
        !store.create_shared(&key, second).await.unwrap(),
        "create_shared over a live key"
    );
    assert_eq!(load(&store, &key).await.unwrap().data["owner"], "first");
    assert!(store.list_user("mallory").await.unwrap().is_empty());
}

/// A key nobody filed loads as `None`.
pub async fn missing_key_loads_none<H: Harness>(harness: &H) {
    let store = harness.fresh().await;
    assert!(load(&store, &key()).await.is_none());
}

/// A delta changes exactly the keys it names; every other key survives untouched.
pub async fn apply_changes_only_named_keys<H: Harness>(harness: &H) {
    let store = harness.fresh().await;
    let mut record = record_for(None);
    record
        .data
        .insert("keep".into(), json!({"unknown": "shape"}));
    record.data.insert("drop".into(), json!(1));
    record.data.insert("change".into(), json!("old"));
    let key = created(&store, &record).await;
    let mut delta = Delta::default();
    delta.set("change", json!("new"));
    delta.set("add", json!([1, 2, 3]));
    delta.remove("drop");
    delta.remove("never-there");
    assert!(store.apply(&key, &delta).await.unwrap());
    let data = load(&store, &key).await.unwrap().data;
    assert_eq!(data["keep"], json!({"unknown": "shape"}));
    assert_eq!(data["change"], "new");
    assert_eq!(data["add"], json!([1, 2, 3]));
    assert!(!data.contains_key("drop"));
    assert_eq!(data.len(), 3);
}

/// A delta for a session that does not exist reports `false` and creates nothing.
pub async fn apply_to_a_missing_session_writes_nothing<H: Harness>(harness: &H) {
    let store = harness.fresh().await;
    let ghost = key();
    let mut delta = delta_setting("x", json!(1));
    delta.user_id = Some(Some("ann".into()));
    assert!(!store.apply(&ghost, &delta).await.unwrap());
    assert!(
        load(&store, &ghost).await.is_none(),
        "apply created a session"
    );
    assert!(store.list_user("ann").await.unwrap().is_empty());
    assert_eq!(store.count().await.unwrap(), 0);
}

/// `clear` removes every key, then the delta's sets apply.
pub async fn clear_removes_every_key_then_sets<H: Harness>(harness: &H) {
    let store = harness.fresh().await;
    let mut record = record_for(Some("ann"));
    record.data.insert("a".into(), json!(1));
    record.data.insert("b".into(), json!(2));
    let key = created(&store, &record).await;
    let mut delta = Delta::default();
    delta.clear_data();
    delta.set("c", json!(3));
    assert!(store.apply(&key, &delta).await.unwrap());
    let loaded = load(&store, &key).await.unwrap();
    assert_eq!(loaded.data.len(), 1);
    assert_eq!(loaded.data["c"], 3);
    assert_eq!(
        loaded.user_id.as_deref(),
        Some("ann"),
        "clear keeps the user"
    );
}

/// Changing a session's user moves it in the per-user index.
pub async fn identity_change_moves_the_user_index<H: Harness>(harness: &H) {
    let store = harness.fresh().await;
    let key = created(&store, &record_for(Some("ann"))).await;
    let delta = Delta {
        user_id: Some(Some("bob".into())),
        ..Delta::default()
    };
    assert!(store.apply(&key, &delta).await.unwrap());
    assert!(store.list_user("ann").await.unwrap().is_empty());
    let bobs = store.list_user("bob").await.unwrap();
    assert_eq!(bobs.len(), 1);
    assert_eq!(bobs[0].key, key);
    let anonymous = Delta {
        user_id: Some(None),
        ..Delta::default()
    };
    assert!(store.apply(&key, &anonymous).await.unwrap());
    assert!(store.list_user("bob").await.unwrap().is_empty());
    assert_eq!(load(&store, &key).await.unwrap().user_id, None);
}

/// Past its deadline a session is invisible to every operation, cleanup or not.
pub async fn expired_sessions_are_absent_before_cleanup<H: Harness>(harness: &H) {
    let store = harness.fresh().await;
    let mut record = record_for(Some("ann"));
    record.idle_deadline = now() + Duration::milliseconds(400);
    let key = created(&store, &record).await;
    assert!(load(&store, &key).await.is_some());
    tokio::time::sleep(StdDuration::from_millis(600)).await;
    assert!(
        load(&store, &key).await.is_none(),
        "load of an expired session"
    );
    assert!(
        !store
            .apply(&key, &delta_setting("x", json!(1)))
            .await
            .unwrap(),
        "apply to an expired session"
    );
    assert!(
        !store
            .rotate(&key, &self::key(), &Delta::default())
            .await
            .unwrap(),
        "rotate of an expired session"
    );
    assert!(store.list_user("ann").await.unwrap().is_empty(), "listed");
    assert_eq!(store.count_user("ann").await.unwrap(), 0);
    assert_eq!(store.count().await.unwrap(), 0, "counted");
    assert!(
        store.create(&key, &record_for(None)).await.unwrap(),
        "an expired key is free again"
    );
}

/// To the operations that end sessions an expired one is absent too, cleanup or not:
/// deleting or revoking it reports `false`, revoking its user's sessions does not count it,
/// and a session filed under its key afterwards belongs to its new owner alone.
pub async fn ending_an_expired_session_ends_nothing<H: Harness>(harness: &H) {
    let store = harness.fresh().await;
    let mut short = record_for(Some("ann"));
    short.idle_deadline = now() + Duration::milliseconds(300);
    let deleted = created(&store, &short).await;
    let revoked = created(&store, &short).await;
    let reused = created(&store, &short).await;
    let live = created(&store, &record_for(Some("ann"))).await;
    tokio::time::sleep(StdDuration::from_millis(450)).await;
    assert!(
        !store.delete(&deleted).await.unwrap(),
        "delete of an expired session"
    );
    assert!(
        !store.delete_user_session("ann", &revoked).await.unwrap(),
        "revocation of an expired session"
    );
    assert_eq!(
        store.delete_user("ann", None).await.unwrap(),
        1,
        "revoking a user's sessions counted expired ones"
    );
    assert!(load(&store, &live).await.is_none());
    assert!(store
        .create(&reused, &record_for(Some("bob")))
        .await
        .unwrap());
    assert!(store.list_user("ann").await.unwrap().is_empty());
    assert_eq!(store.count_user("ann").await.unwrap(), 0);
    assert_eq!(store.delete_user("ann", None).await.unwrap(), 0);
    let bobs = store.list_user("bob").await.unwrap();
    assert_eq!(bobs.iter().map(|s| s.key).collect::<Vec<_>>(), vec![reused]);
    assert_eq!(store.count().await.unwrap(), 1);
}

/// A delta that moves the idle deadline keeps the session alive past the old one.
pub async fn extended_deadline_keeps_a_session_alive<H: Harness>(harness: &H) {
    let store = harness.fresh().await;
    let mut record = record_for(None);
    record.idle_deadline = now() + Duration::milliseconds(400);
    let key = created(&store, &record).await;
    let delta = Delta {
        deadlines: Some(Deadlines::new(
            now() + Duration::minutes(5),
            record.absolute_deadline,
            false,
        )),
        last_seen: Some(now()),
        ..Delta::default()
    };
    assert!(store.apply(&key, &delta).await.unwrap());
    tokio::time::sleep(StdDuration::from_millis(600)).await;
    assert!(
        load(&store, &key).await.is_some(),
        "extended session expired"
    );
}

/// Each time a delta carries (last seen, creation, the deadlines with remember-me) lands
/// on its own, through `apply` and through `rotate`, and every time it does not carry
/// keeps its stored value.
pub async fn delta_times_change_only_what_they_name<H: Harness>(harness: &H) {
    let store = harness.fresh().await;
    let start = now();
    let mut want = record_for(Some("ann"));
    want.data.insert("n".into(), json!(1));
    want.created_at = start - Duration::minutes(10);
    want.last_seen = start - Duration::minutes(5);
    want.idle_deadline = start + Duration::minutes(20);
    want.absolute_deadline = start + Duration::hours(2);
    let key = created(&store, &want).await;

    want.last_seen = start - Duration::minutes(1);
    let seen = Delta {
        last_seen: Some(want.last_seen),
        ..Delta::default()
    };
    assert!(store.apply(&key, &seen).await.unwrap());
    assert_same_record(&load(&store, &key).await.expect("after last_seen"), &want);

    want.created_at = start - Duration::minutes(2);
    let created_at = Delta {
        created_at: Some(want.created_at),
        ..Delta::default()
    };
    assert!(store.apply(&key, &created_at).await.unwrap());
    assert_same_record(&load(&store, &key).await.expect("after created_at"), &want);

    let deadlines = Deadlines::new(start + Duration::days(3), start + Duration::days(30), true);
    want.idle_deadline = deadlines.idle;
    want.absolute_deadline = deadlines.absolute;
    want.remember_me = true;
    let mut moved = Delta {
        deadlines: Some(deadlines),
        ..Delta::default()
    };
    moved.set("n", json!(2));
    want.data.insert("n".into(), json!(2));
    assert!(store.apply(&key, &moved).await.unwrap());
    assert_same_record(&load(&store, &key).await.expect("after deadlines"), &want);

    // A rotation carries its delta's times the same way (a login restarts `created_at`).
    let to = self::key();
    want.created_at = start - Duration::seconds(30);
    let login = Delta {
        created_at: Some(want.created_at),
        ..Delta::default()
    };
    assert!(store.rotate(&key, &to, &login).await.unwrap());
    assert_same_record(&load(&store, &to).await.expect("after rotation"), &want);
}

/// A session whose deadline was extended is still listed, counted and revocable after its
/// original deadline: a per-user index must follow the extension, not the creation time.
pub async fn extended_session_stays_listed_and_revocable<H: Harness>(harness: &H) {
    let store = harness.fresh().await;
    let mut record = record_for(Some("ann"));
    record.idle_deadline = now() + Duration::milliseconds(400);
    let key = created(&store, &record).await;
    let delta = Delta {
        deadlines: Some(Deadlines::new(
            now() + Duration::minutes(5),
            record.absolute_deadline,
            false,
        )),
        ..Delta::default()
    };
    assert!(store.apply(&key, &delta).await.unwrap());
    tokio::time::sleep(StdDuration::from_millis(600)).await;
    let listed = store.list_user("ann").await.unwrap();
    assert_eq!(listed.iter().map(|s| s.key).collect::<Vec<_>>(), vec![key]);
    assert_eq!(store.count_user("ann").await.unwrap(), 1);
    assert_eq!(store.count().await.unwrap(), 1);
    assert_eq!(store.delete_user("ann", None).await.unwrap(), 1);
    assert!(
        load(&store, &key).await.is_none(),
        "revocation missed the extended session"
    );
}

/// Rotation moves data and index entry to the new key; the old key finds nothing.
pub async fn rotate_moves_record_and_index<H: Harness>(harness: &H) {
    let store = harness.fresh().await;
    let mut record = record_for(Some("ann"));
    record.data.insert("cart".into(), json!([1, 2]));
    let old = created(&store, &record).await;
    let new = key();
    let mut delta = delta_setting("flash", json!("welcome"));
    delta.user_id = Some(Some("bob".into()));
    assert!(store.rotate(&old, &new, &delta).await.unwrap());
    assert!(load(&store, &old).await.is_none(), "old key still works");
    let moved = load(&store, &new).await.expect("new key works");
    assert_eq!(moved.data["cart"], json!([1, 2]));
    assert_eq!(moved.data["flash"], "welcome");
    assert_eq!(moved.user_id.as_deref(), Some("bob"));
    assert!(store.list_user("ann").await.unwrap().is_empty());
    let bobs = store.list_user("bob").await.unwrap();
    assert_eq!(bobs.iter().map(|s| s.key).collect::<Vec<_>>(), vec![new]);
    assert_eq!(store.count().await.unwrap(), 1);
}

/// Rotating a session that does not exist reports `false` and creates nothing.
pub async fn rotate_of_a_missing_session_writes_nothing<H: Harness>(harness: &H) {
    let store = harness.fresh().await;
    let (ghost, target) = (key(), key());
    assert!(!store
        .rotate(&ghost, &target, &Delta::default())
        .await
        .unwrap());
    assert!(load(&store, &target).await.is_none());
    let deleted = created(&store, &record_for(Some("ann"))).await;
    assert!(store.delete(&deleted).await.unwrap());
    assert!(!store
        .rotate(&deleted, &target, &Delta::default())
        .await
        .unwrap());
    assert!(load(&store, &target).await.is_none());
    assert!(store.list_user("ann").await.unwrap().is_empty());
}

/// A rotation leaves a tombstone under the old key, which says when the rotation was, and
/// nothing else: no session to load, list or count. A delete leaves none.
pub async fn rotation_leaves_a_tombstone_that_is_not_a_session<H: Harness>(harness: &H) {
    let store = harness.fresh().await;
    let twin = harness.twin(&store).await;
    let old = created(&store, &record_for(Some("ann"))).await;
    let new = key();
    assert!(
        store.rotated_at(&old).await.unwrap().is_none(),
        "tombstone before rotation"
    );
    let before = OffsetDateTime::now_utc();
    assert!(store.rotate(&old, &new, &Delta::default()).await.unwrap());
    let after = OffsetDateTime::now_utc();
    // Asked a while later, so that a store answering with the time of the question, not
    // of the rotation, fails. Stores keep milliseconds, and Redis tells the time from a
    // countdown, after a round trip: a quarter second's slack, far from the tombstone's
    // lifetime, which a store reporting its expiry instead would be off by.
    tokio::time::sleep(StdDuration::from_millis(1200)).await;
    let slack = Duration::milliseconds(250);
    for (name, store) in [("store", &store), ("twin", &twin)] {
        let rotated = store.rotated_at(&old).await.unwrap();
        let rotated = rotated.unwrap_or_else(|| panic!("{name}: no tombstone after rotation"));
        assert!(
            before - slack <= rotated && rotated <= after + slack,
            "{name}: rotated at {rotated}, between {before} and {after}"
        );
    }
    assert!(store.rotated_at(&new).await.unwrap().is_none());
    assert!(store.rotated_at(&key()).await.unwrap().is_none());
    assert!(load(&store, &old).await.is_none());
    assert_eq!(store.count().await.unwrap(), 1, "a tombstone was counted");
    assert_eq!(
        store.count_user("ann").await.unwrap(),
        1,
        "a tombstone was listed"
    );
    let deleted = created(&store, &record_for(None)).await;
    assert!(store.delete(&deleted).await.unwrap());
    assert!(
        store.rotated_at(&deleted).await.unwrap().is_none(),
        "delete left a tombstone"
    );
}

/// `delete` reports whether a live session was there, and it is gone afterwards.
pub async fn delete_reports_whether_a_session_was_there<H: Harness>(harness: &H) {
    let store = harness.fresh().await;
    let key = created(&store, &record_for(Some("ann"))).await;
    assert!(store.delete(&key).await.unwrap());
    assert!(!store.delete(&key).await.unwrap());
    assert!(load(&store, &key).await.is_none());
    assert!(store.list_user("ann").await.unwrap().is_empty());
}

/// Listing, counting and revoking a user's sessions, with other users untouched.
pub async fn per_user_listing_counting_and_revocation<H: Harness>(harness: &H) {
    let store = harness.fresh().await;
    let mut anns = std::collections::BTreeMap::new();
    for (k, device) in (1..).zip(["phone", "laptop", "tablet"]) {
        // Every time differs from device to device, so a listing that mixes up fields or
        // sessions shows it.
        let mut record = record_for(Some("ann"));
        record.created_at -= Duration::minutes(k);
        record.last_seen -= Duration::seconds(k);
        record.idle_deadline += Duration::minutes(k);
        record.remember_me = k == 2;
        record.user_agent = Some(device.into());
        record.ip = Some("198.51.100.4".into());
        anns.insert(created(&store, &record).await, record);
    }
    let bob = created(&store, &record_for(Some("bob"))).await;
    let anonymous = created(&store, &record_for(None)).await;

    let listed = store.list_user("ann").await.unwrap();
    assert_eq!(
        listed.iter().map(|s| s.key).collect::<BTreeSet<_>>(),
        anns.keys().copied().collect()
    );
    let ms = |t: OffsetDateTime| t.unix_timestamp_nanos() / 1_000_000;
    for info in &listed {
        let record = &anns[&info.key];
        assert_eq!(info.user_id.as_deref(), Some("ann"));
        assert_eq!(info.user_agent, record.user_agent, "user_agent");
        assert_eq!(info.ip.as_deref(), Some("198.51.100.4"), "ip");
        assert_eq!(ms(info.created_at), ms(record.created_at), "created_at");
        assert_eq!(ms(info.last_seen), ms(record.last_seen), "last_seen");
        let expires = record.idle_deadline.min(record.absolute_deadline);
        assert_eq!(ms(info.expires_at), ms(expires), "expires_at");
        assert_eq!(info.remember_me, record.remember_me, "remember_me");
    }
    assert_eq!(store.count_user("ann").await.unwrap(), 3);

    let current = *anns.keys().next().unwrap();
    assert_eq!(store.delete_user("ann", Some(&current)).await.unwrap(), 2);
    let left = store.list_user("ann").await.unwrap();
    assert_eq!(
        left.iter().map(|s| s.key).collect::<Vec<_>>(),
        vec![current]
    );
    assert_eq!(store.delete_user("ann", None).await.unwrap(), 1);
    assert_eq!(store.count_user("ann").await.unwrap(), 0);
    assert_eq!(store.delete_user("nobody", None).await.unwrap(), 0);

    assert!(load(&store, &bob).await.is_some(), "another user's session");
    assert!(
        load(&store, &anonymous).await.is_some(),
        "an anonymous session"
    );
}

/// Revoking one session by key works only for its owner.
pub async fn revoking_by_key_checks_the_owner<H: Harness>(harness: &H) {
    let store = harness.fresh().await;
    let ann = created(&store, &record_for(Some("ann"))).await;
    assert!(!store.delete_user_session("bob", &ann).await.unwrap());
    assert!(load(&store, &ann).await.is_some());
    assert!(store.delete_user_session("ann", &ann).await.unwrap());
    assert!(load(&store, &ann).await.is_none());
    assert!(!store.delete_user_session("ann", &ann).await.unwrap());
}

/// A cleanup pass leaves every live session in place.
pub async fn delete_expired_leaves_live_sessions<H: Harness>(harness: &H) {
    let store = harness.fresh().await;
    let mut short = record_for(Some("ann"));
    short.idle_deadline = now() + Duration::milliseconds(300);
    for _ in 0..5 {
        created(&store, &short).await;
    }
    let mut live = Vec::new();
    for _ in 0..3 {
        live.push(created(&store, &record_for(Some("ann"))).await);
    }
    tokio::time::sleep(StdDuration::from_millis(500)).await;
    let removed = store.delete_expired().await.unwrap();
    assert!(removed <= 5, "removed {removed} of 5 expired sessions");
    for key in &live {
        assert!(
            load(&store, key).await.is_some(),
            "cleanup removed a live session"
        );
    }
    assert_eq!(store.count_user("ann").await.unwrap(), 3);
    assert_eq!(store.count().await.unwrap(), 3);
}

/// `count` counts the live sessions.
pub async fn count_counts_live_sessions<H: Harness>(harness: &H) {
    let store = harness.fresh().await;
    assert_eq!(store.count().await.unwrap(), 0);
    let mut keys = Vec::new();
    for i in 0..7 {
        let user = format!("user{}", i % 2);
        keys.push(created(&store, &record_for(Some(&user))).await);
    }
    assert_eq!(store.count().await.unwrap(), 7);
    store.delete(&keys[0]).await.unwrap();
    assert_eq!(store.count().await.unwrap(), 6);
}

/// Values of any JSON shape, with any Unicode, survive as they were.
pub async fn unicode_and_nested_values_round_trip<H: Harness>(harness: &H) {
    let store = harness.fresh().await;
    let key = created(&store, &record_for(Some("Zoë 🦀"))).await;
    let tricky = json!({
        "quote\"d": "line\nbreak\t\u{0}nul",
        "emoji": "🦀✓",
        "deep": {"a": [null, true, 1.5, -3, {"b": []}]},
        "big": u64::MAX,
        // Floats a store keeps as text must come back bit for bit; these two are ones a
        // parser that is not correctly rounded reads one unit in the last place off.
        "floats": [-4.7462017919913614e190, 2.6504853308642592e-110, 0.1, f64::MAX],
    });
    let mut delta = delta_setting("weird key ü/:*?", tricky.clone());
    delta.set("", json!("empty key"));
    assert!(store.apply(&key, &delta).await.unwrap());
    let loaded = load(&store, &key).await.unwrap();
    assert_eq!(loaded.data["weird key ü/:*?"], tricky);
    let floats = loaded.data["weird key ü/:*?"]["floats"].as_array().unwrap();
    let bits: Vec<_> = floats
        .iter()
        .map(|f| f.as_f64().unwrap().to_bits())
        .collect();
    let want = [
        -4.7462017919913614e190,
        2.6504853308642592e-110,
        0.1,
        f64::MAX,
    ];
    assert_eq!(bits, want.map(f64::to_bits), "floats changed in the store");
    assert_eq!(loaded.data[""], "empty key");
    assert_eq!(store.list_user("Zoë 🦀").await.unwrap().len(), 1);
}

/// A delta naming hundreds of keys (a form saved whole, a wizard's state cleared and
/// refilled) lands whole, through `apply` and through `rotate`: a store that spreads keys
/// over several commands or function calls must not drop any, nor refuse the write.
pub async fn a_delta_of_hundreds_of_keys_lands_whole<H: Harness>(harness: &H) {
    let store = harness.fresh().await;
    let mut want = record_for(Some("ann"));
    for n in 0..300 {
        want.data.insert(format!("old{n}"), json!(n));
    }
    let key = created(&store, &want).await;

    let mut delta = Delta::default();
    for n in 0..250 {
        delta.remove(format!("old{n}"));
    }
    for n in 0..300 {
        delta.set(format!("new{n}"), json!({ "n": n }));
    }
    delta.apply_to(&mut want);
    assert!(
        store
            .apply(&key, &delta)
            .await
            .expect("a delta of 550 keys"),
        "a delta of 550 keys on a live session"
    );
    assert_eq!(
        load(&store, &key).await.expect("after apply").data,
        want.data
    );

    let mut refill = Delta::default();
    refill.clear_data();
    for n in 0..200 {
        refill.set(format!("step{n}"), json!(n));
    }
    refill.apply_to(&mut want);
    let to = self::key();
    assert!(
        store
            .rotate(&key, &to, &refill)
            .await
            .expect("a rotation carrying 200 keys"),
        "a rotation carrying 200 keys"
    );
    assert_eq!(
        load(&store, &to).await.expect("after rotate").data,
        want.data
    );
}

/// A value nests arrays and objects up to [`MAX_VALUE_DEPTH`](super::MAX_VALUE_DEPTH)
/// levels: one that deep round-trips; a deeper one is refused when written (a `Serialize`
/// error, nothing written), never stored only to make the whole session unreadable, and
/// so lost, at its next load.
pub async fn a_value_too_deep_to_read_back_is_refused<H: Harness>(harness: &H) {
    let nested = |depth: usize| {
        let mut value = json!("leaf");
        for level in 0..depth {
            value = if level % 2 == 0 {
                json!([value])
            } else {
                json!({ "k": value })
            };
        }
        value
    };
    let store = harness.fresh().await;
    let deepest = nested(super::MAX_VALUE_DEPTH);
    let too_deep = nested(super::MAX_VALUE_DEPTH + 1);

    let mut record = record_for(Some("ann"));
    record.data.insert("n".into(), json!(1));
    record.data.insert("deep".into(), deepest.clone());
    let key = created(&store, &record).await;
    assert_eq!(
        load(&store, &key)
            .await
            .expect("a session holding the deepest value")
            .data["deep"],
        deepest
    );
    let mut refused = record_for(Some("ann"));
    refused.data.insert("deep".into(), too_deep.clone());
    let other = self::key();
    let err = store
        .create(&other, &refused)
        .await
        .expect_err("create too deep");
    assert_eq!(err.kind(), crate::ErrorKind::Serialize);
    assert!(
        load(&store, &other).await.is_none(),
        "a refused create wrote"
    );

    let mut delta = delta_setting("deep", too_deep.clone());
    delta.set("n", json!(2));
    let err = store.apply(&key, &delta).await.expect_err("apply too deep");
    assert_eq!(err.kind(), crate::ErrorKind::Serialize);
    let err = store
        .rotate(&key, &self::key(), &delta)
        .await
        .expect_err("rotate too deep");
    assert_eq!(err.kind(), crate::ErrorKind::Serialize);
    let kept = load(&store, &key)
        .await
        .expect("the session survives a refused write");
    assert_eq!(kept.data["n"], 1, "a refused delta wrote part of itself");
    assert_eq!(kept.data["deep"], deepest);
    assert_eq!(store.count_user("ann").await.unwrap(), 1);
}

/// 50 concurrent deltas on one session, each setting its own key: all 50 survive.
pub async fn concurrent_deltas_on_distinct_keys_all_survive<H: Harness>(harness: &H) {
    let store = harness.fresh().await;
    let twin = harness.twin(&store).await;
    let key = created(&store, &record_for(None)).await;
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let store = if i % 2 == 0 {
                store.clone()
            } else {
                twin.clone()
            };
            tokio::spawn(async move {
                store
                    .apply(&key, &delta_setting(&format!("k{i}"), json!(i)))
                    .await
            })
        })
        .collect();
    for task in tasks {
        assert!(task.await.unwrap().unwrap(), "a delta on a live session");
    }
    let data = load(&store, &key).await.unwrap().data;
    let lost: Vec<_> = (0..50)
        .filter(|i| data.get(&format!("k{i}")) != Some(&json!(i)))
        .collect();
    assert!(lost.is_empty(), "lost keys {lost:?}");
}

/// Runs 20 deltas on `key`, each setting its own data key, spread over two store handles
/// as two servers would send them, with `interruption` started after the tenth; waits for
/// all of them and fails on any store error.
async fn race_deltas<S, F>(store: &S, twin: &S, key: IdHash, interruption: F)
where
    S: SessionStore + Clone,
    F: Future<Output = Result<(), crate::Error>> + Send + 'static,
{
    let mut interruption = Some(interruption);
    let mut tasks = Vec::new();
    for i in 0..20 {
        let handle = if i % 2 == 0 {
            store.clone()
        } else {
            twin.clone()
        };
        tasks.push(tokio::spawn(async move {
            handle
                .apply(&key, &delta_setting(&format!("k{i}"), json!(i)))
                .await
                .map(|_| ())
        }));
        if i == 10 {
            if let Some(interruption) = interruption.take() {
                tasks.push(tokio::spawn(interruption));
            }
        }
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
}

/// Deltas racing with a delete never bring the session back.
pub async fn delete_racing_with_deltas_never_resurrects<H: Harness>(harness: &H) {
    let store = harness.fresh().await;
    let twin = harness.twin(&store).await;
    for _ in 0..5 {
        let key = created(&store, &record_for(Some("ann"))).await;
        let deleter = store.clone();
        let delete = async move { deleter.delete(&key).await.map(|_| ()) };
        race_deltas(&store, &twin, key, delete).await;
        assert!(
            load(&store, &key).await.is_none(),
            "a delta resurrected the session"
        );
        assert!(store.list_user("ann").await.unwrap().is_empty());
    }
}

/// Deltas racing with a rotation leave exactly one live record, under the new key.
pub async fn rotate_racing_with_deltas_leaves_one_record<H: Harness>(harness: &H) {
    let store = harness.fresh().await;
    let twin = harness.twin(&store).await;
    let old = created(&store, &record_for(Some("ann"))).await;
    let new = key();
    let rotator = store.clone();
    let rotate = async move {
        assert!(rotator.rotate(&old, &new, &Delta::default()).await?);
        Ok(())
    };
    race_deltas(&store, &twin, old, rotate).await;
    assert!(load(&store, &old).await.is_none());
    assert!(load(&store, &new).await.is_some());
    assert_eq!(store.count().await.unwrap(), 1);
    let listed = store.list_user("ann").await.unwrap();
    assert_eq!(listed.iter().map(|s| s.key).collect::<Vec<_>>(), vec![new]);
}

/// Revoking a user's sessions ends every one of them, even one whose ID keeps rotating
/// meanwhile (a holder of a stolen cookie hammering an endpoint that cycles the ID): a
/// rotation moves the session, it must not carry it out of the revocation's reach.
pub async fn revoking_a_user_ends_a_session_rotating_meanwhile<H: Harness>(harness: &H) {
    let store = harness.fresh().await;
    let twin = harness.twin(&store).await;
    for round in 0..20 {
        let user = format!("hunted{round}");
        let first = created(&store, &record_for(Some(&user))).await;
        let rotator = twin.clone();
        let rotations = tokio::spawn(async move {
            let mut current = first;
            let mut moves = 0_u64;
            loop {
                let next = self::key();
                match rotator.rotate(&current, &next, &Delta::default()).await {
                    Ok(true) => {
                        current = next;
                        moves += 1;
                    }
                    Ok(false) => return (moves, None),
                    Err(err) => return (moves, Some(err)),
                }
                if moves > 100_000 {
                    return (moves, None);
                }
            }
        });
        tokio::time::sleep(StdDuration::from_millis(5)).await;
        let revoked = store.delete_user(&user, None).await.expect("delete_user");
        let (moves, err) = tokio::time::timeout(StdDuration::from_secs(10), rotations)
            .await
            .expect("the session kept rotating: it survived its user's revocation")
            .unwrap();
        assert_eq!(revoked, 1, "round {round}: one session, revoked once");
        assert!(err.is_none(), "rotation failed: {err:?}");
        assert!(
            moves <= 100_000,
            "round {round}: the session kept rotating after its user was revoked"
        );
        assert!(
            store.list_user(&user).await.unwrap().is_empty(),
            "round {round}: a session of a revoked user survived (after {moves} rotations)"
        );
    }
}

// ---- Layer-level rules: real requests through a SessionLayer over the store. ----

/// A small service that acts on its session as the request path says:
/// `/set/KEY/VALUE`, `/get/KEY`, `/login/USER`, `/logout`, `/cycle`.
#[derive(Clone)]
struct Actions;

type Boxed<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl Service<Request<String>> for Actions {
    type Response = Response<String>;
    type Error = Infallible;
    type Future = Boxed<Result<Response<String>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<String>) -> Self::Future {
        let session = request.extensions().get::<Session>().cloned();
        let path = request.uri().path().to_owned();
        Box::pin(async move {
            let session = session.expect("the layer put a Session in the extensions");
            let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
            let result = match parts.as_slice() {
                ["set", key, value] => session.insert(key, *value).await.map(|_| String::new()),
                ["get", key] => session
                    .get::<String>(key)
                    .await
                    .map(|value| value.unwrap_or_default()),
                ["login", user] => session.login(*user).await.map(|_| String::new()),
                ["logout"] => session.logout().await.map(|_| String::new()),
                ["cycle"] => session.cycle_id().await.map(|_| String::new()),
                _ => Ok("unknown action".to_owned()),
            };
            Ok(match result {
                Ok(body) => Response::new(body),
                Err(err) => {
                    let mut response = Response::new(err.to_string());
                    *response.status_mut() = err.status();
                    response
                }
            })
        })
    }
}

type App = crate::SessionService<Actions>;

fn app<S: SessionStore>(store: S) -> App {
    SessionLayer::new(store).layer(Actions)
}

async fn send(app: &App, path: &str, cookie: Option<&str>) -> Response<String> {
    let mut request = Request::get(path);
    if let Some(id) = cookie {
        request = request.header("cookie", format!("id={id}"));
    }
    let request = request.body(String::new()).expect("a valid request");
    app.clone().oneshot(request).await.expect("infallible")
}

/// The session ID a response's `Set-Cookie` hands out, if any.
fn issued_id(response: &Response<String>) -> Option<String> {
    let cookie = response.headers().get("set-cookie")?.to_str().ok()?;
    let value = cookie.strip_prefix("id=")?.split(';').next()?;
    (!value.is_empty()).then(|| value.to_owned())
}

fn hash_of(id: &str) -> IdHash {
    Id::parse(id.as_bytes())
        .expect("an issued ID parses")
        .hash()
}

async fn new_session(app: &App) -> String {
    let response = send(app, "/set/seed/0", None).await;
    assert_eq!(response.status(), StatusCode::OK);
    issued_id(&response).expect("a new session sets a cookie")
}

/// Sends 20 concurrent requests on session `id`, spread over two servers: request 10 is
/// `interruption`, the others each set their own key `k<i>`. Returns each request's index
/// and response.
async fn race_requests(
    one: &Arc<App>,
    two: &Arc<App>,
    id: &str,
    interruption: &str,
) -> Vec<(usize, Response<String>)> {
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let app = if i % 2 == 0 { one.clone() } else { two.clone() };
            let (id, path) = (
                id.to_owned(),
                match i {
                    10 => interruption.to_owned(),
                    _ => format!("/set/k{i}/v"),
                },
            );
            tokio::spawn(async move { (i, send(&app, &path, Some(&id)).await) })
        })
        .collect();
    let mut responses = Vec::new();
    for task in tasks {
        responses.push(task.await.expect("a request task"));
    }
    responses
}

/// Rule 1: 50 concurrent requests on one session, each setting a different key, through
/// two servers: all 50 keys survive.
pub async fn layer_concurrent_requests_keep_all_keys<H: Harness>(harness: &H) {
    let store = harness.fresh().await;
    let twin = harness.twin(&store).await;
    let (one, two) = (Arc::new(app(store.clone())), Arc::new(app(twin)));
    let id = new_session(&one).await;
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let (app, id) = (
                if i % 2 == 0 { one.clone() } else { two.clone() },
                id.clone(),
            );
            tokio::spawn(async move { send(&app, &format!("/set/k{i}/v{i}"), Some(&id)).await })
        })
        .collect();
    for task in tasks {
        let response = task.await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{}", response.body());
    }
    let data = load(&store, &hash_of(&id)).await.unwrap().data;
    let lost: Vec<_> = (0..50)
        .filter(|i| data.get(&format!("k{i}")) != Some(&json!(format!("v{i}"))))
        .collect();
    assert!(lost.is_empty(), "lost keys {lost:?}");
}

/// Rule 2: a logout racing with writes leaves the ID dead and no record of the session
/// behind. A write that loaded the session before the logout either landed before it (200,
/// and the logout then destroyed it) or was refused (409, never a false 200). A write
/// that arrives after the logout carries an ID the server no longer knows, so, as for any
/// unknown ID, it starts a fresh anonymous session under a new ID, holding only its own
/// write: nothing of the ended session or its user.
pub async fn layer_logout_racing_with_writes_leaves_no_record<H: Harness>(harness: &H) {
    let store = harness.fresh().await;
    let twin = harness.twin(&store).await;
    let (one, two) = (Arc::new(app(store.clone())), Arc::new(app(twin)));
    for round in 0..5 {
        let user = format!("racer{round}");
        let id = new_session(&one).await;
        let id = issued_id(&send(&one, &format!("/login/{user}"), Some(&id)).await)
            .expect("login issues a new ID");
        let sessions_before = store.count().await.unwrap();
        let responses = race_requests(&one, &two, &id, "/logout").await;
        let mut fresh_sessions = 0;
        for (i, response) in responses {
            let status = response.status();
            assert!(
                status == StatusCode::OK || status == StatusCode::CONFLICT,
                "unexpected {status}"
            );
            let Some(fresh) = issued_id(&response).filter(|_| status == StatusCode::OK) else {
                continue;
            };
            assert_ne!(i, 10, "the logout itself issues no new ID");
            assert_ne!(fresh, id, "the ended ID was handed out again");
            let record = load(&store, &hash_of(&fresh))
                .await
                .expect("a 200 with a new ID has its session stored");
            assert_eq!(record.user_id, None, "a late write inherited the user");
            let keys: Vec<&str> = record.data.keys().collect();
            assert_eq!(keys, [format!("k{i}")], "a late write inherited data");
            fresh_sessions += 1;
        }
        assert!(
            load(&store, &hash_of(&id)).await.is_none(),
            "record survived logout"
        );
        assert!(store.list_user(&user).await.unwrap().is_empty());
        assert_eq!(
            store.count().await.unwrap(),
            sessions_before - 1 + fresh_sessions,
            "a record other than the late writers' fresh sessions appeared or stayed"
        );
        let after = send(&one, "/get/seed", Some(&id)).await;
        assert_eq!(after.body(), "", "the logged-out ID still reads data");
    }
}

/// Rule 3: a rotation racing with writes leaves exactly one live record; the old ID is
/// dead and the new one works.
pub async fn layer_rotation_racing_with_writes_leaves_one_live_record<H: Harness>(harness: &H) {
    let store = harness.fresh().await;
    let twin = harness.twin(&store).await;
    let (one, two) = (Arc::new(app(store.clone())), Arc::new(app(twin)));
    let id = new_session(&one).await;
    let id = issued_id(&send(&one, "/login/rotor", Some(&id)).await).unwrap();
    let responses = race_requests(&one, &two, &id, "/cycle").await;
    let mut rotated = None;
    let mut acknowledged = Vec::new();
    for (i, response) in responses {
        let status = response.status();
        assert!(
            status == StatusCode::OK || status == StatusCode::CONFLICT,
            "{status}"
        );
        if i == 10 {
            assert_eq!(status, StatusCode::OK);
            rotated = issued_id(&response);
        } else if status == StatusCode::OK {
            acknowledged.push(format!("k{i}"));
        } else {
            assert!(
                response.headers().get("set-cookie").is_none(),
                "a refused stale write must not overwrite the rotated cookie"
            );
        }
    }
    let rotated = rotated.expect("the rotation issued a new ID");
    let data = load(&store, &hash_of(&rotated)).await.unwrap().data;
    for key in &acknowledged {
        assert!(data.contains_key(key), "write {key} got a 200 but was lost");
    }
    assert!(
        load(&store, &hash_of(&id)).await.is_none(),
        "the old ID still works"
    );
    let listed = store.list_user("rotor").await.unwrap();
    assert_eq!(listed.len(), 1, "exactly one live record");
    assert_eq!(listed[0].key, hash_of(&rotated));
    assert_eq!(store.count().await.unwrap(), 1);
    let read = send(&two, "/get/seed", Some(&rotated)).await;
    assert_eq!(read.body(), "0", "the new ID carries the data");
}

/// Rule 4: the same key written concurrently ends with one of the written values (the
/// write-back that reached the store last), every request told the truth, and later
/// writes replace earlier ones.
pub async fn layer_same_key_last_writer_wins<H: Harness>(harness: &H) {
    let store = harness.fresh().await;
    let twin = harness.twin(&store).await;
    let (one, two) = (Arc::new(app(store.clone())), Arc::new(app(twin)));
    let id = new_session(&one).await;
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let (app, id) = (
                if i % 2 == 0 { one.clone() } else { two.clone() },
                id.clone(),
            );
            tokio::spawn(async move { send(&app, &format!("/set/shared/v{i}"), Some(&id)).await })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap().status(), StatusCode::OK);
    }
    let value = send(&one, "/get/shared", Some(&id)).await.into_body();
    let written: BTreeSet<_> = (0..20).map(|i| format!("v{i}")).collect();
    assert!(written.contains(&value), "{value:?} was never written");
    send(&two, "/set/shared/final", Some(&id)).await;
    assert_eq!(send(&one, "/get/shared", Some(&id)).await.body(), "final");
}

/// Login issues a new ID carrying data and user, the old ID dies at once; logout deletes
/// the record and expires the cookie.
pub async fn layer_login_rotates_and_logout_destroys<H: Harness>(harness: &H) {
    let store = harness.fresh().await;
    let app = app(store.clone());
    let anonymous = new_session(&app).await;
    let login = send(&app, "/login/ann", Some(&anonymous)).await;
    let id = issued_id(&login).expect("login issues a new ID");
    assert_ne!(id, anonymous);
    assert!(load(&store, &hash_of(&anonymous)).await.is_none());
    let record = load(&store, &hash_of(&id)).await.unwrap();
    assert_eq!(record.user_id.as_deref(), Some("ann"));
    assert_eq!(record.data["seed"], "0");
    assert_eq!(send(&app, "/get/seed", Some(&anonymous)).await.body(), "");

    let logout = send(&app, "/logout", Some(&id)).await;
    let cookie = logout.headers()["set-cookie"].to_str().unwrap();
    assert!(
        cookie.starts_with("id=;") && cookie.contains("Max-Age=0"),
        "{cookie}"
    );
    assert!(load(&store, &hash_of(&id)).await.is_none());
    assert_eq!(store.count().await.unwrap(), 0);
}
