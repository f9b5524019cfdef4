--[[ credits.lua: a top-up of one key's prepaid credits, idempotent, with its ledger entry.
The charges are written by limits.lua's settle, on the same keys (see redis_store.money_keys).

KEYS[1]  money     hash  "credits" -> nano-USD charged against credits (read for the balance)
KEYS[2]  credits   hash  "in" -> nano-USD ever topped up, "seq" -> last ledger sequence,
                         "idem:<Idempotency-Key>" -> "<nano-USD> <sequence>"
KEYS[3]  ledger    zset  member "<seq> <kind> <nano-USD> <balance after> <ms> <ref>", score <seq>

ARGV[1] now (ms), ARGV[2] nano-USD to add (> 0), ARGV[3] the Idempotency-Key (no spaces).
Reply {status, entry}: status 1 added, 0 a replay of the same amount (the entry it made),
-1 the key was used with another amount (entry: that amount). Integers only.
]]

local now, amount, idem = ARGV[1], tonumber(ARGV[2]), 'idem:' .. ARGV[3]
local stored = redis.call('HGET', KEYS[2], idem)
if stored then
  local before, seq = string.match(stored, '^(%d+) (%d+)$')
  if tonumber(before) ~= amount then return {-1, before} end
  return {0, redis.call('ZRANGEBYSCORE', KEYS[3], seq, seq)[1] or ''}
end
local topped = redis.call('HINCRBY', KEYS[2], 'in', amount)
local seq = redis.call('HINCRBY', KEYS[2], 'seq', 1)
local balance = topped - tonumber(redis.call('HGET', KEYS[1], 'credits') or '0')
local entry = string.format('%d top_up %d %d %s %s', seq, amount, balance, now, ARGV[3])
redis.call('ZADD', KEYS[3], seq, entry)
redis.call('HSET', KEYS[2], idem, string.format('%d %d', amount, seq))
return {1, entry}
