//! Turns the samples into `results/latest.md`: one table per case, ratios taken within
//! each round and then summarised as median (min–max) over rounds.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use crate::app::Mode;
use crate::concurrency;
use crate::driver::{Case, Sample, Settings};
use crate::server::WORKER_THREADS;

/// Median and spread of a few values.
#[derive(Clone, Copy)]
struct Spread {
    median: f64,
    min: f64,
    max: f64,
}

impl Spread {
    fn of(mut values: Vec<f64>) -> Option<Spread> {
        if values.is_empty() {
            return None;
        }
        values.sort_by(f64::total_cmp);
        let n = values.len();
        let median = if n % 2 == 1 {
            values[n / 2]
        } else {
            (values[n / 2 - 1] + values[n / 2]) / 2.0
        };
        Some(Spread {
            median,
            min: values[0],
            max: values[n - 1],
        })
    }

    fn show(&self, decimals: usize) -> String {
        format!(
            "{:.d$} ({:.d$}–{:.d$})",
            self.median,
            self.min,
            self.max,
            d = decimals
        )
    }
}

/// The tower-sessions configuration each mode is compared with: the one with the same
/// semantics (reads extend expiry, so `always_save`) on the same kind of store.
pub fn tower_reference(mode: Mode) -> Mode {
    if mode.uses_redis() {
        Mode::TowerRedisAlwaysSave
    } else {
        Mode::TowerMemoryAlwaysSave
    }
}

/// Peers whose Redis store really slides expiry and serves every read from Redis.
pub const SLIDING_REDIS_PEERS: [Mode; 2] =
    [Mode::TowerRedisAlwaysSave, Mode::AxumSessionRedisNoCache];

fn samples_of(samples: &[Sample], mode: Mode, case: Case) -> impl Iterator<Item = &Sample> {
    samples
        .iter()
        .filter(move |s| s.mode == mode && s.case == case)
}

/// Per round: `metric(mode) / metric(reference)`; then the spread over rounds.
fn ratio(
    samples: &[Sample],
    mode: Mode,
    reference: Mode,
    case: Case,
    metric: fn(&Sample) -> f64,
) -> Option<Spread> {
    let ratios = samples_of(samples, mode, case)
        .filter_map(|s| {
            let r = samples_of(samples, reference, case).find(|r| r.round == s.round)?;
            Some(metric(s) / metric(r))
        })
        .collect();
    Spread::of(ratios)
}

fn spread(
    samples: &[Sample],
    mode: Mode,
    case: Case,
    metric: fn(&Sample) -> f64,
) -> Option<Spread> {
    Spread::of(samples_of(samples, mode, case).map(metric).collect())
}

fn rps(s: &Sample) -> f64 {
    s.wrk.requests_per_sec
}
fn p50(s: &Sample) -> f64 {
    s.wrk.p50_us
}
fn p99(s: &Sample) -> f64 {
    s.wrk.p99_us
}
fn cpu(s: &Sample) -> f64 {
    s.cpu_us_per_request
}

fn show(spread: Option<Spread>, decimals: usize) -> String {
    spread.map_or("–".into(), |s| s.show(decimals))
}

fn show_ratio(spread: Option<Spread>) -> String {
    spread.map_or("–".into(), |s| {
        format!("{:.2}x ({:.2}–{:.2})", s.median, s.min, s.max)
    })
}

fn case_table(md: &mut String, samples: &[Sample], modes: &[Mode], case: Case) {
    let _ = writeln!(md, "\n### {}\n", case.name());
    md.push_str("| mode | requests/s | vs bare | vs tower-sessions | p50 µs | p50 vs bare | p50 vs t-s | p99 µs | p99 vs bare | p99 vs t-s | server CPU µs/req | CPU vs bare | CPU vs t-s | Redis cmds/req (round trips): mix | Redis CPU µs/req | errors |\n");
    md.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for &mode in modes {
        if samples_of(samples, mode, case).next().is_none() {
            continue;
        }
        let reference = tower_reference(mode);
        let redis = redis_cell(samples, mode, case);
        let redis = if redis.contains(" | ") {
            redis
        } else {
            format!("{redis} | –")
        };
        let errors: u64 = samples_of(samples, mode, case)
            .map(|s| s.wrk.non_2xx + s.wrk.socket_errors)
            .sum();
        let _ = writeln!(
            md,
            "| {mode} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {redis} | {errors} |",
            show(spread(samples, mode, case, rps), 0),
            show_ratio(ratio(samples, mode, Mode::Bare, case, rps)),
            show_ratio(ratio(samples, mode, reference, case, rps)),
            show(spread(samples, mode, case, p50), 0),
            show_ratio(ratio(samples, mode, Mode::Bare, case, p50)),
            show_ratio(ratio(samples, mode, reference, case, p50)),
            show(spread(samples, mode, case, p99), 0),
            show_ratio(ratio(samples, mode, Mode::Bare, case, p99)),
            show_ratio(ratio(samples, mode, reference, case, p99)),
            show(spread(samples, mode, case, cpu), 1),
            show_ratio(ratio(samples, mode, Mode::Bare, case, cpu)),
            show_ratio(ratio(samples, mode, reference, case, cpu)),
        );
    }
}

/// "total (round trips): top commands", medians over rounds.
fn redis_cell(samples: &[Sample], mode: Mode, case: Case) -> String {
    let total = Spread::of(
        samples_of(samples, mode, case)
            .filter_map(|s| s.redis_commands_per_request)
            .collect(),
    );
    let trips = Spread::of(
        samples_of(samples, mode, case)
            .filter_map(|s| s.redis_round_trips_per_request)
            .collect(),
    );
    let redis_cpu = Spread::of(
        samples_of(samples, mode, case)
            .filter_map(|s| s.redis_cpu_us_per_request)
            .collect(),
    );
    let (Some(total), Some(trips), Some(redis_cpu)) = (total, trips, redis_cpu) else {
        return "–".into();
    };
    // The command mix of the last round, at least 0.01 per request.
    let last = samples_of(samples, mode, case).last().unwrap();
    let mix: Vec<String> = last
        .redis_commands
        .iter()
        .flatten()
        .map(|(name, calls)| (name, *calls as f64 / last.wrk.requests as f64))
        .filter(|(_, per)| *per >= 0.01)
        .map(|(name, per)| format!("{} {per:.2}", name.to_uppercase()))
        .collect();
    let mix = if mix.is_empty() {
        "none".to_owned()
    } else {
        mix.join(", ")
    };
    format!(
        "{:.2} ({:.2}): {mix} | {}",
        total.median,
        trips.median,
        redis_cpu.show(1)
    )
}

fn median_of(
    samples: &[Sample],
    mode: Mode,
    case: Case,
    metric: fn(&Sample) -> f64,
) -> Option<f64> {
    spread(samples, mode, case, metric).map(|s| s.median)
}

fn verdict(met: bool) -> &'static str {
    if met {
        "**met**"
    } else {
        "**MISSED**"
    }
}

fn targets(md: &mut String, samples: &[Sample], lost: &[(Mode, Vec<usize>)]) {
    md.push_str("\n## Targets\n\n| target | measured (median of per-round ratios, min–max) | verdict |\n|---|---|---|\n");
    let sw = Mode::SessionwareMemory;
    for (case, goal) in [(Case::Read, 0.95), (Case::Write, 0.90), (Case::New, 0.85)] {
        if let Some(r) = ratio(samples, sw, Mode::Bare, case, rps) {
            let _ = writeln!(
                md,
                "| MemoryStore vs bare, {}: requests/s >= {goal:.2}x | {} | {} |",
                case.name(),
                show_ratio(Some(r)),
                verdict(r.median >= goal)
            );
        }
    }
    if let Some(r) = ratio(samples, sw, Mode::Bare, Case::New, p99) {
        let _ = writeln!(
            md,
            "| MemoryStore vs bare, new session: p99 <= 2x bare p99 | {} | {} |",
            show_ratio(Some(r)),
            verdict(r.median <= 2.0)
        );
    }
    let swr = Mode::SessionwareRedis;
    for (case, goal) in [(Case::Read, 1.5), (Case::Write, 1.5), (Case::New, 1.2)] {
        // The best sliding-expiry peer for this case, by median requests/s.
        let best = SLIDING_REDIS_PEERS
            .into_iter()
            .filter_map(|peer| Some((peer, median_of(samples, peer, case, rps)?)))
            .max_by(|a, b| a.1.total_cmp(&b.1));
        if let (Some((peer, _)), true) = (best, samples_of(samples, swr, case).next().is_some()) {
            if let Some(r) = ratio(samples, swr, peer, case, rps) {
                let _ = writeln!(md, "| RedisStore vs best sliding peer ({peer}), {}: requests/s >= {goal:.1}x | {} | {} |", case.name(), show_ratio(Some(r)), verdict(r.median >= goal));
            }
        }
    }
    let read_trips = Spread::of(
        samples_of(samples, swr, Case::Read)
            .filter_map(|s| s.redis_round_trips_per_request)
            .collect(),
    );
    if let Some(trips) = read_trips {
        let _ = writeln!(
            md,
            "| RedisStore read: one Redis round trip | {:.3} per request | {} |",
            trips.median,
            verdict(trips.max <= 1.01)
        );
        let writes: f64 = samples_of(samples, swr, Case::Read)
            .map(|s| {
                let calls: u64 = s
                    .redis_commands
                    .iter()
                    .flatten()
                    .filter(|(name, _)| name.as_str() != "hgetall")
                    .map(|(_, c)| *c)
                    .sum();
                calls as f64 / s.wrk.requests as f64
            })
            .fold(0.0, f64::max);
        let _ = writeln!(md, "| RedisStore read: no write when the deadline need not move | {writes:.4} non-HGETALL commands per request (worst round) | {} |", verdict(writes < 0.001));
    }
    for (mode, survivors) in lost.iter().filter(|(mode, _)| mode.is_sessionware()) {
        let perfect = survivors.iter().all(|&n| n == concurrency::KEYS);
        let _ = writeln!(
            md,
            "| {mode}: 0 of 50 updates lost in all {} trials | {} trials perfect | {} |",
            survivors.len(),
            survivors
                .iter()
                .filter(|&&n| n == concurrency::KEYS)
                .count(),
            verdict(perfect)
        );
    }
}

fn lost_updates_table(md: &mut String, lost: &[(Mode, Vec<usize>)]) {
    let _ = writeln!(
        md,
        "\n## 50 concurrent requests setting distinct keys on one session ({} trials)\n",
        concurrency::TRIALS
    );
    md.push_str("| mode | keys surviving of 50: median (min–max) | trials with a lost update |\n|---|---|---|\n");
    for (mode, survivors) in lost {
        let spread = Spread::of(survivors.iter().map(|&n| n as f64).collect());
        let lossy = survivors.iter().filter(|&&n| n < concurrency::KEYS).count();
        let _ = writeln!(
            md,
            "| {mode} | {} | {lossy} of {} |",
            show(spread, 0),
            survivors.len()
        );
    }
}

fn scale_table(md: &mut String, rows: &[serde_json::Value]) {
    md.push_str("\n## Scale (sessionware stores, seeded through the `SessionStore` API)\n\n");
    md.push_str("Each row: that many live sessions (2 per user) plus 1/9 as many that expire, so 10% of all are expired for the cleanup pass; one measured user with 5 sessions. Memory: VmRSS delta of the seeding process (MemoryStore) or Redis `used_memory` delta, over every session seeded.\n\n");
    md.push_str("| store | live | seeded in s | bytes/session | load p50 µs | load p99 µs | list_user µs | delete_user µs (5 sessions) | delete_expired µs (removed) |\n|---|---|---|---|---|---|---|---|---|\n");
    for row in rows {
        if let Some(failed) = row.get("failed") {
            let _ = writeln!(
                md,
                "| {} | {} | failed: {failed} | | | | | | |",
                row["store"], row["live_requested"]
            );
            continue;
        }
        let f = |key: &str| row[key].as_f64().unwrap_or(f64::NAN);
        let live = format!(
            "{}{}",
            row["live_seeded"],
            if row["live_seeded"] != row["live_requested"] {
                format!(" of {} (seed budget ran out)", row["live_requested"])
            } else {
                String::new()
            }
        );
        // Below a few thousand sessions the delta is page and allocator granularity.
        let per_session = if row["live_seeded"].as_u64().unwrap_or(0) >= 10_000
            || row["memory_source"] != "VmRSS"
        {
            format!("{:.0}", f("bytes_per_session"))
        } else {
            format!("n/a ({} B total)", row["memory_delta_bytes"])
        };
        let _ = writeln!(
            md,
            "| {} | {live} | {:.1} | {per_session} | {:.1} | {:.1} | {:.1} | {:.1} | {:.0} ({}) |",
            row["store"].as_str().unwrap_or("?"),
            f("seed_secs"),
            f("read_p50_us"),
            f("read_p99_us"),
            f("list_user_us"),
            f("delete_user_us"),
            f("cleanup_us"),
            row["cleanup_removed"],
        );
    }
}

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    format!("{cores} cores ({model}), Linux {}", kernel.trim())
}

pub fn write(
    out: &Path,
    settings: &Settings,
    samples: &[Sample],
    lost: &[(Mode, Vec<usize>)],
    scale: &[serde_json::Value],
    elapsed: Duration,
) {
    let mut md = String::new();
    md.push_str("# Load test: sessionware vs tower-sessions vs axum_session\n\n");
    let _ = writeln!(
        md,
        "Produced by `bench-harness/run.sh` in {:.0} s on {}.",
        elapsed.as_secs_f64(),
        machine()
    );
    let _ = writeln!(
        md,
        "Server: one process per mode, Tokio multi-thread runtime with {WORKER_THREADS} worker; wrk 1 thread, {} connections, {} s per case after a 1 s warm-up, {} rounds interleaved (every mode once per round). Figures: median over rounds (min–max); ratios are per round, then median (min–max). `vs tower-sessions` compares with tower-sessions `with_always_save(true)` on the same kind of store (memory or Redis): the configuration whose reads extend the expiry as every other mode's do.",
        settings.connections,
        settings.case_duration.as_secs(),
        settings.rounds
    );
    md.push_str("Redis column: every command Redis ran per request (including those inside Lua scripts), then in brackets the commands clients sent (round trips), then the command mix.\n");
    md.push_str("\n## Requests\n");
    for case in Case::ALL {
        case_table(&mut md, samples, &settings.modes, case);
    }
    targets(&mut md, samples, lost);
    lost_updates_table(&mut md, lost);
    scale_table(&mut md, scale);
    let _ = writeln!(
        md,
        "\nEvery wrk run, unsummarised: `{}`.",
        out.with_extension("csv")
            .file_name()
            .unwrap()
            .to_string_lossy()
    );
    std::fs::create_dir_all(out.parent().unwrap_or(Path::new("."))).expect("results directory");
    std::fs::write(out, md).expect("write the results");
    std::fs::write(out.with_extension("csv"), samples_csv(samples)).expect("write the samples");
}

/// One line per wrk run, for anyone who wants to look past the medians.
fn samples_csv(samples: &[Sample]) -> String {
    let mut csv = String::from("round,mode,case,requests,requests_per_sec,p50_us,p99_us,non_2xx,socket_errors,server_cpu_us_per_req,redis_commands_per_req,redis_cpu_us_per_req\n");
    let opt = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.3}"));
    for s in samples {
        let _ = writeln!(
            csv,
            "{},{},{},{},{:.0},{},{},{},{},{:.2},{},{}",
            s.round + 1,
            s.mode,
            s.case.name(),
            s.wrk.requests,
            s.wrk.requests_per_sec,
            s.wrk.p50_us,
            s.wrk.p99_us,
            s.wrk.non_2xx,
            s.wrk.socket_errors,
            s.cpu_us_per_request,
            opt(s.redis_commands_per_request),
            opt(s.redis_cpu_us_per_request),
        );
    }
    csv
}
