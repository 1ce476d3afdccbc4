-- once_claim: claim the first claimable key among candidates for one process (exactly-once keys).
-- KEYS[1] running, KEYS[2] done, KEYS[3] failed, KEYS[4] expired: the version's state indexes (zsets)
-- ARGV[1] the version's prefix "fq:{q}:once:<v>:"   ARGV[2] owner token (random, host, pid)
-- ARGV[3] lease ms   ARGV[4] "1": its holder renews the lease (lease=), "": never (timeout=)
-- ARGV[5] host   ARGV[6] pid   ARGV[7] at-most-every ms: a key done at least that long ago is
-- claimable again ("0": done is for good)   ARGV[8..] candidate keys, in order
-- Claimable: a key with no record (free), failed, expired, running with its lease gone (its holder
-- died), or done longer than ARGV[7] ago. A claim is SET NX PX of the key's lease (the token); the
-- key's record turns running with the token, host, pid, claim time, lease end and one more attempt.
-- Examines the candidates in order and stops at the first one it claims.
-- Returns {index of the claimed candidate (1-based; 0 = none), one letter per examined candidate:
-- ONCE_DONE "d" done (skipped), ONCE_BUSY "b" busy (another lease holds it), ONCE_CLAIMED "c" claimed}.
--- @include once
local token, ms, every = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[7])
local letters = {}
for i = 8, #ARGV do
  local key = ARGV[i]
  local lease, rec = once_keys(key)
  local found = redis.call('HMGET', rec, ONCE_STATE, ONCE_SETTLED_AT)
  local st, settled = found[1], tonumber(found[2]) or now
  if st == DONE and (every == 0 or now - settled < every) then
    letters[#letters + 1] = ONCE_DONE
  elseif redis.call('SET', lease, token, 'NX', 'PX', ms) then
    once_move(rec, key, st, RUNNING)
    redis.call('HSET', rec, ONCE_TOKEN, token, ONCE_HOST, ARGV[5], ONCE_PID, ARGV[6], ONCE_CLAIMED_AT,
               tostring(now), ONCE_UNTIL, tostring(now + ms), ONCE_RENEWED, ARGV[4], ONCE_REASON, '')
    redis.call('HDEL', rec, ONCE_SETTLED_AT)
    redis.call('HINCRBY', rec, ONCE_ATTEMPTS, 1)
    letters[#letters + 1] = ONCE_CLAIMED
    return {i - 7, table.concat(letters)}
  else
    letters[#letters + 1] = ONCE_BUSY
  end
end
return {0, table.concat(letters)}
