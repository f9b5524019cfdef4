--[[ limits.lua: every limits operation on one API key, each one atomic (one EVALSHA).
Mirrors window.py function by function (admit, settle, renew, absorb); a contract test holds
the replies and the stored counters of both equal on random operation sequences.

KEYS (all share the key name as hash tag, so every call touches one cluster slot):
KEYS[1]  requests window  hash  field <bucket start, ms> -> requests, plus the meta fields
KEYS[2]  tokens window    hash  field <bucket start, ms> -> tokens, plus the meta fields
KEYS[3]  quota counters   hash  field "<day|week|month>:<period id>" -> tokens
KEYS[4]  leases           zset  member <reservation id>, score <lease expiry, ms>
KEYS[5]  settled          zset  member <reservation id>, score <forget after, ms>

Window meta fields (never numbers, so never buckets): s = sum of the buckets, h = newest
bucket start, l = a lower bound of every bucket start, b = bucket size (ms) they were cut
with. They keep an admission O(1): only buckets from l up to now - span are ever visited,
and the whole hash is read only to compute a refusal's retry time.

ARGV holds one string: the arguments below joined by single spaces (none of them holds a
space; an empty argument is an empty field). One string is far cheaper for the client to
send than twenty arguments. The numbers [n] below count those fields.

Common ARGV: [1] operation, [2] now (ms), [3] span (ms) = window + one bucket (a bucket
starting at s counts while s + span > now), [4] bucket size (ms). Then, per operation:

admit   [5] start of the bucket containing now, [6] first bucket start that still counts
        (smallest multiple of the bucket size above now - span), [7] [8] [9] requests,
        tokens and parallel limits (-1: none), [10] tokens to reserve, [11] reservation id,
        [12] lease expiry (ms), [13] longest retry for a parallel refusal (ms), [14] number
        of quotas n, then n groups of 4: dimension code (4 day, 5 week, 6 month), period
        field, limit (tokens), period end (ms).
        Reply {allowed 0|1, dimension 0..6 (0 none; 1 requests, 2 tokens, 3 parallel, 4 day,
        5 week, 6 month), retry after (ms), exceeds limit 0|1, requests used, tokens used,
        requests reset (ms), tokens reset (ms)}.
settle  [5] start of the bucket containing now, [6] start of the reserved bucket, [7] tokens
        delta = actual - reserved (negative: a refund), [8] 1 if the reservation counts in
        the tokens window, [9] 1 to give the request slot back, [10] reservation id whose
        lease to release ("" for none), [11] number of quotas n, then n groups of 3:
        reserved period field, current period field, current period end (ms); and last,
        the reservation id and until when to remember it was settled (ms). Reply 1, or 0
        when that reservation was already settled (a replay: nothing changes).
renew   [5] reservation id, [6] new expiry (ms). Reply 1 if renewed, 0 if the lease is gone.
merge   [5] TTL floor of the quota hash (ms); then four sections, each a count n followed by
        n pairs: request buckets (start, count), token buckets (start, count), quota
        counters (field, tokens), leases (reservation id, expiry). Reply 1.

Integers only: every value is a whole number below 2^53, which Lua's doubles hold exactly,
and nothing is ever divided. Every key gets a TTL whenever something is added to it.
]]

-- The fields of the one packed argument, empty ones kept (see above).
local ARGV = (function(packed)
  local fields, from = {}, 1
  while true do
    local at = string.find(packed, ' ', from, true)
    if not at then
      fields[#fields + 1] = string.sub(packed, from)
      return fields
    end
    fields[#fields + 1] = string.sub(packed, from, at - 1)
    from = at + 1
  end
end)(ARGV[1])

local op = ARGV[1]
local now = tonumber(ARGV[2])
local span = tonumber(ARGV[3])
local bucket_size = ARGV[4]
local step = tonumber(bucket_size)
local horizon = now - span -- a bucket starting at or before this no longer counts

local function text(n)
  return string.format('%d', n)
end

-- Every bucket, oldest first, with its count (refusals and rare paths only).
local function buckets(key)
  local flat = redis.call('HGETALL', key)
  local starts, counts = {}, {}
  for i = 1, #flat, 2 do
    local start = tonumber(flat[i])
    if start then
      starts[#starts + 1] = start
      counts[start] = tonumber(flat[i + 1])
    end
  end
  table.sort(starts)
  return starts, counts
end

-- window._add: add delta to one bucket, dropping it at zero or below; meta stays exact.
local function window_add(key, start, delta)
  local name = text(start)
  local meta = redis.call('HMGET', key, 's', 'l', 'h', 'b', name)
  if meta[1] and meta[4] ~= bucket_size then
    redis.call('DEL', key) -- cut with another bucket size: start afresh
    meta = {false, false, false, false, false}
  end
  local old = tonumber(meta[5] or '0')
  local new = old + delta
  if new < 0 then new = 0 end
  if new == old then return end
  local sum = tonumber(meta[1] or '0') + new - old
  if sum <= 0 then
    redis.call('DEL', key)
    return
  end
  local low, high = tonumber(meta[2] or name), tonumber(meta[3] or name)
  if new == 0 then
    redis.call('HDEL', key, name)
    if start == high then
      local starts = buckets(key)
      high = starts[#starts]
    end
    redis.call('HSET', key, 's', text(sum), 'l', text(low), 'h', text(high), 'b', bucket_size)
  else
    if start < low then low = start end
    if start > high then high = start end
    redis.call('HSET', key, name, text(new), 's', text(sum), 'l', text(low), 'h', text(high),
      'b', bucket_size)
  end
  if delta > 0 then redis.call('PEXPIRE', key, span) end
end

-- window._purge_window: drop what no longer counts; returns the live sum and newest start.
local function live_window(key, first_live)
  local meta = redis.call('HMGET', key, 's', 'l', 'h', 'b')
  if not meta[1] then return 0, nil end
  local sum, low, high = tonumber(meta[1]), tonumber(meta[2]), tonumber(meta[3])
  if meta[4] ~= bucket_size or high <= horizon then
    redis.call('DEL', key)
    return 0, nil
  end
  if low <= horizon then
    if horizon - low > span then -- a bucket from a clock far behind: look at all of them
      local starts, counts = buckets(key)
      for _, start in ipairs(starts) do
        if start > horizon then break end
        sum = sum - counts[start]
        redis.call('HDEL', key, text(start))
      end
    else
      for start = low, horizon, step do
        local name = text(start)
        local count = redis.call('HGET', key, name)
        if count then
          sum = sum - tonumber(count)
          redis.call('HDEL', key, name)
        end
      end
    end
    redis.call('HSET', key, 's', text(sum), 'l', first_live)
  end
  return sum, high
end

-- window._check: refused, can never fit, retry after (ms): free the oldest buckets first.
local function check(key, used, limit, amount)
  if amount > limit then return true, true, 0 end
  if used + amount <= limit then return false, false, 0 end
  local starts, counts = buckets(key)
  local freed = 0
  for _, start in ipairs(starts) do
    freed = freed + counts[start]
    if used - freed + amount <= limit then return true, false, start + span - now end
  end
  return true, false, span
end

local function counter_add(key, name, delta)
  if redis.call('HINCRBY', key, name, delta) <= 0 then redis.call('HDEL', key, name) end
end

local function expire_at_last_lease(key)
  local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  if last[2] then redis.call('PEXPIRE', key, tonumber(last[2]) - now) end
end

local function admit()
  local bucket, first_live = tonumber(ARGV[5]), ARGV[6]
  local rpm, tpm, max_parallel = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
  local tokens, reservation, lease_expiry = tonumber(ARGV[10]), ARGV[11], ARGV[12]
  local parallel_retry, quota_count = tonumber(ARGV[13]), tonumber(ARGV[14])

  -- The refusal to report: one that can never fit wins, else the longest wait, else the first.
  local dimension, retry_after, exceeds = 0, 0, 0
  local function consider(code, refused, over, retry)
    if not refused or exceeds == 1 then return end
    if over or dimension == 0 or retry > retry_after then
      dimension, retry_after = code, retry
      if over then exceeds = 1 end
    end
  end

  local requests_used, requests_newest, tokens_used, tokens_newest = 0, nil, 0, nil
  if rpm >= 0 then
    requests_used, requests_newest = live_window(KEYS[1], first_live)
    consider(1, check(KEYS[1], requests_used, rpm, 1))
  end
  if tpm >= 0 then
    tokens_used, tokens_newest = live_window(KEYS[2], first_live)
    consider(2, check(KEYS[2], tokens_used, tpm, tokens))
  end

  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)
  if max_parallel >= 0 then
    if max_parallel < 1 then
      consider(3, true, true, 0)
    elseif redis.call('ZCARD', KEYS[4]) + 1 > max_parallel then
      local first = redis.call('ZRANGE', KEYS[4], 0, 0, 'WITHSCORES')
      consider(3, true, false, math.min(tonumber(first[2]) - now, parallel_retry))
    end
  end

  local fields, quota_end = {}, 0
  if quota_count > 0 then
    for q = 0, quota_count - 1 do fields[q + 1] = ARGV[16 + q * 4] end
    local values = redis.call('HMGET', KEYS[3], unpack(fields))
    local names = nil
    for q = 0, quota_count - 1 do
      local code, limit, ends = tonumber(ARGV[15 + q * 4]), tonumber(ARGV[17 + q * 4]),
        tonumber(ARGV[18 + q * 4])
      local used = tonumber(values[q + 1] or '0')
      if not values[q + 1] then -- a new period: drop this dimension's earlier ones
        names = names or redis.call('HKEYS', KEYS[3])
        local prefix = string.match(fields[q + 1], '^[^:]*:')
        for _, name in ipairs(names) do
          if name ~= fields[q + 1] and string.sub(name, 1, #prefix) == prefix then
            redis.call('HDEL', KEYS[3], name)
          end
        end
      end
      local over = tokens > limit
      consider(code, over or used + tokens > limit, over, ends - now)
      if ends > quota_end then quota_end = ends end
    end
  end

  local allowed = 0
  if dimension == 0 then
    allowed = 1
    if rpm >= 0 then
      window_add(KEYS[1], bucket, 1)
      requests_used = requests_used + 1
      if not requests_newest or bucket > requests_newest then requests_newest = bucket end
    end
    if tpm >= 0 and tokens > 0 then
      window_add(KEYS[2], bucket, tokens)
      tokens_used = tokens_used + tokens
      if not tokens_newest or bucket > tokens_newest then tokens_newest = bucket end
    end
    if max_parallel >= 0 then
      redis.call('ZADD', KEYS[4], lease_expiry, reservation)
      expire_at_last_lease(KEYS[4])
    end
    if tokens > 0 and quota_count > 0 then
      for _, name in ipairs(fields) do redis.call('HINCRBY', KEYS[3], name, tokens) end
      redis.call('PEXPIRE', KEYS[3], quota_end - now)
    end
  end

  -- Reset: when the window is empty again, i.e. the newest bucket's end of counting.
  local requests_reset, tokens_reset = 0, 0
  if rpm >= 0 and requests_newest then requests_reset = requests_newest + span - now end
  if tpm >= 0 and tokens_newest then tokens_reset = tokens_newest + span - now end
  return {allowed, dimension, retry_after, exceeds, requests_used, tokens_used,
          requests_reset, tokens_reset}
end

local function settle()
  local forget_at = ARGV[#ARGV]
  redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now)
  if redis.call('ZADD', KEYS[5], 'NX', forget_at, ARGV[#ARGV - 1]) == 0 then return 0 end
  local last = redis.call('ZRANGE', KEYS[5], -1, -1, 'WITHSCORES')[2]
  redis.call('PEXPIRE', KEYS[5], tonumber(last) - now)
  local bucket, reserved = tonumber(ARGV[5]), tonumber(ARGV[6])
  local delta, quota_count = tonumber(ARGV[7]), tonumber(ARGV[11])
  local live = reserved + span > now
  if ARGV[8] == '1' and delta ~= 0 then
    if live then
      window_add(KEYS[2], reserved, delta)
    elseif delta > 0 then
      window_add(KEYS[2], bucket, delta)
    end
  end
  if ARGV[9] == '1' and live then window_add(KEYS[1], reserved, -1) end
  if delta ~= 0 and quota_count > 0 then
    local quota_end = 0
    for q = 0, quota_count - 1 do
      local reserved_field, current_field = ARGV[12 + q * 3], ARGV[13 + q * 3]
      local ends = tonumber(ARGV[14 + q * 3])
      if ends > quota_end then quota_end = ends end
      if reserved_field == current_field then
        counter_add(KEYS[3], reserved_field, delta)
      elseif delta > 0 then
        counter_add(KEYS[3], current_field, delta)
      end
    end
    -- One TTL for the hash: the latest period end, so no counter is dropped early.
    if delta > 0 then redis.call('PEXPIRE', KEYS[3], quota_end - now) end
  end
  if ARGV[10] ~= '' then redis.call('ZREM', KEYS[4], ARGV[10]) end
  return 1
end

local function renew()
  local score = redis.call('ZSCORE', KEYS[4], ARGV[5])
  if not score or tonumber(score) <= now then return 0 end
  redis.call('ZADD', KEYS[4], ARGV[6], ARGV[5])
  expire_at_last_lease(KEYS[4])
  return 1
end

local function merge()
  local quota_ttl, at = tonumber(ARGV[5]), 6
  local function each_pair(handle)
    local count = tonumber(ARGV[at])
    for i = 1, count do handle(ARGV[at + 2 * i - 1], ARGV[at + 2 * i]) end
    at = at + 2 * count + 1
  end
  for _, key in ipairs({KEYS[1], KEYS[2]}) do
    each_pair(function(start, count)
      if tonumber(start) + span > now then window_add(key, tonumber(start), tonumber(count)) end
    end)
  end
  local quotas_written = false
  each_pair(function(name, count)
    counter_add(KEYS[3], name, count)
    quotas_written = true
  end)
  if quotas_written and redis.call('PTTL', KEYS[3]) < quota_ttl then
    redis.call('PEXPIRE', KEYS[3], quota_ttl)
  end
  each_pair(function(member, expiry)
    if tonumber(expiry) > now then redis.call('ZADD', KEYS[4], 'GT', expiry, member) end
  end)
  expire_at_last_lease(KEYS[4])
  return 1
end

if op == 'admit' then return admit() end
if op == 'settle' then return settle() end
if op == 'renew' then return renew() end
if op == 'merge' then return merge() end
return redis.error_reply('unknown operation ' .. tostring(op))
