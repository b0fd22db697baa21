//! What is particular to `PostgresStore`: concurrent migrations, table names, corrupt rows,
//! NUL characters, an unreachable server and the cleanup task. These tests need the server
//! `scripts/postgres.sh start` runs (or `SESSIONWARE_POSTGRES_URL`) and fail without it.

use std::str::FromStr;
use std::time::Duration as StdDuration;

use serde_json::json;
use sessionware::{Delta, ErrorKind, Id, IdHash, PostgresStore, Record, SessionStore};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use time::{Duration, OffsetDateTime};

#[path = "support/postgres.rs"]
mod support;
use support::connect;

fn fresh_table() -> String {
    format!("sqltest_{}", &key().to_string()[..16])
}

async fn store() -> PostgresStore {
    let store = connect().await.with_table(&fresh_table()).unwrap();
    store.migrate().await.unwrap();
    store
}

fn key() -> IdHash {
    Id::random().expect("randomness").hash()
}

fn record(user: Option<&str>, lifetime: Duration) -> Record {
    let now = OffsetDateTime::now_utc();
    let mut record = Record::new(now, now + lifetime, now + Duration::hours(12));
    record.user_id = user.map(str::to_owned);
    record
}

async fn raw_rows(store: &PostgresStore) -> i64 {
    sqlx::query_scalar(&format!("SELECT count(*) FROM \"{}\"", store.table()))
        .fetch_one(store.pool())
        .await
        .expect("count rows")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_migrations_from_several_processes_all_succeed() {
    let table = fresh_table();
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let table = table.clone();
        tasks.push(tokio::spawn(async move {
            let store = connect().await.with_table(&table)?;
            store.migrate().await?;
            store.migrate().await
        }));
    }
    for task in tasks {
        task.await.unwrap().expect("every migration succeeds");
    }
    let store = connect().await;
    let version: i32 =
        sqlx::query_scalar("SELECT version FROM sessionware_schema WHERE table_name = $1")
            .bind(&table)
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert_eq!(version, 1);
    let mut indexes: Vec<String> =
        sqlx::query_scalar("SELECT indexname::text FROM pg_indexes WHERE tablename = $1")
            .bind(&table)
            .fetch_all(store.pool())
            .await
            .unwrap();
    indexes.sort();
    assert_eq!(
        indexes,
        [
            format!("{table}_expires_idx"),
            format!("{table}_pkey"),
            format!("{table}_user_idx")
        ]
    );
}

#[tokio::test]
async fn table_names_are_validated() {
    let store = connect().await;
    for bad in ["x; DROP TABLE y", "\"q\"", "", "9lives", "public.sessions"] {
        let err = store.clone().with_table(bad).expect_err(bad);
        assert_eq!(err.kind(), ErrorKind::Config, "{bad}");
    }
}

#[tokio::test]
async fn an_unreachable_server_is_unavailable_not_a_crash() {
    let err = PostgresStore::connect("postgres://postgres@127.0.0.1:1/none")
        .await
        .expect_err("nothing listens on port 1");
    assert_eq!(err.kind(), ErrorKind::StoreUnavailable);
}

/// A refusal (here SQLSTATE 42501, a missing privilege: all digits, like a SQLite code)
/// is a fault to fix, reported as a store error (500), not an outage to wait out (503).
#[tokio::test]
async fn a_refusal_by_the_database_is_a_store_error_not_an_outage() {
    let owner = store().await;
    let role = format!("sw_{}", &key().to_string()[..16]);
    sqlx::query(&format!("CREATE ROLE {role} LOGIN"))
        .execute(owner.pool())
        .await
        .expect("create a role without privileges");
    let options = PgConnectOptions::from_str(&support::url())
        .expect("test URL")
        .username(&role);
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .expect("connect as the new role (the test server trusts local connections)");
    let stranger = PostgresStore::from_pool(pool.clone())
        .with_table(owner.table())
        .unwrap();
    let err = stranger
        .load(&key())
        .await
        .expect_err("the role may not read the table");
    assert_eq!(err.kind(), ErrorKind::Store, "{err:?}");
    assert_eq!(err.status(), 500);
    pool.close().await;
    sqlx::query(&format!("DROP ROLE {role}"))
        .execute(owner.pool())
        .await
        .expect("drop the role");
}

/// `jsonb` keeps numbers as `numeric` (docs/sql.md): a whole float from 1e16 up comes
/// back as an integer, yet read as `f64` it is the same number, bit for bit.
#[tokio::test]
async fn large_whole_floats_read_back_as_the_same_f64() {
    let store = store().await;
    let key = key();
    let floats = [1e16, 1.7e18, -2.5e16, 1.5e300, f64::MAX, 0.1];
    let mut record = record(None, Duration::hours(1));
    record.data.insert("floats".to_owned(), json!(floats));
    assert!(store.create(&key, &record).await.unwrap());
    let loaded = store.load(&key).await.unwrap().expect("the session");
    let stored = loaded.data.get("floats").expect("the value").clone();
    assert!(
        stored[1].is_u64(),
        "numeric turned 1.7e18 into {}",
        stored[1]
    );
    let back: Vec<f64> = serde_json::from_value(stored).expect("floats");
    let bits = |values: &[f64]| values.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&back), bits(&floats));
}

#[tokio::test]
async fn corrupt_rows_are_absent_never_a_crash() {
    let store = store().await;
    let t = store.table().to_owned();
    let corruptions = [
        format!("UPDATE \"{t}\" SET data = '[1, 2]' WHERE key = $1"),
        format!("UPDATE \"{t}\" SET data = '\"text\"' WHERE key = $1"),
        format!(
            "UPDATE \"{t}\" SET data = jsonb_build_object('k', E'bad\\uE000escape') WHERE key = $1"
        ),
        format!("UPDATE \"{t}\" SET user_agent = E'\\uE000x' WHERE key = $1"),
        // Instants PostgreSQL keeps but a Rust date cannot hold: an operator's "never
        // expires" ('infinity'), or a year past 9999.
        format!("UPDATE \"{t}\" SET absolute_deadline = 'infinity' WHERE key = $1"),
        format!("UPDATE \"{t}\" SET created_at = '12000-01-01' WHERE key = $1"),
    ];
    let mut keys = Vec::new();
    for sql in &corruptions {
        let k = key();
        assert!(store
            .create(&k, &record(Some("ann"), Duration::minutes(5)))
            .await
            .unwrap());
        sqlx::query(sql)
            .bind(k.as_bytes().as_slice())
            .execute(store.pool())
            .await
            .unwrap();
        keys.push(k);
    }
    let healthy = key();
    assert!(store
        .create(&healthy, &record(Some("ann"), Duration::minutes(5)))
        .await
        .unwrap());
    for (k, sql) in keys.iter().zip(&corruptions) {
        assert!(store.load(k).await.unwrap().is_none(), "loaded after {sql}");
    }
    let mut delta = Delta::default();
    delta.set("x", json!(1));
    assert!(
        !store.apply(&keys[0], &delta).await.unwrap(),
        "a delta on a JSON array"
    );
    let listed = store.list_user("ann").await.unwrap();
    assert_eq!(
        listed.iter().map(|s| s.key).collect::<Vec<_>>(),
        vec![healthy]
    );
}

#[tokio::test]
async fn nul_characters_survive_everywhere() {
    let store = store().await;
    let k = key();
    let mut record = record(Some("a\0b"), Duration::minutes(5));
    record
        .data
        .insert("k\0".into(), json!({"v": "x\0y\u{E000}"}));
    record.user_agent = Some("agent\0".into());
    assert!(store.create(&k, &record).await.unwrap());
    let mut delta = Delta::default();
    delta.set("\0", json!(["\0"]));
    assert!(store.apply(&k, &delta).await.unwrap());
    let loaded = store.load(&k).await.unwrap().unwrap();
    assert_eq!(loaded.data["k\0"], json!({"v": "x\0y\u{E000}"}));
    assert_eq!(loaded.data["\0"], json!(["\0"]));
    assert_eq!(loaded.user_agent.as_deref(), Some("agent\0"));
    assert_eq!(store.list_user("a\0b").await.unwrap().len(), 1);
    let mut removal = Delta::default();
    removal.remove("k\0");
    assert!(store.apply(&k, &removal).await.unwrap());
    assert!(!store
        .load(&k)
        .await
        .unwrap()
        .unwrap()
        .data
        .contains_key("k\0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cleanup_task_survives_errors_and_stops() {
    let store = store().await;
    let table = store.table().to_owned();
    let expired = |store: PostgresStore| async move {
        for _ in 0..30 {
            store
                .create(&key(), &record(Some("ann"), Duration::milliseconds(1)))
                .await
                .unwrap();
        }
    };
    expired(store.clone()).await;
    let cleanup = store
        .start_cleanup(StdDuration::from_millis(50), 7)
        .unwrap();
    wait_until(|| async { raw_rows(&store).await == 0 }).await;
    assert!(cleanup.stats().deleted >= 30);

    // Break the table under the running task: its batches fail, it keeps going.
    sqlx::query(&format!(
        "ALTER TABLE \"{table}\" RENAME TO \"{table}_parked\""
    ))
    .execute(store.pool())
    .await
    .unwrap();
    wait_until(|| async { cleanup.stats().failures >= 2 }).await;
    assert!(cleanup.is_running(), "the task died on an error");
    sqlx::query(&format!(
        "ALTER TABLE \"{table}_parked\" RENAME TO \"{table}\""
    ))
    .execute(store.pool())
    .await
    .unwrap();
    expired(store.clone()).await;
    wait_until(|| async { raw_rows(&store).await == 0 }).await;

    cleanup.stop().await;
    expired(store.clone()).await;
    tokio::time::sleep(StdDuration::from_millis(300)).await;
    assert_eq!(raw_rows(&store).await, 30, "the stopped task still deleted");
}

/// Polls `check` for up to 5 seconds.
async fn wait_until<F, Fut>(check: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..100 {
        if check().await {
            return;
        }
        tokio::time::sleep(StdDuration::from_millis(50)).await;
    }
    panic!("condition not reached within 5 seconds");
}

#[tokio::test]
async fn per_user_queries_and_cleanup_use_their_indexes() {
    let store = store().await;
    let t = store.table().to_owned();
    let mut conn = store.pool().acquire().await.unwrap();
    // An empty table is cheapest to scan; forbid that to see which index serves the query.
    sqlx::query("SET enable_seqscan = off")
        .execute(&mut *conn)
        .await
        .unwrap();
    let by_user = explain(
        &mut conn,
        format!("EXPLAIN SELECT * FROM \"{t}\" WHERE user_id = $1 AND expires_at > $2"),
    )
    .await;
    assert!(by_user.contains(&format!("{t}_user_idx")), "{by_user}");
    let expired = explain(
        &mut conn,
        format!(
            "EXPLAIN SELECT key FROM \"{t}\" WHERE user_id <> $1 AND expires_at <= $2 LIMIT 10"
        ),
    )
    .await;
    assert!(expired.contains(&format!("{t}_expires_idx")), "{expired}");
}

/// The plan of `sql`, bound to a user and the current time, as text.
async fn explain(conn: &mut sqlx::PgConnection, sql: String) -> String {
    let lines: Vec<String> = sqlx::query_scalar(&sql)
        .bind("ann")
        .bind(OffsetDateTime::now_utc())
        .fetch_all(conn)
        .await
        .expect("explain");
    lines.join("\n")
}

#[tokio::test]
async fn cleanup_removes_expired_rotation_tombstones_and_keeps_fresh_ones() {
    let store = store().await;
    let (from, to) = (key(), key());
    store
        .create(&from, &record(None, Duration::minutes(5)))
        .await
        .unwrap();
    assert!(store.rotate(&from, &to, &Delta::default()).await.unwrap());
    let tombstones = format!("\"{}_rotated\"", store.table());
    sqlx::query(&format!(
        "INSERT INTO {tombstones} (key, until) VALUES ($1, $2)"
    ))
    .bind(key().as_bytes().as_slice())
    .bind(OffsetDateTime::now_utc() - Duration::minutes(1))
    .execute(store.pool())
    .await
    .unwrap();
    store.delete_expired_batch(100).await.unwrap();
    let left: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {tombstones}"))
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(
        left, 1,
        "the expired tombstone stays, or the fresh one went"
    );
    assert!(
        store.rotated_at(&from).await.unwrap().is_some(),
        "the fresh tombstone went"
    );
}
