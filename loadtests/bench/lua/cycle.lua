-- Cycles through a file of request paths (one GET each) with fixed headers, and
-- reports one JSON line.  args: <paths file> <authorization file> <Range value>.
-- Use one thread: each thread would start again at the first path.
local threads = {}

function setup(thread)
   table.insert(threads, thread)
end

function init(args)
   paths = {}
   for line in io.lines(args[1]) do
      if #line > 0 then paths[#paths + 1] = line end
   end
   npaths = #paths
   local f = assert(io.open(args[2], "r"))
   hdrs = {["Authorization"] = f:read("*l"), ["Range"] = args[3]}
   f:close()
   idx = 0
   sent = 0
end

function request()
   idx = idx + 1
   if idx > npaths then idx = 1 end
   sent = sent + 1
   return wrk.format("GET", paths[idx], hdrs)
end

function done(summary, latency, requests)
   local sent_all, npaths_min = 0, nil
   for _, t in ipairs(threads) do
      sent_all = sent_all + t:get("sent")
      local n = t:get("npaths")
      if npaths_min == nil or n < npaths_min then npaths_min = n end
   end
   local e = summary.errors
   io.write(string.format(
      '%s{"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,"write":%d,'
      .. '"timeout":%d,"status":%d,"p50_us":%.1f,"p99_us":%.1f,"sent":%d,"npaths":%d}\n',
      "BENCH_RESULT ", summary.requests, summary.duration, summary.bytes, e.connect, e.read,
      e.write, e.timeout, e.status, latency:percentile(50), latency:percentile(99),
      sent_all, npaths_min or 0))
end
