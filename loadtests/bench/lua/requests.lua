-- Cycles through a file of requests, one per line, tab-separated:
--   METHOD  PATH  AUTHORIZATION  IDEMPOTENCY-KEY  BODY
-- (an empty Authorization takes the default from the auth file; an empty key or body
-- means none).  Requests are formatted once, in init, so the run only hands out strings.
-- Every response's status (and body length, unless -1) is checked; reports one JSON line.
-- args: <lines file> <auth file> <expected status> <expected body bytes> <"Name: value" | ->
-- Use one thread: each thread would start again at the first line.
local threads = {}

function setup(thread)
   table.insert(threads, thread)
end

function init(args)
   local f = assert(io.open(args[2], "r"))
   local default_auth = f:read("*l") or ""
   f:close()
   expected = tonumber(args[3])
   expected_len = tonumber(args[4])
   local xname, xvalue = nil, nil
   if args[5] ~= "-" then xname, xvalue = string.match(args[5], "^([^:]+):%s*(.*)$") end
   reqs = {}
   for line in io.lines(args[1]) do
      if #line > 0 then
         local method, path, auth, key, body = string.match(line,
            "^([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)\t(.*)$")
         local h = {}
         if auth == "" then auth = default_auth end
         if auth ~= "" then h["Authorization"] = auth end
         if key ~= "" then h["Idempotency-Key"] = key end
         if body == "" then body = nil else h["Content-Type"] = "application/json" end
         if xname then h[xname] = xvalue end
         reqs[#reqs + 1] = wrk.format(method, path, h, body)
      end
   end
   nreqs = #reqs
   idx, sent, ok, bad_status, bad_length, first_bad = 0, 0, 0, 0, 0, 0
end

function request()
   idx = idx + 1
   if idx > nreqs then idx = 1 end
   sent = sent + 1
   return reqs[idx]
end

function response(status, headers, body)
   if status ~= expected then
      bad_status = bad_status + 1
      if first_bad == 0 then first_bad = status end
   elseif expected_len >= 0 and (body and #body or 0) ~= expected_len then
      bad_length = bad_length + 1
   else
      ok = ok + 1
   end
end

function done(summary, latency, requests)
   local t = {sent = 0, ok = 0, bad_status = 0, bad_length = 0, first_bad = 0, nreqs = -1}
   for _, th in ipairs(threads) do
      for _, name in ipairs({"sent", "ok", "bad_status", "bad_length"}) do
         t[name] = t[name] + th:get(name)
      end
      if t.first_bad == 0 then t.first_bad = th:get("first_bad") end
      local n = th:get("nreqs")
      if t.nreqs < 0 or n < t.nreqs then t.nreqs = n end
   end
   local e = summary.errors
   io.write(string.format(
      '%s{"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"timeout":%d,'
      .. '"p50_us":%.1f,"p99_us":%.1f,"sent":%d,"ok":%d,"bad_status":%d,"bad_length":%d,'
      .. '"first_bad":%d,"nlines":%d}\n',
      "BENCH_RESULT ", summary.requests, summary.duration, e.connect, e.read, e.write, e.timeout,
      latency:percentile(50), latency:percentile(99), t.sent, t.ok, t.bad_status,
      t.bad_length, t.first_bad, t.nreqs))
end
