--[[ claim.lua: record who created one object; the first owner wins, atomically.

KEYS[1]  owner hash of one object  <prefix>:owner:{<object id>}:<kind>
         fields: owner (key name), kind, created (created_at, s), snap (JSON snapshot)

ARGV[1]  the claiming owner
ARGV[2]  the object's kind
ARGV[3]  created_at (s; an integer, 0 when unknown)
ARGV[4]  "1" when a snapshot is given, else "0"
ARGV[5]  the snapshot (JSON bytes; empty when ARGV[4] is "0")

An object nobody holds gets every field. A re-claim by its owner with a snapshot replaces
created and snap; without one it changes nothing. A claim by anyone else changes nothing.
Reply {owner, created}: the owner now recorded and its created_at, so that the caller adds
the object to that owner's sorted set only when it is the claimant's (a separate call: the
sorted set hashes to the owner's slot, not the object's).
]]

local owner = redis.call('HGET', KEYS[1], 'owner')
if not owner then
  redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'kind', ARGV[2], 'created', ARGV[3])
  if ARGV[4] == '1' then
    redis.call('HSET', KEYS[1], 'snap', ARGV[5])
  end
  return {ARGV[1], ARGV[3]}
end
if owner == ARGV[1] and ARGV[4] == '1' then
  redis.call('HSET', KEYS[1], 'created', ARGV[3], 'snap', ARGV[5])
  return {owner, ARGV[3]}
end
return {owner, redis.call('HGET', KEYS[1], 'created') or '0'}
