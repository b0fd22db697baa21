//! Sessions in SQL databases: `PostgresStore` (feature `postgres`) and `SqliteStore`
//! (feature `sqlite`), both on [sqlx](https://docs.rs/sqlx).
//!
//! Both keep one row per session in a table of their own (by default
//! `sessionware_sessions`), keyed by the 32-byte [`IdHash`](crate::IdHash) of the session
//! ID (never the ID itself), with an index on the user (for per-user listing and
//! revocation, costing O(that user's sessions)) and one on the expiry instant (for
//! cleanup). Every query treats a row past its expiry as absent, whether or not a cleanup
//! has removed it yet.
//!
//! **Concurrency.** A delta is one `UPDATE` statement that merges JSON inside the database
//! (PostgreSQL: `(data - removed_keys) || set_object` on `jsonb`; SQLite: `json_remove` then
//! `json_set`), guarded by `WHERE key = ? AND expires_at > now`. So concurrent requests
//! on different keys all survive, and a request still in flight after a logout finds no
//! row and writes nothing. A rotation is one `UPDATE ... SET key = new WHERE key = old`,
//! filed together with the old key's rotation tombstone (in the same statement on
//! PostgreSQL, the same `BEGIN IMMEDIATE` transaction on SQLite). A row that cannot be
//! decoded (data that is not a JSON object, a column of the wrong type) is logged and
//! treated as absent, and writes skip it.
//!
//! **Schema.** Call `migrate()` on every start. It creates or upgrades the sessions table
//! (`key` primary key, `user_id`, `data`, `created_at`, `last_seen`, `idle_deadline`,
//! `absolute_deadline`, a generated `expires_at`, `remember_me`, `ip`, `user_agent`; indexes
//! `<table>_user_idx` and `<table>_expires_idx`) and `<table>_rotated` (rotation
//! tombstones), records the version it reached in `sessionware_schema`, and is safe to
//! run from several processes at once (PostgreSQL serialises migrations with an advisory
//! lock inside a transaction, SQLite with `BEGIN IMMEDIATE`).
//!
//! **Cleanup.** Expired rows are invisible at once but take space until removed. Start
//! one background task per application with `start_cleanup(interval, batch_size)`: it
//! deletes in small batches (so it never holds long locks), logs and survives database
//! errors, and stops when its [`CleanupHandle`] is stopped or dropped.
//!
//! ```no_run
//! # #[cfg(feature = "sqlite")]
//! # async fn run() -> Result<(), sessionware::Error> {
//! use std::time::Duration;
//! use sessionware::{SessionLayer, SqliteStore};
//!
//! let store = SqliteStore::open("sessions.db").await?;
//! store.migrate().await?;
//! // Keep the handle for as long as the application runs: dropping it stops the task.
//! let cleanup = store.start_cleanup(Duration::from_secs(300), 1_000)?;
//! let layer = SessionLayer::new(store.clone());
//! # drop((cleanup, layer));
//! # Ok(()) }
//! ```
//!
//! With PostgreSQL the same, from a URL:
//!
//! ```no_run
//! # #[cfg(feature = "postgres")]
//! # async fn run() -> Result<(), sessionware::Error> {
//! use sessionware::PostgresStore;
//!
//! let store = PostgresStore::connect("postgres://app@db.internal/app")
//!     .await?
//!     .with_table("web_sessions")?;
//! store.migrate().await?;
//! # Ok(()) }
//! ```

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use time::OffsetDateTime;
use tokio::sync::watch;

use crate::error::Error;

#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;

#[cfg(feature = "postgres")]
pub use postgres::PostgresStore;
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteStore;

/// The table a store uses unless told otherwise.
pub const DEFAULT_TABLE: &str = "sessionware_sessions";

/// The table in which each session table's schema version is kept.
const SCHEMA_TABLE: &str = "sessionware_schema";

/// How many rows [`SessionStore::delete_expired`](crate::SessionStore::delete_expired)
/// deletes per statement.
const DEFAULT_BATCH: u32 = 1_000;

/// The longest table name accepted: PostgreSQL identifiers stop at 63 bytes, and index
/// names add a suffix to the table name.
const MAX_TABLE_NAME: usize = 48;

/// A table name checked against a strict pattern (`[A-Za-z_][A-Za-z0-9_]*`, at most 48
/// characters, and not the name of our schema-version table), so it can be spliced into
/// SQL: placeholders cannot stand for identifiers.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct TableName(Arc<str>);

impl TableName {
    pub(crate) fn new(name: &str) -> Result<Self, Error> {
        if is_valid_table_name(name) {
            Ok(Self(name.into()))
        } else {
            Err(Error::config(
                "invalid session table name: use 1 to 48 ASCII letters, digits or underscores, \
                 not starting with a digit",
            ))
        }
    }

    pub(crate) fn default_table() -> Self {
        Self(DEFAULT_TABLE.into())
    }

    /// The bare name, as recorded in the schema table.
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }

    /// The name quoted as an SQL identifier (quoting keeps its case and allows reserved
    /// words; validation already ruled out quotes inside it).
    pub(crate) fn quoted(&self) -> String {
        format!("\"{}\"", self.0)
    }

    /// The quoted name of the table of rotation tombstones that goes with this one.
    pub(crate) fn rotated(&self) -> String {
        format!("\"{}_rotated\"", self.0)
    }

    /// The quoted name of an index of this table, e.g. `"sessions_user_idx"`.
    pub(crate) fn index(&self, suffix: &str) -> String {
        format!("\"{}_{suffix}_idx\"", self.0)
    }
}

impl fmt::Debug for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

/// Whether `name` may be used as a session table name. Public for tests and for
/// applications that validate configuration early.
pub fn is_valid_table_name(name: &str) -> bool {
    let mut chars = name.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    name.len() <= MAX_TABLE_NAME
        && (first.is_ascii_alphabetic() || first == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.eq_ignore_ascii_case(SCHEMA_TABLE)
}

/// The migration steps a table at schema version `current` still needs, of all `steps`
/// (step `n` brings a table to version `n + 1`). `None` when the table has a newer schema
/// than this version of sessionware knows: nothing is run or recorded then, and a warning
/// says so, so an older release rolled back in front of a newer table leaves it alone.
pub(crate) fn pending_migrations<'a>(
    table: &TableName,
    current: i64,
    steps: &'a [Vec<String>],
) -> Option<&'a [Vec<String>]> {
    let latest = i64::try_from(steps.len()).unwrap_or(i64::MAX);
    if current > latest {
        tracing::warn!(
            table = table.as_str(),
            current,
            latest,
            "session table has a newer schema than this version of sessionware knows"
        );
        return None;
    }
    Some(&steps[usize::try_from(current).unwrap_or(0)..])
}

/// Turns an sqlx error into ours: connection trouble is [`StoreUnavailable`], anything the
/// database answered is [`Store`].
///
/// [`StoreUnavailable`]: crate::ErrorKind::StoreUnavailable
/// [`Store`]: crate::ErrorKind::Store
pub(crate) fn sql_error(err: sqlx::Error) -> Error {
    match &err {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => Error::unavailable(err),
        sqlx::Error::Database(db) if is_transient(db.code().as_deref(), engine_of(&**db)) => {
            Error::unavailable(err)
        }
        _ => Error::store(err),
    }
}

/// The database that answered: their error codes overlap (a PostgreSQL SQLSTATE such as
/// 42501 is all digits, like SQLite's result codes), so each is read by its own rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Engine {
    Postgres,
    // Without the `sqlite` feature no SQLite error can arrive.
    #[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
    Sqlite,
}

fn engine_of(db: &(dyn sqlx::error::DatabaseError + 'static)) -> Engine {
    #[cfg(feature = "sqlite")]
    if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
        return Engine::Sqlite;
    }
    let _ = db;
    Engine::Postgres
}

/// Database error codes that mean "try again later" rather than "this query is wrong":
/// PostgreSQL connection exceptions (08xxx), insufficient resources (53xxx) and shutdowns
/// (57P0x); SQLite `BUSY` (5) and `LOCKED` (6), including their extended codes.
fn is_transient(code: Option<&str>, engine: Engine) -> bool {
    let Some(code) = code else { return false };
    match engine {
        Engine::Postgres => {
            code.starts_with("08") || code.starts_with("53") || code.starts_with("57P0")
        }
        Engine::Sqlite => code
            .parse::<i32>()
            .is_ok_and(|code| matches!(code & 0xff, 5 | 6)),
    }
}

/// What one cleanup batch deleted.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Batch {
    /// Expired sessions.
    pub(crate) sessions: u64,
    /// Expired rotation tombstones.
    pub(crate) tombstones: u64,
}

impl Batch {
    /// Whether either kind of row may have more left to delete.
    fn was_full(self, limit: u32) -> bool {
        self.sessions >= u64::from(limit) || self.tombstones >= u64::from(limit)
    }
}

/// What the cleanup task needs of a store: one batch of expired rows deleted.
pub(crate) trait ExpiredBatches: Clone + Send + Sync + 'static {
    /// Deletes up to `limit` sessions and up to `limit` rotation tombstones that expired by
    /// `now`.
    fn delete_expired_batch_at(
        &self,
        now: OffsetDateTime,
        limit: u32,
    ) -> impl std::future::Future<Output = Result<Batch, Error>> + Send;
}

/// Deletes expired rows batch after batch until a batch comes back short; returns how
/// many sessions were deleted.
pub(crate) async fn delete_all_expired<S: ExpiredBatches>(store: &S) -> Result<u64, Error> {
    let now = OffsetDateTime::now_utc();
    let mut sessions = 0;
    loop {
        let batch = store.delete_expired_batch_at(now, DEFAULT_BATCH).await?;
        sessions += batch.sessions;
        if !batch.was_full(DEFAULT_BATCH) {
            return Ok(sessions);
        }
        tokio::task::yield_now().await;
    }
}

/// A running cleanup task, from `start_cleanup` on `SqliteStore` or `PostgresStore`.
///
/// The task runs one pass at once and then one every interval; a pass deletes expired
/// rows in batches until a batch comes back short. A failed batch (the database
/// unreachable, say) is logged with `tracing` and counted, and the task carries on at the
/// next interval.
///
/// Stop it with [`stop`](Self::stop), which waits for the batch in progress to finish.
/// Dropping the handle also stops it (after the batch in progress), without waiting: keep
/// the handle for as long as cleanup should run.
#[must_use = "dropping a CleanupHandle stops the cleanup task"]
pub struct CleanupHandle {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    stats: Arc<Counters>,
}

/// What a cleanup task has done so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct CleanupStats {
    /// Passes finished without error.
    pub passes: u64,
    /// Rows deleted (expired sessions and expired rotation tombstones), over all passes.
    pub deleted: u64,
    /// Batches that failed (each one ends its pass early; the next pass retries).
    pub failures: u64,
    /// The longest a single batch took.
    pub longest_batch: Duration,
}

#[derive(Default)]
struct Counters {
    passes: AtomicU64,
    deleted: AtomicU64,
    failures: AtomicU64,
    longest_batch_micros: AtomicU64,
}

impl CleanupHandle {
    /// What the task has done so far.
    pub fn stats(&self) -> CleanupStats {
        let stats = &self.stats;
        CleanupStats {
            passes: stats.passes.load(Ordering::Relaxed),
            deleted: stats.deleted.load(Ordering::Relaxed),
            failures: stats.failures.load(Ordering::Relaxed),
            longest_batch: Duration::from_micros(
                stats.longest_batch_micros.load(Ordering::Relaxed),
            ),
        }
    }

    /// Whether the task is still running.
    pub fn is_running(&self) -> bool {
        !self.task.is_finished()
    }

    /// Stops the task and waits until the batch in progress, if any, has finished.
    pub async fn stop(self) {
        let Self { stop, task, .. } = self;
        // A send error means the task already ended; there is nothing left to stop.
        let _ = stop.send(true);
        if let Err(err) = task.await {
            tracing::error!(error = %err, "session cleanup task ended abnormally");
        }
    }
}

impl fmt::Debug for CleanupHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CleanupHandle")
            .field("running", &self.is_running())
            .field("stats", &self.stats())
            .finish()
    }
}

/// Starts the cleanup task for `store` on the current Tokio runtime.
pub(crate) fn start_cleanup<S: ExpiredBatches>(
    store: S,
    interval: Duration,
    batch_size: u32,
) -> Result<CleanupHandle, Error> {
    let runtime = tokio::runtime::Handle::try_current()
        .map_err(|_| Error::config("start_cleanup must be called inside a Tokio runtime"))?;
    if batch_size == 0 {
        return Err(Error::config("the cleanup batch size must be at least 1"));
    }
    let (stop, stopped) = watch::channel(false);
    let stats = Arc::new(Counters::default());
    let task = runtime.spawn(cleanup_loop(
        store,
        interval,
        batch_size,
        stopped,
        stats.clone(),
    ));
    Ok(CleanupHandle { stop, task, stats })
}

async fn cleanup_loop<S: ExpiredBatches>(
    store: S,
    interval: Duration,
    batch_size: u32,
    mut stopped: watch::Receiver<bool>,
    stats: Arc<Counters>,
) {
    loop {
        cleanup_pass(&store, batch_size, &stopped, &stats).await;
        // Either a stop request or a dropped handle ends the wait early (and the task);
        // the timeout elapsing means the next pass is due.
        if tokio::time::timeout(interval, stopped.changed())
            .await
            .is_ok()
        {
            return;
        }
    }
}

async fn cleanup_pass<S: ExpiredBatches>(
    store: &S,
    batch_size: u32,
    stopped: &watch::Receiver<bool>,
    stats: &Counters,
) {
    let now = OffsetDateTime::now_utc();
    let mut deleted_this_pass = 0;
    loop {
        if *stopped.borrow() || stopped.has_changed().is_err() {
            return;
        }
        let started = Instant::now();
        let result = store.delete_expired_batch_at(now, batch_size).await;
        let took = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        stats
            .longest_batch_micros
            .fetch_max(took, Ordering::Relaxed);
        match result {
            Ok(batch) => {
                let deleted = batch.sessions + batch.tombstones;
                stats.deleted.fetch_add(deleted, Ordering::Relaxed);
                deleted_this_pass += deleted;
                if !batch.was_full(batch_size) {
                    stats.passes.fetch_add(1, Ordering::Relaxed);
                    if deleted_this_pass > 0 {
                        tracing::debug!(deleted = deleted_this_pass, "expired sessions removed");
                    }
                    return;
                }
            }
            Err(err) => {
                stats.failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %err, "session cleanup batch failed; retrying next interval");
                return;
            }
        }
        // Between batches, let requests waiting on the same locks (and executor) through.
        tokio::task::yield_now().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_run_from_the_current_version_and_never_downgrade() {
        let table = TableName::default_table();
        let steps: Vec<Vec<String>> = vec![vec!["one".into()], vec!["two".into()]];
        fn names(pending: Option<&[Vec<String>]>) -> Option<Vec<&str>> {
            pending.map(|steps| steps.iter().map(|step| step[0].as_str()).collect())
        }
        assert_eq!(
            names(pending_migrations(&table, 0, &steps)),
            Some(vec!["one", "two"])
        );
        assert_eq!(
            names(pending_migrations(&table, 1, &steps)),
            Some(vec!["two"])
        );
        assert_eq!(names(pending_migrations(&table, 2, &steps)), Some(vec![]));
        // A table a newer release migrated is left alone.
        assert_eq!(names(pending_migrations(&table, 3, &steps)), None);
    }

    #[test]
    fn table_names_follow_a_strict_pattern() {
        for good in ["sessions", "_s", "Web_Sessions_2", &"a".repeat(48)] {
            assert!(TableName::new(good).is_ok(), "{good}");
        }
        let too_long = "a".repeat(49);
        for bad in [
            "",
            "1sessions",
            "sessions; DROP TABLE users",
            "s\"x",
            "public.sessions",
            "sessions-2",
            "séssions",
            "s x",
            "s\0",
            "Sessionware_Schema",
            &too_long,
        ] {
            assert!(TableName::new(bad).is_err(), "accepted {bad:?}");
        }
        assert_eq!(TableName::new("s").unwrap().quoted(), "\"s\"");
        assert_eq!(TableName::new("s").unwrap().index("user"), "\"s_user_idx\"");
    }

    #[test]
    fn transient_codes_are_recognised() {
        use Engine::{Postgres, Sqlite};
        assert!(is_transient(Some("08006"), Postgres));
        assert!(is_transient(Some("57P01"), Postgres));
        assert!(is_transient(Some("53300"), Postgres));
        assert!(is_transient(Some("5"), Sqlite));
        assert!(is_transient(Some("517"), Sqlite)); // SQLITE_BUSY_SNAPSHOT
        assert!(!is_transient(Some("23505"), Postgres));
        assert!(!is_transient(Some("1"), Sqlite));
        assert!(!is_transient(None, Postgres));
        // SQLSTATEs that are all digits are not SQLite codes: a missing privilege or a bad
        // character is a fault to fix, not an outage to wait out.
        assert!(!is_transient(Some("42501"), Postgres));
        assert!(!is_transient(Some("22021"), Postgres));
        assert!(!is_transient(Some("22022"), Postgres));
        // Nor is a SQLite code a SQLSTATE.
        assert!(!is_transient(Some("08006"), Sqlite));
    }
}
