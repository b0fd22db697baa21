//! `bench-harness drive`: the whole comparison, in an order that spreads drift evenly.
//!
//! Load: for each round, for each mode (A B C ... A B C ...): start that mode's server
//! (a fresh process, a flushed Redis), warm it up, run every case with wrk, stop it.
//! Then the 50-concurrent-keys trials per mode, then the scale runs (each in its own
//! process). Ratios are taken within a round, so a slow minute hits both sides of one.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::app::Mode;
use crate::redis_stats::{self, CommandCounts, Redis};
use crate::{client, concurrency, proc_stats, report, wrk};

/// The load cases, each a path and whether the request carries the existing session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Case {
    Read,
    Write,
    New,
    Untouched,
}

impl Case {
    pub const ALL: [Case; 4] = [Case::Read, Case::Write, Case::New, Case::Untouched];

    pub fn name(self) -> &'static str {
        match self {
            Case::Read => "read (existing session)",
            Case::Write => "write (existing session)",
            Case::New => "new session per request",
            Case::Untouched => "session never touched",
        }
    }

    fn path(self) -> &'static str {
        match self {
            Case::Read => "/read",
            Case::Write | Case::New => "/incr",
            Case::Untouched => "/plain",
        }
    }

    fn sends_cookie(self) -> bool {
        self != Case::New
    }
}

/// One wrk run of one case on one mode, with the server-side costs around it.
pub struct Sample {
    pub round: usize,
    pub mode: Mode,
    pub case: Case,
    pub wrk: wrk::WrkResult,
    pub cpu_us_per_request: f64,
    /// Every command Redis ran per request, including those a Lua script ran inside it.
    pub redis_commands_per_request: Option<f64>,
    /// Commands clients sent per request: round trips (pipelining aside). Counted with
    /// MONITOR on separate requests, in the first round only.
    pub redis_round_trips_per_request: Option<f64>,
    pub redis_commands: Option<CommandCounts>,
    /// Redis server CPU per request (it shares the machine's cores with the server).
    pub redis_cpu_us_per_request: Option<f64>,
}

pub struct Settings {
    pub rounds: usize,
    pub case_duration: Duration,
    pub warmup: Duration,
    pub port: u16,
    pub connections: u32,
    pub modes: Vec<Mode>,
    pub scale_sizes: Vec<usize>,
}

impl Settings {
    /// Defaults sized to keep the whole run near 12 minutes; `BENCH_*` variables shorten
    /// it for a trial run.
    fn from_env() -> Settings {
        let var =
            |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_owned());
        Settings {
            rounds: var("BENCH_ROUNDS", "3").parse().expect("BENCH_ROUNDS"),
            case_duration: Duration::from_secs(
                var("BENCH_SECONDS", "3").parse().expect("BENCH_SECONDS"),
            ),
            warmup: Duration::from_secs(1),
            port: var("BENCH_PORT", "3391").parse().expect("BENCH_PORT"),
            connections: var("BENCH_CONNECTIONS", "16")
                .parse()
                .expect("BENCH_CONNECTIONS"),
            modes: match std::env::var("BENCH_MODES") {
                Ok(list) => list
                    .split(',')
                    .map(|m| m.parse().expect("BENCH_MODES"))
                    .collect(),
                Err(_) => Mode::ALL.to_vec(),
            },
            scale_sizes: var("BENCH_SCALE", "1,100000,1000000")
                .split(',')
                .filter(|s| !s.is_empty())
                .map(|n| n.parse().expect("BENCH_SCALE"))
                .collect(),
        }
    }
}

pub fn run(redis_url: &str, out: &Path) {
    let settings = Settings::from_env();
    let started = Instant::now();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("wrk/session.lua");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut redis = Redis::connect(redis_url);
    let addr = SocketAddr::from(([127, 0, 0, 1], settings.port));

    let mut samples = Vec::new();
    for round in 0..settings.rounds {
        for &mode in &settings.modes {
            eprintln!(
                "[{:>4}s] round {} {mode}",
                started.elapsed().as_secs(),
                round + 1
            );
            redis.flush();
            let server = Server::start(mode, settings.port, redis_url);
            let cookie = runtime.block_on(session_cookie(addr));
            let url = |case: Case| format!("http://{addr}{}", case.path());
            wrk::run(
                &script,
                &url(Case::Read),
                Some(&cookie),
                settings.warmup,
                settings.connections,
            );
            for case in Case::ALL {
                let cookie = case.sends_cookie().then_some(cookie.as_str());
                let uses_redis = mode.uses_redis();
                let cpu_before = proc_stats::cpu_micros(server.pid());
                let counts_before = uses_redis.then(|| redis.command_counts());
                let redis_cpu_before = uses_redis.then(|| redis.cpu_micros());
                let result = wrk::run(
                    &script,
                    &url(case),
                    cookie,
                    settings.case_duration,
                    settings.connections,
                );
                let cpu_after = proc_stats::cpu_micros(server.pid());
                let per_request = |n: f64| n / result.requests as f64;
                let redis_cpu = redis_cpu_before
                    .map(|before| per_request((redis.cpu_micros() - before) as f64));
                let commands = counts_before
                    .map(|before| redis_stats::difference(&before, &redis.command_counts()));
                // Round trips do not vary from round to round: count them once.
                let round_trips = (uses_redis && round == 0).then(|| {
                    let sent = redis.client_commands_during(|| {
                        runtime.block_on(requests(addr, case.path(), cookie, MONITORED_REQUESTS))
                    });
                    sent as f64 / MONITORED_REQUESTS as f64
                });
                samples.push(Sample {
                    round,
                    mode,
                    case,
                    wrk: result,
                    cpu_us_per_request: per_request((cpu_after - cpu_before) as f64),
                    redis_commands_per_request: commands
                        .as_ref()
                        .map(|c| per_request(c.values().sum::<u64>() as f64)),
                    redis_round_trips_per_request: round_trips,
                    redis_cpu_us_per_request: redis_cpu,
                    redis_commands: commands,
                });
            }
            server.stop();
        }
    }

    let mut lost_updates = Vec::new();
    for &mode in settings.modes.iter().filter(|m| **m != Mode::Bare) {
        eprintln!(
            "[{:>4}s] 50 concurrent keys: {mode}",
            started.elapsed().as_secs()
        );
        redis.flush();
        let server = Server::start(mode, settings.port, redis_url);
        lost_updates.push((mode, runtime.block_on(concurrency::run_trials(addr))));
        server.stop();
    }

    let mut scale_rows = Vec::new();
    for kind in ["memory", "redis"] {
        for &live in &settings.scale_sizes {
            eprintln!("[{:>4}s] scale: {kind} {live}", started.elapsed().as_secs());
            scale_rows.push(scale_in_subprocess(kind, live, redis_url));
        }
    }
    redis.flush();

    let elapsed = started.elapsed();
    report::write(
        out,
        &settings,
        &samples,
        &lost_updates,
        &scale_rows,
        elapsed,
    );
    eprintln!("[{:>4}s] wrote {}", elapsed.as_secs(), out.display());
}

/// Requests sent one by one while MONITOR counts round trips.
const MONITORED_REQUESTS: usize = 200;

async fn requests(addr: SocketAddr, path: &str, cookie: Option<&str>, count: usize) {
    for _ in 0..count {
        let response = client::get(addr, path, cookie).await.expect("request");
        assert_eq!(response.status, 200, "{path}: {}", response.body);
    }
}

/// What the bare app is sent where the session apps get their session cookie: a cookie of
/// the same shape and length as sessionware's (which the bare app ignores), so every mode
/// parses the same request bytes and the ratios measure the session work alone.
const PLACEHOLDER_COOKIE: &str = "id=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

/// The cookie header of a session made by one `/incr`, or for an app that sets none (the
/// bare one) [`PLACEHOLDER_COOKIE`].
async fn session_cookie(addr: SocketAddr) -> String {
    let response = client::get(addr, "/incr", None)
        .await
        .expect("first request");
    assert_eq!(
        response.status, 200,
        "first request failed: {}",
        response.body
    );
    if response.cookies.is_empty() {
        PLACEHOLDER_COOKIE.to_owned()
    } else {
        response.cookie_header()
    }
}

fn scale_in_subprocess(kind: &str, live: usize, redis_url: &str) -> serde_json::Value {
    let output = Command::new(std::env::current_exe().unwrap())
        .args(["scale", kind, &live.to_string(), redis_url])
        .stderr(Stdio::inherit())
        .output()
        .expect("run the scale subprocess");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().find_map(|line| line.strip_prefix("SCALE "));
    match line {
        Some(json) => serde_json::from_str(json).expect("scale JSON"),
        None => {
            serde_json::json!({ "store": kind, "live_requested": live, "failed": output.status.to_string() })
        }
    }
}

/// A server process for one mode, killed when the driver is done with it.
struct Server {
    child: Child,
}

impl Server {
    fn start(mode: Mode, port: u16, redis_url: &str) -> Server {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["serve", mode.name(), &port.to_string(), redis_url])
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the server");
        // The server prints one line once it listens; EOF instead means it died.
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("server stdout");
        assert!(
            line.starts_with("listening"),
            "server {mode} failed to start"
        );
        Server { child }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stop(mut self) {
        // Our own child, by its pid.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
