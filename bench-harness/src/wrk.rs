//! Runs wrk against one URL and reads back the figures its Lua `done()` prints.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// wrk's load: one thread (the other core runs the server). The default of 16 connections
/// (`BENCH_CONNECTIONS`) keeps a one-worker server busy without queueing so deep that
/// latency is all queue.
const THREADS: u32 = 1;

#[derive(Debug, Clone, Copy)]
pub struct WrkResult {
    pub requests: u64,
    pub requests_per_sec: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub non_2xx: u64,
    pub socket_errors: u64,
}

pub fn run(
    script: &Path,
    url: &str,
    cookie: Option<&str>,
    duration: Duration,
    connections: u32,
) -> WrkResult {
    let output = Command::new("wrk")
        .arg(format!("-t{THREADS}"))
        .arg(format!("-c{connections}"))
        .arg(format!("-d{}s", duration.as_secs()))
        // A request stuck this long counts as a timeout error rather than stalling the run.
        .arg("--timeout=5s")
        .arg("-s")
        .arg(script)
        .arg(url)
        .env("BENCH_COOKIE", cookie.unwrap_or(""))
        .output()
        .expect("run wrk (is it installed? run.sh installs it)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .find_map(|line| line.strip_prefix("RESULT "))
        .unwrap_or_else(|| {
            panic!(
                "no RESULT line from wrk:\n{stdout}\n{}",
                String::from_utf8_lossy(&output.stderr)
            )
        });
    let numbers: Vec<f64> = line
        .split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect();
    let [requests, duration_us, p50_us, p99_us, non_2xx, socket_errors] = numbers[..] else {
        panic!("malformed RESULT line: {line}");
    };
    WrkResult {
        requests: requests as u64,
        requests_per_sec: requests / (duration_us / 1e6),
        p50_us,
        p99_us,
        non_2xx: non_2xx as u64,
        socket_errors: socket_errors as u64,
    }
}
