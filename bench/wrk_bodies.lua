-- wrk script for bench/http_wrk.py: POSTs pre-encoded bodies (one file each) in turn, and
-- prints the run's figures as one JSON line.
--   wrk -t1 -c16 -d8s -s bench/wrk_bodies.lua URL -- PATH CONTENT_TYPE DIRECTORY COUNT
local prepared = {}
local next_index = 0

function init(args)
  local path, content_type, directory, count = args[1], args[2], args[3], tonumber(args[4])
  for i = 0, count - 1 do
    local file = assert(io.open(directory .. "/" .. i .. ".body", "rb"))
    local body = file:read("*a")
    file:close()
    local headers = { ["Content-Type"] = content_type }
    prepared[#prepared + 1] = wrk.format("POST", path, headers, body)
  end
end

function request()
  next_index = next_index % #prepared + 1
  return prepared[next_index]
end

function done(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, "non2xx": %d, '
      .. '"socket_errors": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    errors.status, errors.connect + errors.read + errors.write + errors.timeout
  ))
end
