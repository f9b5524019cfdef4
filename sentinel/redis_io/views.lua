--[[ views.lua: write-back views of Redis hashes and zsets, for a Redis function library's
operations (loaded before the library's own code: see sentinel/redis_io/functions.py).

Write-back. A hash is read by one HMGET of the fields an operation needs (a field read once
is known for the rest of the call) and written by one HSET/HDEL and one PEXPIRE at the end;
a DEL empties it in the call's view at once. A zset's additions wait for the end too (one
ZADD), while what must be known now (a member's removal, a count, the soonest expiry) is
asked of Redis after the waiting additions that could change the answer. The leases' count
is read once and then kept. Nothing is ever read stale: every read goes through the view.

A call starts with views_begin() and ends with views_end(), which sends every write.
]]

local function text(n)
  return string.format('%d', n)
end

-- Hashes ---------------------------------------------------------------------------------
-- A hash's view: vals[field] = its value as a number (every field these hashes hold is a
-- whole number), false when known absent, nil when not read yet; full when vals holds every
-- field; dirty = fields to write; cleared = DEL first; ttl = the PEXPIRE to send. Numbers
-- are parsed when read and formatted when written, once per call: both are costly in Lua.
local hashes = {}

local function hash(key)
  local h = hashes[key]
  if not h then
    h = {key = key, vals = {}, dirty = {}, full = false, cleared = false, ttl = nil}
    hashes[key] = h
    hashes[#hashes + 1] = h
  end
  return h
end

local function parsed(value)
  return value and (tonumber(value) or value) or false
end

-- Read the named fields (a list) not known yet, in one HMGET.
local function hload(h, names)
  if h.full then return end
  local vals, missing = h.vals, nil
  for i = 1, #names do
    if vals[names[i]] == nil then
      missing = missing or {}
      missing[#missing + 1] = names[i]
    end
  end
  if missing then
    local got = redis.call('HMGET', h.key, unpack(missing))
    for i, name in ipairs(missing) do vals[name] = parsed(got[i]) end
  end
end

-- A field's value (nil when absent).
local function hget(h, name)
  local value = h.vals[name]
  if value == nil then
    if h.full then return nil end
    value = parsed(redis.call('HGET', h.key, name))
    h.vals[name] = value
  end
  return value or nil
end

local function hset(h, name, value)
  if h.vals[name] == value then return end -- unchanged: nothing to write (or to format)
  h.vals[name] = value
  h.dirty[name] = true
end

local function hdel(h, name)
  h.vals[name] = false
  h.dirty[name] = true
end

-- Every field and value as the hash is now (absent fields are false: skip them).
local function hall(h)
  if not h.full then
    local flat = redis.call('HGETALL', h.key)
    local vals = h.vals
    for i = 1, #flat, 2 do
      if vals[flat[i]] == nil then vals[flat[i]] = parsed(flat[i + 1]) end
    end
    h.full = true
  end
  return h.vals
end

local function hdrop(h)
  h.vals, h.dirty, h.full, h.cleared, h.ttl = {}, {}, true, true, nil
end

local function hincr(h, name, delta)
  local value = (hget(h, name) or 0) + delta
  hset(h, name, value)
  return value
end

local function hflush(h)
  if h.cleared then redis.call('DEL', h.key) end
  local sets, dels = {}, {}
  for name in pairs(h.dirty) do
    local value = h.vals[name]
    if value then
      sets[#sets + 1] = name
      sets[#sets + 1] = type(value) == 'number' and text(value) or value
    elseif not h.cleared then
      dels[#dels + 1] = name
    end
  end
  if #dels > 0 then redis.call('HDEL', h.key, unpack(dels)) end
  if #sets > 0 then redis.call('HSET', h.key, unpack(sets)) end
  if h.ttl then redis.call('PEXPIRE', h.key, h.ttl) end
  h.dirty, h.cleared, h.ttl = {}, false, nil
end

-- Zsets ----------------------------------------------------------------------------------
-- A zset's additions wait in adds (member -> score) and order; low is the lowest of their
-- scores, moved the members among them already stored (a new score for them), count the
-- ZCARD once known, purged the latest purge's time, expire and floor the TTL to send.
local zsets = {}

local function zset(key)
  local z = zsets[key]
  if not z then
    z = {key = key, adds = {}, order = {}}
    zsets[key] = z
    zsets[#zsets + 1] = z
  end
  return z
end

local function zflush(z)
  if #z.order == 0 then return end
  local pairs_ = {}
  for _, member in ipairs(z.order) do
    local score = z.adds[member]
    if score then
      pairs_[#pairs_ + 1] = score
      pairs_[#pairs_ + 1] = member
    end
  end
  if #pairs_ > 0 then redis.call('ZADD', z.key, unpack(pairs_)) end
  z.adds, z.order, z.low = {}, {}, nil
end

-- Add member (or move it, when stored is true: it is in Redis already, so not counted).
local function zadd(z, score, member, stored)
  if not z.adds[member] then
    z.order[#z.order + 1] = member
    if z.count and not stored then z.count = z.count + 1 end -- reservation ids are new
  end
  if stored then
    z.moved = z.moved or {}
    z.moved[member] = true
  end
  z.adds[member] = score
  if not z.low or score < z.low then z.low = score end
end

-- Remove member; 1 if it was there.
local function zrem(z, member)
  if z.adds[member] then
    z.adds[member] = nil
    if z.count then z.count = z.count - 1 end
    if z.moved and z.moved[member] then redis.call('ZREM', z.key, member) end -- its old score is stored
    return 1
  end
  local removed = redis.call('ZREM', z.key, member)
  if removed == 1 and z.count then z.count = z.count - 1 end
  return removed
end

-- Drop members whose score is at most now, waiting additions included (z.low bounds theirs).
local function zpurge(z, now)
  if z.low and z.low <= now then
    z.low = nil
    for _, member in ipairs(z.order) do
      local score = z.adds[member]
      if score and score <= now then
        z.adds[member] = nil
        if z.count then z.count = z.count - 1 end
        if z.moved and z.moved[member] then redis.call('ZREM', z.key, member) end
      elseif score and (not z.low or score < z.low) then
        z.low = score
      end
    end
  end
  if z.purged and now <= z.purged then return end -- Redis holds nothing that old any more
  local removed = redis.call('ZREMRANGEBYSCORE', z.key, '-inf', now)
  if z.count then z.count = z.count - removed end
  z.purged = now
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
  if last then return redis.call('ZRANGE', z.key, -1, -1, 'WITHSCORES') end
  return redis.call('ZRANGE', z.key, 0, 0, 'WITHSCORES')
end

local function zscore(z, member)
  local score = z.adds[member]
  if score then return score end
  local stored = redis.call('ZSCORE', z.key, member)
  return stored and tonumber(stored) or nil
end

-- A zset whose TTL follows its latest score (leases, settled), as an operation at now that
-- added or moved a member to score (nil: none) left it: the TTL is sent at the call's end,
-- from the latest score then (never below score: a later removal does not shorten it).
local function expire_after(z, now, score)
  z.expire = now
  if score and (not z.floor or score > z.floor) then z.floor = score end
end

local function expire_at_last(z)
  local last = zend(z, true)
  local top = last[2] and tonumber(last[2]) or z.floor
  if z.floor and top < z.floor then top = z.floor end
  if top then redis.call('PEXPIRE', z.key, top - z.expire) end
end

-- A call's views start empty and are written back at its end.
local function views_begin()
  hashes, zsets = {}, {}
end

local function views_end()
  for _, h in ipairs(hashes) do hflush(h) end
  for _, z in ipairs(zsets) do
    if z.expire then expire_at_last(z) else zflush(z) end
  end
end
