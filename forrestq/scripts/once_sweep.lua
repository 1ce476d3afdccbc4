-- once_sweep: record as expired every running key of a version whose lease is gone (its holder died,
-- was cut off, or ran past its timeout), so that listings and counts say so. Reads the running index
-- only (the keys held right now and the ones found dead here), never the whole keyspace.
-- KEYS[1] running, KEYS[2] done, KEYS[3] failed, KEYS[4] expired: the version's state indexes (zsets)
-- ARGV[1] the version's prefix "fq:{q}:once:<v>:"
-- Returns the number of keys found expired.
--- @include once
local n = 0
for _, key in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local lease, rec = once_keys(key)
  if redis.call('EXISTS', lease) == 0 then
    once_expire(rec, key)
    n = n + 1
  end
end
return n
