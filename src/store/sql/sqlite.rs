//! [`SqliteStore`]: sessions in an SQLite file.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::Row;
use time::OffsetDateTime;

use super::{
    delete_all_expired, pending_migrations, sql_error, Batch, CleanupHandle, ExpiredBatches,
    TableName, SCHEMA_TABLE,
};
use crate::data::SessionData;
use crate::error::Error;
use crate::id::IdHash;
use crate::millis::{from_unix_millis, unix_millis};
use crate::record::{Delta, Record, SessionInfo};
use crate::store::{check_delta_depth, check_record_depth, SessionStore, ROTATION_TOMBSTONE};

/// How long a statement waits for another connection's write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections in a pool [`SqliteStore::open`] makes. SQLite runs one writer at a time
/// whatever the pool size; more connections serve more concurrent readers (WAL mode).
const POOL_SIZE: u32 = 8;

/// Every column a [`Record`] is read from, in the order [`decode_record`] expects.
const COLUMNS: &str =
    "key, user_id, data, created_at, last_seen, idle_deadline, absolute_deadline, remember_me, \
     ip, user_agent";

/// A session store in an SQLite database file (feature `sqlite`).
///
/// Made for single-server deployments that want sessions to survive restarts with nothing
/// to install. [`open`](Self::open) creates the file if missing, readable and writable by
/// its owner only (mode 0600 on Unix), and sets WAL mode (readers never wait for the
/// writer) and a busy timeout of 10 seconds (writers queue for SQLite's single write lock
/// instead of failing). Each write is a single statement, and a rotation one
/// `BEGIN IMMEDIATE` transaction (it takes the write lock first), so no transaction ever
/// has to upgrade a read lock to a write lock, which is what produces "database is locked"
/// errors under concurrency.
///
/// Instants are kept as milliseconds since the Unix epoch. Cheap to clone: clones share
/// one connection pool.
#[derive(Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    table: TableName,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("table", &self.table)
            .finish_non_exhaustive()
    }
}

/// Connects a pool, retrying while the file is busy. The first connection to a new file
/// switches it to WAL mode, which needs the file to itself for a moment: several servers
/// (or stores) opening one new file at once can meet "database is locked" there, before
/// any busy timeout applies. That is retried, with a short backoff, for up to the busy
/// timeout; any other error is returned at once.
async fn connect(options: SqliteConnectOptions) -> Result<SqlitePool, Error> {
    let started = std::time::Instant::now();
    let mut pause = Duration::from_millis(5);
    loop {
        let attempt = SqlitePoolOptions::new()
            .max_connections(POOL_SIZE)
            .connect_with(options.clone())
            .await;
        match attempt {
            Ok(pool) => return Ok(pool),
            Err(err) if is_busy(&err) && started.elapsed() < BUSY_TIMEOUT => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(100));
            }
            Err(err) => return Err(sql_error(err)),
        }
    }
}

/// Whether `err` is SQLite's `SQLITE_BUSY` (primary code 5, whatever its extended code).
fn is_busy(err: &sqlx::Error) -> bool {
    let sqlx::Error::Database(db) = err else {
        return false;
    };
    db.code()
        .and_then(|code| code.parse::<i32>().ok())
        .is_some_and(|code| code & 0xff == 5)
}

impl SqliteStore {
    /// Opens (creating it if missing, with owner-only permissions) the database file at
    /// `path`, in WAL mode with a busy timeout. Call [`migrate`](Self::migrate) next.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        create_private_file(path)?;
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // In WAL mode NORMAL never corrupts the file; a power cut may lose the last
            // few commits, which for sessions means a few users logging in again.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT);
        Ok(Self::from_pool(connect(options).await?))
    }

    /// A store on a pool you configured yourself. Set WAL mode and a busy timeout on its
    /// connect options (as [`open`](Self::open) does), or concurrent writers will see
    /// "database is locked" errors.
    pub fn from_pool(pool: SqlitePool) -> Self {
        Self {
            pool,
            table: TableName::default_table(),
        }
    }

    /// Uses the table `name` instead of `sessionware_sessions`. Fails unless the name is
    /// 1 to 48 ASCII letters, digits or underscores, not starting with a digit.
    pub fn with_table(mut self, name: &str) -> Result<Self, Error> {
        self.table = TableName::new(name)?;
        Ok(self)
    }

    /// The pool this store runs on.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// The table this store keeps sessions in.
    pub fn table(&self) -> &str {
        self.table.as_str()
    }

    /// Creates or upgrades the sessions table and its indexes. Safe to run on every start,
    /// from several processes at once: it runs in one `BEGIN IMMEDIATE` transaction, so
    /// migrations queue behind each other, and records the schema version it reached in
    /// the `sessionware_schema` table.
    pub async fn migrate(&self) -> Result<(), Error> {
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(sql_error)?;
        sqlx::query(&format!(
            "CREATE TABLE IF NOT EXISTS {SCHEMA_TABLE} (\
                table_name TEXT PRIMARY KEY NOT NULL, \
                version INTEGER NOT NULL, \
                updated_at INTEGER NOT NULL)"
        ))
        .execute(&mut *tx)
        .await
        .map_err(sql_error)?;
        let current: i64 = sqlx::query_scalar(&format!(
            "SELECT version FROM {SCHEMA_TABLE} WHERE table_name = ?"
        ))
        .bind(self.table.as_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(sql_error)?
        .unwrap_or(0);
        let steps = migrations(&self.table);
        let latest = steps.len() as i64;
        let Some(pending) = pending_migrations(&self.table, current, &steps) else {
            return tx.commit().await.map_err(sql_error);
        };
        for step in pending {
            for statement in step {
                sqlx::query(statement)
                    .execute(&mut *tx)
                    .await
                    .map_err(sql_error)?;
            }
        }
        if current < latest {
            sqlx::query(&format!(
                "INSERT INTO {SCHEMA_TABLE} (table_name, version, updated_at) VALUES (?, ?, ?) \
                 ON CONFLICT (table_name) DO UPDATE SET \
                 version = excluded.version, updated_at = excluded.updated_at"
            ))
            .bind(self.table.as_str())
            .bind(latest)
            .bind(unix_millis(OffsetDateTime::now_utc()))
            .execute(&mut *tx)
            .await
            .map_err(sql_error)?;
            tracing::info!(
                table = self.table.as_str(),
                version = latest,
                "session table migrated"
            );
        }
        tx.commit().await.map_err(sql_error)
    }

    /// Starts a background task that deletes expired sessions every `interval`, at most
    /// `batch_size` rows per statement. See [`CleanupHandle`] for how it stops. Fails
    /// outside a Tokio runtime or for a batch size of 0.
    pub fn start_cleanup(
        &self,
        interval: Duration,
        batch_size: u32,
    ) -> Result<CleanupHandle, Error> {
        super::start_cleanup(self.clone(), interval, batch_size)
    }

    /// Deletes at most `limit` expired sessions (and at most `limit` expired rotation
    /// tombstones), one statement each; returns how many sessions.
    pub async fn delete_expired_batch(&self, limit: u32) -> Result<u64, Error> {
        let batch = self
            .delete_expired_batch_at(OffsetDateTime::now_utc(), limit)
            .await?;
        Ok(batch.sessions)
    }

    /// The `UPDATE` that applies `delta` to the live row under `key` (and moves it to
    /// `move_to`, for a rotation), with its arguments bound.
    async fn update<'c>(
        &self,
        executor: impl sqlx::SqliteExecutor<'c>,
        key: &IdHash,
        move_to: Option<&IdHash>,
        delta: &Delta,
    ) -> Result<bool, Error> {
        // The JSON merge happens inside the statement, on the row as it is when the write
        // lock is held: no read-modify-write in this process. `json_set` with a `json()`
        // argument replaces a key's value whole (unlike `json_patch`, which would merge
        // nested objects and treat a null as a removal).
        // A function takes at most MAX_FUNCTION_ARGS arguments: a delta naming more keys
        // nests calls, each taking the next run of keys, so they still apply in order.
        let mut data = String::from("CASE WHEN ? THEN '{}' ELSE data END");
        let removals: Vec<&str> = delta.removals().collect();
        if !delta.clear {
            for run in removals.chunks(MAX_FUNCTION_ARGS - 1) {
                data = format!("json_remove({data}{})", ", ?".repeat(run.len()));
            }
        }
        let sets: Vec<(&str, &Value)> = delta.sets().collect();
        for run in sets.chunks((MAX_FUNCTION_ARGS - 1) / 2) {
            data = format!("json_set({data}{})", ", ?, json(?)".repeat(run.len()));
        }
        let move_clause = if move_to.is_some() { "key = ?, " } else { "" };
        let sql = format!(
            "UPDATE {table} SET {move_clause}\
                data = {data}, \
                user_id = CASE WHEN ? THEN ? ELSE user_id END, \
                idle_deadline = coalesce(?, idle_deadline), \
                absolute_deadline = coalesce(?, absolute_deadline), \
                remember_me = coalesce(?, remember_me), \
                last_seen = coalesce(?, last_seen), \
                created_at = coalesce(?, created_at) \
             WHERE key = ? AND expires_at > ? AND {data_is_object}",
            table = self.table.quoted(),
            data_is_object = DATA_IS_OBJECT,
        );
        let mut query = sqlx::query(&sql);
        if let Some(to) = move_to {
            query = query.bind(to.as_bytes().as_slice());
        }
        query = query.bind(delta.clear);
        if !delta.clear {
            for removed in removals {
                query = query.bind(json_path(removed));
            }
        }
        for (name, value) in sets {
            query = query.bind(json_path(name)).bind(value.to_string());
        }
        let deadlines = delta.deadlines;
        query = query
            .bind(delta.user_id.is_some())
            .bind(delta.user_id.clone().flatten())
            .bind(deadlines.map(|d| unix_millis(d.idle)))
            .bind(deadlines.map(|d| unix_millis(d.absolute)))
            .bind(deadlines.map(|d| d.remember_me))
            .bind(delta.last_seen.map(unix_millis))
            .bind(delta.created_at.map(unix_millis))
            .bind(key.as_bytes().as_slice())
            .bind(now_millis());
        let done = query.execute(executor).await.map_err(sql_error)?;
        Ok(done.rows_affected() > 0)
    }
}

/// The most arguments one SQL function call may take (`SQLITE_MAX_FUNCTION_ARG` in the
/// SQLite that sqlx bundles; more fails the whole statement).
const MAX_FUNCTION_ARGS: usize = 127;

/// A condition true only for rows whose `data` is a JSON object. Corrupt rows fail it, so
/// writes skip them as they would a missing row, and the JSON functions never see
/// malformed text (which would abort the statement with an error).
const DATA_IS_OBJECT: &str =
    "json_type(CASE WHEN json_valid(data) THEN data ELSE 'null' END) = 'object'";

/// The schema, one step per version: step `n` takes the table from version `n` to `n + 1`.
/// Append new steps; never edit old ones.
fn migrations(table: &TableName) -> Vec<Vec<String>> {
    let t = table.quoted();
    let step_1 = format!(
        "CREATE TABLE IF NOT EXISTS {t} (\
            key BLOB PRIMARY KEY NOT NULL, \
            user_id TEXT, \
            data TEXT NOT NULL, \
            created_at INTEGER NOT NULL, \
            last_seen INTEGER NOT NULL, \
            idle_deadline INTEGER NOT NULL, \
            absolute_deadline INTEGER NOT NULL, \
            expires_at INTEGER GENERATED ALWAYS AS (min(idle_deadline, absolute_deadline)) STORED, \
            remember_me INTEGER NOT NULL DEFAULT 0, \
            ip TEXT, \
            user_agent TEXT\
         ) WITHOUT ROWID;\n\
         CREATE INDEX IF NOT EXISTS {user_idx} ON {t} (user_id) WHERE user_id IS NOT NULL;\n\
         CREATE INDEX IF NOT EXISTS {expires_idx} ON {t} (expires_at);\n\
         CREATE TABLE IF NOT EXISTS {rotated} (\
            key BLOB PRIMARY KEY NOT NULL, \
            until INTEGER NOT NULL\
         ) WITHOUT ROWID;\n\
         CREATE INDEX IF NOT EXISTS {rotated_idx} ON {rotated} (until);",
        user_idx = table.index("user"),
        expires_idx = table.index("expires"),
        rotated = table.rotated(),
        rotated_idx = table.index("rotated_until"),
    );
    vec![step_1.split(";\n").map(str::to_owned).collect()]
}

/// Creates the database file with owner-only permissions unless it already exists (an
/// existing file keeps the permissions its owner gave it). SQLite gives the `-wal` and
/// `-shm` files it creates beside it the same permissions.
fn create_private_file(path: &Path) -> Result<(), Error> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(err) => Err(Error::store(err)),
    }
}

fn now_millis() -> i64 {
    unix_millis(OffsetDateTime::now_utc())
}

/// The SQLite JSON path of the top-level key `name`: `$."name"`, with quotes, backslashes
/// and control characters written as `\uXXXX` escapes (SQLite ends a quoted label at the
/// first `"` whatever precedes it, but decodes escapes inside it).
fn json_path(name: &str) -> String {
    let mut path = String::with_capacity(name.len() + 4);
    path.push_str("$.\"");
    for c in name.chars() {
        if c == '"' || c == '\\' || c.is_control() {
            for unit in c.encode_utf16(&mut [0; 2]) {
                path.push_str(&format!("\\u{unit:04x}"));
            }
        } else {
            path.push(c);
        }
    }
    path.push('"');
    path
}

/// Reads a record from a row, or says why it cannot (a corrupt row).
fn decode_record(row: &SqliteRow) -> Result<(IdHash, Record), String> {
    let key: Vec<u8> = row.try_get("key").map_err(|e| e.to_string())?;
    let key = <[u8; 32]>::try_from(key.as_slice())
        .map(IdHash::from_bytes)
        .map_err(|_| format!("key is {} bytes, not 32", key.len()))?;
    let instant = |column: &str| -> Result<OffsetDateTime, String> {
        let millis: i64 = row.try_get(column).map_err(|e| e.to_string())?;
        from_unix_millis(millis).ok_or_else(|| format!("{column} out of range"))
    };
    let data: String = row.try_get("data").map_err(|e| e.to_string())?;
    let data: SessionData =
        serde_json::from_str(&data).map_err(|e| format!("data is not a JSON object: {e}"))?;
    let record = Record {
        data,
        user_id: row.try_get("user_id").map_err(|e| e.to_string())?,
        created_at: instant("created_at")?,
        last_seen: instant("last_seen")?,
        idle_deadline: instant("idle_deadline")?,
        absolute_deadline: instant("absolute_deadline")?,
        remember_me: row.try_get("remember_me").map_err(|e| e.to_string())?,
        ip: row.try_get("ip").map_err(|e| e.to_string())?,
        user_agent: row.try_get("user_agent").map_err(|e| e.to_string())?,
    };
    Ok((key, record))
}

/// The record in `row`, or `None` (logged) for a corrupt row.
fn decode_or_log(row: &SqliteRow, table: &TableName) -> Option<(IdHash, Record)> {
    match decode_record(row) {
        Ok(found) => Some(found),
        Err(problem) => {
            tracing::warn!(
                table = table.as_str(),
                problem,
                "corrupt session row treated as absent"
            );
            None
        }
    }
}

impl ExpiredBatches for SqliteStore {
    async fn delete_expired_batch_at(
        &self,
        now: OffsetDateTime,
        limit: u32,
    ) -> Result<Batch, Error> {
        // One short statement per batch: SQLite has one write lock, and requests queue
        // behind whoever holds it.
        let now = unix_millis(now);
        let sessions = self
            .delete_due(&self.table.quoted(), "expires_at", now, limit)
            .await?;
        let tombstones = self
            .delete_due(&self.table.rotated(), "until", now, limit)
            .await?;
        Ok(Batch {
            sessions,
            tombstones,
        })
    }
}

impl SqliteStore {
    /// Deletes at most `limit` rows of `table` whose `deadline` column (Unix ms) is at or
    /// before `now`, re-checking the condition on the rows deleted. `table` is a validated,
    /// quoted name and `deadline` one of our column names: nothing unchecked is spliced in.
    async fn delete_due(
        &self,
        table: &str,
        deadline: &str,
        now: i64,
        limit: u32,
    ) -> Result<u64, Error> {
        let deleted = sqlx::query(&format!(
            "DELETE FROM {table} WHERE key IN \
                (SELECT key FROM {table} WHERE {deadline} <= ? LIMIT ?) \
             AND {deadline} <= ?"
        ))
        .bind(now)
        .bind(i64::from(limit))
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(sql_error)?;
        Ok(deleted.rows_affected())
    }
}

#[async_trait]
impl SessionStore for SqliteStore {
    async fn load(&self, key: &IdHash) -> Result<Option<Record>, Error> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM {} WHERE key = ? AND expires_at > ?",
            self.table.quoted()
        ))
        .bind(key.as_bytes().as_slice())
        .bind(now_millis())
        .fetch_optional(&self.pool)
        .await
        .map_err(sql_error)?;
        Ok(row
            .and_then(|row| decode_or_log(&row, &self.table))
            .map(|(_, record)| record))
    }

    async fn create(&self, key: &IdHash, record: &Record) -> Result<bool, Error> {
        check_record_depth(record)?;
        let data = serde_json::to_string(&record.data).map_err(Error::serialize)?;
        // An expired row under the same key is replaced; a live one is left alone.
        let done = sqlx::query(&format!(
            "INSERT INTO {t} (key, user_id, data, created_at, last_seen, idle_deadline, \
                absolute_deadline, remember_me, ip, user_agent) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (key) DO UPDATE SET \
                user_id = excluded.user_id, data = excluded.data, \
                created_at = excluded.created_at, last_seen = excluded.last_seen, \
                idle_deadline = excluded.idle_deadline, \
                absolute_deadline = excluded.absolute_deadline, \
                remember_me = excluded.remember_me, ip = excluded.ip, \
                user_agent = excluded.user_agent \
             WHERE expires_at <= ?",
            t = self.table.quoted()
        ))
        .bind(key.as_bytes().as_slice())
        .bind(record.user_id.as_deref())
        .bind(data)
        .bind(unix_millis(record.created_at))
        .bind(unix_millis(record.last_seen))
        .bind(unix_millis(record.idle_deadline))
        .bind(unix_millis(record.absolute_deadline))
        .bind(record.remember_me)
        .bind(record.ip.as_deref())
        .bind(record.user_agent.as_deref())
        .bind(now_millis())
        .execute(&self.pool)
        .await
        .map_err(sql_error)?;
        Ok(done.rows_affected() > 0)
    }

    async fn apply(&self, key: &IdHash, delta: &Delta) -> Result<bool, Error> {
        check_delta_depth(delta)?;
        self.update(&self.pool, key, None, delta).await
    }

    async fn rotate(&self, from: &IdHash, to: &IdHash, delta: &Delta) -> Result<bool, Error> {
        check_delta_depth(delta)?;
        // One transaction holding the write lock from its first statement (`BEGIN
        // IMMEDIATE`: no lock upgrade, so no "database is locked" mid-way): the row changes
        // key and content in one UPDATE, so no request ever sees both keys working and a
        // delta racing on the old key finds nothing; the tombstone lands in the same
        // commit.
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(sql_error)?;
        if !self.update(&mut *tx, from, Some(to), delta).await? {
            return Ok(false); // dropping the transaction rolls it back: nothing was written
        }
        sqlx::query(&format!(
            "INSERT INTO {} (key, until) VALUES (?, ?) \
             ON CONFLICT (key) DO UPDATE SET until = excluded.until",
            self.table.rotated()
        ))
        .bind(from.as_bytes().as_slice())
        .bind(unix_millis(OffsetDateTime::now_utc() + ROTATION_TOMBSTONE))
        .execute(&mut *tx)
        .await
        .map_err(sql_error)?;
        tx.commit().await.map_err(sql_error)?;
        Ok(true)
    }

    async fn rotated_at(&self, key: &IdHash) -> Result<Option<OffsetDateTime>, Error> {
        let until: Option<i64> = sqlx::query_scalar(&format!(
            "SELECT until FROM {} WHERE key = ? AND typeof(until) = 'integer' AND until > ?",
            self.table.rotated()
        ))
        .bind(key.as_bytes().as_slice())
        .bind(now_millis())
        .fetch_optional(&self.pool)
        .await
        .map_err(sql_error)?;
        // A tombstone whose time is not an integer, or out of range, is a corrupt row: no
        // rotation known.
        Ok(until
            .and_then(from_unix_millis)
            .map(|until| until - ROTATION_TOMBSTONE))
    }

    async fn delete(&self, key: &IdHash) -> Result<bool, Error> {
        let live: Option<bool> = sqlx::query_scalar(&format!(
            "DELETE FROM {} WHERE key = ? RETURNING expires_at > ?",
            self.table.quoted()
        ))
        .bind(key.as_bytes().as_slice())
        .bind(now_millis())
        .fetch_optional(&self.pool)
        .await
        .map_err(sql_error)?;
        Ok(live.unwrap_or(false))
    }

    async fn list_user(&self, user_id: &str) -> Result<Vec<SessionInfo>, Error> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM {} WHERE user_id = ? AND expires_at > ?",
            self.table.quoted()
        ))
        .bind(user_id)
        .bind(now_millis())
        .fetch_all(&self.pool)
        .await
        .map_err(sql_error)?;
        Ok(rows
            .iter()
            .filter_map(|row| decode_or_log(row, &self.table))
            .map(|(key, record)| record.info(key))
            .collect())
    }

    async fn delete_user(&self, user_id: &str, keep: Option<&IdHash>) -> Result<u64, Error> {
        // Expired rows of the user go too (cleanup for free); only live ones are counted.
        let live: Vec<bool> = sqlx::query_scalar(&format!(
            "DELETE FROM {} WHERE user_id = ? AND key IS NOT ? RETURNING expires_at > ?",
            self.table.quoted()
        ))
        .bind(user_id)
        .bind(keep.map(|key| key.as_bytes().as_slice()))
        .bind(now_millis())
        .fetch_all(&self.pool)
        .await
        .map_err(sql_error)?;
        Ok(live.into_iter().filter(|live| *live).count() as u64)
    }

    async fn delete_user_session(&self, user_id: &str, key: &IdHash) -> Result<bool, Error> {
        let done = sqlx::query(&format!(
            "DELETE FROM {} WHERE key = ? AND user_id = ? AND expires_at > ?",
            self.table.quoted()
        ))
        .bind(key.as_bytes().as_slice())
        .bind(user_id)
        .bind(now_millis())
        .execute(&self.pool)
        .await
        .map_err(sql_error)?;
        Ok(done.rows_affected() > 0)
    }

    async fn count_user(&self, user_id: &str) -> Result<u64, Error> {
        let count: i64 = sqlx::query_scalar(&format!(
            "SELECT count(*) FROM {} WHERE user_id = ? AND expires_at > ?",
            self.table.quoted()
        ))
        .bind(user_id)
        .bind(now_millis())
        .fetch_one(&self.pool)
        .await
        .map_err(sql_error)?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    async fn delete_expired(&self) -> Result<u64, Error> {
        delete_all_expired(self).await
    }

    /// Counts precisely: rows past their expiry are not counted.
    async fn count(&self) -> Result<u64, Error> {
        let count: i64 = sqlx::query_scalar(&format!(
            "SELECT count(*) FROM {} WHERE expires_at > ?",
            self.table.quoted()
        ))
        .bind(now_millis())
        .fetch_one(&self.pool)
        .await
        .map_err(sql_error)?;
        Ok(u64::try_from(count).unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_paths_escape_what_sqlite_cannot_take_raw() {
        assert_eq!(json_path("theme"), r#"$."theme""#);
        assert_eq!(json_path(""), r#"$."""#);
        assert_eq!(json_path("a\"b\\c\n"), r#"$."a\u0022b\u005cc\u000a""#);
        assert_eq!(json_path("ü/:*?.[0]"), "$.\"ü/:*?.[0]\"");
    }
}
