-- wrk script for bench/run.py: one request shape per run, an optional per-thread request
-- budget (for the fixed-count CPU slices) and a refresh-token chain (each request spends its
-- own fresh refresh token; each 200 answer's new refresh token goes back in the queue).
--
-- Arguments (after `--`, key=value): method, path, auth (a bearer token), body (a form body),
-- budget (requests per thread, 0 = run for -d), tokens (a file of refresh tokens, one a line:
-- chain mode), nthreads (wrk -t, to share the token file between threads).
--
-- With a budget, each thread prints `BENCH_STOPPED` when it has sent its last request;
-- done() prints one line, `BENCH_JSON {...}`, that bench/run.py parses.

local threads = {}
local counter = 0

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

local opts = {}
local static_request
local queue, head, tail = {}, 1, 0
local dry_run_pending = false
local stopping = false
sent, starved, refused, budget = 0, 0, 0, 0

local function chain_request(token)
  return wrk.format("GET", opts.path, { ["Authorization"] = "Bearer " .. token })
end

function init(args)
  for _, arg in ipairs(args) do
    local key, value = arg:match("^([%w_]+)=(.*)$")
    if key then
      opts[key] = value
    end
  end
  budget = tonumber(opts.budget or "0")
  local headers = {}
  if opts.auth and opts.auth ~= "" then
    headers["Authorization"] = "Bearer " .. opts.auth
  end
  local body = nil
  if opts.body and opts.body ~= "" then
    body = opts.body
    headers["Content-Type"] = "application/x-www-form-urlencoded"
  end
  static_request = wrk.format(opts.method or "GET", opts.path or "/", headers, body)
  -- wrk calls request() once on thread 0 before the run to check for pipelining; that
  -- call is not sent, so it must neither count nor spend a token.
  dry_run_pending = (id == 0)
  if opts.tokens and opts.tokens ~= "" then
    local nthreads = tonumber(opts.nthreads or "1")
    local index = 0
    for line in io.lines(opts.tokens) do
      if line ~= "" then
        if index % nthreads == id then
          tail = tail + 1
          queue[tail] = line
        end
        index = index + 1
      end
    end
  else
    response = nil -- static mode: wrk then does not keep the response bodies
  end
end

function request()
  if dry_run_pending then
    dry_run_pending = false
    if response then
      return chain_request(queue[head] or "dry-run")
    end
    return static_request
  end
  sent = sent + 1
  if budget > 0 and sent >= budget and not stopping then
    -- this thread's last request: stop its loop and tell bench/run.py, which then ends
    -- wrk's -d wait with SIGINT (wrk's main thread otherwise sleeps the whole -d)
    stopping = true
    wrk.thread:stop()
    io.write("BENCH_STOPPED\n")
    io.stdout:flush()
  end
  if not response then
    return static_request
  end
  if head > tail then
    starved = starved + 1
    return chain_request("no-token-left")
  end
  local token = queue[head]
  queue[head] = nil
  head = head + 1
  return chain_request(token)
end

function response(status, headers, body)
  if status == 200 then
    local token = body:match('"refreshToken"%s*:%s*"([^"]+)"')
    if token then
      tail = tail + 1
      queue[tail] = token
      return
    end
  end
  refused = refused + 1
end

function done(summary, latency, requests)
  local totals = { sent = 0, starved = 0, refused = 0 }
  for _, thread in ipairs(threads) do
    for key, _ in pairs(totals) do
      totals[key] = totals[key] + (thread:get(key) or 0)
    end
  end
  local errors = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "sent": %d, "starved": %d, '
      .. '"refused": %d, "p50_us": %d, "p99_us": %d, "mean_us": %.1f, "max_us": %d, '
      .. '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}}\n',
    summary.requests, summary.duration, totals.sent, totals.starved, totals.refused,
    latency:percentile(50), latency:percentile(99), latency.mean, latency.max,
    errors.connect, errors.read, errors.write, errors.status, errors.timeout
  ))
end
