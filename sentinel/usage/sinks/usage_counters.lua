-- Count records' usage into one key's minute and day hashes, each record at most once.
--
-- KEYS[1]     minute hash      sentinel:{<key>}:usage:m:<yyyymmddHHMM>
-- KEYS[2]     day hash         sentinel:{<key>}:usage:d:<yyyymmdd>
-- KEYS[2 + i] record i's dedupe marker    sentinel:{<key>}:usage:seen:<record_id>
-- ARGV[1]  integers joined by single spaces (one argument is cheaper to send than many):
--   the minute hash TTL, the day hash TTL and the dedupe marker TTL (seconds), then for each
--   record in KEYS order its prompt, completion and total tokens (each >= 0)
-- Returns one integer per record: 1 when counted, 0 when its record id was already counted
-- (a replay). Every key shares the {<key>} hash tag, so the script is valid on
-- Redis Cluster. Counts are added by HINCRBY as the digits sent, so they stay exact.

local fields = {}
for field in string.gmatch(ARGV[1], '%d+') do fields[#fields + 1] = field end

local counted = {}
local any = false
for i = 3, #KEYS do
  if redis.call('SET', KEYS[i], '1', 'NX', 'EX', fields[3]) then
    local at = 3 + (i - 3) * 3
    for hash = 1, 2 do
      redis.call('HINCRBY', KEYS[hash], 'requests', 1)
      redis.call('HINCRBY', KEYS[hash], 'prompt_tokens', fields[at + 1])
      redis.call('HINCRBY', KEYS[hash], 'completion_tokens', fields[at + 2])
      redis.call('HINCRBY', KEYS[hash], 'total_tokens', fields[at + 3])
    end
    counted[#counted + 1] = 1
    any = true
  else
    counted[#counted + 1] = 0
  end
end
if any then
  redis.call('EXPIRE', KEYS[1], fields[1])
  redis.call('EXPIRE', KEYS[2], fields[2])
end
return counted
