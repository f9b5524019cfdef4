-- Count one request's usage into its key's minute and day hashes, at most once per request id.
--
-- KEYS[1]  dedupe marker   sentinel:{<key>}:usage:seen:<request_id>
-- KEYS[2]  minute hash     sentinel:{<key>}:usage:m:<yyyymmddHHMM>
-- KEYS[3]  day hash        sentinel:{<key>}:usage:d:<yyyymmdd>
-- ARGV[1]  prompt tokens       (integer >= 0)
-- ARGV[2]  completion tokens   (integer >= 0)
-- ARGV[3]  total tokens        (integer >= 0)
-- ARGV[4]  minute hash TTL     (seconds)
-- ARGV[5]  day hash TTL        (seconds)
-- ARGV[6]  dedupe marker TTL   (seconds)
-- Returns 1 when counted, 0 when this request id was already counted (a replay).
-- Every key shares the {<key>} hash tag, so the script is valid on Redis Cluster.

if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[6]) then
  return 0
end
for i = 2, 3 do
  redis.call('HINCRBY', KEYS[i], 'requests', 1)
  redis.call('HINCRBY', KEYS[i], 'prompt_tokens', ARGV[1])
  redis.call('HINCRBY', KEYS[i], 'completion_tokens', ARGV[2])
  redis.call('HINCRBY', KEYS[i], 'total_tokens', ARGV[3])
  redis.call('EXPIRE', KEYS[i], ARGV[i + 2])
end
return 1
