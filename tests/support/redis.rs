//! Shared by the Redis test binaries: where the test servers are, unique key prefixes, a
//! small app behind a real `SessionLayer`, and a private `redis-server` a test can kill.

#![allow(dead_code)] // each test binary uses its own part of this module

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::Path;
use axum::routing::get;
use axum::Router;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use sessionware::{RedisStore, Session};
use tower::ServiceExt;

const HOW_TO_START: &str = "run scripts/test.sh (or scripts/redis.sh start) to start the test \
                            Redis servers (single server on 127.0.0.1:6380, cluster on \
                            127.0.0.1:7101-7103), or point SESSIONWARE_REDIS_URL / \
                            SESSIONWARE_REDIS_CLUSTER at your own";

/// The single test server.
pub(crate) fn single_url() -> String {
    std::env::var("SESSIONWARE_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6380/".into())
}

/// The cluster's seed nodes.
pub(crate) fn cluster_nodes() -> Vec<String> {
    std::env::var("SESSIONWARE_REDIS_CLUSTER")
        .unwrap_or_else(|_| {
            "redis://127.0.0.1:7101,redis://127.0.0.1:7102,redis://127.0.0.1:7103".into()
        })
        .split(',')
        .map(|node| node.trim().to_owned())
        .collect()
}

/// A key prefix no other test (or run) uses, so tests never see each other's sessions.
pub(crate) fn unique_prefix(tag: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nonce = &sessionware::Id::random().unwrap().hash().to_string()[..8];
    format!("swtest:{tag}:{}:{n}:{nonce}", std::process::id())
}

/// A store on the single test server; fails the test, saying what to do, if it is down.
pub(crate) async fn single_store(prefix: &str) -> RedisStore {
    let url = single_url();
    match RedisStore::connect(&url).await {
        Ok(store) => store.with_prefix(prefix),
        Err(err) => panic!("cannot reach the test Redis at {url}: {err}; {HOW_TO_START}"),
    }
}

/// A store on the test cluster; fails the test, saying what to do, if it is down.
pub(crate) async fn cluster_store(prefix: &str) -> RedisStore {
    let nodes = cluster_nodes();
    match RedisStore::connect_cluster(&nodes).await {
        Ok(store) => store.with_prefix(prefix),
        Err(err) => {
            panic!("cannot reach the test Redis Cluster at {nodes:?}: {err}; {HOW_TO_START}")
        }
    }
}

/// A plain connection for looking at what the store wrote.
pub(crate) async fn raw(url: &str) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(url).expect("a valid Redis URL");
    match client.get_multiplexed_async_connection().await {
        Ok(conn) => conn,
        Err(err) => panic!("cannot reach the test Redis at {url}: {err}; {HOW_TO_START}"),
    }
}

/// One section of `INFO` (`commandstats`, `stats`, `cpu`, ...), as Redis writes it.
pub(crate) async fn info(conn: &mut redis::aio::MultiplexedConnection, section: &str) -> String {
    redis::cmd("INFO")
        .arg(section)
        .query_async(conn)
        .await
        .unwrap_or_else(|err| panic!("INFO {section}: {err}"))
}

/// Every key under `prefix`, by SCAN (fine for a test's own few keys).
pub(crate) async fn keys_under(
    conn: &mut redis::aio::MultiplexedConnection,
    prefix: &str,
) -> Vec<String> {
    let mut keys = Vec::new();
    let mut cursor = 0u64;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}:*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await
            .expect("SCAN");
        keys.extend(batch);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    keys.sort();
    keys
}

// ---- A small app behind the real layer. ----

async fn set(
    session: Session,
    Path((key, value)): Path<(String, String)>,
) -> Result<String, sessionware::Error> {
    session.insert(&key, value).await?;
    Ok("ok".into())
}

async fn read(session: Session, Path(key): Path<String>) -> Result<String, sessionware::Error> {
    Ok(session.get::<String>(&key).await?.unwrap_or_default())
}

async fn login(session: Session, Path(user): Path<String>) -> Result<String, sessionware::Error> {
    session.login(user).await?;
    Ok("welcome".into())
}

async fn logout(session: Session) -> Result<String, sessionware::Error> {
    session.logout().await?;
    Ok("bye".into())
}

/// `/set/KEY/VALUE`, `/get/KEY`, `/login/USER`, `/logout`, behind `layer`.
pub(crate) fn app(layer: sessionware::SessionLayer) -> Router {
    Router::new()
        .route("/set/{key}/{value}", get(set))
        .route("/get/{key}", get(read))
        .route("/login/{user}", get(login))
        .route("/logout", get(logout))
        .layer(layer)
}

/// A response's status, the session ID its `Set-Cookie` hands out (if any), and its body.
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) cookie: Option<String>,
    pub(crate) body: String,
}

pub(crate) async fn send(app: &Router, path: &str, id: Option<&str>) -> Reply {
    let mut request = Request::get(path);
    if let Some(id) = id {
        request = request.header("cookie", format!("id={id}"));
    }
    let request = request.body(Body::empty()).expect("a valid request");
    let response: Response<Body> = app.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    let cookie = response
        .headers()
        .get("set-cookie")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("id="))
        .and_then(|value| value.split(';').next())
        .filter(|value| !value.is_empty())
        .map(str::to_owned);
    let body = response
        .into_body()
        .collect()
        .await
        .expect("a body")
        .to_bytes();
    Reply {
        status,
        cookie,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

// ---- A private redis-server, for tests that kill it or count its commands. ----

/// A `redis-server` this test started on a free loopback port, with append-only
/// persistence fsynced on every write (so a kill loses no acknowledged write), killed when
/// dropped.
pub(crate) struct OwnServer {
    pub(crate) port: u16,
    dir: PathBuf,
    persistent: bool,
    child: Option<Child>,
}

impl OwnServer {
    pub(crate) fn start(tag: &str) -> Self {
        Self::start_with(tag, true)
    }

    /// A server without persistence, for tests that never restart it.
    pub(crate) fn start_volatile(tag: &str) -> Self {
        Self::start_with(tag, false)
    }

    fn start_with(tag: &str, persistent: bool) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free loopback port")
            .port();
        let dir =
            std::env::temp_dir().join(format!("sessionware-{tag}-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a data dir");
        let mut server = Self {
            port,
            dir,
            persistent,
            child: None,
        };
        server.spawn();
        server
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(if self.persistent {
                ["--appendonly", "yes", "--appendfsync", "always"]
            } else {
                ["--appendonly", "no", "--appendfsync", "no"]
            })
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start redis-server: {err}; {HOW_TO_START}"));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not start on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: no shutdown, no final save.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and data dir.
    pub(crate) fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Freezes (SIGSTOP) or thaws (SIGCONT) the server: a server that accepts nothing and
    /// answers nothing, as a hung one does.
    pub(crate) fn signal(&self, signal: &str) {
        if let Some(child) = &self.child {
            let status = Command::new("kill")
                .args([signal, &child.id().to_string()])
                .status()
                .expect("kill(1)");
            assert!(status.success(), "kill {signal} failed");
        }
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        if let Some(child) = &self.child {
            // A frozen server cannot die of SIGKILL until it is thawed on some systems.
            let _ = Command::new("kill")
                .args(["-CONT", &child.id().to_string()])
                .status();
        }
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
