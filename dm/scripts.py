"""Lua scripts (EVALSHA; Redis >= 6.2, no Functions): each touches one conversation's slot."""

from __future__ import annotations

#: KEYS: idempotency, members, messages, rate.
#: ARGV: sender, request hash ("" = no Idempotency-Key), idempotency ttl s,
#:       rate limit per second, the message as one JSON object (stored as field "m": one
#:       argument instead of a dozen keeps the client's command encoding cheap).
#: Returns {status, value, members...}: ok/id, dup/"id|hash|announced", not_member/"",
#: rate/pttl-ms.  ``members`` (ok and dup) are the conversation's members read in the same
#: script as the append: the message's recipients are exactly who was a member when it was
#: stored, so a removal racing the send cannot leave the removed user on the push list.
#: The idempotency record ends in "|m": a retry announces again, and ``NOTIFY``'s marker
#: makes that a no-op when the first attempt's announce went out.  Versions before the
#: marker wrote "|0" (not announced yet) and then "|1" (announced, by a separate
#: MARK_ANNOUNCED round trip), and read any flag but "0" as announced: so during a rolling
#: upgrade, or after a rollback, they never push a marked send twice (see DmStore.append).
SEND = """
if ARGV[2] ~= '' then
  local seen = redis.call('GET', KEYS[1])
  if seen then
    local out = {'dup', seen}
    for _, u in ipairs(redis.call('HKEYS', KEYS[2])) do out[#out + 1] = u end
    return out
  end
end
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 0 then return {'not_member', ''} end
local n = redis.call('INCR', KEYS[4])
if n == 1 then redis.call('PEXPIRE', KEYS[4], 1000) end
if n > tonumber(ARGV[4]) then return {'rate', tostring(redis.call('PTTL', KEYS[4]))} end
local id = redis.call('XADD', KEYS[3], '*', 'm', ARGV[5])
if ARGV[2] ~= '' then
  redis.call('SET', KEYS[1], id .. '|' .. ARGV[2] .. '|m', 'EX', tonumber(ARGV[3]))
end
local out = {'ok', id}
for _, u in ipairs(redis.call('HKEYS', KEYS[2])) do out[#out + 1] = u end
return out
"""

#: KEYS: messages, unsent (hash: message id -> "grant id|sender", and "<id>:announced" -> "1"
#: once the unsend's revocations and push went out).  ARGV: message id, requester.
#: Returns {status, media_id, grant_id}: ok, already (the grant id again, so a retry whose
#: first attempt failed before announcing re-publishes), announced (a repeat of a finished
#: unsend: nothing to do), missing, forbidden (not the sender, also once unsent: only the
#: sender unsends).  A tombstone without "|" predates the sender in it.
UNSEND = """
local seen = redis.call('HGET', KEYS[2], ARGV[1])
if seen then
  local bar = string.find(seen, '|', 1, true)
  if bar then
    if string.sub(seen, bar + 1) ~= ARGV[2] then return {'forbidden', '', ''} end
    seen = string.sub(seen, 1, bar - 1)
  end
  if redis.call('HEXISTS', KEYS[2], ARGV[1] .. ':announced') == 1 then
    return {'announced', '', seen}
  end
  return {'already', '', seen}
end
local e = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #e == 0 then return {'missing', '', ''} end
local f = e[1][2]
local msg = {}
for i = 1, #f, 2 do
  if f[i] == 'm' then msg = cjson.decode(f[i + 1]) end
end
local sender, media, grant = msg['sender'] or '', msg['media_id'] or '', msg['grant_id'] or ''
if sender ~= ARGV[2] then return {'forbidden', '', ''} end
redis.call('XDEL', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], grant .. '|' .. sender)
return {'ok', media, grant}
"""

#: KEYS: the user's device hash.  ARGV: device id, record JSON, max devices.
#: Returns 1 when stored, 0 when the user is at the cap (a replacement always fits).
#: One script, so concurrent publishes cannot all pass a check made before any write.
PUT_DEVICE = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0
    and redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[3]) then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""

#: KEYS: the notify stream, [the send's marker (``notify_once``) when ARGV[5] > 0,] then one
#: inbox per recipient (all one slot: see user_inbox).
#: ARGV: the event JSON, the trim MINID (ms), the inbox cap, the retention (ms), the marker's
#: TTL in s (0: no marker).
#: Returns the event id.  Appends and indexes in one step, so an event is either
#: replayable from every recipient's inbox or was never published.  With a marker, a
#: message is published once: a second call returns the first call's event id and writes
#: nothing, so an idempotent retry, or a re-run after a connection broke mid-reply, cannot
#: push it twice.
NOTIFY = """
local first = 2
if tonumber(ARGV[5]) > 0 then
  local seen = redis.call('GET', KEYS[2])
  if seen then return seen end
  first = 3
end
local id = redis.call('XADD', KEYS[1], 'MINID', '~', ARGV[2], '*', 'e', ARGV[1])
local ms = tonumber(string.match(id, '^(%d+)'))
for i = first, #KEYS do
  redis.call('ZADD', KEYS[i], ms, id)
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', '(' .. ARGV[2])
  redis.call('ZREMRANGEBYRANK', KEYS[i], 0, -(tonumber(ARGV[3]) + 1))
  redis.call('PEXPIRE', KEYS[i], ARGV[4])
end
if first == 3 then redis.call('SET', KEYS[2], id, 'EX', tonumber(ARGV[5])) end
return id
"""

#: KEYS: the user's block set.  ARGV: the user to block, the cap.
#: Returns 1 added, 0 already blocked (a repeat: nothing to announce), -1 at the cap.
BLOCK = """
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then return 0 end
if redis.call('SCARD', KEYS[1]) >= tonumber(ARGV[2]) then return -1 end
redis.call('SADD', KEYS[1], ARGV[1])
return 1
"""
