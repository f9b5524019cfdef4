--[[ limits.lua: every limits operation on one API key, each one atomic (one EVALSHA).
Mirrors window.py function by function (admit, settle, renew, absorb); a contract test holds
the replies and the stored counters of both equal on random operation sequences.

KEYS (all share the key name as hash tag, so every call touches one cluster slot):
KEYS[1]  requests window  hash  field <bucket start, ms> -> requests, plus the meta fields
KEYS[2]  tokens window    hash  field <bucket start, ms> -> tokens, plus the meta fields
KEYS[3]  quota counters   hash  field "<day|week|month>:<period id>" -> tokens
KEYS[4]  leases           zset  member <reservation id>, score <lease expiry, ms>
KEYS[5]  settled          zset  member <reservation id>, score <forget after, ms>
Only when the call involves money (see window.py), six more, the key's and its team's:
KEYS[6]  money            hash  "usd_day:<period>" | "usd_total" | "credits" -> nano-USD
                                charged, "held" = the sum of the holds, "next" = a lower
                                bound of their expiries (no TTL)
KEYS[7]  holds            zset  member "<reservation id>:<nano-USD held>", score <expiry>
KEYS[8]  credits          hash  "in" -> nano-USD ever topped up, "seq" -> last ledger entry
KEYS[9]  ledger           zset  member "<seq> <kind> <nano-USD> <balance after> <ms> <ref>",
                                score <seq> (top-ups come from credits.lua)
KEYS[10] team money       hash  as KEYS[6], for the team (another hash tag: one server only)
KEYS[11] team holds       zset  as KEYS[7]

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
        With money (KEYS[6..]): then the hold (nano-USD), the hold's expiry (ms), the number
        of key budgets m and m groups of 4: dimension code (7 usd_day, 8 usd_week,
        9 usd_month, 10 usd_total), counter field, limit, period end (ms, 0: never); then 1
        if credit-metered (code 11) else 0; then the number of team budgets t and t groups
        of 4 (codes 12 to 15).
        Reply {allowed 0|1, dimension 0..15 (0 none; 1 requests, 2 tokens, 3 parallel, 4 day,
        5 week, 6 month, 7.. money), retry after (ms), exceeds limit 0|1, requests used,
        tokens used, requests reset (ms), tokens reset (ms)}, then with money the nano-USD left
        on each money check (key budgets, credits, team budgets) after the admission.
settle  [5] start of the bucket containing now, [6] start of the reserved bucket, [7] tokens
        delta = actual - reserved (negative: a refund), [8] 1 if the reservation counts in
        the tokens window, [9] 1 to give the request slot back, [10] reservation id whose
        lease to release ("" for none), [11] number of quotas n, then n groups of 3:
        reserved period field, current period field, current period end (ms); with money,
        the hold's zset member ("" for none), the cost to charge (nano-USD), the request id
        (the ledger's reference), the number of key money counters to charge n and their
        fields ("credits" also writes a ledger entry), the number of team counters t and
        their fields; and last, the reservation id and until when to remember it was settled
        (ms). Reply 1, or 0 when that reservation was already settled (a replay: nothing
        changes); with money and a cost above 0, {1, then each named counter's value after
        the charge, key's then team's} (for the budget alerts).
renew   [5] reservation id, [6] new expiry (ms), with money [7] the hold's zset member.
        Reply 1 if the lease or the hold was renewed, 0 if both are gone.
merge   [5] TTL floor of the quota hash (ms); then four sections, each a count n followed by
        n pairs: request buckets (start, count), token buckets (start, count), quota
        counters (field, tokens), leases (reservation id, expiry); with money two more:
        money counters (field, nano-USD; "credits" also writes a ledger entry) and holds
        (zset member, expiry). Reply 1.

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

local function hold_amount(member)
  return tonumber(string.match(member, ':(%d+)$'))
end

-- window.purge_holds: drop expired holds from the running sum; the nano-USD still held and
-- the lower bound of every live hold's expiry ("next", -1: no hold at all). Only when that
-- bound has passed can a hold have expired, so the holds are rarely visited.
local function live_holds(holds, money, held, soonest)
  held, soonest = tonumber(held or '0'), tonumber(soonest or '-1')
  if soonest < 0 or soonest > now then return held, soonest end
  local expired = redis.call('ZRANGEBYSCORE', holds, '-inf', now)
  if #expired > 0 then
    for _, member in ipairs(expired) do held = held - hold_amount(member) end
    redis.call('ZREMRANGEBYSCORE', holds, '-inf', now)
  end
  local first = redis.call('ZRANGE', holds, 0, 0, 'WITHSCORES')
  if first[2] then
    soonest = tonumber(first[2])
    redis.call('HSET', money, 'held', text(held), 'next', first[2])
  else
    held, soonest = 0, -1
    redis.call('HDEL', money, 'held', 'next')
  end
  return held, soonest
end

local function add_hold(holds, money, member, amount, expiry, held, soonest)
  redis.call('ZADD', holds, expiry, member)
  if soonest < 0 or tonumber(expiry) < soonest then soonest = tonumber(expiry) end
  redis.call('HSET', money, 'held', text(held + amount), 'next', text(soonest))
end

-- Settlement on one money hash: drop the hold, charge every named counter, in one read and
-- one write; appends each counter's value after the charge to spent.
local function settle_money(holds, money, member, charge, names, spent)
  local fields = {'held'}
  for i, name in ipairs(names) do fields[i + 1] = name end
  local values = redis.call('HMGET', money, unpack(fields))
  local held, changed = tonumber(values[1] or '0'), false
  if member ~= '' and redis.call('ZREM', holds, member) == 1 then
    held, changed = held - hold_amount(member), true
  end
  local writes = {'held', text(held)}
  if charge > 0 then
    changed = true
    for i, name in ipairs(names) do
      local value = tonumber(values[i + 1] or '0') + charge
      writes[#writes + 1], writes[#writes + 2] = name, text(value)
      spent[#spent + 1] = value
    end
  end
  if changed then redis.call('HSET', money, unpack(writes)) end
end

-- A ledger entry of the key whose credits hash and ledger are given; returns its sequence.
local function ledger_entry(credits, ledger, money, kind, amount, ref)
  local seq = redis.call('HINCRBY', credits, 'seq', 1)
  local balance = tonumber(redis.call('HGET', credits, 'in') or '0')
    - tonumber(redis.call('HGET', money, 'credits') or '0')
  redis.call('ZADD', ledger, seq, string.format('%d %s %d %d %d %s', seq, kind, amount,
    balance, now, ref))
  return seq
end

-- The money hash's running sum of holds, its expiry bound, each check's counter and the
-- credits charged, read in one call: {held, next, counter of check 1 .. n, credits}.
local function money_values(money, checks)
  local fields = {'held', 'next'}
  for i, check in ipairs(checks) do fields[i + 2] = check[2] end
  fields[#fields + 1] = 'credits'
  return redis.call('HMGET', money, unpack(fields))
end

-- window._check_budget over a list of {code, field, limit, end}; appends what each leaves.
local function check_budgets(money, checks, values, held, nano, consider, remaining)
  local names = nil
  for i, check in ipairs(checks) do
    local code, name, limit, ends = check[1], check[2], check[3], check[4]
    local used = values[i + 2]
    if ends > 0 and not used then -- a new period: drop this window's earlier ones
      names = names or redis.call('HKEYS', money)
      local prefix = string.match(name, '^[^:]*:')
      for _, other in ipairs(names) do
        if other ~= name and string.sub(other, 1, #prefix) == prefix then
          redis.call('HDEL', money, other)
        end
      end
    end
    used = tonumber(used or '0') + held
    local over = nano > limit
    if ends > 0 then
      consider(code, over or used + nano > limit, over, ends - now)
    else
      consider(code, over or used + nano > limit, true, 0)
    end
    remaining[#remaining + 1] = limit - used
  end
end

local function read_checks(at)
  local count, checks = tonumber(ARGV[at]), {}
  for i = 1, count do
    local base = at + 1 + (i - 1) * 4
    checks[i] = {tonumber(ARGV[base]), ARGV[base + 1], tonumber(ARGV[base + 2]),
      tonumber(ARGV[base + 3])}
  end
  return checks, at + 1 + count * 4
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

  -- Money: the hold against every budget, the credits and the team's budgets.
  local nano, hold_expiry, member, key_holds, team_checks = 0, nil, nil, false, {}
  local remaining, held, soonest, team_held, team_soonest = {}, 0, -1, 0, -1
  if #KEYS > 5 then
    local at = 15 + quota_count * 4
    nano, hold_expiry = tonumber(ARGV[at]), ARGV[at + 1]
    member = ARGV[11] .. ':' .. ARGV[at]
    local checks
    checks, at = read_checks(at + 2)
    local credits = ARGV[at] == '1'
    team_checks = read_checks(at + 1)
    key_holds = #checks > 0 or credits
    if key_holds then
      local values = money_values(KEYS[6], checks)
      held, soonest = live_holds(KEYS[7], KEYS[6], values[1], values[2])
      check_budgets(KEYS[6], checks, values, held, nano, consider, remaining)
      if credits then
        local free = tonumber(redis.call('HGET', KEYS[8], 'in') or '0')
          - tonumber(values[#values] or '0') - held
        consider(11, nano > free, true, 0)
        remaining[#remaining + 1] = free
      end
    end
    if #team_checks > 0 then
      local values = money_values(KEYS[10], team_checks)
      team_held, team_soonest = live_holds(KEYS[11], KEYS[10], values[1], values[2])
      check_budgets(KEYS[10], team_checks, values, team_held, nano, consider, remaining)
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
    if nano > 0 then
      if key_holds then add_hold(KEYS[7], KEYS[6], member, nano, hold_expiry, held, soonest) end
      if #team_checks > 0 then
        add_hold(KEYS[11], KEYS[10], member, nano, hold_expiry, team_held, team_soonest)
      end
      for i = 1, #remaining do remaining[i] = remaining[i] - nano end
    end
  end

  -- Reset: when the window is empty again, i.e. the newest bucket's end of counting.
  local requests_reset, tokens_reset = 0, 0
  if rpm >= 0 and requests_newest then requests_reset = requests_newest + span - now end
  if tpm >= 0 and tokens_newest then tokens_reset = tokens_newest + span - now end
  local reply = {allowed, dimension, retry_after, exceeds, requests_used, tokens_used,
    requests_reset, tokens_reset}
  for i = 1, #remaining do
    if remaining[i] < 0 then remaining[i] = 0 end
    reply[8 + i] = remaining[i]
  end
  return reply
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
  if #KEYS > 5 then
    local at = 12 + quota_count * 3
    local member, charge, ref = ARGV[at], tonumber(ARGV[at + 1]), ARGV[at + 2]
    local spent = {1}
    at = at + 3
    local count = tonumber(ARGV[at])
    if count > 0 then
      local names = {unpack(ARGV, at + 1, at + count)}
      settle_money(KEYS[7], KEYS[6], member, charge, names, spent)
      if charge > 0 and names[count] == 'credits' then
        ledger_entry(KEYS[8], KEYS[9], KEYS[6], 'charge', charge, ref)
      end
    end
    at = at + count + 1
    count = tonumber(ARGV[at])
    if count > 0 then
      settle_money(KEYS[11], KEYS[10], member, charge, {unpack(ARGV, at + 1, at + count)}, spent)
    end
    if charge > 0 then return spent end
  end
  return 1
end

local function renew()
  local renewed = 0
  local score = redis.call('ZSCORE', KEYS[4], ARGV[5])
  if score and tonumber(score) > now then
    redis.call('ZADD', KEYS[4], ARGV[6], ARGV[5])
    expire_at_last_lease(KEYS[4])
    renewed = 1
  end
  if #KEYS > 5 and ARGV[7] ~= '' then
    for _, holds in ipairs({KEYS[7], KEYS[11]}) do
      score = redis.call('ZSCORE', holds, ARGV[7])
      if score and tonumber(score) > now then
        redis.call('ZADD', holds, ARGV[6], ARGV[7])
        renewed = 1
      end
    end
  end
  return renewed
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
  if #KEYS > 5 then
    each_pair(function(name, amount)
      redis.call('HINCRBY', KEYS[6], name, amount)
      if name == 'credits' then
        ledger_entry(KEYS[8], KEYS[9], KEYS[6], 'charge', tonumber(amount), 'write-back')
      end
    end)
    each_pair(function(member, expiry)
      if tonumber(expiry) > now then
        if redis.call('ZSCORE', KEYS[7], member) then
          redis.call('ZADD', KEYS[7], 'GT', expiry, member)
        else
          local values = redis.call('HMGET', KEYS[6], 'held', 'next')
          add_hold(KEYS[7], KEYS[6], member, hold_amount(member), expiry,
            tonumber(values[1] or '0'), tonumber(values[2] or '-1'))
        end
      end
    end)
  end
  return 1
end

if op == 'admit' then return admit() end
if op == 'settle' then return settle() end
if op == 'renew' then return renew() end
if op == 'merge' then return merge() end
return redis.error_reply('unknown operation ' .. tostring(op))
