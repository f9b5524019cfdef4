--[[ commit.lua: one change to the runtime keys, its change-log entry and its audit, atomically.

Every key shares one hash tag, so the script runs on one node of a cluster too.

KEYS[1]  meta hash: epoch, version (changes so far), seq (keys created so far)
KEYS[2]  change log zset: score version, member "<version>:<key id>"
KEYS[3]  audit index zset: score 0, member audit id (ids sort by time)
KEYS[4]  audit hash: audit id -> entry JSON
KEYS[5]  the record (string, JSON)
KEYS[6]  the list index zset: score creation seq, member key id
KEYS[7]  the idempotency key of a create (KEYS[1] again when there is none)
KEYS[8 .. 7+n]  index keys to point at the key id (live name, digests)
KEYS[8+n ..]    index keys to drop, each only while it still points at the key id

ARGV[1]  "create" or "replace"
ARGV[2]  key id
ARGV[3]  record JSON
ARGV[4]  the stored record's version a replace expects ("0" for a create)
ARGV[5]  an epoch for a store that has none yet
ARGV[6]  audit id
ARGV[7]  audit entry JSON
ARGV[8]  the oldest audit id kept (older ones are dropped)
ARGV[9]  the most audit entries kept
ARGV[10] the pub/sub channel announcing changes
ARGV[11] the create's reply to keep under KEYS[7] ("" for none)
ARGV[12] how long to keep it (s)
ARGV[13] n, the number of index keys to point at the key id
ARGV[14 .. 13+n]  for each, when it expires (Unix s; 0 for never)

Replies {"ok", version}, {"idem", stored reply}, {"taken", i} (the i-th index key to point,
1-based, belongs to another key), {"missing"} or {"conflict"} (a replace of a record that is
absent, or of another version than expected).
]]

local id = ARGV[2]
local n = tonumber(ARGV[13])

if ARGV[1] == 'create' then
    if ARGV[11] ~= '' then
        local prior = redis.call('GET', KEYS[7])
        if prior then
            return {'idem', prior}
        end
    end
else
    local current = redis.call('GET', KEYS[5])
    if not current then
        return {'missing'}
    end
    if cjson.decode(current)['version'] ~= tonumber(ARGV[4]) then
        return {'conflict'}
    end
end
for i = 1, n do
    local holder = redis.call('GET', KEYS[7 + i])
    if holder and holder ~= id then
        return {'taken', i}
    end
end

redis.call('SET', KEYS[5], ARGV[3])
for i = 1, n do
    local key = KEYS[7 + i]
    redis.call('SET', key, id)
    local until_s = tonumber(ARGV[13 + i])
    if until_s > 0 then
        redis.call('EXPIREAT', key, until_s)
    end
end
for i = 8 + n, #KEYS do
    if redis.call('GET', KEYS[i]) == id then
        redis.call('DEL', KEYS[i])
    end
end
if ARGV[1] == 'create' then
    redis.call('ZADD', KEYS[6], redis.call('HINCRBY', KEYS[1], 'seq', 1), id)
    if ARGV[11] ~= '' then
        redis.call('SET', KEYS[7], ARGV[11], 'EX', tonumber(ARGV[12]))
    end
end

redis.call('HSETNX', KEYS[1], 'epoch', ARGV[5])
local epoch = redis.call('HGET', KEYS[1], 'epoch')
local version = redis.call('HINCRBY', KEYS[1], 'version', 1)
redis.call('ZADD', KEYS[2], version, version .. ':' .. id)
redis.call('ZREMRANGEBYRANK', KEYS[2], 0, -10001)

redis.call('ZADD', KEYS[3], 0, ARGV[6])
redis.call('HSET', KEYS[4], ARGV[6], ARGV[7])
local old = redis.call('ZRANGEBYLEX', KEYS[3], '-', '(' .. ARGV[8], 'LIMIT', 0, 100)
local count = redis.call('ZCARD', KEYS[3]) - #old
local keep = tonumber(ARGV[9])
if count > keep then
    for _, extra in ipairs(redis.call('ZRANGE', KEYS[3], #old, #old + count - keep - 1)) do
        old[#old + 1] = extra
    end
end
for _, gone in ipairs(old) do
    redis.call('ZREM', KEYS[3], gone)
    redis.call('HDEL', KEYS[4], gone)
end

redis.call('PUBLISH', ARGV[10], epoch .. ':' .. version)
return {'ok', version}
