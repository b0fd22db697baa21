#!/usr/bin/env bash
# Runs the whole test suite: every unit, conformance, HTTP, fault and doc test, with every
# feature. Starts the servers the tests need first (installing them with apt-get if they
# are missing), each on its own loopback port, separate from any the machine already runs:
#   Redis on 6380 and a 3-master Redis Cluster on 7101-7103 (scripts/redis.sh),
#   PostgreSQL on 5433 (scripts/postgres.sh).
# A server that cannot be started fails the run; no test is ever skipped for lack of one.
#
#   scripts/test.sh                 # everything
#   scripts/test.sh --test http     # extra arguments go to `cargo test`
#   KEEP_SERVERS=1 scripts/test.sh  # leave the servers running afterwards (faster reruns)
set -euo pipefail
cd "$(dirname "$0")/.."

stop_servers() {
    scripts/redis.sh stop || true
    scripts/postgres.sh stop || true
}
if [[ "${KEEP_SERVERS:-0}" != 1 ]]; then
    trap stop_servers EXIT
fi

scripts/redis.sh start
scripts/postgres.sh start

export SESSIONWARE_REDIS_URL="${SESSIONWARE_REDIS_URL:-redis://127.0.0.1:6380/}"
export SESSIONWARE_REDIS_CLUSTER="${SESSIONWARE_REDIS_CLUSTER:-redis://127.0.0.1:7101,redis://127.0.0.1:7102,redis://127.0.0.1:7103}"
export SESSIONWARE_POSTGRES_URL="${SESSIONWARE_POSTGRES_URL:-$(scripts/postgres.sh url)}"

cargo test --all-features --no-fail-fast "$@"
