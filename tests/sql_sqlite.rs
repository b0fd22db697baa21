//! What is particular to `SqliteStore`: file permissions, WAL mode, migrations, table
//! names, corrupt rows, concurrent writers and the cleanup task.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration as StdDuration;

use serde_json::json;
use sessionware::{Delta, ErrorKind, Id, IdHash, Record, SessionStore, SqliteStore};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use time::{Duration, OffsetDateTime};

fn temp_db() -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!("sessionware-sql-sqlite-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(format!("t{}.db", NEXT.fetch_add(1, Ordering::Relaxed)));
    let _ = std::fs::remove_file(&path);
    path
}

async fn store() -> SqliteStore {
    let store = SqliteStore::open(temp_db()).await.expect("open");
    store.migrate().await.expect("migrate");
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

async fn raw_rows(store: &SqliteStore) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM sessionware_sessions")
        .fetch_one(store.pool())
        .await
        .expect("count rows")
}

#[cfg(unix)]
#[tokio::test]
async fn the_database_file_is_private_to_its_owner() {
    use std::os::unix::fs::PermissionsExt;
    let path = temp_db();
    let store = SqliteStore::open(&path).await.unwrap();
    store.migrate().await.unwrap();
    assert!(store
        .create(&key(), &record(None, Duration::minutes(5)))
        .await
        .unwrap());
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o600, "database file");
    let wal = PathBuf::from(format!("{}-wal", path.display()));
    assert!(wal.exists(), "WAL mode keeps a -wal file");
    assert_eq!(mode(&wal), 0o600, "WAL file");
    let shm = PathBuf::from(format!("{}-shm", path.display()));
    assert_eq!(mode(&shm), 0o600, "shared-memory file");
}

/// A database another writer keeps locked past the busy timeout is an outage to wait out
/// (503), not a fault to fix (500): SQLite's codes are read as SQLite's, not as SQLSTATEs.
#[tokio::test]
async fn a_database_locked_past_the_busy_timeout_is_unavailable() {
    let path = temp_db();
    let owner = SqliteStore::open(&path).await.expect("open");
    owner.migrate().await.expect("migrate");
    let options = SqliteConnectOptions::new()
        .filename(&path)
        .busy_timeout(StdDuration::from_millis(50));
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .expect("a second connection");
    let impatient = SqliteStore::from_pool(pool);
    let mut writer = owner.pool().acquire().await.expect("a connection");
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut *writer)
        .await
        .expect("take the write lock");
    let err = impatient
        .create(&key(), &record(None, Duration::hours(1)))
        .await
        .expect_err("the write lock is taken");
    assert_eq!(err.kind(), ErrorKind::StoreUnavailable, "{err:?}");
    assert_eq!(err.status(), 503);
    sqlx::query("ROLLBACK")
        .execute(&mut *writer)
        .await
        .expect("release the lock");
}

/// A tombstone row whose time is not an integer is corrupt: it dates no rotation, and is
/// no error (which every request carrying that ID would otherwise get).
#[tokio::test]
async fn a_corrupt_tombstone_dates_no_rotation() {
    let store = store().await;
    let key = key();
    sqlx::query("INSERT INTO sessionware_sessions_rotated (key, until) VALUES (?, 'garbage')")
        .bind(key.as_bytes().as_slice())
        .execute(store.pool())
        .await
        .expect("insert a corrupt tombstone");
    assert_eq!(store.rotated_at(&key).await.unwrap(), None);
}

#[tokio::test]
async fn open_sets_wal_mode_and_a_busy_timeout() {
    let store = store().await;
    let journal: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(journal, "wal");
    let busy: i64 = sqlx::query_scalar("PRAGMA busy_timeout")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert!(busy >= 1000, "busy timeout {busy} ms");
}

#[tokio::test]
async fn migrate_is_idempotent_and_safe_to_run_concurrently() {
    let path = temp_db();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let path = path.clone();
        tasks.push(tokio::spawn(async move {
            let store = SqliteStore::open(&path).await?;
            store.migrate().await?;
            store.migrate().await
        }));
    }
    for task in tasks {
        task.await.unwrap().expect("every migration succeeds");
    }
    let store = SqliteStore::open(&path).await.unwrap();
    let version: i64 =
        sqlx::query_scalar("SELECT version FROM sessionware_schema WHERE table_name = ?")
            .bind("sessionware_sessions")
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert_eq!(version, 1);
    let indexes: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'sessionware_sessions' \
         AND name NOT LIKE 'sqlite_%' ORDER BY name",
    )
    .fetch_all(store.pool())
    .await
    .unwrap();
    assert_eq!(
        indexes,
        [
            "sessionware_sessions_expires_idx",
            "sessionware_sessions_user_idx"
        ]
    );
}

#[tokio::test]
async fn table_names_are_validated_and_custom_tables_work() {
    let store = SqliteStore::open(temp_db()).await.unwrap();
    for bad in [
        "x; DROP TABLE y",
        "\"q\"",
        "",
        "9lives",
        "a.b",
        "sessionware_schema",
    ] {
        let err = store.clone().with_table(bad).expect_err(bad);
        assert_eq!(err.kind(), ErrorKind::Config, "{bad}");
    }
    let custom = store.with_table("Web_Sessions").unwrap();
    custom.migrate().await.unwrap();
    let k = key();
    assert!(custom
        .create(&k, &record(None, Duration::minutes(5)))
        .await
        .unwrap());
    let in_custom: i64 = sqlx::query_scalar("SELECT count(*) FROM \"Web_Sessions\"")
        .fetch_one(custom.pool())
        .await
        .unwrap();
    assert_eq!(in_custom, 1);
}

#[tokio::test]
async fn corrupt_rows_are_absent_never_a_crash() {
    let store = store().await;
    let mut keys = Vec::new();
    let corruptions = [
        "UPDATE sessionware_sessions SET data = '{not json' WHERE key = ?",
        "UPDATE sessionware_sessions SET data = '[1, 2]' WHERE key = ?",
        "UPDATE sessionware_sessions SET created_at = 'garbage' WHERE key = ?",
        "UPDATE sessionware_sessions SET remember_me = x'00ff' WHERE key = ?",
        "UPDATE sessionware_sessions SET user_agent = x'ff00' WHERE key = ?",
    ];
    for sql in corruptions {
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
    // A key of the wrong length, inserted by hand.
    sqlx::query(
        "INSERT INTO sessionware_sessions (key, user_id, data, created_at, last_seen, \
         idle_deadline, absolute_deadline) VALUES (x'0102', 'ann', '{}', 0, 0, ?, ?)",
    )
    .bind(i64::MAX / 2)
    .bind(i64::MAX / 2)
    .execute(store.pool())
    .await
    .unwrap();
    let healthy = key();
    assert!(store
        .create(&healthy, &record(Some("ann"), Duration::minutes(5)))
        .await
        .unwrap());

    for (k, sql) in keys.iter().zip(corruptions) {
        assert!(store.load(k).await.unwrap().is_none(), "loaded after {sql}");
    }
    let mut delta = Delta::default();
    delta.set("x", json!(1));
    for k in &keys[..2] {
        assert!(
            !store.apply(k, &delta).await.unwrap(),
            "a delta on bad JSON"
        );
    }
    let listed = store.list_user("ann").await.unwrap();
    assert_eq!(
        listed.iter().map(|s| s.key).collect::<Vec<_>>(),
        vec![healthy]
    );
    assert!(store.load(&healthy).await.unwrap().is_some());
    // Revocation still removes corrupt rows.
    assert!(store.delete_user("ann", None).await.unwrap() >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_writers_never_see_database_is_locked() {
    let path = temp_db();
    let one = SqliteStore::open(&path).await.unwrap();
    one.migrate().await.unwrap();
    let two = SqliteStore::open(&path).await.unwrap();
    let sessions: Vec<IdHash> = (0..10).map(|_| key()).collect();
    for k in &sessions {
        assert!(one
            .create(k, &record(Some("ann"), Duration::minutes(5)))
            .await
            .unwrap());
    }
    let mut tasks = Vec::new();
    for i in 0..400 {
        let store = if i % 2 == 0 { one.clone() } else { two.clone() };
        let k = sessions[i % sessions.len()];
        tasks.push(tokio::spawn(async move {
            let mut delta = Delta::default();
            delta.set(format!("k{i}"), json!(i));
            if i % 50 == 7 {
                let to = Id::random().unwrap().hash();
                let _ = store.rotate(&k, &to, &delta).await?;
                return Ok(());
            }
            store.apply(&k, &delta).await.map(|_| ())
        }));
    }
    for task in tasks {
        task.await
            .unwrap()
            .expect("no write fails under concurrency");
    }
}

#[tokio::test]
async fn delete_expired_works_in_batches_and_spares_live_rows() {
    let store = store().await;
    let now = OffsetDateTime::now_utc();
    // 2,500 expired rows and 10 live ones, seeded in one statement.
    sqlx::query(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2500) \
         INSERT INTO sessionware_sessions (key, data, created_at, last_seen, idle_deadline, \
            absolute_deadline) \
         SELECT randomblob(32), '{}', ?1, ?1, ?1, ?1 FROM n",
    )
    .bind((now - Duration::minutes(1)).unix_timestamp() * 1000)
    .execute(store.pool())
    .await
    .unwrap();
    for _ in 0..10 {
        store
            .create(&key(), &record(None, Duration::minutes(5)))
            .await
            .unwrap();
    }
    assert_eq!(store.delete_expired_batch(1000).await.unwrap(), 1000);
    assert_eq!(store.delete_expired().await.unwrap(), 1500);
    assert_eq!(raw_rows(&store).await, 10);
    assert_eq!(store.count().await.unwrap(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cleanup_task_survives_errors_and_stops() {
    let store = store().await;
    let expired = |store: SqliteStore| async move {
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
    assert!(cleanup.stats().passes >= 1);

    // Break the table under the running task: its batches fail, it keeps going.
    sqlx::query("ALTER TABLE sessionware_sessions RENAME TO parked")
        .execute(store.pool())
        .await
        .unwrap();
    wait_until(|| async { cleanup.stats().failures >= 2 }).await;
    assert!(cleanup.is_running(), "the task died on an error");
    sqlx::query("ALTER TABLE parked RENAME TO sessionware_sessions")
        .execute(store.pool())
        .await
        .unwrap();
    expired(store.clone()).await;
    wait_until(|| async { raw_rows(&store).await == 0 }).await;

    cleanup.stop().await;
    expired(store.clone()).await;
    tokio::time::sleep(StdDuration::from_millis(300)).await;
    assert_eq!(raw_rows(&store).await, 30, "the stopped task still deleted");

    // Dropping the handle stops the task too.
    let dropped = store
        .start_cleanup(StdDuration::from_millis(50), 100)
        .unwrap();
    wait_until(|| async { raw_rows(&store).await == 0 }).await;
    drop(dropped);
    tokio::time::sleep(StdDuration::from_millis(100)).await;
    expired(store.clone()).await;
    tokio::time::sleep(StdDuration::from_millis(300)).await;
    assert_eq!(raw_rows(&store).await, 30, "the dropped task still deleted");
}

#[tokio::test]
async fn cleanup_refuses_a_zero_batch() {
    let store = store().await;
    let err = store
        .start_cleanup(StdDuration::from_secs(1), 0)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
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
    let plan = |sql: &'static str| {
        let pool = store.pool().clone();
        async move {
            let rows: Vec<(i64, i64, i64, String)> = sqlx::query_as(sql)
                .bind("ann")
                .bind(0_i64)
                .fetch_all(&pool)
                .await
                .expect("explain");
            rows.into_iter()
                .map(|row| row.3)
                .collect::<Vec<_>>()
                .join("; ")
        }
    };
    let by_user = plan(
        "EXPLAIN QUERY PLAN SELECT * FROM sessionware_sessions WHERE user_id = ? AND expires_at > ?",
    )
    .await;
    assert!(
        by_user.contains("sessionware_sessions_user_idx"),
        "{by_user}"
    );
    let expired = plan(
        "EXPLAIN QUERY PLAN SELECT key FROM sessionware_sessions WHERE user_id <> ? AND expires_at <= ? LIMIT 10",
    )
    .await;
    assert!(
        expired.contains("sessionware_sessions_expires_idx"),
        "{expired}"
    );
}

#[tokio::test]
async fn keys_with_path_syntax_are_set_and_removed_exactly() {
    let store = store().await;
    let k = key();
    let mut record = record(None, Duration::minutes(5));
    record.data.insert("keep".into(), json!("me"));
    assert!(store.create(&k, &record).await.unwrap());
    let names = [
        "a\"b",
        "back\\slash",
        "dots.and[0]",
        "$",
        "$.x",
        "line\nbreak",
        "tab\t\u{1}",
        "\\u0041",
        "🦀 \u{E000}",
    ];
    let mut delta = Delta::default();
    for (i, name) in names.iter().enumerate() {
        delta.set(*name, json!({"i": i, "nested": {"n": null}}));
    }
    delta.set("null", serde_json::Value::Null);
    assert!(store.apply(&k, &delta).await.unwrap());
    let data = store.load(&k).await.unwrap().unwrap().data;
    for (i, name) in names.iter().enumerate() {
        assert_eq!(
            data.get(name),
            Some(&json!({"i": i, "nested": {"n": null}})),
            "{name:?}"
        );
    }
    assert_eq!(
        data.get("null"),
        Some(&serde_json::Value::Null),
        "a null is a value"
    );
    assert_eq!(data.len(), names.len() + 2);

    // Replacing an object replaces it whole (no merging), and removals hit only their key.
    let mut delta = Delta::default();
    delta.set("a\"b", json!({"other": 1}));
    for name in &names[1..] {
        delta.remove(*name);
    }
    assert!(store.apply(&k, &delta).await.unwrap());
    let data = store.load(&k).await.unwrap().unwrap().data;
    assert_eq!(data["a\"b"], json!({"other": 1}));
    assert_eq!(data.len(), 3, "{data:?}");
    assert_eq!(data["keep"], "me");
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
    let stale = key();
    sqlx::query("INSERT INTO sessionware_sessions_rotated (key, until) VALUES (?, ?)")
        .bind(stale.as_bytes().as_slice())
        .bind((OffsetDateTime::now_utc() - Duration::minutes(1)).unix_timestamp() * 1000)
        .execute(store.pool())
        .await
        .unwrap();
    store.delete_expired_batch(100).await.unwrap();
    assert!(store.rotated_at(&stale).await.unwrap().is_none());
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM sessionware_sessions_rotated")
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
