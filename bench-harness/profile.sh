#!/usr/bin/env bash
# Instructions per request of one mode and route, with valgrind's callgrind: a count that
# the other processes on a shared machine cannot disturb, and a per-function breakdown.
#
#     bench-harness/profile.sh <mode> <path> [cookie|nocookie]
#     e.g. bench-harness/profile.sh sessionware-memory /read cookie
#
# Needs the release build run.sh makes. Redis modes need run.sh's private Redis running
# (BENCH_REDIS_URL, default redis://127.0.0.1:6391/0). Writes callgrind.out.<mode><path>
# under bench-harness/results/profiles/ and prints instructions per request and the
# top functions by inclusive cost.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
mode="$1"; path="$2"; with_cookie="${3:-cookie}"
port="${BENCH_PROFILE_PORT:-3399}"
redis_url="${BENCH_REDIS_URL:-redis://127.0.0.1:6391/0}"
out_dir="$here/results/profiles"; mkdir -p "$out_dir"
out="$out_dir/callgrind.out.${mode}${path//\//_}.${with_cookie}"

# Instrumentation starts off, so start-up and the warm-up are not counted.
valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$out" \
    "$here/target/release/bench-harness" serve "$mode" "$port" "$redis_url" >/dev/null 2>"$out.log" &
server=$!
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true' EXIT
for _ in $(seq 100); do
    curl -s -o /dev/null "http://127.0.0.1:$port/plain" && break
    sleep 0.2
done

cookie=""
if [ "$with_cookie" = cookie ]; then
    cookie="$(curl -s -i "http://127.0.0.1:$port/incr" | tr -d '\r' \
        | awk -F': ' 'tolower($1)=="set-cookie"{split($2,a,";"); printf "%s%s", sep, a[1]; sep="; "}')"
fi
export BENCH_COOKIE="$cookie"
wrk -t1 -c1 -d2s -s "$here/wrk/session.lua" "http://127.0.0.1:$port$path" >/dev/null # warm-up
callgrind_control -i on "$server" >/dev/null 2>&1
result="$(wrk -t1 -c1 -d10s -s "$here/wrk/session.lua" "http://127.0.0.1:$port$path" | grep '^RESULT')"
callgrind_control -i off "$server" >/dev/null 2>&1
callgrind_control -d "$server" >/dev/null 2>&1
requests="$(echo "$result" | awk '{print $2}')"
sleep 1
dump="$(ls -t "$out"* | grep -v '\.log$' | head -1)"
total="$(callgrind_annotate "$dump" 2>/dev/null | awk '/PROGRAM TOTALS/{gsub(",","",$1); print $1}')"
echo "$mode $path ($with_cookie): $requests requests, $((total / requests)) instructions/request ($dump)"
callgrind_annotate --inclusive=yes "$dump" 2>/dev/null | grep -E "(sessionware|serde_json|sha2|getrandom|base64|tokio::sync::mutex|time::(offset_date_time|formatting|serde))" | grep -v "^ *[0-9,]* ([ 0-9.]*%)  .*tokio/src/runtime" | head -45
