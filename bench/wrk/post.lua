-- Closed-loop POST load for wrk: every connection sends one request, waits for the answer, repeats.
-- BENCH_BODY: file with the JSON body.  BENCH_HEADERS: extra headers, "Name: value" one per line.
-- BENCH_VARY=N: make each request distinct by numbering it modulo N (`@N@` in the body is replaced),
--   for the leak check's mix of hits and misses.  BENCH_VARY=unique: number every request without a
--   modulo, so none repeats (the caller puts a per-run prefix before `@N@`, so that runs do not repeat
--   each other either).  Prints one `BENCH_JSON {...}` line at the end.

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

wrk.method = "POST"
wrk.body = read(os.getenv("BENCH_BODY"))
wrk.headers["Content-Type"] = "application/json"
for line in (os.getenv("BENCH_HEADERS") or ""):gmatch("[^\n]+") do
  local name, value = line:match("^%s*([^:]+):%s*(.-)%s*$")
  if name then wrk.headers[name] = value end
end

local unique = os.getenv("BENCH_VARY") == "unique"
local vary = unique and 0 or tonumber(os.getenv("BENCH_VARY") or "0")
local counter = 0
thread_no = 0  -- set per thread by setup()
local threads = 0

function setup(thread)
  thread:set("thread_no", threads)
  threads = threads + 1
end

if vary > 0 or unique then
  local template = wrk.body
  local format = wrk.format
  function request()
    counter = counter + 1
    local n = unique and (thread_no .. "-" .. counter) or tostring((counter * 7919 + thread_no * 104729) % vary)
    return format(nil, nil, nil, (template:gsub("@N@", n)))
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"min":%d,"mean":%.1f,"max":%d,"p50":%d,"p90":%d,"p95":%d,"p99":%d,"p999":%d}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency.max,
    latency:percentile(50), latency:percentile(90), latency:percentile(95),
    latency:percentile(99), latency:percentile(99.9)))
end
