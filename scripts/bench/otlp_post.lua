-- wrk script for `make bench-services`: POSTs one OTLP/HTTP protobuf body (written by
-- make_bodies.py from the OpenTelemetry Python SDK) to /v1/traces, each request a new trace:
-- the 8 bytes after every "SWBENCH!" in the body are replaced by (run nonce, thread, counter),
-- so the writer stores every span instead of dropping duplicates.
--   BENCH_BODY      the body file (required)
--   BENCH_NONCE     0..65535, distinct per wrk run (default 0)
--   BENCH_DELAY_MS  milliseconds each connection waits before each request (default 0:
--                   closed loop); used to hold a rate below saturation
local body_path = os.getenv("BENCH_BODY")
local nonce = tonumber(os.getenv("BENCH_NONCE") or "0")
local delay_ms = tonumber(os.getenv("BENCH_DELAY_MS") or "0")
local threads = {}
local next_thread = 0

function setup(thread)
  thread:set("thread_id", next_thread)
  next_thread = next_thread + 1
  table.insert(threads, thread)
end

local chunks
local counter = 0
local headers = { ["Content-Type"] = "application/x-protobuf" }

function init(args)
  local f = assert(io.open(body_path, "rb"))
  local data = f:read("*a")
  f:close()
  chunks = {}
  local pos = 1
  while true do
    local s, e = string.find(data, "SWBENCH!", pos, true)
    if not s then break end
    table.insert(chunks, string.sub(data, pos, e))
    pos = e + 9
  end
  table.insert(chunks, string.sub(data, pos))
  assert(#chunks > 1, "no SWBENCH! marker in " .. body_path)
end

local function id_bytes()
  counter = counter + 1
  local c = counter
  local low = {}
  for i = 5, 1, -1 do
    low[i] = string.char(c % 256)
    c = math.floor(c / 256)
  end
  return string.char(math.floor(nonce / 256) % 256, nonce % 256, thread_id % 256) .. table.concat(low)
end

function request()
  local id = id_bytes()
  local parts = {}
  for i = 1, #chunks - 1 do
    parts[#parts + 1] = chunks[i]
    parts[#parts + 1] = id
  end
  parts[#parts + 1] = chunks[#chunks]
  return wrk.format("POST", "/v1/traces", headers, table.concat(parts))
end

if delay_ms > 0 then
  function delay()
    return delay_ms
  end
end

function done(summary, latency, requests)
  io.write(string.format("BENCH_JSON {\"requests\":%d,\"non2xx\":%d,\"errors_connect\":%d,\"errors_read\":%d,\"errors_write\":%d,\"errors_timeout\":%d,\"errors_status\":%d,\"duration_us\":%d,\"bytes\":%d,\"p50_us\":%d,\"p90_us\":%d,\"p99_us\":%d,\"max_us\":%d,\"mean_us\":%.1f}\n",
    summary.requests, summary.errors.status, summary.errors.connect, summary.errors.read, summary.errors.write,
    summary.errors.timeout, summary.errors.status, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
