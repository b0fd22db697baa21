#!/usr/bin/env bash
# A PostgreSQL server owned by the test suite: loopback only, port 5433, trust auth,
# database `sessionware`. Separate from any PostgreSQL the machine already runs.
#
#   scripts/postgres.sh start   # install if missing, init if needed, start (reuses a running one)
#   scripts/postgres.sh stop    # stop it (the data directory is kept for the next start)
#   scripts/postgres.sh url     # print the connection URL the tests use
#
# Settings (environment): SESSIONWARE_PG_PORT (5433), SESSIONWARE_PG_DIR
# (/tmp/sessionware-postgres). Fails loudly, with a message, whenever it cannot do its job.
set -euo pipefail

PORT="${SESSIONWARE_PG_PORT:-5433}"
BASE="${SESSIONWARE_PG_DIR:-/tmp/sessionware-postgres}"
DATA="$BASE/data"
LOG="$BASE/server.log"
DB=sessionware
OS_USER=postgres

die() { echo "postgres.sh: $*" >&2; exit 1; }

# The newest server binaries installed, e.g. /usr/lib/postgresql/15/bin.
find_bin() {
    local dir
    dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
    [[ -n "$dir" && -x "$dir/initdb" && -x "$dir/pg_ctl" ]] && echo "$dir"
}

install_postgres() {
    command -v apt-get >/dev/null || die "PostgreSQL is not installed and apt-get is unavailable"
    echo "postgres.sh: installing PostgreSQL with apt-get" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q || die "apt-get update failed"
    apt-get install -y -q postgresql postgresql-client || die "apt-get install postgresql failed"
}

# Runs a command as the server's OS user (initdb and postgres refuse to run as root).
as_owner() {
    if [[ "$(id -u)" == 0 ]]; then
        runuser -u "$OS_USER" -- "$@"
    else
        "$@"
    fi
}

is_ready() { "$BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT" -d postgres -U postgres; }

start() {
    BIN=$(find_bin) || true
    if [[ -z "${BIN:-}" ]]; then
        install_postgres
        BIN=$(find_bin) || die "no initdb/pg_ctl under /usr/lib/postgresql/*/bin after installing"
    fi
    if [[ "$(id -u)" == 0 ]] && ! id "$OS_USER" >/dev/null 2>&1; then
        die "OS user '$OS_USER' is missing (it comes with Debian's postgresql package)"
    fi

    if ! is_ready; then
        mkdir -p "$BASE"
        [[ "$(id -u)" == 0 ]] && chown "$OS_USER" "$BASE"
        if [[ ! -f "$DATA/PG_VERSION" ]]; then
            as_owner "$BIN/initdb" -D "$DATA" -A trust -U postgres -E UTF8 >"$BASE/initdb.log" 2>&1 \
                || die "initdb failed; see $BASE/initdb.log"
        fi
        # A server that died uncleanly leaves a stale pid file; pg_ctl copes with that.
        as_owner "$BIN/pg_ctl" -D "$DATA" -l "$LOG" -w -t 60 \
            -o "-c listen_addresses=127.0.0.1 -p $PORT -k $BASE -c max_connections=300 -c fsync=off" \
            start >/dev/null || die "the server did not start; see $LOG"
        is_ready || die "the server started but does not answer on 127.0.0.1:$PORT; see $LOG"
    fi

    local exists
    exists=$("$BIN/psql" -X -q -t -A -h 127.0.0.1 -p "$PORT" -U postgres -d postgres \
        -c "SELECT 1 FROM pg_database WHERE datname = '$DB'" 2>/dev/null || true)
    if [[ "$exists" != 1 ]]; then
        "$BIN/psql" -X -q -h 127.0.0.1 -p "$PORT" -U postgres -d postgres \
            -c "CREATE DATABASE $DB" || die "could not create database $DB"
    fi
    echo "postgres.sh: PostgreSQL ready at $(url)" >&2
}

stop() {
    BIN=$(find_bin) || die "PostgreSQL is not installed"
    if [[ -f "$DATA/postmaster.pid" ]]; then
        as_owner "$BIN/pg_ctl" -D "$DATA" -m fast -w stop >/dev/null || die "pg_ctl stop failed"
        echo "postgres.sh: stopped" >&2
    else
        echo "postgres.sh: not running" >&2
    fi
}

url() { echo "postgres://postgres@127.0.0.1:$PORT/$DB"; }

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    url) url ;;
    *) die "usage: $0 start|stop|url" ;;
esac
