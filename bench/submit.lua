-- POSTs the same multipart crash report on every request and sorts the answers: a CrashID, a
-- 200 without one (a throttle discard), anything else. The body is read from the file named by
-- SUBMIT_BODY; its first line is the multipart delimiter, so the boundary comes from there.
local file = assert(io.open(assert(os.getenv("SUBMIT_BODY"), "SUBMIT_BODY is not set"), "rb"))
local report = file:read("*a")
file:close()
local boundary = assert(report:match("^%-%-([^\r\n]+)\r\n"), "no multipart delimiter")

wrk.method = "POST"
wrk.body = report
wrk.headers["Content-Type"] = "multipart/form-data; boundary=" .. boundary
wrk.headers["User-Agent"] = "Mozilla Crash Reporter"

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

accepted, discarded, failed = 0, 0, 0

function response(status, headers, body)
  if status == 200 and body:sub(1, 11) == "CrashID=bp-" then
    accepted = accepted + 1
  elseif status == 200 then
    discarded = discarded + 1
  else
    failed = failed + 1
  end
end

function done(summary, latency, requests)
  local a, d, f = 0, 0, 0
  for _, thread in ipairs(threads) do
    a = a + thread:get("accepted")
    d = d + thread:get("discarded")
    f = f + thread:get("failed")
  end
  io.write(string.format("answers: crash id %d, discarded %d, failed %d\n", a, d, f))
end
