--[[ limits.lua: every limits operation on API keys, as one Redis function (FCALL @NAME@).
Each operation mirrors window.py function by function (admit, settle, renew, merge); a
contract test holds the replies and the stored counters of both equal on random operation
sequences, sent one by one and in batches.

One call runs a batch of operations, in order, each as if it ran alone: a replica sends
whatever it has queued (admissions and settlements of many keys) as one call. The hashes a
call touches are read once and written once, at its end (see "Write-back" below), so the
Redis work of a batch grows far slower than its length. The function is loaded under a name
that carries its source's digest, so replicas of two releases never call each other's code.

KEYS: each operation names its own run of keys (a key's set shares one hash tag, so on a
cluster a call, which then holds one operation, touches one slot):
K[1]  requests window  hash  field <bucket start, ms> -> requests, plus the meta fields
K[2]  tokens window    hash  field <bucket start, ms> -> tokens, plus the meta fields
K[3]  quota counters   hash  field "<day|week|month>:<period id>" -> tokens
K[4]  leases           zset  member <reservation id>, score <lease expiry, ms>
K[5]  settled          zset  member <reservation id>, score <forget after, ms>
Only when the operation involves money (see window.py), six more, the key's and its team's:
K[6]  money            hash  "usd_day:<period>" | "usd_total" | "credits" -> nano-USD
                             charged, "held" = the sum of the holds, "next" = a lower
                             bound of their expiries (no TTL)
K[7]  holds            zset  member "<reservation id>:<nano-USD held>", score <expiry>
K[8]  credits          hash  "in" -> nano-USD ever topped up, "seq" -> last ledger entry
K[9]  ledger           zset  member "<seq> <kind> <nano-USD> <balance after> <ms> <ref>",
                             score <seq> (top-ups come from credits.lua)
K[10] team money       hash  as K[6], for the team (another hash tag: one server only)
K[11] team holds       zset  as K[7]

Window meta fields (never numbers, so never buckets): s = sum of the buckets, h = newest
bucket start, l = a lower bound of every bucket start, b = bucket size (ms) they were cut
with. They keep an admission O(1): only buckets from l up to now - span are ever visited,
and the whole hash is read only to compute a refusal's retry time.

ARGV[1] holds the operations as one flat msgpack array (cmsgpack decodes it in C, numbers
as binary: see sentinel/redis_io/functions.py): for each, its first key's index in KEYS, its
number of keys, its number of fields, then the fields below ([i] is the operation's field i,
A[o + i] in the code). Common fields: [1] operation, [2] now (ms), [3] span (ms) = window +
one bucket (a bucket starting at s counts while s + span > now), [4] bucket size (ms). Then:

admit   [5] start of the bucket containing now, [6] first bucket start that still counts
        (smallest multiple of the bucket size above now - span), [7] [8] [9] requests,
        tokens and parallel limits (-1: none), [10] tokens to reserve, [11] reservation id,
        [12] lease expiry (ms), [13] longest retry for a parallel refusal (ms), [14] number
        of quotas n, then n groups of 4: dimension code (4 day, 5 week, 6 month), period
        field, limit (tokens), period end (ms).
        With money (K[6..]): then the hold (nano-USD), the hold's expiry (ms), and the money
        checks as one string of words separated by spaces: the number of key budgets m and
        m groups of 4: dimension code (7 usd_day, 8 usd_week, 9 usd_month, 10 usd_total),
        counter field, limit, period end (ms, 0: never); then 1 if credit-metered (code 11)
        else 0; then the number of team budgets t and t groups of 4 (codes 12 to 15). A
        key's checks change only when a period ends, so each string is parsed once and kept.
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
        (the ledger's reference), the key's money counters to charge ("credits" also writes
        a ledger entry) and the team's, each as one string of names separated by spaces ("":
        none; parsed once and kept, like the checks); and last, the reservation id and until
        when to remember it was settled (ms). Reply 1, or 0 when that reservation was already
        settled (a replay: nothing changes); with money and a cost above 0, {1, then each named counter's value after
        the charge, key's then team's} (for the budget alerts).
renew   [5] reservation id, [6] new expiry (ms), with money [7] the hold's zset member.
        Reply 1 if the lease or the hold was renewed, 0 if both are gone.
merge   [5] TTL floor of the quota hash (ms); then four sections, each a count n followed by
        n pairs: request buckets (start, count), token buckets (start, count), quota
        counters (field, tokens), leases (reservation id, expiry); with money two more:
        money counters (field, nano-USD; "credits" also writes a ledger entry) and holds
        (zset member, expiry). Reply 1.
The call replies with an array: each operation's reply, in order.

Integers only: every value is a whole number below 2^53, which Lua's doubles hold exactly,
and nothing is ever divided. Every key gets a TTL whenever something is added to it that
would outlive the TTL it has: a window hash when a bucket newer than the others is added
(span), a zset when a later score is (PEXPIRE GT), a quota hash when a counter is new to it
(to the latest period end).
The hashes and zsets an operation touches are read and written through the write-back
views of sentinel/redis_io/views.lua, which this library is loaded after.
]]

-- Windows --------------------------------------------------------------------------------
-- c: the operation's clock: now, span, step (bucket size), horizon (now - span).
local WINDOW = {'s', 'l', 'h', 'b', false} -- and a bucket's name, set before each read

-- A bucket start's field name (formatted once: see text).
local bucket_name = text

-- Every bucket, oldest first, with its count (refusals and rare paths only).
local function buckets(h)
  local starts, counts = {}, {}
  for name, value in pairs(hall(h)) do
    local start = value and type(name) == 'string' and #name > 1 and tonumber(name)
    if start then
      starts[#starts + 1] = start
      counts[start] = value
    end
  end
  table.sort(starts)
  return starts, counts
end

-- window._add: add delta to one bucket, dropping it at zero or below; meta stays exact.
local function window_add(h, start, delta, c)
  local name = bucket_name(start)
  -- Most often: a bucket the hash holds, between its oldest and newest, that stays above
  -- zero. Then only it and the sum change (the general path's outcome, at a fifth of it).
  local count, total, oldest, latest = h[name], h.s, h.l, h.h
  if count and total and oldest and latest and delta ~= 0 and count + delta > 0
    and h.b == c.step and start <= latest and start >= oldest then
    h[name], h.s = count + delta, total + delta
    mark(h, name)
    mark(h, 's')
    return
  end
  if h[name] == nil or h.s == nil then
    WINDOW[5] = name
    hload(h, WINDOW)
  end
  if h.s and h.b ~= c.step then
    hdrop(h) -- cut with another bucket size: start afresh
  end
  local old = hget(h, name) or 0
  local new = old + delta
  if new < 0 then new = 0 end
  if new == old then return end
  local sum = (h.s or 0) + new - old
  if sum <= 0 then
    hdrop(h)
    return
  end
  -- The hash lives a span past its newest bucket's first write (so past that bucket's end of
  -- counting, and every older bucket's): only a newer bucket moves its TTL.
  local newest = not h.h or start > h.h
  local low, high = h.l or start, h.h or start
  if new == 0 then
    hdel(h, name)
    if start == high then
      local starts = buckets(h)
      high = starts[#starts]
    end
  else
    if start < low then low = start end
    if start > high then high = start end
    hset(h, name, new)
  end
  hset(h, 's', sum)
  hset(h, 'l', low)
  hset(h, 'h', high)
  hset(h, 'b', c.step)
  if delta > 0 and newest then h[TTL] = c.span end
end

-- window._purge_window: drop what no longer counts; returns the live sum and newest start.
-- The meta fields are read with the bucket an admission may add to, in one HMGET.
local function live_window(h, first_live, c, bucket)
  local name = bucket_name(bucket)
  if h.s == nil or h[name] == nil then -- else known already (an earlier operation's read)
    WINDOW[5] = name
    hload(h, WINDOW)
  end
  local sum, low, high = h.s, h.l, h.h
  if not sum then return 0, nil end
  local horizon = c.horizon
  if h.b ~= c.step or high <= horizon then
    hdrop(h)
    return 0, nil
  end
  if low <= horizon then
    if horizon - low > c.span then -- a bucket from a clock far behind: look at all of them
      local starts, counts = buckets(h)
      for _, start in ipairs(starts) do
        if start > horizon then break end
        sum = sum - counts[start]
        hdel(h, bucket_name(start))
      end
    else
      for start = low, horizon, c.step do
        local name = bucket_name(start)
        local count = hget(h, name)
        if count then
          sum = sum - count
          hdel(h, name)
        end
      end
    end
    hset(h, 's', sum)
    hset(h, 'l', first_live)
  end
  return sum, high
end

-- window._check: refused, can never fit, retry after (ms): free the oldest buckets first.
local function check(h, used, limit, amount, c)
  if amount > limit then return true, true, 0 end
  if used + amount <= limit then return false, false, 0 end
  local starts, counts = buckets(h)
  local freed = 0
  for _, start in ipairs(starts) do
    freed = freed + counts[start]
    if used - freed + amount <= limit then return true, false, start + c.span - c.now end
  end
  return true, false, c.span
end

-- Add delta to a counter, dropping it at zero or below.
local function counter_add(h, name, delta)
  if hincr_now(h, name, delta) <= 0 then hdel(h, name) end
end

-- A new period: drop the earlier periods of the same prefix ("day:", "usd_week:" ...).
local function drop_earlier(h, name)
  local prefix = string.match(name, '^[^:]*:')
  for other, value in pairs(hall(h)) do
    if value and type(other) == 'string' and other ~= name
      and string.sub(other, 1, #prefix) == prefix then
      hdel(h, other)
    end
  end
end

-- Money ----------------------------------------------------------------------------------
local function hold_amount(member)
  return tonumber(string.match(member, ':(%d+)$'))
end

-- window.purge_holds: drop expired holds from the running sum; the nano-USD still held and
-- the lower bound of every live hold's expiry ("next", -1: no hold at all). Only when that
-- bound has passed can a hold have expired, so the holds are rarely visited.
local function live_holds(z, money, held, soonest, now)
  held, soonest = held or 0, soonest or -1
  if soonest < 0 or soonest > now then return held, soonest end
  zflush(z)
  local expired = redis.call('ZRANGEBYSCORE', z.key, '-inf', text(now))
  if #expired > 0 then
    for _, member in ipairs(expired) do held = held - hold_amount(member) end
    redis.call('ZREMRANGEBYSCORE', z.key, '-inf', text(now))
  end
  local first = zend(z, false)
  if first[2] then
    soonest = tonumber(first[2])
    hset(money, 'held', held)
    hset(money, 'next', soonest)
  else
    held, soonest = 0, -1
    hdel(money, 'held')
    hdel(money, 'next')
  end
  return held, soonest
end

local function add_hold(z, money, member, amount, expiry, held, soonest)
  zadd(z, expiry, member)
  if soonest < 0 or expiry < soonest then soonest = expiry end
  hset(money, 'held', held + amount)
  hset(money, 'next', soonest)
end

-- Settlement on one money hash: drop the hold, charge every named counter; appends each
-- counter's value after the charge to spent. What it reads, it reads at once: one HMGET
-- when the call has not read them yet (a settlement alone in its call).
local wanted = {} -- scratch: the fields settle_money reads (reused, so always a sequence)
local function settle_money(z, money, member, charge, names, spent)
  local n = 1
  wanted[1] = 'held'
  if charge > 0 then
    for i = 1, #names do wanted[i + 1] = names[i] end
    n = #names + 1
  end
  for i = #wanted, n + 1, -1 do wanted[i] = nil end
  hload(money, wanted)
  local held = hget(money, 'held') or 0
  local changed = false
  if member ~= '' and zrem(z, member) == 1 then
    held, changed = held - hold_amount(member), true
  end
  if charge > 0 then
    changed = true
    for _, name in ipairs(names) do spent[#spent + 1] = hincr(money, name, charge) end
  end
  if changed then hset(money, 'held', held) end
end

-- A ledger entry of the key whose credits hash and ledger are given; returns its sequence.
local function ledger_entry(credits, ledger, money, kind, amount, ref, now)
  local seq = hincr(credits, 'seq', 1)
  local balance = (hget(credits, 'in') or 0) - (hget(money, 'credits') or 0)
  zadd(zset(ledger), seq, string.format('%d %s %d %d %d %s', seq, kind, amount, balance, now,
    ref))
  return seq
end

-- A set of money checks, as admit gets them: one string, "<m> m × (code counter limit end)
-- <credits 0|1> <t> t × (code counter limit end)", the same for every admission of a key until
-- a period ends; so it is parsed once and kept, across calls, up to a bound. What it keeps is
-- read only: {key = checks, credits = bool, team = checks}, each checks a list of
-- {code, counter, limit, end} with .fields, the fields money_values reads for them.
local money_sets, money_set_count = {}, 0
local words = {} -- scratch: a string's words

local function split(s)
  local n = 0
  for word in string.gmatch(s, '%S+') do
    n = n + 1
    words[n] = word
  end
  return n
end

local function parse_checks(at, with_credits)
  local count, checks = tonumber(words[at]), {}
  local fields = {'held', 'next'}
  for i = 1, count do
    local base = at + 1 + (i - 1) * 4
    checks[i] = {tonumber(words[base]), words[base + 1], tonumber(words[base + 2]),
      tonumber(words[base + 3])}
    fields[i + 2] = words[base + 1]
  end
  if with_credits then fields[#fields + 1] = 'credits' end
  checks.fields = fields
  return checks, at + 1 + count * 4
end

local function money_set(s)
  local set = money_sets[s]
  if set then return set end
  split(s)
  local key, at = parse_checks(1, true)
  local credits = words[at] == '1'
  local team = parse_checks(at + 1, false)
  set = {key = key, credits = credits, team = team}
  if money_set_count >= 256 then money_sets, money_set_count = {}, 0 end
  money_sets[s] = set
  money_set_count = money_set_count + 1
  return set
end

-- A settlement's counters, as it gets them: one string of names separated by spaces, kept
-- like the money sets (read only).
local name_lists, name_list_count = {}, 0
local function name_list(s)
  local names = name_lists[s]
  if names then return names end
  names = {}
  for i = 1, split(s) do names[i] = words[i] end
  if name_list_count >= 256 then name_lists, name_list_count = {}, 0 end
  name_lists[s] = names
  name_list_count = name_list_count + 1
  return names
end

-- The money hash's running sum of holds, its expiry bound, each check's counter and the
-- credits charged, read at once into values (a scratch list: {held, next, counter of check
-- 1 .. n, credits}).
local money_read = {} -- scratch: what money_values read last
local function money_values(money, checks)
  local fields = checks.fields
  hload(money, fields)
  for i = 1, #fields do money_read[i] = hget(money, fields[i]) or false end
  return money_read
end

-- window._check_budget over a list of {code, field, limit, end}; appends what each leaves.
local function check_budgets(money, checks, values, held, nano, consider, remaining, now)
  for i, check_ in ipairs(checks) do
    local code, name, limit, ends = check_[1], check_[2], check_[3], check_[4]
    local used = values[i + 2]
    if ends > 0 and not used then drop_earlier(money, name) end
    used = (used or 0) + held
    local over = nano > limit
    if ends > 0 then
      consider(code, over or used + nano > limit, over, ends - now)
    else
      consider(code, over or used + nano > limit, true, 0)
    end
    remaining[#remaining + 1] = limit - used
  end
end

-- Operations -----------------------------------------------------------------------------
-- The refusal an admission reports: one that can never fit wins, else the longest wait,
-- else the first (one table for every admission: a closure per admission costs more).
local refusal = {dimension = 0, retry = 0, exceeds = 0}
local quota_names = {} -- scratch: an admission's quota fields (reused, so always a sequence)
local NONE = {} -- an empty list no one appends to (a new table per admission costs more)

local function consider(code, refused, over, retry)
  if not refused or refusal.exceeds == 1 then return end
  if over or refusal.dimension == 0 or retry > refusal.retry then
    refusal.dimension, refusal.retry = code, retry
    if over then refusal.exceeds = 1 end
  end
end
local function admit(K, A, o, c)
  local bucket, first_live = A[o + 5], A[o + 6]
  local rpm, tpm, max_parallel = A[o + 7], A[o + 8], A[o + 9]
  local tokens, reservation, lease_expiry = A[o + 10], A[o + 11], A[o + 12]
  local parallel_retry, quota_count = A[o + 13], A[o + 14]
  local now = c.now
  local requests, tokens_window = hash(K[1]), hash(K[2])
  local leases = zset(K[4])

  refusal.dimension, refusal.retry, refusal.exceeds = 0, 0, 0

  local requests_used, requests_newest, tokens_used, tokens_newest = 0, nil, 0, nil
  if rpm >= 0 then
    requests_used, requests_newest = live_window(requests, first_live, c, bucket)
    if requests_used + 1 > rpm then consider(1, check(requests, requests_used, rpm, 1, c)) end
  end
  if tpm >= 0 then
    tokens_used, tokens_newest = live_window(tokens_window, first_live, c, bucket)
    if tokens_used + tokens > tpm then
      consider(2, check(tokens_window, tokens_used, tpm, tokens, c))
    end
  end

  zpurge(leases, now)
  if max_parallel >= 0 then
    if max_parallel < 1 then
      consider(3, true, true, 0)
    elseif zcard(leases) + 1 > max_parallel then
      local first = zend(leases, false)
      consider(3, true, false, math.min(tonumber(first[2]) - now, parallel_retry))
    end
  end

  -- A counter new to the hash moves its TTL to the latest period end; one it holds already
  -- was added with that TTL or a later one (a write-back's is a month and two days).
  local quotas, fields, quota_end, fresh = nil, quota_names, 0, false
  if quota_count > 0 then
    quotas = hash(K[3])
    for q = 0, quota_count - 1 do fields[q + 1] = A[o + 16 + q * 4] end
    for i = #fields, quota_count + 1, -1 do fields[i] = nil end
    hload(quotas, fields)
    for q = 0, quota_count - 1 do
      local code, limit, ends = A[o + 15 + q * 4], A[o + 17 + q * 4], A[o + 18 + q * 4]
      local used = hget(quotas, fields[q + 1])
      if not used then
        fresh = true
        drop_earlier(quotas, fields[q + 1])
      end
      used = used or 0
      local over = tokens > limit
      if over or used + tokens > limit then consider(code, true, over, ends - now) end
      if ends > quota_end then quota_end = ends end
    end
  end

  -- Money: the hold against every budget, the credits and the team's budgets.
  local nano, hold_expiry, member, key_holds, team_checks = 0, nil, nil, false, NONE
  local remaining, held, soonest, team_held, team_soonest = NONE, 0, -1, 0, -1
  if #K > 5 then
    remaining = {}
    local at = o + 15 + quota_count * 4
    nano, hold_expiry = A[at], A[at + 1]
    member = reservation .. ':' .. text(nano)
    local set = money_set(A[at + 2])
    local checks, credits = set.key, set.credits
    team_checks = set.team
    key_holds = #checks > 0 or credits
    if key_holds then
      local money = hash(K[6])
      local values = money_values(money, checks)
      held, soonest = live_holds(zset(K[7]), money, values[1], values[2], now)
      local charged = values[#checks.fields] -- the credits charged (read last)
      check_budgets(money, checks, values, held, nano, consider, remaining, now)
      if credits then
        local free = (hget(hash(K[8]), 'in') or 0) - (charged or 0) - held
        consider(11, nano > free, true, 0)
        remaining[#remaining + 1] = free
      end
    end
    if #team_checks > 0 then
      local money = hash(K[10])
      local values = money_values(money, team_checks)
      team_held, team_soonest = live_holds(zset(K[11]), money, values[1], values[2], now)
      check_budgets(money, team_checks, values, team_held, nano, consider, remaining, now)
    end
  end

  local dimension = refusal.dimension
  local allowed = 0
  if dimension == 0 then
    allowed = 1
    if rpm >= 0 then
      window_add(requests, bucket, 1, c)
      requests_used = requests_used + 1
      if not requests_newest or bucket > requests_newest then requests_newest = bucket end
    end
    if tpm >= 0 and tokens > 0 then
      window_add(tokens_window, bucket, tokens, c)
      tokens_used = tokens_used + tokens
      if not tokens_newest or bucket > tokens_newest then tokens_newest = bucket end
    end
    if max_parallel >= 0 then
      zadd(leases, lease_expiry, reservation)
      expire_after(leases, now, lease_expiry)
    end
    if tokens > 0 and quota_count > 0 then
      for q = 1, quota_count do hincr(quotas, fields[q], tokens) end
      if fresh then quotas[TTL] = quota_end - now end
    end
    if nano > 0 then
      if key_holds then
        add_hold(zset(K[7]), hash(K[6]), member, nano, hold_expiry, held, soonest)
      end
      if #team_checks > 0 then
        add_hold(zset(K[11]), hash(K[10]), member, nano, hold_expiry, team_held, team_soonest)
      end
      for i = 1, #remaining do remaining[i] = remaining[i] - nano end
    end
  end

  -- Reset: when the window is empty again, i.e. the newest bucket's end of counting.
  local requests_reset, tokens_reset = 0, 0
  if rpm >= 0 and requests_newest then requests_reset = requests_newest + c.span - now end
  if tpm >= 0 and tokens_newest then tokens_reset = tokens_newest + c.span - now end
  local reply = {allowed, dimension, refusal.retry, refusal.exceeds, requests_used, tokens_used,
    requests_reset, tokens_reset}
  for i = 1, #remaining do
    if remaining[i] < 0 then remaining[i] = 0 end
    reply[8 + i] = remaining[i]
  end
  return reply
end

local function settle(K, A, o, c)
  local now = c.now
  local forget_at, id = A[c.last], A[c.last - 1] -- its last two fields
  local settled = zset(K[5])
  -- Forgotten ids are dropped once per call, not at each operation's millisecond (a command
  -- each); one not dropped yet may still refuse the ZADD, so a refusal is a replay only
  -- when the id is remembered at now.
  if not settled.purged then zpurge(settled, now) end
  local forget = text(forget_at)
  if redis.call('ZADD', K[5], 'NX', forget, id) == 0 then
    if tonumber(redis.call('ZSCORE', K[5], id)) > now then return 0 end -- a replay
    redis.call('ZADD', K[5], forget, id) -- remembered no longer: settled anew
  end
  expire_after(settled, now, forget_at)

  local requests, tokens_window = hash(K[1]), hash(K[2])
  local bucket, reserved = A[o + 5], A[o + 6]
  local delta, quota_count = A[o + 7], A[o + 11]
  local live = reserved + c.span > now
  if A[o + 8] == 1 and delta ~= 0 then
    if live then
      window_add(tokens_window, reserved, delta, c)
    elseif delta > 0 then
      window_add(tokens_window, bucket, delta, c)
    end
  end
  if A[o + 9] == 1 and live then window_add(requests, reserved, -1, c) end
  if delta ~= 0 and quota_count > 0 then
    local quotas, quota_end = hash(K[3]), 0
    for q = 0, quota_count - 1 do
      local reserved_field, current_field = A[o + 12 + q * 3], A[o + 13 + q * 3]
      local ends = A[o + 14 + q * 3]
      if ends > quota_end then quota_end = ends end
      if reserved_field == current_field then
        counter_add(quotas, reserved_field, delta)
      elseif delta > 0 then
        counter_add(quotas, current_field, delta)
      end
    end
    -- One TTL for the hash: the latest period end, so no counter is dropped early.
    if delta > 0 then quotas[TTL] = quota_end - now end
  end
  if A[o + 10] ~= '' then
    local leases = zset(K[4])
    zrem(leases, A[o + 10])
  end
  if #K > 5 then
    local at = o + 12 + quota_count * 3
    local member, charge, ref = A[at], A[at + 1], A[at + 2]
    local spent = {1}
    local names = name_list(A[at + 3])
    local count = #names
    if count > 0 then
      settle_money(zset(K[7]), hash(K[6]), member, charge, names, spent)
      if charge > 0 and names[count] == 'credits' then
        ledger_entry(hash(K[8]), K[9], hash(K[6]), 'charge', charge, ref, now)
      end
    end
    names = name_list(A[at + 4])
    if #names > 0 then settle_money(zset(K[11]), hash(K[10]), member, charge, names, spent) end
    if charge > 0 then return spent end
  end
  return 1
end

local function renew(K, A, o, c)
  local now, renewed = c.now, 0
  local leases = zset(K[4])
  local score = zscore(leases, A[o + 5])
  if score and score > now then
    zadd(leases, A[o + 6], A[o + 5], true)
    expire_after(leases, now, A[o + 6])
    renewed = 1
  end
  if #K > 5 and A[o + 7] ~= '' then
    for _, key in ipairs({K[7], K[11]}) do
      local holds = zset(key)
      score = zscore(holds, A[o + 7])
      if score and score > now then
        zadd(holds, A[o + 6], A[o + 7], true)
        renewed = 1
      end
    end
  end
  return renewed
end

local function merge(K, A, o, c)
  local now, quota_ttl, at = c.now, A[o + 5], o + 6
  local function each_pair(handle)
    local count = A[at]
    for i = 1, count do handle(A[at + 2 * i - 1], A[at + 2 * i]) end
    at = at + 2 * count + 1
  end
  for _, key in ipairs({K[1], K[2]}) do
    local h = hash(key)
    each_pair(function(start, count)
      if start + c.span > now then window_add(h, start, count, c) end
    end)
  end
  local quotas, quotas_written = hash(K[3]), false
  each_pair(function(name, count)
    counter_add(quotas, name, count)
    quotas_written = true
  end)
  if quotas_written then
    hflush(quotas)
    if redis.call('PTTL', K[3]) < quota_ttl then quotas[TTL] = quota_ttl end
  end
  local leases = zset(K[4])
  each_pair(function(member, expiry)
    if expiry > now then
      zflush(leases)
      redis.call('ZADD', K[4], 'GT', text(expiry), member)
      leases.count = nil
    end
  end)
  expire_after(leases, now, nil)
  if #K > 5 then
    local money = hash(K[6])
    each_pair(function(name, amount)
      hincr(money, name, amount)
      if name == 'credits' then
        ledger_entry(hash(K[8]), K[9], money, 'charge', amount, 'write-back', now)
      end
    end)
    local holds = zset(K[7])
    each_pair(function(member, expiry)
      if expiry > now then
        if zscore(holds, member) then
          zflush(holds)
          redis.call('ZADD', K[7], 'GT', text(expiry), member)
        else
          add_hold(holds, money, member, hold_amount(member), expiry,
            hget(money, 'held') or 0, hget(money, 'next') or -1)
        end
      end
    end)
  end
  return 1
end

local operations = {admit = admit, settle = settle, renew = renew, merge = merge}
local clock = {now = 0, span = 0, step = 0, horizon = 0, last = 0}

redis.register_function('@NAME@', function(keys, args)
  local A, replies = cmsgpack.unpack(args[1]), {}
  local at = 1
  while A[at] do -- all or nothing: check every operation's name first
    if not operations[A[at + 3]] then
      return redis.error_reply('unknown operation ' .. tostring(A[at + 3]))
    end
    at = at + 3 + A[at + 2]
  end
  views_begin()
  local runs = {} -- each run of keys as its own list, made once per call
  local count = 0
  at = 1
  while A[at] do
    local first, o = A[at], at + 2 -- the operation's field i is A[o + i]
    local K = runs[first]
    if not K then
      K = {unpack(keys, first, first + A[at + 1] - 1)}
      runs[first] = K
    end
    local c = clock -- one table for every operation: none keeps it
    local now, span = A[o + 2], A[o + 3]
    c.now, c.span, c.step, c.horizon, c.last = now, span, A[o + 4], now - span, o + A[at + 2]
    count = count + 1
    replies[count] = operations[A[o + 1]](K, A, o, c)
    at = c.last + 1
  end
  views_end()
  return replies
end)
