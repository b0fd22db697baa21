//! The demo keeps its users logged in across a restart: it is started as a process on its
//! default store (an SQLite file), a user logs in, the process is killed and started
//! again, and the same cookie still finds the same logged-in session.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Builds the demo with the features this test was built with (a no-op when `cargo test`
/// already built it so) and returns the path of its binary.
fn build_demo() -> PathBuf {
    let features: Vec<&str> = [
        ("axum", cfg!(feature = "axum")),
        ("memory", cfg!(feature = "memory")),
        ("redis", cfg!(feature = "redis")),
        ("postgres", cfg!(feature = "postgres")),
        ("sqlite", cfg!(feature = "sqlite")),
    ]
    .into_iter()
    .filter_map(|(name, on)| on.then_some(name))
    .collect();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let status = Command::new(cargo)
        .args([
            "build",
            "--example",
            "demo",
            "--no-default-features",
            "--features",
        ])
        .arg(features.join(","))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("run cargo build");
    assert!(status.success(), "cargo build --example demo failed");
    // The test binary is target/<profile>/deps/demo_restart-<hash>; the example sits in
    // target/<profile>/examples/.
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    profile_dir.join("examples").join("demo")
}

struct Demo {
    child: Child,
}

impl Demo {
    fn start(binary: &Path, addr: &str, db: &Path) -> Self {
        let child = Command::new(binary)
            .env("DEMO_ADDR", addr)
            .env("DEMO_DB", db)
            .env_remove("REDIS_URL")
            .env_remove("DATABASE_URL")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the demo");
        Self { child }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        self.kill();
    }
}

struct Reply {
    status: u16,
    set_cookies: Vec<String>,
    body: String,
}

/// One HTTP/1.1 request on a fresh connection, read to the end.
async fn send(addr: &str, method: &str, path: &str, cookie: Option<&str>, form: &str) -> Reply {
    let mut stream = TcpStream::connect(addr).await.expect("connect to the demo");
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(cookie) = cookie {
        request += &format!("Cookie: {cookie}\r\n");
    }
    if method == "POST" {
        request += &format!(
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
            form.len()
        );
    }
    request += "\r\n";
    request += form;
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let set_cookies = head
        .lines()
        .filter_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("set-cookie")
                .then(|| value.trim().to_owned())
        })
        .collect();
    Reply {
        status,
        set_cookies,
        body: body.to_owned(),
    }
}

/// The `name=value` part of the session cookie a reply sets.
fn cookie_of(reply: &Reply) -> String {
    reply
        .set_cookies
        .iter()
        .filter_map(|c| c.split(';').next())
        .find(|pair| pair.split_once('=').is_some_and(|(_, v)| !v.is_empty()))
        .expect("a session cookie")
        .to_owned()
}

async fn wait_until_listening(addr: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(addr).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "the demo did not start listening on {addr}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_logged_in_user_stays_logged_in_across_a_restart() {
    let binary = tokio::task::spawn_blocking(build_demo).await.unwrap();
    let dir = std::env::temp_dir().join(format!("sessionware-demo-restart-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("demo.db");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");

    let mut demo = Demo::start(&binary, &addr, &db);
    wait_until_listening(&addr).await;
    let counted = send(&addr, "POST", "/count", None, "").await;
    assert_eq!(counted.status, 303, "{}", counted.body);
    let cookie = cookie_of(&counted);
    let login = send(&addr, "POST", "/login", Some(&cookie), "username=ann").await;
    assert_eq!(login.status, 303, "{}", login.body);
    let cookie = cookie_of(&login); // the login rotated the ID
    let before = send(&addr, "GET", "/api/me", Some(&cookie), "").await;
    assert_eq!(before.status, 200);
    let me: serde_json::Value = serde_json::from_str(&before.body).expect("JSON");
    assert_eq!(me["user"], "ann");
    assert_eq!(me["visits"], 1);

    demo.kill();
    let mut demo = Demo::start(&binary, &addr, &db);
    wait_until_listening(&addr).await;
    let after = send(&addr, "GET", "/api/me", Some(&cookie), "").await;
    assert_eq!(after.status, 200, "{}", after.body);
    let me: serde_json::Value = serde_json::from_str(&after.body).expect("JSON");
    assert_eq!(me["user"], "ann", "logged out by the restart: {me}");
    assert_eq!(me["visits"], 1, "session data lost: {me}");
    assert!(
        after.set_cookies.iter().all(|c| !c.contains("Max-Age=0")),
        "the cookie was cleared"
    );
    demo.kill();
    let _ = std::fs::remove_dir_all(&dir);
}
