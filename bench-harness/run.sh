#!/usr/bin/env bash
# Issue 4's load comparison in one command:
#
#     bench-harness/run.sh
#
# Builds the harness in release, installs wrk and redis-server with apt-get if missing,
# starts a private Redis on 127.0.0.1:6391 (no persistence; never the machine's own
# Redis), runs every mode and case (about 8 minutes), stops that Redis, and writes
# bench-harness/results/latest.md (and .csv). BENCH_ROUNDS, BENCH_SECONDS, BENCH_MODES and
# BENCH_SCALE shorten or lengthen a run, BENCH_CONNECTIONS sets wrk's connections
# (default 16), and BENCH_OUT writes the report elsewhere (see src/driver.rs).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
redis_port="${BENCH_REDIS_PORT:-6391}"
redis_url="redis://127.0.0.1:${redis_port}/0"

install_if_missing() { # <command> <debian package>
    if ! command -v "$1" >/dev/null; then
        echo "installing $2" >&2
        apt-get update -qq && apt-get install -y -qq "$2" >/dev/null
    fi
}
install_if_missing wrk wrk
install_if_missing redis-server redis-server
install_if_missing redis-cli redis-tools

# Its own target directory, so this build never waits on the main crate's lock.
export CARGO_TARGET_DIR="$here/target"
cargo build --release --manifest-path "$here/Cargo.toml"

if redis-cli -p "$redis_port" ping >/dev/null 2>&1; then
    echo "something already listens on port $redis_port; set BENCH_REDIS_PORT" >&2
    exit 1
fi
redis_dir="$(mktemp -d)"
redis-server --bind 127.0.0.1 --port "$redis_port" --save "" --appendonly no \
    --dir "$redis_dir" --daemonize no --loglevel warning &
redis_pid=$!
stop_redis() {
    kill "$redis_pid" 2>/dev/null || true
    wait "$redis_pid" 2>/dev/null || true
    rm -rf "$redis_dir"
}
trap stop_redis EXIT
for _ in $(seq 50); do
    redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break
    sleep 0.1
done

out="${BENCH_OUT:-$here/results/latest.md}"
"$CARGO_TARGET_DIR/release/bench-harness" drive "$redis_url" "$out"
echo "results: $out"
