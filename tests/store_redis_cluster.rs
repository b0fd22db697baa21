//! `RedisStore` on a 3-master Redis Cluster: the conformance suite, one slot per session,
//! and per-user operations over sessions spread across nodes.
//!
//! Needs the test cluster: `scripts/redis.sh start` (`SESSIONWARE_REDIS_CLUSTER`, default
//! `redis://127.0.0.1:7101,redis://127.0.0.1:7102,redis://127.0.0.1:7103`).

#[path = "support/redis.rs"]
mod support;

use std::collections::BTreeSet;

use serde_json::json;
use sessionware::store::conformance::Harness;
use sessionware::{Delta, Id, IdHash, Record, RedisStore, SessionStore};
use time::{Duration, OffsetDateTime};

struct Cluster;

impl Harness for Cluster {
    type Store = RedisStore;

    async fn fresh(&self) -> RedisStore {
        support::cluster_store(&support::unique_prefix("cluster")).await
    }

    async fn twin(&self, store: &RedisStore) -> RedisStore {
        support::cluster_store(store.prefix()).await
    }
}

sessionware::store_conformance_tests!(Cluster);

fn record(user: &str) -> Record {
    let now = OffsetDateTime::now_utc();
    let mut record = Record::new(now, now + Duration::minutes(5), now + Duration::hours(1));
    record.user_id = Some(user.to_owned());
    record
}

/// The ports of the nodes that hold each of `keys` (asked of every node directly: the one
/// that owns a key's slot answers, the others redirect).
async fn owners(keys: &[String]) -> BTreeSet<String> {
    let mut owners = BTreeSet::new();
    for node in support::cluster_nodes() {
        let mut conn = support::raw(&node).await;
        for key in keys {
            let exists: redis::RedisResult<i64> =
                redis::cmd("EXISTS").arg(key).query_async(&mut conn).await;
            if exists == Ok(1) {
                owners.insert(node.clone());
            }
        }
    }
    owners
}

async fn slot(key: &str) -> i64 {
    let mut conn = support::raw(&support::cluster_nodes()[0]).await;
    redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(key)
        .query_async(&mut conn)
        .await
        .expect("CLUSTER KEYSLOT")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_sessions_on_different_nodes_are_listed_and_revoked() {
    let store = support::cluster_store(&support::unique_prefix("spread")).await;
    let mut keys = Vec::new();
    for device in 0..12 {
        let mut record = record("spread");
        record.data.insert("device".into(), json!(device));
        let key = Id::random().unwrap().hash();
        assert!(store.create(&key, &record).await.unwrap());
        keys.push(key);
    }
    let redis_keys: Vec<String> = keys
        .iter()
        .map(|key| format!("{}:s:{{{key}}}", store.prefix()))
        .collect();
    let nodes = owners(&redis_keys).await;
    assert!(nodes.len() >= 2, "all 12 sessions on one node: {nodes:?}");

    let listed: BTreeSet<IdHash> = store
        .list_user("spread")
        .await
        .unwrap()
        .into_iter()
        .map(|info| info.key)
        .collect();
    assert_eq!(listed, keys.iter().copied().collect());
    assert_eq!(store.count_user("spread").await.unwrap(), 12);
    assert_eq!(store.count().await.unwrap(), 12);

    assert_eq!(
        store.delete_user("spread", Some(&keys[0])).await.unwrap(),
        11
    );
    assert_eq!(store.count_user("spread").await.unwrap(), 1);
    assert_eq!(store.count().await.unwrap(), 1);
    assert!(
        owners(&redis_keys[1..]).await.is_empty(),
        "revoked sessions remain"
    );
    assert!(store.load(&keys[0]).await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sessions_keys_share_one_slot_and_rotation_crosses_slots() {
    let store = support::cluster_store(&support::unique_prefix("slots")).await;
    let (old, new) = (Id::random().unwrap().hash(), Id::random().unwrap().hash());
    let prefix = store.prefix().to_owned();
    let hash_slot = slot(&old.to_string()).await;
    assert_eq!(slot(&format!("{prefix}:s:{{{old}}}")).await, hash_slot);
    assert_eq!(slot(&format!("{prefix}:t:{{{old}}}")).await, hash_slot);

    let mut ann = record("ann");
    ann.data.insert("cart".into(), json!([1, 2]));
    store.create(&old, &ann).await.unwrap();
    let mut delta = Delta::default();
    delta.set("flash", json!("hi"));
    delta.user_id = Some(Some("bob".into()));
    assert!(store.rotate(&old, &new, &delta).await.unwrap());
    assert!(store.load(&old).await.unwrap().is_none());
    assert!(store.rotated_at(&old).await.unwrap().is_some());
    let moved = store.load(&new).await.unwrap().expect("under the new key");
    assert_eq!(moved.data["cart"], json!([1, 2]));
    assert_eq!(moved.user_id.as_deref(), Some("bob"));
    assert!(store.list_user("ann").await.unwrap().is_empty());
    assert_eq!(store.list_user("bob").await.unwrap()[0].key, new);
    assert!(
        !store
            .rotate(&old, &Id::random().unwrap().hash(), &Delta::default())
            .await
            .unwrap(),
        "the old key rotated twice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_extended_session_stays_listed_and_counted_past_its_first_deadline() {
    let store = support::cluster_store(&support::unique_prefix("extend")).await;
    let key = Id::random().unwrap().hash();
    let now = OffsetDateTime::now_utc();
    let mut short = record("gus");
    short.idle_deadline = now + Duration::milliseconds(500);
    assert!(store.create(&key, &short).await.unwrap());
    let mut delta = Delta::default();
    let later = now + Duration::minutes(10);
    delta.deadlines = Some(sessionware::Deadlines::new(
        later,
        short.absolute_deadline,
        false,
    ));
    delta.last_seen = Some(now);
    assert!(store.apply(&key, &delta).await.unwrap());
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    assert_eq!(store.list_user("gus").await.unwrap().len(), 1);
    assert_eq!(store.count().await.unwrap(), 1);
    assert_eq!(store.delete_user("gus", None).await.unwrap(), 1);
    assert_eq!(store.count().await.unwrap(), 0);
}

/// A plain cluster connection, for putting keys in the states a rotation passes through.
async fn raw_cluster() -> redis::cluster_async::ClusterConnection {
    redis::cluster::ClusterClient::new(support::cluster_nodes())
        .expect("valid cluster node URLs")
        .get_async_connection()
        .await
        .expect("the test cluster answers")
}

/// A session of `user` caught in a cluster rotation: taken out of its old key, which
/// keeps its index entries and gets a tombstone naming the new key, as the rotation's
/// first step leaves it; with `filed`, also filed and indexed under the new key, as its
/// second step and first index update leave it. Returns the old and new keys.
async fn rotation_in_flight(store: &RedisStore, user: &str, filed: bool) -> (IdHash, IdHash) {
    let (from, to) = (Id::random().unwrap().hash(), Id::random().unwrap().hash());
    assert!(store.create(&from, &record(user)).await.unwrap());
    let mut conn = raw_cluster().await;
    let prefix = store.prefix();
    let tombstone = format!("{prefix}:t:{{{from}}}");
    let _: () = redis::pipe()
        .del(format!("{prefix}:s:{{{from}}}"))
        .ignore()
        .pset_ex(tombstone, to.to_string(), 300_000)
        .ignore()
        .query_async(&mut conn)
        .await
        .expect("raw writes (one slot)");
    if filed {
        assert!(store.create(&to, &record(user)).await.unwrap());
    }
    (from, to)
}

/// A session the rotation's first script takes as live (it judges by the `m` field) but
/// the client cannot read (here a data field that is not JSON; or one that expired on the
/// way back) has ended: the rotation reports nothing moved and leaves no tombstone, which
/// would refuse the client's next requests for a rotation that never happened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_that_takes_an_unreadable_session_leaves_no_tombstone() {
    let store = support::cluster_store(&support::unique_prefix("unreadable")).await;
    let (from, to) = (Id::random().unwrap().hash(), Id::random().unwrap().hash());
    assert!(store.create(&from, &record("una")).await.unwrap());
    let mut conn = raw_cluster().await;
    let _: i64 = redis::cmd("HSET")
        .arg(format!("{}:s:{{{from}}}", store.prefix()))
        .arg("d:broken")
        .arg("{not json")
        .query_async(&mut conn)
        .await
        .expect("raw HSET");
    assert!(!store.rotate(&from, &to, &Delta::default()).await.unwrap());
    assert_eq!(store.rotated_at(&from).await.unwrap(), None);
    assert!(store.load(&to).await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_follows_a_rotation_filed_but_not_yet_indexed() {
    let store = support::cluster_store(&support::unique_prefix("chase")).await;
    // The rotation has filed the record under `to`, but its index updates are still in
    // flight: the user's index lists only `from`, whose record is gone.
    let (_, to) = rotation_in_flight(&store, "ivy", true).await;
    let mut conn = raw_cluster().await;
    let prefix = store.prefix();
    for index in [format!("{prefix}:u:{{ivy}}"), format!("{prefix}:all")] {
        let _: i64 = redis::cmd("ZREM")
            .arg(index)
            .arg(to.to_string())
            .query_async(&mut conn)
            .await
            .expect("raw ZREM");
    }

    assert_eq!(store.delete_user("ivy", None).await.unwrap(), 1);
    assert!(
        store.load(&to).await.unwrap().is_none(),
        "the rotated session survived"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_whose_user_is_revoked_between_its_steps_cannot_finish() {
    let store = support::cluster_store(&support::unique_prefix("stop")).await;
    // Revoked after the rotation took the record out of `from`, before it filed it.
    let (_, to) = rotation_in_flight(&store, "ivy", false).await;
    assert_eq!(
        store.delete_user("ivy", None).await.unwrap(),
        1,
        "the session in flight counts as revoked"
    );
    let mark: Option<String> = redis::cmd("GET")
        .arg(format!("{}:t:{{{to}}}", store.prefix()))
        .query_async(&mut raw_cluster().await)
        .await
        .unwrap();
    assert!(mark.is_some(), "the new key is marked");
    assert!(
        store.rotated_at(&to).await.unwrap().is_none(),
        "a revocation's mark is not a rotation"
    );

    // The rotation's second step, which the mark must stop: filing a record under `to`
    // as a rotation does.
    let late = Id::random().unwrap().hash();
    assert!(store.create(&late, &record("ivy")).await.unwrap());
    assert!(
        !store.rotate(&late, &to, &Delta::default()).await.unwrap(),
        "a rotation filed a session under a key its revocation marked"
    );
    assert!(store.load(&to).await.unwrap().is_none());
    assert!(store.load(&late).await.unwrap().is_none());
    assert!(
        store.rotated_at(&late).await.unwrap().is_none(),
        "the client keeps the old ID: with the session over, it must not get 409s"
    );
    assert!(store.list_user("ivy").await.unwrap().is_empty());
    assert_eq!(store.count().await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_listed_under_both_keys_of_its_rotation_is_revoked_once() {
    let store = support::cluster_store(&support::unique_prefix("twice")).await;
    // Filed and indexed under `to`; the old key's entry not yet removed.
    let (_, to) = rotation_in_flight(&store, "ivy", true).await;

    assert_eq!(store.delete_user("ivy", None).await.unwrap(), 1);
    assert!(store.load(&to).await.unwrap().is_none());
    assert!(
        store.rotated_at(&to).await.unwrap().is_none(),
        "the ID the client holds would get 409s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_tidies_entries_of_vanished_sessions_but_not_of_rotations_in_flight() {
    let store = support::cluster_store(&support::unique_prefix("tidy")).await;
    let ended = Id::random().unwrap().hash();
    assert!(store.create(&ended, &record("tim")).await.unwrap());
    let mut conn = raw_cluster().await;
    let prefix = store.prefix().to_owned();
    let _: i64 = redis::cmd("DEL")
        .arg(format!("{prefix}:s:{{{ended}}}"))
        .query_async(&mut conn)
        .await
        .unwrap();
    let (rotating, _) = rotation_in_flight(&store, "tim", false).await;

    assert!(store.list_user("tim").await.unwrap().is_empty());
    let listed: Vec<String> = redis::cmd("ZRANGE")
        .arg(format!("{prefix}:u:{{tim}}"))
        .arg(0)
        .arg(-1)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(listed, [rotating.to_string()]);
}
