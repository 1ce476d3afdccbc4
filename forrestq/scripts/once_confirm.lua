-- once_confirm: mark a claimed key done for good, only if this claim still holds its lease (fencing).
-- KEYS[1] running, KEYS[2] done, KEYS[3] failed, KEYS[4] expired: the version's state indexes (zsets)
-- ARGV[1] the version's prefix "fq:{q}:once:<v>:"   ARGV[2] the key   ARGV[3] owner token of the claim
-- A claim whose lease ended (it expired, or another process claimed the key since) changes nothing:
-- the key may be running elsewhere. A claim found expired here is recorded expired.
-- Returns 1 confirmed; 0 done already (a duplicate completion; nothing changed); 2 not confirmed: the
-- lease expired and nobody holds the key (expired: any claim takes it); 3 not confirmed: another
-- claim holds the key.
--- @include once
local key, token = ARGV[2], ARGV[3]
local lease, rec = once_keys(key)
local holder = redis.call('GET', lease)
local found = redis.call('HMGET', rec, ONCE_STATE, ONCE_TOKEN)
local st, owner = found[1], found[2]
if holder == token then
  redis.call('DEL', lease)
  once_settle(rec, key, st, DONE)
  return 1
elseif st == DONE then
  return 0
elseif holder then
  return 3
end
if st == RUNNING and owner == token then once_expire(rec, key) end
return 2
