-- pointer_front: the nginx front's decision cache, revoked within milliseconds.
--
-- Loaded by deploy/nginx/edge.conf.template (lua_package_path).  Why it exists and what it
-- guarantees: docs/operations.md section 10.  In short:
--
--  * access(): every /m/ request.  A cached "allow" (shared dict pf_decisions, keyed by a
--    hash of every credential the authorizer decided on) is used only while the host's edge
--    is alive (pf_state "alive", a TTL the edge keeps renewing) and while none of the
--    things it depends on (media, message, membership, grant, share capability, signing
--    key, session key) was revoked after the edge decided.  Otherwise the authorizer is
--    asked (subrequest to /_auth).
--  * control(): the host's edge pushes "<dependency> <stream ms>" lines (revocations) and
--    "alive <ms>" (its revocation tail is fresh for that long) to the control listener.
--  * stats(): counters for benchmarks and dashboards.
--
-- Nothing here logs, and no token is kept: cache keys are digests of the credentials.

local M = {}

local decisions = ngx.shared.pf_decisions
local revoked = ngx.shared.pf_revoked
local state = ngx.shared.pf_state

local cache_s = 30           -- longest a decision is reused (the template's AUTH_CACHE_S)
local revoked_ttl = 60       -- outlives every decision cached before the revocation
local secret_digest = nil    -- sha1 of POINTER_FRONT_SECRET; nil: control refused
local MAX_LINES = 10000

function M.init(opts)
    cache_s = opts.cache_s
    -- A decision stored late (a slow subrequest) must still meet its revocation.
    revoked_ttl = opts.cache_s + 30
    local secret = os.getenv("POINTER_FRONT_SECRET")
    if secret and #secret >= 16 then
        secret_digest = ngx.sha1_bin(secret)
    end
end

-- The cache key: a digest of everything the authorizer's answer depends on, including the
-- browser-playback cookie and the method (the authorizer honours the cookie only for GET
-- and HEAD).  A digest collision could only map a request onto a decision for other
-- credentials that chose the same bytes, which the colliding party could fetch anyway:
-- the decision names the bytes it allows.
local function credentials_key()
    local v = ngx.var
    return ngx.encode_base64(ngx.sha1_bin(table.concat({
        v.request_method or "", v.request_uri or "", v.http_authorization or "",
        v.cookie_pdm_media or "", v.http_x_pointer or "", v.http_x_grant or ""}, "\n")))
end

-- The same lexical rule as cdn_auth.origin.Origin.path_of: relative, no "..", no NUL.
local function contained(path)
    if type(path) ~= "string" or path == "" or path:sub(1, 1) == "/" or path:find("\0", 1, true) then
        return false
    end
    for segment in path:gmatch("[^/]+") do
        if segment == ".." then
            return false
        end
    end
    return true
end

-- Was anything this decision depends on revoked at or after the stream time it was made at?
-- (">=": events within the decision's own millisecond count as later, which only costs a
-- second authorizer call.)
local function revoked_since(through, deps)
    for dep in deps:gmatch("%S+") do
        local at = revoked:get(dep)
        if at and at >= through then
            return true
        end
    end
    return false
end

local function serve(origin, media_type)
    ngx.var.origin_path = origin
    ngx.var.media_type = media_type or ""
end

local function count(name)
    state:incr(name, 1, 0)
end

function M.access()
    local key = credentials_key()
    if state:get("alive") then
        local entry = decisions:get(key)
        if entry then
            local through, origin, media_type, deps = entry:match("^(%d+)\t([^\t]*)\t([^\t]*)\t(.*)$")
            if through and not revoked_since(tonumber(through), deps) then
                count("hits")
                return serve(origin, media_type)
            end
            decisions:delete(key)
            count("invalidated")
        end
    end
    count("auth_calls")
    local res = ngx.location.capture("/_auth")
    local status = res.status
    if status ~= 204 then
        if status == 400 or status == 401 or status == 403 or status == 404 or status == 410 then
            return ngx.exit(status)
        end
        if status == 413 or status == 414 or status == 431 then
            return ngx.exit(400)
        end
        count("auth_failures")
        return ngx.exit(503)
    end
    local h = res.header
    local origin = h["X-Origin-Path"]
    if not contained(origin) then
        count("origin_refused")
        return ngx.exit(503)
    end
    local through = tonumber(h["X-Auth-Through"] or "")
    local max_age = math.min(tonumber(h["X-Auth-Max-Age"] or "0") or 0, cache_s)
    local deps = h["X-Auth-Deps"]
    local media_type = h["X-Media-Content-Type"] or ""
    -- Only cache while the edge is alive: its pushes are what make a cached entry safe.
    if through and max_age > 0 and type(deps) == "string" and state:get("alive") then
        decisions:set(key, string.format("%d\t%s\t%s\t%s", through, origin, media_type, deps),
                      max_age)
    end
    return serve(origin, media_type)
end

local function authorized()
    local given = ngx.var.http_x_front_secret
    return secret_digest ~= nil and given ~= nil and ngx.sha1_bin(given) == secret_digest
end

-- Keep the largest stamp per dependency.  Two control requests may race (nginx workers do
-- not share a lock); re-reading after each write lets the larger stamp win.
local function raise_to(dep, at)
    for _ = 1, 8 do
        local current = revoked:get(dep)
        if current and current >= at then
            return true
        end
        local ok = revoked:safe_set(dep, at, revoked_ttl)
        if not ok then
            return false
        end
    end
    return true
end

function M.control()
    if not authorized() then
        return ngx.exit(403)
    end
    ngx.req.read_body()
    local body = ngx.req.get_body_data() or ""
    local alive_ms = nil
    local lines = 0
    local revocations = 0
    for line in body:gmatch("[^\n]+") do
        lines = lines + 1
        if lines > MAX_LINES then
            return ngx.exit(413)
        end
        local name, value = line:match("^(%S+) (%d+)$")
        if not name then
            return ngx.exit(400)
        end
        if name == "alive" then
            alive_ms = tonumber(value)
        elseif raise_to(name, tonumber(value)) then
            revocations = revocations + 1
        else
            -- Out of room for revocations: trust no cached decision rather than forget one.
            state:delete("alive")
            decisions:flush_all()
            count("revocations_overflow")
            return ngx.exit(503)
        end
    end
    if revocations > 0 then
        ngx.update_time()
        state:set("revocation_applied_at", ngx.now())  -- benchmarks time propagation by it
    end
    -- Liveness only after every revocation in the same push is in place.
    if alive_ms and alive_ms > 0 then
        state:set("alive", true, alive_ms / 1000)
    end
    return ngx.exit(204)
end

function M.stats()
    if not authorized() then
        return ngx.exit(403)
    end
    ngx.header["Content-Type"] = "application/json"
    ngx.say(string.format(
        '{"hits":%d,"auth_calls":%d,"invalidated":%d,"auth_failures":%d,"origin_refused":%d,'
            .. '"alive":%s,"decisions":%d,"revocation_applied_at":%.3f}',
        state:get("hits") or 0, state:get("auth_calls") or 0, state:get("invalidated") or 0,
        state:get("auth_failures") or 0, state:get("origin_refused") or 0,
        state:get("alive") and "true" or "false", #decisions:get_keys(0),
        state:get("revocation_applied_at") or 0))
end

return M
