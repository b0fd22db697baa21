//! The one small app every mode serves, written once per session library.
//!
//! Routes (all `GET`, so wrk needs no body):
//! - `/read`       reads the counter `n` (0 when absent) and returns it;
//! - `/incr`       reads `n`, writes `n + 1`, returns the new value;
//! - `/set/{key}`  sets the key named in the path to 1 (the 50-concurrent-keys case);
//! - `/get/{key}`  returns "1" if the key is set, "0" otherwise (to count survivors);
//! - `/plain`      never touches the session.
//!
//! Every mode uses the same semantics: a 1-hour idle timeout that reads extend, cookies
//! without `Secure` (the benchmark speaks plain HTTP on loopback).

use std::fmt;
use std::str::FromStr;

use axum::extract::Path;
use axum::routing::get;
use axum::Router;

/// The 1-hour idle timeout every mode is configured with.
const IDLE: time::Duration = time::Duration::hours(1);

/// A server configuration under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The same routes with no session layer: what the layers are measured against.
    Bare,
    SessionwareMemory,
    SessionwareRedis,
    /// tower-sessions 0.14, `MemoryStore`, default saving (a read does not extend expiry).
    TowerMemory,
    /// tower-sessions 0.14, `MemoryStore`, `with_always_save(true)` (reads extend expiry).
    TowerMemoryAlwaysSave,
    /// tower-sessions 0.14 with tower-sessions-redis-store 0.16, default saving.
    TowerRedis,
    /// tower-sessions 0.14 with tower-sessions-redis-store 0.16, `with_always_save(true)`.
    TowerRedisAlwaysSave,
    /// axum_session 0.22 with its memory-only pool (`SessionNullPool`).
    AxumSessionMemory,
    /// axum_session 0.22 with axum_session_redispool 0.13, default settings: sessions are
    /// cached in process memory for an hour and written to Redis at most every 10 s, so a
    /// read is served without touching Redis (and a second server would not see it).
    AxumSessionRedis,
    /// The same with `with_memory_lifetime(0)`: every request loads from and saves to
    /// Redis, which is what a store shared by several servers needs.
    AxumSessionRedisNoCache,
}

impl Mode {
    pub const ALL: [Mode; 10] = [
        Mode::Bare,
        Mode::SessionwareMemory,
        Mode::SessionwareRedis,
        Mode::TowerMemory,
        Mode::TowerMemoryAlwaysSave,
        Mode::TowerRedis,
        Mode::TowerRedisAlwaysSave,
        Mode::AxumSessionMemory,
        Mode::AxumSessionRedis,
        Mode::AxumSessionRedisNoCache,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Mode::Bare => "bare",
            Mode::SessionwareMemory => "sessionware-memory",
            Mode::SessionwareRedis => "sessionware-redis",
            Mode::TowerMemory => "tower-sessions-memory",
            Mode::TowerMemoryAlwaysSave => "tower-sessions-memory-always-save",
            Mode::TowerRedis => "tower-sessions-redis",
            Mode::TowerRedisAlwaysSave => "tower-sessions-redis-always-save",
            Mode::AxumSessionMemory => "axum_session-memory",
            Mode::AxumSessionRedis => "axum_session-redis",
            Mode::AxumSessionRedisNoCache => "axum_session-redis-nocache",
        }
    }

    pub fn uses_redis(self) -> bool {
        matches!(
            self,
            Mode::SessionwareRedis
                | Mode::TowerRedis
                | Mode::TowerRedisAlwaysSave
                | Mode::AxumSessionRedis
                | Mode::AxumSessionRedisNoCache
        )
    }

    pub fn is_sessionware(self) -> bool {
        matches!(self, Mode::SessionwareMemory | Mode::SessionwareRedis)
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Mode {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        Mode::ALL
            .into_iter()
            .find(|mode| mode.name() == text)
            .ok_or_else(|| format!("unknown mode {text:?}"))
    }
}

/// Builds the router for `mode`. Redis modes connect to `redis_url`.
pub async fn router(mode: Mode, redis_url: &str) -> Router {
    match mode {
        Mode::Bare => bare::router(),
        Mode::SessionwareMemory => sessionware_app::router(sessionware::MemoryStore::new()),
        Mode::SessionwareRedis => {
            let store = sessionware::RedisStore::connect(redis_url)
                .await
                .expect("sessionware RedisStore connects");
            sessionware_app::router(store)
        }
        Mode::TowerMemory | Mode::TowerMemoryAlwaysSave => tower_app::router(
            tower_sessions::MemoryStore::default(),
            mode == Mode::TowerMemoryAlwaysSave,
        ),
        Mode::TowerRedis | Mode::TowerRedisAlwaysSave => tower_app::router(
            tower_app::redis_store(redis_url).await,
            mode == Mode::TowerRedisAlwaysSave,
        ),
        Mode::AxumSessionMemory => axum_session_app::memory_router().await,
        Mode::AxumSessionRedis => axum_session_app::redis_router(redis_url, true).await,
        Mode::AxumSessionRedisNoCache => axum_session_app::redis_router(redis_url, false).await,
    }
}

async fn plain() -> &'static str {
    "ok"
}

mod bare {
    use super::*;

    // The bare app has no session, so its "session" routes do the same amount of HTTP work
    // (same paths, similar bodies) and nothing else.
    pub(super) fn router() -> Router {
        Router::new()
            .route("/read", get(|| async { "0" }))
            .route("/incr", get(|| async { "1" }))
            .route("/set/{key}", get(|Path(_key): Path<String>| async { "ok" }))
            .route("/get/{key}", get(|Path(_key): Path<String>| async { "0" }))
            .route("/plain", get(plain))
    }
}

mod sessionware_app {
    use super::*;
    use sessionware::{Session, SessionLayer, SessionStore};

    async fn read(session: Session) -> Result<String, sessionware::Error> {
        let n = session.get::<u64>("n").await?.unwrap_or(0);
        Ok(n.to_string())
    }

    async fn incr(session: Session) -> Result<String, sessionware::Error> {
        let n = session.get::<u64>("n").await?.unwrap_or(0) + 1;
        session.insert("n", n).await?;
        Ok(n.to_string())
    }

    async fn set(
        session: Session,
        Path(key): Path<String>,
    ) -> Result<&'static str, sessionware::Error> {
        session.insert(&key, 1u64).await?;
        Ok("ok")
    }

    async fn get_key(
        session: Session,
        Path(key): Path<String>,
    ) -> Result<&'static str, sessionware::Error> {
        let present = session.get::<u64>(&key).await?.is_some();
        Ok(if present { "1" } else { "0" })
    }

    pub(super) fn router(store: impl SessionStore) -> Router {
        let layer = SessionLayer::new(store)
            .with_idle_timeout(IDLE)
            .with_secure(false);
        Router::new()
            .route("/read", get(read))
            .route("/incr", get(incr))
            .route("/set/{key}", get(set))
            .route("/get/{key}", get(get_key))
            .route("/plain", get(plain))
            .layer(layer)
    }
}

mod tower_app {
    use super::*;
    use tower_sessions::{Expiry, Session, SessionManagerLayer, SessionStore};
    use tower_sessions_redis_store::fred::prelude::{ClientLike, Config, Pool};
    use tower_sessions_redis_store::RedisStore;

    // tower-sessions' errors are not responses; a failure is a 500 like in sessionware.
    type Reply<T> = Result<T, (axum::http::StatusCode, String)>;

    fn fail(err: tower_sessions::session::Error) -> (axum::http::StatusCode, String) {
        (
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            err.to_string(),
        )
    }

    async fn read(session: Session) -> Reply<String> {
        let n = session.get::<u64>("n").await.map_err(fail)?.unwrap_or(0);
        Ok(n.to_string())
    }

    async fn incr(session: Session) -> Reply<String> {
        let n = session.get::<u64>("n").await.map_err(fail)?.unwrap_or(0) + 1;
        session.insert("n", n).await.map_err(fail)?;
        Ok(n.to_string())
    }

    async fn set(session: Session, Path(key): Path<String>) -> Reply<&'static str> {
        session.insert(&key, 1u64).await.map_err(fail)?;
        Ok("ok")
    }

    async fn get_key(session: Session, Path(key): Path<String>) -> Reply<&'static str> {
        let present = session.get::<u64>(&key).await.map_err(fail)?.is_some();
        Ok(if present { "1" } else { "0" })
    }

    /// A fred pool of 4 connections, as tower-sessions-redis-store's docs set one up.
    pub(super) async fn redis_store(url: &str) -> RedisStore<Pool> {
        let config = Config::from_url(url).expect("valid Redis URL");
        let pool = Pool::new(config, None, None, None, 4).expect("fred pool");
        let _connection_task = pool.connect();
        pool.wait_for_connect().await.expect("fred connects");
        RedisStore::new(pool)
    }

    pub(super) fn router<S: SessionStore + Clone>(store: S, always_save: bool) -> Router {
        let layer = SessionManagerLayer::new(store)
            .with_expiry(Expiry::OnInactivity(IDLE))
            .with_secure(false)
            .with_always_save(always_save);
        Router::new()
            .route("/read", get(read))
            .route("/incr", get(incr))
            .route("/set/{key}", get(set))
            .route("/get/{key}", get(get_key))
            .route("/plain", get(plain))
            .layer(layer)
    }
}

mod axum_session_app {
    use super::*;
    use axum_session::{
        DatabasePool, Session, SessionConfig, SessionLayer, SessionNullPool, SessionStore,
    };
    use axum_session_redispool::SessionRedisPool;
    use redis_pool::RedisPool;

    async fn read<P: DatabasePool + Clone + fmt::Debug + Sync + Send + 'static>(
        session: Session<P>,
    ) -> String {
        session.get::<u64>("n").unwrap_or(0).to_string()
    }

    async fn incr<P: DatabasePool + Clone + fmt::Debug + Sync + Send + 'static>(
        session: Session<P>,
    ) -> String {
        let n = session.get::<u64>("n").unwrap_or(0) + 1;
        session.set("n", n);
        n.to_string()
    }

    async fn set<P: DatabasePool + Clone + fmt::Debug + Sync + Send + 'static>(
        session: Session<P>,
        Path(key): Path<String>,
    ) -> &'static str {
        session.set(&key, 1u64);
        "ok"
    }

    async fn get_key<P: DatabasePool + Clone + fmt::Debug + Sync + Send + 'static>(
        session: Session<P>,
        Path(key): Path<String>,
    ) -> &'static str {
        if session.get::<u64>(&key).is_some() {
            "1"
        } else {
            "0"
        }
    }

    fn config() -> SessionConfig {
        // `with_lifetime` is axum_session's idle timeout: every request moves the expiry
        // forward by it (written to the database at most every `db_update_interval`).
        SessionConfig::default()
            .with_lifetime(IDLE)
            .with_secure(false)
    }

    fn routes<P: DatabasePool + Clone + fmt::Debug + Sync + Send + 'static>(
        store: SessionStore<P>,
    ) -> Router {
        Router::new()
            .route("/read", get(read::<P>))
            .route("/incr", get(incr::<P>))
            .route("/set/{key}", get(set::<P>))
            .route("/get/{key}", get(get_key::<P>))
            .route("/plain", get(plain))
            .layer(SessionLayer::new(store))
    }

    pub(super) async fn memory_router() -> Router {
        let store = SessionStore::<SessionNullPool>::new(None, config())
            .await
            .expect("axum_session memory store");
        routes(store)
    }

    pub(super) async fn redis_router(url: &str, cache_in_memory: bool) -> Router {
        let client = redis::Client::open(url).expect("valid Redis URL");
        let pool = RedisPool::from(client);
        let mut config = config();
        if !cache_in_memory {
            config = config.with_memory_lifetime(time::Duration::ZERO);
        }
        let store = SessionStore::<SessionRedisPool>::new(Some(pool.into()), config)
            .await
            .expect("axum_session redis store");
        routes(store)
    }
}
