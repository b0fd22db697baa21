//! `RedisStore` on a single Redis server: the conformance suite, the key layout (hashes of
//! IDs only, a TTL on every key), the indexes' upkeep, and corrupt data.
//!
//! Needs the test server: `scripts/redis.sh start` (`SESSIONWARE_REDIS_URL`, default
//! `redis://127.0.0.1:6380/`).

#[path = "support/redis.rs"]
mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use http::StatusCode;
use redis::AsyncCommands;
use serde_json::json;
use sessionware::store::conformance::Harness;
use sessionware::{Delta, ErrorKind, Id, IdHash, Record, RedisStore, SessionLayer, SessionStore};
use time::{Duration, OffsetDateTime};

struct Single;

impl Harness for Single {
    type Store = RedisStore;

    async fn fresh(&self) -> RedisStore {
        support::single_store(&support::unique_prefix("conformance")).await
    }

    async fn twin(&self, store: &RedisStore) -> RedisStore {
        // Its own connection, as another app server would have.
        support::single_store(store.prefix()).await
    }
}

sessionware::store_conformance_tests!(Single);

fn record(user: Option<&str>, lifetime: Duration) -> Record {
    let now = OffsetDateTime::now_utc();
    let mut record = Record::new(now, now + lifetime, now + Duration::hours(12));
    record.user_id = user.map(str::to_owned);
    record
}

async fn fresh() -> (RedisStore, redis::aio::MultiplexedConnection) {
    let store = support::single_store(&support::unique_prefix("layout")).await;
    (store, support::raw(&support::single_url()).await)
}

/// Everything a key holds, as text, whatever its type.
async fn dump(conn: &mut redis::aio::MultiplexedConnection, key: &str) -> String {
    let kind: String = redis::cmd("TYPE").arg(key).query_async(conn).await.unwrap();
    match kind.as_str() {
        "hash" => format!(
            "{:?}",
            conn.hgetall::<_, Vec<(String, String)>>(key).await.unwrap()
        ),
        "zset" => format!(
            "{:?}",
            conn.zrange_withscores::<_, Vec<(String, f64)>>(key, 0, -1)
                .await
                .unwrap()
        ),
        "string" => conn.get::<_, String>(key).await.unwrap(),
        other => panic!("unexpected {other} under {key}"),
    }
}

#[tokio::test]
async fn keys_hold_only_id_hashes_and_every_key_expires() {
    let (store, mut conn) = fresh().await;
    let (first, second) = (Id::random().unwrap(), Id::random().unwrap());
    let mut ann = record(Some("ann"), Duration::minutes(30));
    ann.data.insert("cart".into(), json!([1, 2]));
    assert!(store.create(&first.hash(), &ann).await.unwrap());
    assert!(store
        .create(
            &Id::random().unwrap().hash(),
            &record(None, Duration::minutes(5))
        )
        .await
        .unwrap());
    // A rotation adds a tombstone; it must expire like everything else.
    assert!(store
        .rotate(&first.hash(), &second.hash(), &Delta::default())
        .await
        .unwrap());

    let keys = support::keys_under(&mut conn, store.prefix()).await;
    let kinds: Vec<&str> = keys
        .iter()
        .map(|key| key[store.prefix().len() + 1..].split(':').next().unwrap())
        .collect();
    assert_eq!(kinds, ["all", "s", "s", "t", "u"], "{keys:?}");
    assert!(keys.contains(&format!("{}:s:{{{}}}", store.prefix(), second.hash())));
    assert!(keys.contains(&format!("{}:u:{{ann}}", store.prefix())));
    for id in [&first, &second] {
        let secret = id.expose_secret();
        for key in &keys {
            assert!(!key.contains(&secret), "{key} holds a raw ID");
            assert!(
                !dump(&mut conn, key).await.contains(&secret),
                "{key}'s value holds a raw ID"
            );
        }
    }
    for key in &keys {
        let ttl: i64 = conn.pttl(key).await.unwrap();
        assert!(ttl > 0, "{key} has no TTL ({ttl})");
    }
    let session_ttl: i64 = conn
        .pttl(format!("{}:s:{{{}}}", store.prefix(), second.hash()))
        .await
        .unwrap();
    assert!(
        (29 * 60_000..=30 * 60_000).contains(&session_ttl),
        "session TTL {session_ttl}"
    );
    let tombstone_ttl: i64 = conn
        .pttl(format!("{}:t:{{{}}}", store.prefix(), first.hash()))
        .await
        .unwrap();
    assert!(tombstone_ttl <= 5 * 60_000, "tombstone TTL {tombstone_ttl}");
}

#[tokio::test]
async fn indexes_drop_expired_members_and_expire_with_their_last() {
    let (store, mut conn) = fresh().await;
    let user_index = format!("{}:u:{{bo}}", store.prefix());
    let all_index = format!("{}:all", store.prefix());
    let short = Id::random().unwrap().hash();
    let longer = Id::random().unwrap().hash();
    store
        .create(&short, &record(Some("bo"), Duration::milliseconds(300)))
        .await
        .unwrap();
    store
        .create(&longer, &record(Some("bo"), Duration::milliseconds(900)))
        .await
        .unwrap();
    for index in [&user_index, &all_index] {
        let ttl: i64 = conn.pttl(index).await.unwrap();
        assert!(
            (300..=900).contains(&ttl),
            "{index}: the latest member's expiry, got {ttl}"
        );
    }

    tokio::time::sleep(StdDuration::from_millis(400)).await;
    // The next write to the index trims what has expired.
    let live = Id::random().unwrap().hash();
    store
        .create(&live, &record(Some("bo"), Duration::milliseconds(900)))
        .await
        .unwrap();
    let members: Vec<String> = conn.zrange(&user_index, 0, -1).await.unwrap();
    assert_eq!(members, [longer.to_string(), live.to_string()]);
    let ttl: i64 = conn.pttl(&user_index).await.unwrap();
    assert!(ttl > 500, "TTL follows the newest member, got {ttl}");

    tokio::time::sleep(StdDuration::from_millis(1000)).await;
    let left: i64 = conn.exists(&[&user_index, &all_index]).await.unwrap();
    assert_eq!(left, 0, "the indexes outlived their sessions");
    assert!(support::keys_under(&mut conn, store.prefix())
        .await
        .is_empty());
}

#[tokio::test]
async fn extending_a_session_extends_its_key_and_index_entries() {
    let (store, mut conn) = fresh().await;
    let key = Id::random().unwrap().hash();
    let mut short = record(Some("cy"), Duration::milliseconds(500));
    short.data.insert("n".into(), json!(1));
    store.create(&key, &short).await.unwrap();
    let mut delta = Delta::default();
    let later = OffsetDateTime::now_utc() + Duration::minutes(10);
    delta.deadlines = Some(sessionware::Deadlines::new(
        later,
        short.absolute_deadline,
        false,
    ));
    assert!(store.apply(&key, &delta).await.unwrap());
    let ttl: i64 = conn
        .pttl(format!("{}:s:{{{key}}}", store.prefix()))
        .await
        .unwrap();
    assert!(ttl > 9 * 60_000, "session TTL not extended: {ttl}");
    let score: f64 = conn
        .zscore(format!("{}:u:{{cy}}", store.prefix()), key.to_string())
        .await
        .unwrap();
    assert_eq!(
        score as i64,
        later.unix_timestamp_nanos() as i64 / 1_000_000
    );
    tokio::time::sleep(StdDuration::from_millis(700)).await;
    assert_eq!(store.list_user("cy").await.unwrap().len(), 1);
    assert_eq!(store.count().await.unwrap(), 1);
}

/// Captures what `tracing` logs on this thread while it lives.
struct Logs {
    buffer: Arc<Mutex<Vec<u8>>>,
    _guard: tracing::subscriber::DefaultGuard,
}

#[derive(Clone)]
struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn capture() -> Self {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let sink = Sink(buffer.clone());
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || sink.clone())
            .with_ansi(false)
            .finish();
        Self {
            buffer,
            _guard: tracing::subscriber::set_default(subscriber),
        }
    }

    fn take(&self) -> String {
        String::from_utf8_lossy(&std::mem::take(&mut *self.buffer.lock().unwrap())).into_owned()
    }
}

/// Corrupts a live session of `user` in one of three ways; returns its key.
async fn corrupted(
    store: &RedisStore,
    conn: &mut redis::aio::MultiplexedConnection,
    how: &str,
) -> IdHash {
    let key = Id::random().unwrap().hash();
    let mut good = record(Some("dee"), Duration::minutes(30));
    good.data.insert("fine".into(), json!("value"));
    assert!(store.create(&key, &good).await.unwrap());
    let redis_key = format!("{}:s:{{{key}}}", store.prefix());
    match how {
        "wrong type" => {
            let _: () = conn.del(&redis_key).await.unwrap();
            let _: () = conn.set_ex(&redis_key, "not a hash", 60).await.unwrap();
        }
        "bad json" => {
            let _: () = conn
                .hset(&redis_key, "d:broken", "{not json")
                .await
                .unwrap();
        }
        "missing times" => {
            let _: () = conn.hdel(&redis_key, "m").await.unwrap();
        }
        "garbled times" => {
            let _: () = conn.hset(&redis_key, "m", "1:2:soon:4:0").await.unwrap();
        }
        "bad flag" | "extra part" => {
            // Every time well-formed and the deadlines ahead: only the shape is wrong.
            let _: () = conn.hset(&redis_key, "m", future_times(how)).await.unwrap();
        }
        other => panic!("unknown corruption {other}"),
    }
    key
}

#[tokio::test]
async fn corrupt_sessions_are_absent_and_logged() {
    let logs = Logs::capture();
    let (store, mut conn) = fresh().await;
    for how in [
        "wrong type",
        "bad json",
        "missing times",
        "garbled times",
        "bad flag",
        "extra part",
    ] {
        let key = corrupted(&store, &mut conn, how).await;
        assert!(store.load(&key).await.unwrap().is_none(), "{how}: loaded");
        let logged = logs.take();
        assert!(
            logged.contains("corrupt session data"),
            "{how}: not logged: {logged}"
        );
        assert!(
            logged.contains(&key.to_string()[..8]),
            "{how}: log does not name the session"
        );
        let listed = store.list_user("dee").await.unwrap();
        assert!(listed.iter().all(|info| info.key != key), "{how}: listed");
        if how != "bad json" {
            // The scripts see the record as absent too: nothing is written into it.
            assert!(
                !store.apply(&key, &Delta::default()).await.unwrap(),
                "{how}: applied"
            );
            assert!(
                !store
                    .rotate(&key, &Id::random().unwrap().hash(), &Delta::default())
                    .await
                    .unwrap(),
                "{how}: rotated"
            );
        }
        // A fresh session may take the key over.
        store.delete(&key).await.unwrap();
        assert!(
            store
                .create(&key, &record(None, Duration::minutes(1)))
                .await
                .unwrap(),
            "{how}"
        );
        assert!(
            store.load(&key).await.unwrap().is_some(),
            "{how}: not replaced"
        );
    }
}

/// A packed `m` field whose times are well-formed and whose deadlines are an hour ahead,
/// with one flaw: a remember-me flag that is neither `0` nor `1`, or a sixth part.
fn future_times(flaw: &str) -> String {
    let now = OffsetDateTime::now_utc().unix_timestamp() * 1000;
    let (soon, later) = (now + 3_600_000, now + 7_200_000);
    match flaw {
        "bad flag" => format!("{now}:{now}:{soon}:{later}:2"),
        _ => format!("{now}:{now}:{soon}:{later}:0:7"),
    }
}

/// A tombstone that is not one of ours (another type, no TTL, or a TTL longer than any
/// tombstone lives) dates no rotation, and is no error; a real one still does.
#[tokio::test]
async fn foreign_tombstones_date_no_rotation() {
    let (store, mut conn) = fresh().await;
    let stone = |key: &IdHash| format!("{}:t:{{{key}}}", store.prefix());
    let keys: Vec<IdHash> = (0..3).map(|_| Id::random().unwrap().hash()).collect();
    let _: () = conn.hset(stone(&keys[0]), "f", "v").await.unwrap();
    let _: () = conn.set(stone(&keys[1]), "1").await.unwrap();
    // Longer than 8,000 years: an instant that far back is past what a date can hold.
    let _: () = redis::cmd("SET")
        .arg(stone(&keys[2]))
        .arg("1")
        .arg("PX")
        .arg(300_000_000_000_000_i64)
        .query_async(&mut conn)
        .await
        .unwrap();
    for key in &keys {
        assert_eq!(store.rotated_at(key).await.unwrap(), None, "{}", stone(key));
    }
    let old = Id::random().unwrap().hash();
    assert!(store
        .create(&old, &record(None, Duration::hours(1)))
        .await
        .unwrap());
    let new = Id::random().unwrap().hash();
    assert!(store.rotate(&old, &new, &Delta::default()).await.unwrap());
    assert!(store.rotated_at(&old).await.unwrap().is_some());
}

#[tokio::test]
async fn a_request_with_a_corrupt_session_gets_a_new_one() {
    let (store, mut conn) = fresh().await;
    let app = support::app(SessionLayer::new(store.clone()));
    for how in ["wrong type", "bad json", "missing times", "garbled times"] {
        let id = Id::random().unwrap();
        let redis_key = format!("{}:s:{{{}}}", store.prefix(), id.hash());
        match how {
            "wrong type" => {
                let _: () = conn.set_ex(&redis_key, "garbage", 60).await.unwrap();
            }
            _ => {
                let (field, value) = match how {
                    "bad json" => ("d:x", "{oops".to_owned()),
                    "missing times" => ("u", "ann".to_owned()),
                    _ => ("m", future_times("bad flag")),
                };
                let _: () = conn.hset(&redis_key, field, value).await.unwrap();
                let _: () = conn.expire(&redis_key, 60).await.unwrap();
            }
        }
        let read = support::send(&app, "/get/x", Some(&id.expose_secret())).await;
        assert_eq!(read.status, StatusCode::OK, "{how}");
        assert_eq!(read.body, "", "{how}");
        let write = support::send(&app, "/set/x/1", Some(&id.expose_secret())).await;
        assert_eq!(write.status, StatusCode::OK, "{how}: {}", write.body);
        let fresh_id = write.cookie.expect("a new session");
        assert_ne!(
            fresh_id,
            id.expose_secret(),
            "{how}: the corrupt ID was adopted"
        );
        assert_eq!(
            support::send(&app, "/get/x", Some(&fresh_id)).await.body,
            "1"
        );
    }
}

#[tokio::test]
async fn scripts_are_reloaded_when_the_server_forgets_them() {
    let (store, mut conn) = fresh().await;
    let key = Id::random().unwrap().hash();
    store
        .create(&key, &record(Some("eve"), Duration::minutes(5)))
        .await
        .unwrap();
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut delta = Delta::default();
    delta.set("after", json!("flush"));
    assert!(store.apply(&key, &delta).await.unwrap());
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        store.delete_user("eve", None).await.unwrap(),
        1,
        "pipelined scripts reload too"
    );
}

#[tokio::test]
async fn connecting_to_nothing_is_unavailable_and_a_bad_url_is_refused() {
    let err = RedisStore::connect("redis://127.0.0.1:1/")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::StoreUnavailable, "{err}");
    assert_eq!(err.status(), StatusCode::SERVICE_UNAVAILABLE);
    let err = RedisStore::connect("http://not-redis").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Store, "{err}");
}

#[tokio::test]
async fn a_store_built_from_a_connection_manager_works() {
    let client = redis::Client::open(support::single_url()).unwrap();
    let manager = redis::aio::ConnectionManager::new(client).await.unwrap();
    let store = RedisStore::from_connection_manager(manager)
        .with_prefix(&support::unique_prefix("manager"));
    let key = Id::random().unwrap().hash();
    assert!(store
        .create(&key, &record(Some("fay"), Duration::minutes(1)))
        .await
        .unwrap());
    assert_eq!(store.count_user("fay").await.unwrap(), 1);
    assert!(format!("{store:?}").contains("cluster: false"));
}

/// A delta larger than one Lua `unpack` may spread (200 values) lands whole, with the times
/// it moves: the scripts delete and set fields in chunks, the merged `m` riding in the
/// first.
#[tokio::test]
async fn a_delta_of_hundreds_of_keys_lands_whole_with_its_times() {
    let (store, _conn) = fresh().await;
    let key = Id::random().unwrap().hash();
    let mut want = record(Some("ida"), Duration::minutes(30));
    for n in 0..250 {
        want.data.insert(format!("old{n}"), json!(n));
    }
    assert!(store.create(&key, &want).await.unwrap());

    let mut delta = Delta::default();
    for n in 0..250 {
        delta.remove(format!("old{n}"));
        want.data.remove(&format!("old{n}"));
    }
    for n in 0..300 {
        delta.set(format!("new{n}"), json!(n));
        want.data.insert(format!("new{n}"), json!(n));
    }
    let seen = OffsetDateTime::now_utc() + Duration::seconds(5);
    delta.last_seen = Some(seen);
    assert!(store.apply(&key, &delta).await.unwrap());

    let got = store
        .load(&key)
        .await
        .unwrap()
        .expect("the session is still there");
    assert_eq!(got.data, want.data);
    let ms = |t: OffsetDateTime| t.unix_timestamp_nanos() / 1_000_000;
    assert_eq!(ms(got.last_seen), ms(seen));
    assert_eq!(ms(got.created_at), ms(want.created_at));
    assert_eq!(ms(got.idle_deadline), ms(want.idle_deadline));
    assert_eq!(got.user_id.as_deref(), Some("ida"));
}
