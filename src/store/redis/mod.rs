//! [`RedisStore`]: sessions in Redis or Redis Cluster, on redis-rs (feature `redis`).
//!
//! ```no_run
//! use sessionware::{RedisStore, SessionLayer};
//!
//! # async fn run() -> Result<(), sessionware::Error> {
//! // One server (it reconnects by itself after an outage)...
//! let store = RedisStore::connect("redis://127.0.0.1:6379/").await?.with_prefix("myapp");
//! let layer = SessionLayer::new(store.clone());
//!
//! // ...or a cluster, from any of its nodes.
//! let cluster = RedisStore::connect_cluster(["redis://10.0.0.1:7000", "redis://10.0.0.2:7000"])
//!     .await?
//!     .with_prefix("myapp");
//! # let _ = (layer, cluster);
//! # Ok(()) }
//! ```
//!
//! # Key layout
//! With the prefix `P` (default `sessionware`):
//!
//! | key | type | holds | TTL |
//! |---|---|---|---|
//! | `P:s:{H}` | hash | one session, `H` the hex [`IdHash`] of its ID | the session's expiry |
//! | `P:u:{USER}` | sorted set | the `H` of the user's sessions, scored by expiry (ms; on a cluster by absolute deadline) | its latest member's score |
//! | `P:t:{H}` | string | a rotation tombstone: `H` was rotated away (see [`SessionStore::rotated_at`]); on a cluster it names the new key, or marks `H` as revoked before a rotation filed it | [`ROTATION_TOMBSTONE`] |
//! | `P:all` | sorted set | the `H` of every session, scored by expiry (ms), for [`count`](SessionStore::count) | its latest member's expiry |
//!
//! The hash's fields: `d:<key>` holds the JSON of each data key; `m` the created, last
//! seen, idle and absolute deadline times (Unix ms) and remember-me, packed in one field
//! (layout in `codec.rs`); `u` the user ID; `ip`, `ua` client metadata. The raw session ID appears in no key and no value. Every key
//! carries a TTL, so Redis removes ended sessions by itself; the sorted sets vanish with
//! their last member, and drop expired members when written (`P:all` on about one write in
//! 16: see `lua.rs`).
//!
//! # Atomicity
//! Each write is one Lua script on the session's hash (see `lua.rs`): it applies only if
//! the session is still live, so a logout or rotation is never undone by a request in
//! flight, and it touches only the fields its [`Delta`] names, so concurrent requests setting
//! different keys all survive. On a single server the same script also keeps both indexes,
//! and a rotation (rename plus index move) is one script. A session's keys (its hash and its
//! rotation tombstone) share the hash tag `{H}`, so on a cluster every script touches a
//! single slot. The indexes live in other slots there, so the client updates them after
//! the script (in the same call), and a rotation first takes the record out of the old key
//! (read, delete and tombstone in one script, so requests racing on the old key fail
//! closed), then files it under the new one, then indexes the new key before unindexing
//! the old. The tombstone names the new key, so a `delete_user` that finds an indexed
//! session rotated away follows it there, and marks a new key not filed yet so that the
//! rotation cannot file it: revoking a user reaches even a session rotating meanwhile.
//!
//! # Costs
//! Loading is one `HGETALL`; each write-back one `EVALSHA`. On a single server the
//! commands that concurrent requests issue in the same turn of the async scheduler travel
//! together as one pipeline (auto-pipelining): under load, Redis and the application make
//! one socket write and one read for a whole batch of requests instead of one per command,
//! which saves Redis and the application CPU per request (at most 1024 commands per
//! pipeline; figures in BENCHMARKS.md). Each
//! command still gets its own reply. (Per-user reads, already one pipeline each, go
//! straight to the connection.) On a cluster a creation, a
//! deletion, and a write that moves the session's expiry or changes its user add one
//! round trip for the index updates (a rotation: see below). There the user index is
//! scored by absolute deadlines, which sliding refreshes never move, so a refresh updates
//! only the count index. Per-user operations read the user's sorted set and then that user's sessions
//! (pipelined on a single server, concurrent calls to their nodes on a cluster): two round
//! trips, O(that user's sessions), never a keyspace scan. On a single server `delete_user`
//! is one script instead, reading the index and deleting in one step, so that no session
//! can rotate out of its user's revocation; on a cluster it revokes each session with a
//! script on its own node and follows sessions rotating meanwhile to their new keys (one
//! more round trip per rotation it catches in flight). For this a cluster rotation takes
//! four round trips: its two scripts, the new key's index updates, then the old key's.
//! `count` is one `ZCOUNT`: exact on a single server; on a cluster its index
//! is updated after each script, so it can be off for a moment while writes are in
//! flight.
//!
//! # Failures
//! Connection trouble (refused, reset, timed out, a cluster slot without a node) is
//! [`ErrorKind::StoreUnavailable`](crate::ErrorKind::StoreUnavailable), which the layer
//! answers with a 503, as are the server's "not now" replies (`LOADING`, `TRYAGAIN`,
//! `CLUSTERDOWN`, `MASTERDOWN`, `READONLY`); other errors the server answers with are
//! [`ErrorKind::Store`](crate::ErrorKind::Store). [`connect`](RedisStore::connect) sets a
//! 1 s connection timeout and a 2 s response timeout, and the connection reconnects by
//! itself when Redis comes back. Data under a session key that is not a session (another
//! Redis type, a field that is not JSON, missing or garbled times) is logged and treated as no
//! session.

mod batch;
mod codec;
mod conn;
mod lua;

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, RedisResult, Script, Value};
use time::OffsetDateTime;

use self::codec::{decode, pairs, push_delta, push_record};
use self::conn::{is_wrong_type, to_error, Conn};
use self::lua::Scripts;
use super::{check_delta_depth, check_record_depth, SessionStore, ROTATION_TOMBSTONE};
use crate::error::Error;
use crate::id::IdHash;
use crate::millis::unix_millis;
use crate::record::{Delta, Record, SessionInfo};

/// Arguments a script call is sized for up front: the common ones, then a delta's or a
/// new record's dozen or so.
const SCRIPT_ARGS: usize = 24;
/// Bytes of arguments (keys aside) a script call is sized for up front.
const SCRIPT_BYTES: usize = 384;

const DEFAULT_PREFIX: &str = "sessionware";
/// How long to wait for a TCP connection to a Redis node.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long to wait for any one reply.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Reconnection attempts per outage detected, before requests fail with a 503; the next
/// request tries again, so service resumes as soon as Redis is back.
const RECONNECT_RETRIES: usize = 2;
const CLUSTER_RETRIES: u32 = 2;

/// Sessions in Redis or Redis Cluster. Cheap to clone: clones share one connection.
///
/// See the [module docs](self) for the key layout, the atomicity of each operation and
/// what a request costs.
#[derive(Clone)]
pub struct RedisStore {
    conn: Conn,
    prefix: Arc<str>,
    scripts: Arc<Scripts>,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .field("cluster", &self.conn.is_cluster())
            .finish_non_exhaustive()
    }
}

/// What filing a record under a key came to.
enum Filing {
    /// Filed; on a cluster, the index updates still to make.
    Filed(Vec<Cmd>),
    /// A live session already has the key.
    Taken,
    /// The key was marked by a revocation of the rotating session (cluster only).
    Revoked,
}

/// How many rotations a cluster `delete_user` follows from one indexed session before it
/// gives up: a rotation takes at least three round trips, a step of the chase one, so
/// the chase catches up within a few steps unless something rotates without pause.
const MAX_CHASE: usize = 64;

/// What a cluster revocation leaves under the tombstone key of a rotation's new key that
/// was not filed yet (see `lua.rs`, `REVOKE`).
const REVOCATION_MARK: &str = "revoked";

/// What an index update does.
enum IndexOp<'a> {
    /// File the member with this score (an expiry); the `ZADD` flag (`""`, `"XX"`, `"GT"`).
    Add(i64, &'a str),
    Remove,
}

fn now_ms() -> i64 {
    unix_millis(OffsetDateTime::now_utc())
}

fn tombstone_ms() -> i64 {
    ROTATION_TOMBSTONE
        .whole_milliseconds()
        .try_into()
        .unwrap_or(i64::MAX)
}

fn corrupt(key: &IdHash, reason: &str) {
    tracing::warn!(
        session = %key.short(),
        reason,
        "corrupt session data in Redis treated as no session"
    );
}

impl RedisStore {
    fn new(conn: Conn) -> Self {
        Self {
            conn,
            prefix: DEFAULT_PREFIX.into(),
            scripts: Arc::new(Scripts::new()),
        }
    }

    /// Connects to one Redis server, such as `redis://127.0.0.1:6379/0` (or `rediss://`
    /// where redis-rs is built with TLS). The connection reconnects by itself.
    ///
    /// Fails with [`ErrorKind::StoreUnavailable`](crate::ErrorKind::StoreUnavailable) if the
    /// server cannot be reached now, or [`ErrorKind::Store`](crate::ErrorKind::Store) if
    /// the URL is invalid.
    pub async fn connect(url: &str) -> Result<Self, Error> {
        let client = redis::Client::open(url).map_err(Error::store)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(RECONNECT_RETRIES)
            .set_max_delay(Duration::from_millis(500));
        let manager = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(to_error)?;
        Ok(Self::from_connection_manager(manager))
    }

    /// A store on a connection you configured yourself (timeouts, TLS, credentials).
    pub fn from_connection_manager(manager: ConnectionManager) -> Self {
        Self::new(Conn::Single(batch::Batched::new(manager)))
    }

    /// Connects to a Redis Cluster through any of its nodes (`redis://host:port` each);
    /// the client discovers the others.
    pub async fn connect_cluster<I>(nodes: I) -> Result<Self, Error>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let nodes: Vec<String> = nodes.into_iter().map(|n| n.as_ref().to_owned()).collect();
        let client = ClusterClientBuilder::new(nodes)
            .connection_timeout(CONNECT_TIMEOUT)
            .response_timeout(RESPONSE_TIMEOUT)
            .retries(CLUSTER_RETRIES)
            .build()
            .map_err(Error::store)?;
        let conn = client.get_async_connection().await.map_err(to_error)?;
        Ok(Self::from_cluster_connection(conn))
    }

    /// A store on a cluster connection you configured yourself.
    pub fn from_cluster_connection(conn: ClusterConnection) -> Self {
        Self::new(Conn::Cluster(conn))
    }

    /// Puts every key under `prefix` (default `sessionware`), so several applications
    /// can share one Redis. A prefix containing `{` or `}` would become the cluster hash
    /// tag of every key and put all sessions in one slot: avoid them on a cluster.
    pub fn with_prefix(mut self, prefix: &str) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn session_key(&self, key: &IdHash) -> String {
        self.tagged_key(":s:", key)
    }

    /// The rotation tombstone of a session key: the same hash tag, so the same slot.
    fn tombstone_key(&self, key: &IdHash) -> String {
        self.tagged_key(":t:", key)
    }

    /// `<prefix><kind>{<key in hex>}`. Built on every store call, so sized once up front:
    /// `format!` grows its string four times on the way to these ~70 bytes.
    fn tagged_key(&self, kind: &str, key: &IdHash) -> String {
        use std::fmt::Write as _;
        let mut text = String::with_capacity(self.prefix.len() + kind.len() + 66);
        text.push_str(&self.prefix);
        text.push_str(kind);
        text.push('{');
        let _ = write!(text, "{key}"); // writing to a String cannot fail
        text.push('}');
        text
    }

    /// `command` on the Redis key `redis_key` names for each of `keys`, for one pipeline.
    fn per_key(
        &self,
        command: &str,
        keys: &[IdHash],
        redis_key: fn(&Self, &IdHash) -> String,
    ) -> Vec<Cmd> {
        keys.iter()
            .map(|key| {
                let mut cmd = redis::cmd(command);
                cmd.arg(redis_key(self, key));
                cmd
            })
            .collect()
    }

    fn user_key(&self, user: &str) -> String {
        format!("{}:u:{{{user}}}", self.prefix)
    }

    fn all_key(&self) -> String {
        format!("{}:all", self.prefix)
    }

    /// An `EVALSHA` of `script` on `keys` with the common arguments the prelude reads.
    fn script(&self, script: &Script, keys: &[&str], now: i64) -> Cmd {
        let keeps_index = if self.conn.is_cluster() { "0" } else { "1" };
        // Sized for the common calls up front: a command's buffer otherwise grows a few
        // times over, and the scripts' callers append a dozen or more arguments.
        let key_bytes: usize = keys.iter().map(|key| key.len()).sum();
        let mut cmd = Cmd::with_capacity(SCRIPT_ARGS, SCRIPT_BYTES + key_bytes);
        cmd.arg("EVALSHA")
            .arg(script.get_hash())
            .arg(keys.len())
            .arg(keys)
            .arg(now)
            .arg(keeps_index)
            .arg(&*self.prefix);
        cmd
    }

    fn index(&self, index: &str, member: &str, op: IndexOp<'_>, now: i64) -> Cmd {
        let mut cmd = self.script(&self.scripts.index, &[index], now);
        cmd.arg(member);
        match op {
            IndexOp::Add(expires, flag) => cmd.arg("add").arg(expires).arg(flag),
            IndexOp::Remove => cmd.arg("remove").arg(0).arg(""),
        };
        cmd
    }

    async fn query<T: redis::FromRedisValue>(&self, cmd: &Cmd) -> Result<T, Error> {
        self.conn.query(&self.scripts, cmd).await.map_err(to_error)
    }

    async fn many(&self, cmds: Vec<Cmd>) -> Result<Vec<RedisResult<Value>>, Error> {
        self.conn.many(&self.scripts, cmds).await.map_err(to_error)
    }

    /// Cluster only: the index updates a script could not make across slots.
    async fn fix_indexes(&self, cmds: Vec<Cmd>) -> Result<(), Error> {
        for result in self.many(cmds).await? {
            result.map_err(to_error)?;
        }
        Ok(())
    }

    /// Files `record` under `key`. `revocable`: the second step of a cluster rotation,
    /// which a revocation may have ended in between (see `lua.rs`, `REVOKE`).
    async fn file(
        &self,
        key: &IdHash,
        record: &Record,
        revocable: bool,
        now: i64,
    ) -> Result<Filing, Error> {
        let member = key.to_string();
        let expires = unix_millis(record.expires_at());
        let session_key = self.session_key(key);
        let mut cmd = if revocable {
            let keys = [&*session_key, &*self.tombstone_key(key)];
            self.script(&self.scripts.create, &keys, now)
        } else {
            self.script(&self.scripts.create, &[&session_key], now)
        };
        cmd.arg(&member).arg(expires);
        match &record.user_id {
            Some(user) => cmd.arg("1").arg(user.as_str()),
            None => cmd.arg("0").arg(""),
        };
        push_record(&mut cmd, record)?;
        match self.query::<i64>(&cmd).await? {
            1 => {}
            2 => return Ok(Filing::Revoked),
            _ => return Ok(Filing::Taken),
        }
        let mut fixups = Vec::new();
        if self.conn.is_cluster() && expires > now {
            fixups.push(self.index(&self.all_key(), &member, IndexOp::Add(expires, ""), now));
            if let Some(user) = &record.user_id {
                let op = IndexOp::Add(unix_millis(record.absolute_deadline), "GT");
                fixups.push(self.index(&self.user_key(user), &member, op, now));
            }
        }
        Ok(Filing::Filed(fixups))
    }

    /// The record a reply holds, if it is a live, well-formed session.
    fn live_record(&self, key: &IdHash, fields: Option<codec::Fields>) -> Option<Record> {
        let Some(fields) = fields else {
            corrupt(key, "unexpected reply shape");
            return None;
        };
        if fields.is_empty() {
            return None;
        }
        match decode(fields) {
            Ok(record) => (!record.is_expired(OffsetDateTime::now_utc())).then_some(record),
            Err(reason) => {
                corrupt(key, &reason);
                None
            }
        }
    }

    /// Deletes the session under `key` (only if `owner` owns it, when given).
    async fn delete_where(&self, key: &IdHash, owner: Option<&str>) -> Result<bool, Error> {
        let now = now_ms();
        let cmd = self.delete_cmd(key, owner, now);
        let (deleted, user): (i64, Option<String>) = self.query(&cmd).await?;
        if deleted == 1 && self.conn.is_cluster() {
            self.fix_indexes(self.unindex(&[*key], user.as_deref(), now))
                .await?;
        }
        Ok(deleted == 1)
    }

    fn delete_cmd(&self, key: &IdHash, owner: Option<&str>, now: i64) -> Cmd {
        let mut cmd = self.script(&self.scripts.delete, &[&self.session_key(key)], now);
        cmd.arg(key.to_string());
        match owner {
            Some(owner) => cmd.arg("1").arg(owner),
            None => cmd.arg("0").arg(""),
        };
        cmd
    }

    /// Cluster index updates for sessions that no longer exist: sessions never come back,
    /// so removing their entries can never hide a live session.
    fn unindex(&self, keys: &[IdHash], user: Option<&str>, now: i64) -> Vec<Cmd> {
        let mut cmds = Vec::new();
        for key in keys {
            let member = key.to_string();
            cmds.push(self.index(&self.all_key(), &member, IndexOp::Remove, now));
            if let Some(user) = user {
                cmds.push(self.index(&self.user_key(user), &member, IndexOp::Remove, now));
            }
        }
        cmds
    }

    /// The keys the user's index lists as live (some may have ended since).
    async fn user_members(&self, user_id: &str, now: i64) -> Result<Vec<IdHash>, Error> {
        let mut cmd = redis::cmd("ZRANGEBYSCORE");
        cmd.arg(self.user_key(user_id))
            .arg(format!("({now}"))
            .arg("+inf");
        let members: Vec<String> = self.query(&cmd).await?;
        Ok(members
            .iter()
            .filter_map(|member| match member.parse() {
                Ok(key) => Some(key),
                Err(_) => {
                    tracing::warn!(member, "foreign member in a sessionware user index ignored");
                    None
                }
            })
            .collect())
    }

    /// A rotation on a cluster, where the old and new keys lie in different slots: take the
    /// record out of the old key (leaving a tombstone that names the new one), file it under
    /// the new key, then index the new key before unindexing the old. At every instant the
    /// user's index lists the new key or an old key whose tombstone leads to it, so a
    /// concurrent `delete_user` always reaches the session (see `delete_user`).
    async fn rotate_across_slots(
        &self,
        from: &IdHash,
        to: &IdHash,
        delta: &Delta,
        now: i64,
    ) -> Result<bool, Error> {
        let keys = [&*self.session_key(from), &*self.tombstone_key(from)];
        let mut take = self.script(&self.scripts.take, &keys, now);
        take.arg(tombstone_ms()).arg(to.to_string());
        let taken = pairs(self.query(&take).await?);
        let took = taken.as_ref().is_some_and(|fields| !fields.is_empty());
        let Some(mut record) = self.live_record(from, taken) else {
            if took {
                // The script found the session live and took it out, but it is not: it
                // expired on the way back (the script judged by the time sent with it), or
                // it is corrupt. The session is over, so its tombstone goes too, or the
                // client's next requests would be refused for a rotation that never was.
                self.drop_tombstone(from).await?;
            }
            return Ok(false);
        };
        let owner = record.user_id.clone();
        delta.apply_to(&mut record);
        let unindex_old = self.unindex(&[*from], owner.as_deref(), now);
        match self.file(to, &record, true, now).await {
            Ok(Filing::Filed(fixups)) => {
                self.fix_indexes(fixups).await?;
                self.fix_indexes(unindex_old).await?;
                Ok(true)
            }
            Ok(Filing::Revoked) => {
                // Its user was revoked while it moved: the session has ended. The client
                // keeps the old ID, whose tombstone would answer its next requests with a
                // 409: with the session over, it goes, so they start afresh.
                self.drop_tombstone(from).await?;
                self.fix_indexes(unindex_old).await?;
                Ok(false)
            }
            filed => {
                // The record is out of its old key and not under the new one: the session
                // has ended. Failing closed is what a rotation must do when it cannot finish.
                tracing::error!(
                    from = %from.short(), to = %to.short(),
                    "session rotation could not file the record under its new key; session ended"
                );
                match filed {
                    Err(err) => Err(err),
                    _ => Err(Error::store("the new session key was already taken")),
                }
            }
        }
    }

    /// Forgets that `key` was rotated away (its session ended instead).
    async fn drop_tombstone(&self, key: &IdHash) -> Result<(), Error> {
        let mut cmd = redis::cmd("DEL");
        cmd.arg(self.tombstone_key(key));
        self.query::<i64>(&cmd).await.map(drop)
    }

    /// Removes the entries of `gone` (keys whose records were found missing) from the
    /// user's index. On a cluster, not those whose rotation tombstone exists: such a key
    /// may be the old key of a rotation in flight, whose entry must stay until the new key
    /// is listed, so that a revocation can follow the tombstone.
    async fn tidy_user_index(&self, user_id: &str, mut gone: Vec<IdHash>) -> Result<(), Error> {
        if self.conn.is_cluster() {
            let checks = self.per_key("EXISTS", &gone, Self::tombstone_key);
            let stoned = self.many(checks).await?;
            let mut stoned = stoned.into_iter();
            gone.retain(|_| matches!(stoned.next(), Some(Ok(Value::Int(0)))));
            if gone.is_empty() {
                return Ok(());
            }
        }
        let mut cmd = redis::cmd("ZREM");
        cmd.arg(self.user_key(user_id))
            .arg(gone.iter().map(IdHash::to_string).collect::<Vec<_>>());
        self.query::<i64>(&cmd).await.map(drop)
    }

    /// `delete_user` on a cluster: revokes each session the user's index lists and follows
    /// the tombstones of those rotated away meanwhile to their new keys, marking a new key
    /// not yet filed so that its rotation cannot file it. Returns how many sessions ended.
    async fn revoke_across_slots(
        &self,
        user_id: &str,
        keep: Option<&IdHash>,
        now: i64,
    ) -> Result<u64, Error> {
        let mut frontier: Vec<(IdHash, bool)> = self
            .user_members(user_id, now)
            .await?
            .into_iter()
            .filter(|key| Some(key) != keep)
            .map(|key| (key, false))
            .collect();
        // A session can be reached twice (the index may list both keys of a rotation it
        // has not finished): each key is revoked once, so a session is counted once and a
        // key just deleted is never marked.
        let mut visited: HashSet<IdHash> = frontier.iter().map(|(key, _)| *key).collect();
        let mut deleted = Vec::new();
        // Keys rotated away: their entries, which rotations in flight may not have removed
        // yet, can go with the deleted ones (a session never returns to a key it left).
        let mut moved_on = Vec::new();
        let mut ended_in_flight = 0_u64;
        for _ in 0..MAX_CHASE {
            if frontier.is_empty() {
                break;
            }
            let cmds = frontier
                .iter()
                .map(|(key, chased)| {
                    let keys = [&*self.session_key(key), &*self.tombstone_key(key)];
                    let mut cmd = self.script(&self.scripts.revoke, &keys, now);
                    cmd.arg(user_id)
                        .arg(if *chased { "1" } else { "0" })
                        .arg(tombstone_ms());
                    cmd
                })
                .collect();
            let mut next = Vec::new();
            for ((key, _), reply) in frontier.iter().zip(self.many(cmds).await?) {
                let value = reply.map_err(to_error)?;
                let (outcome, successor): (i64, Option<String>) =
                    redis::from_redis_value(value).map_err(Error::store)?;
                match (outcome, successor) {
                    (1, _) => deleted.push(*key),
                    (2, Some(successor)) => match successor.parse() {
                        Ok(successor) => {
                            moved_on.push(*key);
                            if Some(&successor) != keep && visited.insert(successor) {
                                next.push((successor, true));
                            }
                        }
                        Err(_) => tracing::warn!("foreign rotation tombstone ignored"),
                    },
                    (3, _) => ended_in_flight += 1,
                    _ => {}
                }
            }
            frontier = next;
        }
        let ended = deleted.len() as u64 + ended_in_flight;
        deleted.append(&mut moved_on);
        if !deleted.is_empty() {
            self.fix_indexes(self.unindex(&deleted, Some(user_id), now))
                .await?;
        }
        if !frontier.is_empty() {
            return Err(Error::store(
                "a session kept rotating while its user was revoked",
            ));
        }
        Ok(ended)
    }
}

#[async_trait]
impl SessionStore for RedisStore {
    async fn load(&self, key: &IdHash) -> Result<Option<Record>, Error> {
        let session_key = self.session_key(key);
        let mut cmd = Cmd::with_capacity(2, "HGETALL".len() + session_key.len());
        cmd.arg("HGETALL").arg(session_key);
        match self.conn.query::<Value>(&self.scripts, &cmd).await {
            Ok(value) => Ok(self.live_record(key, pairs(value))),
            Err(err) if is_wrong_type(&err) => {
                corrupt(key, "the key holds another Redis type");
                Ok(None)
            }
            Err(err) => Err(to_error(err)),
        }
    }

    async fn create(&self, key: &IdHash, record: &Record) -> Result<bool, Error> {
        check_record_depth(record)?;
        match self.file(key, record, false, now_ms()).await? {
            Filing::Filed(fixups) => {
                self.fix_indexes(fixups).await?;
                Ok(true)
            }
            Filing::Taken | Filing::Revoked => Ok(false),
        }
    }

    async fn apply(&self, key: &IdHash, delta: &Delta) -> Result<bool, Error> {
        check_delta_depth(delta)?;
        let now = now_ms();
        let member = key.to_string();
        let mut cmd = self.script(&self.scripts.apply, &[&self.session_key(key)], now);
        cmd.arg(&member);
        push_delta(&mut cmd, delta)?;
        if !self.conn.is_cluster() {
            // The script kept the indexes itself and answers only whether it applied.
            let applied: i64 = self.query(&cmd).await?;
            return Ok(applied == 1);
        }
        let reply: (i64, i64, i64, Option<String>, Option<String>, i64, i64) =
            self.query(&cmd).await?;
        let (applied, expires, new_expires, user, new_user, absolute, new_absolute) = reply;
        if applied != 1 {
            return Ok(false);
        }
        let mut fixups = Vec::new();
        if new_expires <= now {
            fixups = self.unindex(&[*key], new_user.as_deref(), now);
        } else {
            if new_expires != expires {
                let op = IndexOp::Add(new_expires, "XX");
                fixups.push(self.index(&self.all_key(), &member, op, now));
            }
            // On a cluster a user index entry is scored by the session's absolute
            // deadline, an upper bound of its expiry that sliding refreshes never
            // move, so the common write needs no user index update at all. Entries are
            // only ever added or raised here (GT), never removed or lowered: updates
            // from concurrent requests may land in any order, and whatever the order, a
            // live session stays listed under its user. Entries of sessions that ended
            // or changed hands are filtered out when read and age out by score.
            if let Some(owner) = new_user.as_deref() {
                if new_user != user || new_absolute != absolute {
                    let op = IndexOp::Add(new_absolute, "GT");
                    fixups.push(self.index(&self.user_key(owner), &member, op, now));
                }
            }
        }
        self.fix_indexes(fixups).await?;
        Ok(true)
    }

    async fn rotate(&self, from: &IdHash, to: &IdHash, delta: &Delta) -> Result<bool, Error> {
        // Checked before anything is written: on a cluster the record leaves its old key
        // before the delta is encoded.
        check_delta_depth(delta)?;
        let now = now_ms();
        if self.conn.is_cluster() {
            return self.rotate_across_slots(from, to, delta, now).await;
        }
        let (old, new) = (self.session_key(from), self.session_key(to));
        let tombstone = self.tombstone_key(from);
        let mut cmd = self.script(&self.scripts.rotate, &[&old, &new, &tombstone], now);
        cmd.arg(from.to_string())
            .arg(to.to_string())
            .arg(tombstone_ms());
        push_delta(&mut cmd, delta)?;
        let moved: i64 = self.query(&cmd).await?;
        Ok(moved == 1)
    }

    /// A revocation's mark on a key (cluster only) is not a rotation: a client holding that
    /// ID lost its session to the revocation, and may start a new one.
    /// The rotation's instant is read off the tombstone's remaining lifetime, which Redis
    /// counts down by its own clock: no clock of another server is compared.
    async fn rotated_at(&self, key: &IdHash) -> Result<Option<OffsetDateTime>, Error> {
        let stone_key = self.tombstone_key(key);
        let cmd = self.script(&self.scripts.rotated, &[&stone_key], now_ms());
        let reply: Vec<Value> = self.query(&cmd).await?;
        // The clock is read after the reply: the instant then errs late, by the reply's
        // way back, which refuses more rather than fewer requests racing the rotation.
        let now = OffsetDateTime::now_utc();
        let [stone, left] = <[Value; 2]>::try_from(reply).unwrap_or([Value::Nil, Value::Nil]);
        let stone: Option<String> = redis::from_redis_value(stone).map_err(Error::store)?;
        let left: Option<i64> = redis::from_redis_value(left).map_err(Error::store)?;
        match (stone, left) {
            (Some(stone), Some(left))
                if stone != REVOCATION_MARK && (0..=tombstone_ms()).contains(&left) =>
            {
                Ok(Some(
                    now - time::Duration::milliseconds(tombstone_ms() - left),
                ))
            }
            // No tombstone, a revocation's mark, or none of ours (no TTL, or a longer one).
            _ => Ok(None),
        }
    }

    async fn delete(&self, key: &IdHash) -> Result<bool, Error> {
        self.delete_where(key, None).await
    }

    async fn list_user(&self, user_id: &str) -> Result<Vec<SessionInfo>, Error> {
        let now = now_ms();
        let keys = self.user_members(user_id, now).await?;
        // The whole record, not just its metadata, so that a listing and a load agree on
        // which records are corrupt.
        let cmds = self.per_key("HGETALL", &keys, Self::session_key);
        let mut sessions = Vec::new();
        let mut gone = Vec::new();
        for (key, reply) in keys.iter().zip(self.many(cmds).await?) {
            let fields = match reply {
                Ok(value) => pairs(value),
                Err(err) if is_wrong_type(&err) => {
                    corrupt(key, "the key holds another Redis type");
                    continue;
                }
                Err(err) => return Err(to_error(err)),
            };
            if fields.as_ref().is_some_and(Vec::is_empty) {
                gone.push(*key);
                continue;
            }
            if let Some(record) = self.live_record(key, fields) {
                if record.user_id.as_deref() == Some(user_id) {
                    sessions.push(record.info(*key));
                }
            }
        }
        if !gone.is_empty() {
            // Entries of sessions that no longer exist (ended by their idle timeout, say):
            // tidy them away. A failure here changes nothing the caller asked for, so it
            // is only logged.
            if let Err(err) = self.tidy_user_index(user_id, gone).await {
                tracing::debug!(error = %err, "could not tidy a user index");
            }
        }
        Ok(sessions)
    }

    async fn delete_user(&self, user_id: &str, keep: Option<&IdHash>) -> Result<u64, Error> {
        let now = now_ms();
        if self.conn.is_cluster() {
            return self.revoke_across_slots(user_id, keep, now).await;
        }
        // One script: no rotation can move a session out of reach in between.
        let mut cmd = self.script(&self.scripts.delete_user, &[&self.user_key(user_id)], now);
        cmd.arg(user_id)
            .arg(keep.map(IdHash::to_string).unwrap_or_default());
        self.query(&cmd).await
    }

    async fn delete_user_session(&self, user_id: &str, key: &IdHash) -> Result<bool, Error> {
        self.delete_where(key, Some(user_id)).await
    }

    /// Redis removes expired sessions by itself (TTLs); this drops the expired entries of
    /// the count index and returns how many it dropped.
    async fn delete_expired(&self) -> Result<u64, Error> {
        let mut cmd = redis::cmd("ZREMRANGEBYSCORE");
        cmd.arg(self.all_key()).arg("-inf").arg(now_ms());
        self.query(&cmd).await
    }

    /// One `ZCOUNT` of the count index: exact on a single server; on a cluster the index
    /// is updated just after each write, so it can lag writes in flight.
    async fn count(&self) -> Result<u64, Error> {
        let mut cmd = redis::cmd("ZCOUNT");
        cmd.arg(self.all_key())
            .arg(format!("({}", now_ms()))
            .arg("+inf");
        self.query(&cmd).await
    }
}
