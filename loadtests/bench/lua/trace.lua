-- Plays a trace: one request per line, "path<TAB>authorization<TAB>range", in order.
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args)
   reqs = {}
   for line in io.lines(args[1]) do
      local path, auth, range = line:match("^([^\t]+)\t([^\t]*)\t([^\t]+)$")
      if path then
         reqs[#reqs + 1] = wrk.format("GET", path, {["Authorization"] = auth, ["Range"] = range})
      end
   end
   n, idx, sent = #reqs, 0, 0
end
function request()
   idx = idx + 1
   if idx > n then idx = 1 end
   sent = sent + 1
   return reqs[idx]
end
function done(summary, latency, requests)
   local s, n = 0, 0
   for _, t in ipairs(threads) do s = s + t:get("sent"); n = t:get("n") end
   local e = summary.errors
   io.write(string.format('BENCH_RESULT {"requests":%d,"duration_us":%d,"bytes":%d,'
      .. '"errors":%d,"status":%d,"p50_us":%.1f,"p99_us":%.1f,"sent":%d,"n":%d}\n',
      summary.requests, summary.duration, summary.bytes,
      e.connect + e.read + e.write + e.timeout, e.status,
      latency:percentile(50), latency:percentile(99), s, n))
end
