-- once_mark: mark keys done without running them (ARGV[2] DONE), or forget them (ONCE_FREE: their
-- records are deleted, so the next claim runs them, done or not). A key a live lease holds is left
-- alone (its holder settles it).
-- KEYS[1] running, KEYS[2] done, KEYS[3] failed, KEYS[4] expired: the version's state indexes (zsets)
-- ARGV[1] the version's prefix "fq:{q}:once:<v>:"   ARGV[2] DONE or ONCE_FREE   ARGV[3] host
-- ARGV[4] pid   ARGV[5..] keys
-- Returns one number per key: 1 changed; 0 unchanged (done already / nothing to forget);
-- -1 held by a live lease (unchanged).
--- @include once
local out = {}
for i = 5, #ARGV do
  local key = ARGV[i]
  local lease, rec = once_keys(key)
  local st = redis.call('HGET', rec, ONCE_STATE)
  if redis.call('EXISTS', lease) == 1 then
    out[#out + 1] = -1
  elseif ARGV[2] == ONCE_FREE then
    out[#out + 1] = st and 1 or 0
    if st then once_forget(rec, key, st) end
  elseif st == DONE then
    out[#out + 1] = 0
  else
    once_settle(rec, key, st, DONE)
    redis.call('HSET', rec, ONCE_HOST, ARGV[3], ONCE_PID, ARGV[4], ONCE_REASON, '')
    out[#out + 1] = 1
  end
end
return out
