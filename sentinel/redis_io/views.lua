--[[ views.lua: write-back views of Redis hashes and zsets, for a Redis function library's
operations (loaded before the library's own code: see sentinel/redis_io/functions.py).

Write-back. A hash is read by one HMGET of the fields an operation needs (a field read once
is known for the rest of the call) and written by one HSET/HDEL and one PEXPIRE at the end;
a DEL empties it in the call's view at once; a counter with no write waiting may be changed
at once by HINCRBY instead. A zset's additions wait for the end too (one ZADD), while what
must be known now (a member's removal, a count, the soonest expiry) is asked of Redis after
the waiting additions that could change the answer. The leases' count is read once and then
kept. Nothing is ever read stale: every read goes through the view.

Cheap bookkeeping matters as much as fewer commands: in Redis's Lua a command costs about
3,500 instructions, a number passed to it about 5,000 more (Redis formats it with %.17g), a
string.format about 2,700 and a new table about 1,200. So a hash's view is one table, the
scratch lists are reused, numbers are parsed once per call, and every number a command gets
is a string formatted once (text).

A call starts with views_begin() and ends with views_end(), which sends every write.
]]

-- A whole number as the digits Redis is sent. Every number a command gets is sent as such
-- a string: Redis would otherwise format a Lua number itself, with %.17g, at about twice the
-- cost. The same numbers recur (TTLs, bucket starts, counts, the clock within a
-- millisecond), so each is formatted once and kept, across calls, up to a bound.
local texts, text_count = {}, 0
local function text(n)
  local s = texts[n]
  if not s then
    s = string.format('%d', n)
    if text_count >= 4096 then texts, text_count = {}, 0 end
    texts[n] = s
    text_count = text_count + 1
  end
  return s
end

-- Hashes ---------------------------------------------------------------------------------
-- A hash's view is one table: its fields (string keys) hold their values as numbers (every
-- field these hashes hold is a whole number), false when known absent, nil when not read
-- yet; its integer slots hold the bookkeeping (field names are strings, so never clash):
local KEY, DIRTY, FULL, CLEARED, TTL, FRESH = 1, 2, 3, 4, 5, 6
-- the Redis key; the fields to write (a table, made on the first write); whether every field
-- is known; whether to DEL first; the PEXPIRE to send; whether nothing was read yet. Numbers
-- are parsed when read and formatted when written, once per call, and a view is one table:
-- in Redis's Lua, each table and each number conversion costs thousands of instructions.
local hashes, hash_count = {}, 0

local function hash(key)
  local h = hashes[key]
  if not h then
    -- The nil fields only size the table for the fields to come: growing it costs more.
    h = {key, nil, false, false, nil, true, s = nil, l = nil, h = nil, b = nil, f1 = nil,
      f2 = nil, f3 = nil, f4 = nil}
    hashes[key] = h
    hash_count = hash_count + 1
    hashes[hash_count] = h
  end
  return h
end

local function parsed(value)
  return value and (tonumber(value) or value) or false
end

local missing = {} -- scratch: the names hload asks for (reused: a table per read costs more)

-- Read the named fields (a list) not known yet, in one HMGET.
local function hload(h, names)
  if h[FULL] then return end
  local got
  if h[FRESH] then -- nothing known yet: ask for them all as they are
    got = redis.call('HMGET', h[KEY], unpack(names))
    for i = 1, #names do h[names[i]] = parsed(got[i]) end
  else
    local n = 0
    for i = 1, #names do
      if h[names[i]] == nil then
        n = n + 1
        missing[n] = names[i]
      end
    end
    if n == 0 then return end
    got = redis.call('HMGET', h[KEY], unpack(missing, 1, n))
    for i = 1, n do h[missing[i]] = parsed(got[i]) end
  end
  h[FRESH] = false
end

-- A field's value (nil when absent).
local function hget(h, name)
  local value = h[name]
  if value == nil then
    if h[FULL] then return nil end
    value = parsed(redis.call('HGET', h[KEY], name))
    h[name] = value
    h[FRESH] = false
  end
  return value or nil
end

local function mark(h, name)
  local dirty = h[DIRTY]
  if not dirty then
    dirty = {}
    h[DIRTY] = dirty
  end
  dirty[name] = true
end

local function hset(h, name, value)
  if h[name] == value then return end -- unchanged: nothing to write (or to format)
  h[name] = value
  mark(h, name)
end

local function hdel(h, name)
  h[name] = false
  mark(h, name)
end

-- Every field and value as the hash is now, fields being the string keys (absent ones false).
local function hall(h)
  if not h[FULL] then
    local flat = redis.call('HGETALL', h[KEY])
    for i = 1, #flat, 2 do
      if h[flat[i]] == nil then h[flat[i]] = parsed(flat[i + 1]) end
    end
    h[FULL], h[FRESH] = true, false
  end
  return h
end

local function hdrop(h)
  for name in pairs(h) do
    if type(name) == 'string' then h[name] = nil end
  end
  h[DIRTY], h[FULL], h[CLEARED], h[TTL], h[FRESH] = nil, true, true, nil, false
end

local function hincr(h, name, delta)
  local value = (hget(h, name) or 0) + delta
  hset(h, name, value)
  return value
end

-- hincr for a field that may be changed in Redis at once: with no write of it waiting, one
-- HINCRBY instead of a read now and a write at the end; the view then knows the new value.
local function hincr_now(h, name, delta)
  local dirty = h[DIRTY]
  if h[CLEARED] or (dirty and dirty[name]) then -- the view knows it: added to with the rest
    local value = (h[name] or 0) + delta
    h[name] = value
    mark(h, name)
    return value
  end
  local value = redis.call('HINCRBY', h[KEY], name, text(delta))
  h[name] = value
  return value
end

local sets, dels = {}, {} -- scratch lists for hflush

local function hflush(h)
  local key = h[KEY]
  if h[CLEARED] then redis.call('DEL', key) end
  local dirty = h[DIRTY]
  if dirty then
    local s, d = 0, 0
    for name in pairs(dirty) do
      local value = h[name]
      if value then
        sets[s + 1] = name
        sets[s + 2] = type(value) == 'number' and text(value) or value
        s = s + 2
      elseif not h[CLEARED] then
        d = d + 1
        dels[d] = name
      end
    end
    if d > 0 then redis.call('HDEL', key, unpack(dels, 1, d)) end
    if s > 0 then redis.call('HSET', key, unpack(sets, 1, s)) end
  end
  if h[TTL] then redis.call('PEXPIRE', key, text(h[TTL])) end
  h[DIRTY], h[CLEARED], h[TTL] = nil, false, nil
end

-- Zsets ----------------------------------------------------------------------------------
-- A zset's view: its additions waiting for the end in adds (member -> score) and order (n of
-- them), both made on the first; low is the lowest of their scores, moved the members among
-- them already stored (a new score for them), count the ZCARD once known, purged the latest
-- purge's time, soonest a lower bound of the scores stored (asked at a second purge, nil
-- when unknown), expire and floor the TTL to send.
local zsets, zset_count = {}, 0

local function zset(key)
  local z = zsets[key]
  if not z then
    z = {key = key}
    zsets[key] = z
    zset_count = zset_count + 1
    zsets[zset_count] = z
  end
  return z
end

local scores = {} -- scratch: the score and member pairs zflush sends

local function zflush(z)
  local order = z.order
  if not order or z.n == 0 then return end
  local adds, s = z.adds, 0
  for i = 1, z.n do
    local member = order[i]
    local score = adds[member]
    if score then
      scores[s + 1], scores[s + 2] = text(score), member
      s = s + 2
      if z.soonest and score < z.soonest then z.soonest = score end -- stored from now on
    end
  end
  if s > 0 then redis.call('ZADD', z.key, unpack(scores, 1, s)) end
  z.adds, z.order, z.n, z.low = nil, nil, 0, nil
end

-- Add member (or move it, when stored is true: it is in Redis already, so not counted).
local function zadd(z, score, member, stored)
  local adds = z.adds
  if not adds then
    adds = {}
    z.adds, z.order, z.n = adds, {}, 0
  end
  if not adds[member] then
    z.n = z.n + 1
    z.order[z.n] = member
    if z.count and not stored then z.count = z.count + 1 end -- reservation ids are new
  end
  if stored then
    z.moved = z.moved or {}
    z.moved[member] = true
  end
  adds[member] = score
  if not z.low or score < z.low then z.low = score end
end

-- Remove member; 1 if it was there.
local function zrem(z, member)
  local adds = z.adds
  if adds and adds[member] then
    adds[member] = nil
    if z.count then z.count = z.count - 1 end
    if z.moved and z.moved[member] then redis.call('ZREM', z.key, member) end -- old score
    return 1
  end
  local removed = redis.call('ZREM', z.key, member)
  if removed == 1 and z.count then z.count = z.count - 1 end
  return removed
end

-- Drop members whose score is at most now, waiting additions included (z.low bounds theirs).
local function zpurge(z, now)
  if z.low and z.low <= now then
    local adds, order = z.adds, z.order
    z.low = nil
    for i = 1, z.n do
      local member = order[i]
      local score = adds[member]
      if score and score <= now then
        adds[member] = nil
        if z.count then z.count = z.count - 1 end
        if z.moved and z.moved[member] then redis.call('ZREM', z.key, member) end
      elseif score and (not z.low or score < z.low) then
        z.low = score
      end
    end
  end
  if z.purged and now <= z.purged then return end -- Redis holds nothing that old any more
  if z.purged then
    -- Purged already at an earlier millisecond of this call: ask once for the soonest
    -- score stored (the waiting additions are z.low's), and purge again only once it is due.
    if not z.soonest then
      local first = redis.call('ZRANGE', z.key, '0', '0', 'WITHSCORES')
      z.soonest = first[2] and tonumber(first[2]) or math.huge
    end
    if now < z.soonest then return end
  end
  local removed = redis.call('ZREMRANGEBYSCORE', z.key, '-inf', text(now))
  if z.count then z.count = z.count - removed end
  z.purged, z.soonest = now, nil
end

local function zcard(z)
  if not z.count then
    zflush(z)
    z.count = redis.call('ZCARD', z.key)
  end
  return z.count
end

-- The first (soonest) or last (latest) entry {member, score}, after the waiting additions.
local function zend(z, last)
  zflush(z)
  if last then return redis.call('ZRANGE', z.key, '-1', '-1', 'WITHSCORES') end
  return redis.call('ZRANGE', z.key, '0', '0', 'WITHSCORES')
end

local function zscore(z, member)
  local score = z.adds and z.adds[member]
  if score then return score end
  local stored = redis.call('ZSCORE', z.key, member)
  return stored and tonumber(stored) or nil
end

-- A zset whose TTL follows its latest score (leases, settled), as an operation at now that
-- added or moved a member to score (nil: none) left it: the TTL is sent at the call's end,
-- to reach the latest score (never below score: a later removal does not shorten it).
local function expire_after(z, now, score)
  z.expire = now
  if score and (not z.floor or score > z.floor) then z.floor = score end
end

local function expire_at_last(z)
  zflush(z)
  if z.floor then
    -- Usually the latest score is one this call added, and later than any before it: then
    -- one PEXPIRE GT (never shortening the TTL) replaces reading the last score. GT takes a
    -- key without a TTL for one that never expires, so a key new in this call, which has
    -- none yet, takes the long way (PTTL -1); -2: the key is gone, nothing to expire.
    local z_ttl = text(z.floor - z.expire)
    if redis.call('PEXPIRE', z.key, z_ttl, 'GT') == 1 then return end
    if redis.call('PTTL', z.key) ~= -1 then return end
  end
  local last = zend(z, true)
  local top = last[2] and tonumber(last[2]) or z.floor
  if z.floor and top < z.floor then top = z.floor end
  if top then redis.call('PEXPIRE', z.key, text(top - z.expire)) end
end

-- A call's views start empty and are written back at its end.
local function views_begin()
  hashes, hash_count, zsets, zset_count = {}, 0, {}, 0
end

local function views_end()
  for i = 1, hash_count do hflush(hashes[i]) end
  for i = 1, zset_count do
    local z = zsets[i]
    if z.expire then expire_at_last(z) else zflush(z) end
  end
end
