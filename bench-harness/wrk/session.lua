-- wrk script for the session benchmarks.
-- BENCH_COOKIE (optional): the Cookie header every request carries, i.e. one existing
-- session for the whole run; without it each request arrives with no cookie.
-- done() prints one machine-readable line the harness parses:
--   RESULT <requests> <duration_us> <p50_us> <p99_us> <non_2xx> <socket_errors>
local cookie = os.getenv("BENCH_COOKIE")
if cookie and cookie ~= "" then
  wrk.headers["Cookie"] = cookie
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %d %d %d %d %d %d\n",
    summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99),
    e.status, e.connect + e.read + e.write + e.timeout))
end
