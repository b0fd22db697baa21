#!/usr/bin/env bash
# Test-owned Redis servers for sessionware's Redis tests, on loopback only:
#   a single server on 127.0.0.1:6380 and a 3-master cluster on 127.0.0.1:7101-7103.
# No persistence; data under a temp dir. Idempotent: servers already answering are reused.
#
#   scripts/redis.sh start   # install redis-server if missing, start (or reuse) the servers
#   scripts/redis.sh stop    # shut them down and remove their data dir
set -euo pipefail

SINGLE_PORT=6380
CLUSTER_PORTS=(7101 7102 7103)
STATE_DIR="${SESSIONWARE_REDIS_DIR:-${TMPDIR:-/tmp}/sessionware-redis}"

log() { echo "redis.sh: $*" >&2; }

install_redis() {
    if command -v redis-server >/dev/null && command -v redis-cli >/dev/null; then
        return
    fi
    log "installing redis-server and redis-tools"
    local sudo=""
    if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -q
    $sudo apt-get install -y -q redis-server redis-tools
}

answers() { redis-cli -h 127.0.0.1 -p "$1" ping >/dev/null 2>&1; }

wait_for() {
    local port=$1
    for _ in $(seq 1 100); do
        if answers "$port"; then return 0; fi
        sleep 0.1
    done
    log "redis on port $port did not start; see $STATE_DIR/$port/redis.log"
    return 1
}

start_server() {
    local port=$1; shift
    if answers "$port"; then
        log "port $port already answers; reusing it"
        return
    fi
    local dir="$STATE_DIR/$port"
    rm -rf "$dir" && mkdir -p "$dir"
    redis-server --port "$port" --bind 127.0.0.1 --daemonize yes \
        --dir "$dir" --logfile "$dir/redis.log" --pidfile "$dir/redis.pid" \
        --save "" --appendonly no "$@"
    wait_for "$port"
}

cluster_ok() {
    redis-cli -h 127.0.0.1 -p "${CLUSTER_PORTS[0]}" cluster info 2>/dev/null \
        | grep -q '^cluster_state:ok'
}

start() {
    install_redis
    mkdir -p "$STATE_DIR"
    start_server "$SINGLE_PORT"
    for port in "${CLUSTER_PORTS[@]}"; do
        start_server "$port" --cluster-enabled yes \
            --cluster-config-file "$STATE_DIR/$port/nodes.conf" --cluster-node-timeout 5000
    done
    if ! cluster_ok; then
        local known
        known=$(redis-cli -h 127.0.0.1 -p "${CLUSTER_PORTS[0]}" cluster info \
            | sed -n 's/^cluster_known_nodes:\([0-9]*\).*/\1/p')
        if [ "${known:-1}" = 1 ]; then
            local nodes=()
            for port in "${CLUSTER_PORTS[@]}"; do nodes+=("127.0.0.1:$port"); done
            redis-cli --cluster create "${nodes[@]}" --cluster-replicas 0 --cluster-yes >/dev/null
        fi
        for _ in $(seq 1 100); do
            if cluster_ok; then break; fi
            sleep 0.2
        done
        cluster_ok || { log "the cluster did not reach cluster_state:ok"; exit 1; }
    fi
    log "single server on 127.0.0.1:$SINGLE_PORT; cluster on 127.0.0.1:${CLUSTER_PORTS[*]}"
}

stop() {
    for port in "$SINGLE_PORT" "${CLUSTER_PORTS[@]}"; do
        if answers "$port"; then
            redis-cli -h 127.0.0.1 -p "$port" shutdown nosave >/dev/null 2>&1 || true
        fi
    done
    rm -rf "$STATE_DIR"
    log "stopped"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
