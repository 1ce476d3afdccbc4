-- once_release: settle a claimed key as failed (its body raised, notify_failure), or give it back
-- free (a body that left it unsettled under confirm="explicit"), only if this claim still holds its
-- lease: another process's claim, a done key and a lease that ended are never touched.
-- KEYS[1] running, KEYS[2] done, KEYS[3] failed, KEYS[4] expired: the version's state indexes (zsets)
-- ARGV[1] the version's prefix "fq:{q}:once:<v>:"   ARGV[2] the key   ARGV[3] owner token of the claim
-- ARGV[4] FAILED (record it failed, with ARGV[5] as its reason) or ONCE_FREE (delete its record)
-- Returns 1 settled; 0 not held by this token (expired: then recorded expired; or claimed by another).
--- @include once
local key, token = ARGV[2], ARGV[3]
local lease, rec = once_keys(key)
local holder = redis.call('GET', lease)
local found = redis.call('HMGET', rec, ONCE_STATE, ONCE_TOKEN)
local st, owner = found[1], found[2]
if holder ~= token then
  if not holder and st == RUNNING and owner == token then once_expire(rec, key) end
  return 0
end
redis.call('DEL', lease)
if ARGV[4] == ONCE_FREE then
  once_forget(rec, key, st)
else
  once_settle(rec, key, st, FAILED)
  redis.call('HSET', rec, ONCE_REASON, ARGV[5])
end
return 1
