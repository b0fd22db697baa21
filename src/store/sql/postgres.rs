//! [`PostgresStore`]: sessions in PostgreSQL.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Map, Value};
use sqlx::postgres::{PgPool, PgPoolOptions, PgRow};
use sqlx::{Column, Row, TypeInfo};
use time::OffsetDateTime;

use super::{
    delete_all_expired, pending_migrations, sql_error, Batch, CleanupHandle, ExpiredBatches,
    TableName, SCHEMA_TABLE,
};
use crate::error::Error;
use crate::id::IdHash;
use crate::record::{Delta, Record, SessionInfo};
use crate::store::{check_delta_depth, check_record_depth, SessionStore, ROTATION_TOMBSTONE};

/// Connections in a pool [`PostgresStore::connect`] makes.
const POOL_SIZE: u32 = 16;
/// How long a request waits for a pooled connection before the store reports itself
/// unavailable.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// The advisory lock that serialises migrations across processes ("sessionw" in ASCII).
const MIGRATION_LOCK: i64 = 0x7365_7373_696f_6e77;

/// Every column a [`Record`] is read from, in the order [`decode_record`] expects.
const COLUMNS: &str =
    "key, user_id, data, created_at, last_seen, idle_deadline, absolute_deadline, remember_me, \
     ip, user_agent";

/// PostgreSQL cannot keep U+0000 in `text` or `jsonb`; we write it as this private-use
/// character followed by `0`, and the character itself doubled, and undo that on reading.
const ESCAPE: char = '\u{E000}';

/// A session store in PostgreSQL (feature `postgres`).
///
/// Rows live in one table (see the [module docs](super)); session data is a `jsonb`
/// object, instants are `timestamptz` (microsecond precision). Every write is a single
/// statement, so PostgreSQL's row lock makes it atomic against other writers of the same
/// session, in this process or any other. Cheap to clone: clones share one pool.
#[derive(Clone)]
pub struct PostgresStore {
    pool: PgPool,
    table: TableName,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("table", &self.table)
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Connects to the database at `url` (e.g. `postgres://user@host/db`) with a pool of
    /// 16 connections. Call [`migrate`](Self::migrate) next.
    pub async fn connect(url: &str) -> Result<Self, Error> {
        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect(url)
            .await
            .map_err(sql_error)?;
        Ok(Self::from_pool(pool))
    }

    /// A store on a pool you made yourself (to share it with the application, or tune it).
    pub fn from_pool(pool: PgPool) -> Self {
        Self {
            pool,
            table: TableName::default_table(),
        }
    }

    /// Uses the table `name` instead of `sessionware_sessions` (in the connection's
    /// `search_path`). Fails unless the name is 1 to 48 ASCII letters, digits or
    /// underscores, not starting with a digit.
    pub fn with_table(mut self, name: &str) -> Result<Self, Error> {
        self.table = TableName::new(name)?;
        Ok(self)
    }

    /// The pool this store runs on.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The table this store keeps sessions in.
    pub fn table(&self) -> &str {
        self.table.as_str()
    }

    /// Creates or upgrades the sessions table and its indexes. Safe to run on every start,
    /// from several processes at once: it runs in one transaction holding an advisory lock,
    /// so concurrent migrations queue behind each other, and records the schema version it
    /// reached in the `sessionware_schema` table.
    pub async fn migrate(&self) -> Result<(), Error> {
        let mut tx = self.pool.begin().await.map_err(sql_error)?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(MIGRATION_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(sql_error)?;
        sqlx::query(&format!(
            "CREATE TABLE IF NOT EXISTS {SCHEMA_TABLE} (\
                table_name TEXT PRIMARY KEY, \
                version INTEGER NOT NULL, \
                updated_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        ))
        .execute(&mut *tx)
        .await
        .map_err(sql_error)?;
        let current: i32 = sqlx::query_scalar(&format!(
            "SELECT version FROM {SCHEMA_TABLE} WHERE table_name = $1"
        ))
        .bind(self.table.as_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(sql_error)?
        .unwrap_or(0);
        let steps = migrations(&self.table);
        let latest = i32::try_from(steps.len()).unwrap_or(i32::MAX);
        let Some(pending) = pending_migrations(&self.table, current.into(), &steps) else {
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
                "INSERT INTO {SCHEMA_TABLE} (table_name, version) VALUES ($1, $2) \
                 ON CONFLICT (table_name) DO UPDATE SET version = $2, updated_at = now()"
            ))
            .bind(self.table.as_str())
            .bind(latest)
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

    /// The statement that applies a delta to the live row under `$11`; with `rotate`, it
    /// also moves the row to the key `$13` and leaves a tombstone under the old key.
    fn delta_sql(&self, rotate: bool) -> String {
        // `(data - removed) || set` merges in the database, on the row version current
        // when the row lock is granted (READ COMMITTED re-evaluates the SET expressions on
        // the newest version), so concurrent deltas on different keys all survive.
        let update = format!(
            "UPDATE {t} SET {move_key}\
                data = (CASE WHEN $1 THEN '{{}}'::jsonb ELSE data END - $2::text[]) || $3::jsonb, \
                user_id = CASE WHEN $4 THEN $5 ELSE user_id END, \
                idle_deadline = COALESCE($6, idle_deadline), \
                absolute_deadline = COALESCE($7, absolute_deadline), \
                remember_me = COALESCE($8, remember_me), \
                last_seen = COALESCE($9, last_seen), \
                created_at = COALESCE($10, created_at) \
             WHERE key = $11 AND expires_at > $12 AND jsonb_typeof(data) = 'object'",
            t = self.table.quoted(),
            move_key = if rotate { "key = $13, " } else { "" },
        );
        if !rotate {
            return update;
        }
        // One statement moves the row and files the tombstone: both or neither.
        format!(
            "WITH moved AS ({update} RETURNING 1) \
             INSERT INTO {r} (key, until) SELECT $11, $14 FROM moved \
             ON CONFLICT (key) DO UPDATE SET until = EXCLUDED.until",
            r = self.table.rotated(),
        )
    }

    async fn update(
        &self,
        key: &IdHash,
        move_to: Option<&IdHash>,
        delta: &Delta,
    ) -> Result<bool, Error> {
        check_delta_depth(delta)?;
        let removed: Vec<String> = delta.removals().map(|k| escape(k).into_owned()).collect();
        let set: Map<String, Value> = delta
            .sets()
            .map(|(k, v)| (escape(k).into_owned(), escape_value(v)))
            .collect();
        let deadlines = delta.deadlines;
        let now = OffsetDateTime::now_utc();
        let sql = self.delta_sql(move_to.is_some());
        let mut query = sqlx::query(&sql)
            .bind(delta.clear)
            .bind(removed)
            .bind(Value::Object(set))
            .bind(delta.user_id.is_some())
            .bind(delta.user_id.clone().flatten().map(escape_owned))
            .bind(deadlines.map(|d| d.idle))
            .bind(deadlines.map(|d| d.absolute))
            .bind(deadlines.map(|d| d.remember_me))
            .bind(delta.last_seen)
            .bind(delta.created_at)
            .bind(key.as_bytes().as_slice())
            .bind(now);
        if let Some(to) = move_to {
            query = query
                .bind(to.as_bytes().as_slice())
                .bind(now + ROTATION_TOMBSTONE);
        }
        let done = query.execute(&self.pool).await.map_err(sql_error)?;
        Ok(done.rows_affected() > 0)
    }
}

/// The schema, one step per version: step `n` takes the table from version `n` to `n + 1`.
/// Append new steps; never edit old ones.
fn migrations(table: &TableName) -> Vec<Vec<String>> {
    let t = table.quoted();
    let r = table.rotated();
    vec![vec![
        format!(
            "CREATE TABLE IF NOT EXISTS {t} (\
                key BYTEA PRIMARY KEY CHECK (octet_length(key) = 32), \
                user_id TEXT, \
                data JSONB NOT NULL, \
                created_at TIMESTAMPTZ NOT NULL, \
                last_seen TIMESTAMPTZ NOT NULL, \
                idle_deadline TIMESTAMPTZ NOT NULL, \
                absolute_deadline TIMESTAMPTZ NOT NULL, \
                expires_at TIMESTAMPTZ GENERATED ALWAYS AS \
                    (LEAST(idle_deadline, absolute_deadline)) STORED, \
                remember_me BOOLEAN NOT NULL DEFAULT false, \
                ip TEXT, \
                user_agent TEXT)"
        ),
        format!(
            "CREATE INDEX IF NOT EXISTS {} ON {t} (user_id) WHERE user_id IS NOT NULL",
            table.index("user")
        ),
        format!(
            "CREATE INDEX IF NOT EXISTS {} ON {t} (expires_at)",
            table.index("expires")
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {r} (\
                key BYTEA PRIMARY KEY, \
                until TIMESTAMPTZ NOT NULL)"
        ),
        format!(
            "CREATE INDEX IF NOT EXISTS {} ON {r} (until)",
            table.index("rotated_until")
        ),
    ]]
}

fn needs_escape(text: &str) -> bool {
    text.contains(['\0', ESCAPE])
}

/// `text` with U+0000 and [`ESCAPE`] written in the form PostgreSQL can keep.
fn escape(text: &str) -> Cow<'_, str> {
    if !needs_escape(text) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 4);
    for c in text.chars() {
        match c {
            '\0' => {
                out.push(ESCAPE);
                out.push('0');
            }
            ESCAPE => {
                out.push(ESCAPE);
                out.push(ESCAPE);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

fn escape_owned(text: String) -> String {
    match escape(&text) {
        Cow::Borrowed(_) => text,
        Cow::Owned(escaped) => escaped,
    }
}

/// Undoes [`escape`]; `None` for text that no escaping could have produced (corrupt).
fn unescape(text: String) -> Option<String> {
    if !text.contains(ESCAPE) {
        return Some(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != ESCAPE {
            out.push(c);
            continue;
        }
        match chars.next()? {
            '0' => out.push('\0'),
            ESCAPE => out.push(ESCAPE),
            _ => return None,
        }
    }
    Some(out)
}

/// `value` with every string and object key escaped. Values without anything to escape
/// (nearly all) are copied as they are.
fn escape_value(value: &Value) -> Value {
    match value {
        Value::String(text) => Value::String(escape(text).into_owned()),
        Value::Array(items) => Value::Array(items.iter().map(escape_value).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (escape(k).into_owned(), escape_value(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Undoes [`escape_value`]; `None` if some string is not a valid escaped form.
fn unescape_value(value: Value) -> Option<Value> {
    Some(match value {
        Value::String(text) => Value::String(unescape(text)?),
        Value::Array(items) => Value::Array(
            items
                .into_iter()
                .map(unescape_value)
                .collect::<Option<_>>()?,
        ),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| Some((unescape(k)?, unescape_value(v)?)))
                .collect::<Option<_>>()?,
        ),
        other => other,
    })
}

fn unescape_opt(text: Option<String>) -> Result<Option<String>, String> {
    text.map(|text| unescape(text).ok_or_else(|| "malformed escape in a text column".to_owned()))
        .transpose()
}

/// Microseconds from the Unix epoch to PostgreSQL's, 2000-01-01.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// A `timestamptz` column as an instant, or why it is not one. Read as the microseconds
/// since 2000 that PostgreSQL sends, not through sqlx's decoding, which panics on an
/// instant a Rust date cannot hold (`'infinity'`, a year past 9999): such a row is
/// corrupt, not a crash of every request that reads it.
fn instant(row: &PgRow, column: &str) -> Result<OffsetDateTime, String> {
    let kind = row
        .try_column(column)
        .map_err(|e| e.to_string())?
        .type_info();
    if kind.name() != "TIMESTAMPTZ" {
        return Err(format!("{column} is a {kind}, not a TIMESTAMPTZ"));
    }
    let micros: i64 = row.try_get_unchecked(column).map_err(|e| e.to_string())?;
    micros
        .checked_add(PG_EPOCH_MICROS)
        .and_then(|us| OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1_000).ok())
        .ok_or_else(|| format!("{column} is out of range"))
}

/// Reads a record from a row, or says why it cannot (a corrupt row).
fn decode_record(row: &PgRow) -> Result<(IdHash, Record), String> {
    let column = |e: sqlx::Error| e.to_string();
    let key: Vec<u8> = row.try_get("key").map_err(column)?;
    let key = <[u8; 32]>::try_from(key.as_slice())
        .map(IdHash::from_bytes)
        .map_err(|_| format!("key is {} bytes, not 32", key.len()))?;
    let data: Value = row.try_get("data").map_err(column)?;
    let Some(Value::Object(data)) = unescape_value(data) else {
        return Err("data is not a JSON object (or holds a malformed escape)".to_owned());
    };
    let record = Record {
        data: data.into_iter().collect(),
        user_id: unescape_opt(row.try_get("user_id").map_err(column)?)?,
        created_at: instant(row, "created_at")?,
        last_seen: instant(row, "last_seen")?,
        idle_deadline: instant(row, "idle_deadline")?,
        absolute_deadline: instant(row, "absolute_deadline")?,
        remember_me: row.try_get("remember_me").map_err(column)?,
        ip: unescape_opt(row.try_get("ip").map_err(column)?)?,
        user_agent: unescape_opt(row.try_get("user_agent").map_err(column)?)?,
    };
    Ok((key, record))
}

/// The record in `row`, or `None` (logged) for a corrupt row.
fn decode_or_log(row: &PgRow, table: &TableName) -> Option<(IdHash, Record)> {
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

impl ExpiredBatches for PostgresStore {
    async fn delete_expired_batch_at(
        &self,
        now: OffsetDateTime,
        limit: u32,
    ) -> Result<Batch, Error> {
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

impl PostgresStore {
    /// Deletes at most `limit` rows of `table` whose `deadline` column has passed.
    /// SKIP LOCKED: two cleaners (two app servers) never wait on each other, and the outer
    /// condition is re-checked on the row as it is when deleted, so a row made live again
    /// in between (a key reused after expiry) is left alone. `table` is a validated,
    /// quoted name and `deadline` one of our column names: nothing unchecked is spliced in.
    async fn delete_due(
        &self,
        table: &str,
        deadline: &str,
        now: OffsetDateTime,
        limit: u32,
    ) -> Result<u64, Error> {
        let deleted = sqlx::query(&format!(
            "DELETE FROM {table} WHERE key IN \
                (SELECT key FROM {table} WHERE {deadline} <= $1 LIMIT $2 FOR UPDATE SKIP LOCKED) \
             AND {deadline} <= $1"
        ))
        .bind(now)
        .bind(i64::from(limit))
        .execute(&self.pool)
        .await
        .map_err(sql_error)?;
        Ok(deleted.rows_affected())
    }
}

#[async_trait]
impl SessionStore for PostgresStore {
    async fn load(&self, key: &IdHash) -> Result<Option<Record>, Error> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM {} WHERE key = $1 AND expires_at > $2",
            self.table.quoted()
        ))
        .bind(key.as_bytes().as_slice())
        .bind(OffsetDateTime::now_utc())
        .fetch_optional(&self.pool)
        .await
        .map_err(sql_error)?;
        Ok(row
            .and_then(|row| decode_or_log(&row, &self.table))
            .map(|(_, record)| record))
    }

    async fn create(&self, key: &IdHash, record: &Record) -> Result<bool, Error> {
        check_record_depth(record)?;
        let data = Value::Object(
            record
                .data
                .iter()
                .map(|(k, v)| (escape(k).into_owned(), escape_value(v)))
                .collect(),
        );
        // An expired row under the same key is replaced; a live one is left alone.
        let done = sqlx::query(&format!(
            "INSERT INTO {t} AS old (key, user_id, data, created_at, last_seen, idle_deadline, \
                absolute_deadline, remember_me, ip, user_agent) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
             ON CONFLICT (key) DO UPDATE SET \
                user_id = EXCLUDED.user_id, data = EXCLUDED.data, \
                created_at = EXCLUDED.created_at, last_seen = EXCLUDED.last_seen, \
                idle_deadline = EXCLUDED.idle_deadline, \
                absolute_deadline = EXCLUDED.absolute_deadline, \
                remember_me = EXCLUDED.remember_me, ip = EXCLUDED.ip, \
                user_agent = EXCLUDED.user_agent \
             WHERE old.expires_at <= $11",
            t = self.table.quoted()
        ))
        .bind(key.as_bytes().as_slice())
        .bind(record.user_id.as_deref().map(escape))
        .bind(data)
        .bind(record.created_at)
        .bind(record.last_seen)
        .bind(record.idle_deadline)
        .bind(record.absolute_deadline)
        .bind(record.remember_me)
        .bind(record.ip.as_deref().map(escape))
        .bind(record.user_agent.as_deref().map(escape))
        .bind(OffsetDateTime::now_utc())
        .execute(&self.pool)
        .await
        .map_err(sql_error)?;
        Ok(done.rows_affected() > 0)
    }

    async fn apply(&self, key: &IdHash, delta: &Delta) -> Result<bool, Error> {
        self.update(key, None, delta).await
    }

    async fn rotate(&self, from: &IdHash, to: &IdHash, delta: &Delta) -> Result<bool, Error> {
        // One statement: the row changes key and content at once (a delta racing on the
        // old key waits for the row lock, then finds the key changed and writes nothing),
        // and the tombstone is filed by the same statement.
        self.update(from, Some(to), delta).await
    }

    async fn rotated_at(&self, key: &IdHash) -> Result<Option<OffsetDateTime>, Error> {
        let row = sqlx::query(&format!(
            "SELECT until FROM {} WHERE key = $1 AND until > $2",
            self.table.rotated()
        ))
        .bind(key.as_bytes().as_slice())
        .bind(OffsetDateTime::now_utc())
        .fetch_optional(&self.pool)
        .await
        .map_err(sql_error)?;
        let Some(row) = row else { return Ok(None) };
        match instant(&row, "until") {
            Ok(until) => Ok(Some(until - ROTATION_TOMBSTONE)),
            Err(problem) => {
                tracing::warn!(
                    table = self.table.rotated(),
                    problem,
                    "corrupt rotation tombstone: no rotation known"
                );
                Ok(None)
            }
        }
    }

    async fn delete(&self, key: &IdHash) -> Result<bool, Error> {
        let live: Option<bool> = sqlx::query_scalar(&format!(
            "DELETE FROM {} WHERE key = $1 RETURNING expires_at > $2",
            self.table.quoted()
        ))
        .bind(key.as_bytes().as_slice())
        .bind(OffsetDateTime::now_utc())
        .fetch_optional(&self.pool)
        .await
        .map_err(sql_error)?;
        Ok(live.unwrap_or(false))
    }

    async fn list_user(&self, user_id: &str) -> Result<Vec<SessionInfo>, Error> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM {} WHERE user_id = $1 AND expires_at > $2",
            self.table.quoted()
        ))
        .bind(escape(user_id))
        .bind(OffsetDateTime::now_utc())
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
        let live: i64 = sqlx::query_scalar(&format!(
            "WITH gone AS (\
                DELETE FROM {} WHERE user_id = $1 AND key IS DISTINCT FROM $2 \
                RETURNING expires_at > $3 AS live) \
             SELECT count(*) FILTER (WHERE live) FROM gone",
            self.table.quoted()
        ))
        .bind(escape(user_id))
        .bind(keep.map(|key| key.as_bytes().as_slice()))
        .bind(OffsetDateTime::now_utc())
        .fetch_one(&self.pool)
        .await
        .map_err(sql_error)?;
        Ok(u64::try_from(live).unwrap_or(0))
    }

    async fn delete_user_session(&self, user_id: &str, key: &IdHash) -> Result<bool, Error> {
        let done = sqlx::query(&format!(
            "DELETE FROM {} WHERE key = $1 AND user_id = $2 AND expires_at > $3",
            self.table.quoted()
        ))
        .bind(key.as_bytes().as_slice())
        .bind(escape(user_id))
        .bind(OffsetDateTime::now_utc())
        .execute(&self.pool)
        .await
        .map_err(sql_error)?;
        Ok(done.rows_affected() > 0)
    }

    async fn count_user(&self, user_id: &str) -> Result<u64, Error> {
        let count: i64 = sqlx::query_scalar(&format!(
            "SELECT count(*) FROM {} WHERE user_id = $1 AND expires_at > $2",
            self.table.quoted()
        ))
        .bind(escape(user_id))
        .bind(OffsetDateTime::now_utc())
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
            "SELECT count(*) FROM {} WHERE expires_at > $1",
            self.table.quoted()
        ))
        .bind(OffsetDateTime::now_utc())
        .fetch_one(&self.pool)
        .await
        .map_err(sql_error)?;
        Ok(u64::try_from(count).unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn escaping_round_trips_and_removes_every_nul() {
        for text in ["plain", "", "a\0b", "\u{E000}", "\u{E000}0", "\0\u{E000}\0"] {
            let escaped = escape(text);
            assert!(!escaped.contains('\0'), "{escaped:?}");
            assert_eq!(unescape(escaped.into_owned()).as_deref(), Some(text));
        }
        let value = json!({"k\0": ["x\0y", {"\u{E000}": "\u{E000}"}], "n": 1});
        let escaped = escape_value(&value);
        assert!(!escaped.to_string().contains("\\u0000"));
        assert_eq!(unescape_value(escaped), Some(value));
    }

    #[test]
    fn malformed_escapes_are_corrupt() {
        assert_eq!(unescape("\u{E000}x".to_owned()), None);
        assert_eq!(unescape("trailing\u{E000}".to_owned()), None);
    }

    /// Property tests: whatever text or JSON a row holds, unescaping answers without
    /// panicking, and it reads back exactly what escaping wrote.
    mod properties {
        use super::*;
        use crate::test_support::{json_value, proptest_config};
        use proptest::collection::vec;
        use proptest::prelude::*;
        use proptest::sample::select;

        /// Text heavy in the characters escaping is about: NUL, the escape character, and
        /// the `0` that follows it in an escaped NUL.
        fn text() -> impl Strategy<Value = String> + Clone {
            let c = prop_oneof![
                3 => select(vec!['\0', ESCAPE, '0', 'a']),
                1 => any::<char>(),
            ];
            vec(c, 0..12).prop_map(String::from_iter)
        }

        /// Text as a PostgreSQL column can hold it (no NUL), heavy in the escape character
        /// and what may follow it.
        fn column_text() -> impl Strategy<Value = String> + Clone {
            let c = prop_oneof![
                3 => select(vec![ESCAPE, '0', 'a']),
                1 => any::<char>().prop_filter("a column holds no NUL", |c| *c != '\0'),
            ];
            vec(c, 0..12).prop_map(String::from_iter)
        }

        proptest! {
            #![proptest_config(proptest_config(512))]

            #[test]
            fn escaped_text_has_no_nul_and_reads_back(text in text()) {
                let escaped = escape(&text);
                prop_assert!(!escaped.contains('\0'), "{:?}", escaped);
                prop_assert_eq!(escape_owned(text.clone()), escaped.clone().into_owned());
                prop_assert_eq!(unescape(escaped.into_owned()), Some(text));
            }

            #[test]
            fn any_text_unescapes_to_what_escapes_back_to_it(text in column_text()) {
                match unescape(text.clone()) {
                    Some(plain) => prop_assert_eq!(escape(&plain), text),
                    None => prop_assert!(text.contains(ESCAPE)),
                }
            }

            #[test]
            fn escaped_values_have_no_nul_and_read_back(value in json_value(text())) {
                let escaped = escape_value(&value);
                prop_assert!(!escaped.to_string().contains("\\u0000"), "{}", escaped);
                prop_assert_eq!(unescape_value(escaped), Some(value));
            }

            #[test]
            fn any_value_unescapes_to_what_escapes_back_to_it(
                value in json_value(column_text()),
            ) {
                match unescape_value(value.clone()) {
                    Some(plain) => prop_assert_eq!(escape_value(&plain), value),
                    None => prop_assert!(value.to_string().contains(ESCAPE)),
                }
            }
        }
    }
}
