-- once_claim: claim the first free key among candidates for one process (exactly-once keys).
-- KEYS[1] done set of this version (set)   fq:{q}:once:<version>:done
-- ARGV[1] lease key prefix "fq:{q}:once:<version>:lease:"   ARGV[2] owner token (host, pid, random)
-- ARGV[3] lease ms   ARGV[4..] candidate keys, in order
-- Examines the candidates in order and stops at the first one it claims (SET NX PX of its lease key).
-- Returns {index of the claimed candidate (1-based; 0 = none), one status letter per examined
-- candidate: ONCE_DONE "d" done (completed before, skipped), ONCE_BUSY "b" busy (another lease holds
-- it), ONCE_CLAIMED "c" claimed}.
local done, prefix, token, ms = KEYS[1], ARGV[1], ARGV[2], ARGV[3]
local status = {}
for i = 4, #ARGV do
  local key = ARGV[i]
  if redis.call('SISMEMBER', done, key) == 1 then
    status[#status + 1] = ONCE_DONE
  elseif redis.call('SET', prefix .. key, token, 'NX', 'PX', ms) then
    status[#status + 1] = ONCE_CLAIMED
    return {i - 3, table.concat(status)}
  else
    status[#status + 1] = ONCE_BUSY
  end
end
return {0, table.concat(status)}
