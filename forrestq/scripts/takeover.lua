-- takeover: make the caller the holder of unfinished (or, with ARGV[5]="1", any) tasks, so that a
-- complete.lua call with ARGV[4] as token can end them: cancel, and `forrestq run --record`.
-- KEYS[1] stream (stream)   KEYS[2] counts (hash)   KEYS[3] todo (zset)   KEYS[4] done (zset)
-- KEYS[5] failed (zset)
-- ARGV[1] queue key prefix   ARGV[2] group   ARGV[3] now (s)   ARGV[4] token
-- ARGV[5] "1" = finished tasks too (they are re-opened)   ARGV[6..] task ids
-- A running task's lease is dropped: its worker's completion is refused and its heartbeat sees the loss.
-- Returns the ids taken over (each now RUNNING with the token).
--- @include counts
local prefix, now, token, finished_too = ARGV[1], ARGV[3], ARGV[4], ARGV[5] == '1'
local out = {}
for i = 6, #ARGV do
  local id = ARGV[i]
  local t = prefix .. SUFFIX_TASK .. id
  local f = redis.call('HMGET', t, TASK_STATE, TASK_ROOT)
  local st = f[1]
  if st and (finished_too or (st ~= DONE and st ~= FAILED)) then
    move_count(KEYS[2], st, RUNNING)
    if st == DONE or st == FAILED then
      redis.call('ZREM', KEYS[4], id)
      redis.call('ZREM', KEYS[5], id)
      redis.call('ZADD', KEYS[3], now, id)  -- no stream entry: the todo zset indexes it (forrestq.unfinished)
      redis.call('HDEL', t, TASK_STREAM_ID)  -- its old entry's, long deleted
      redis.call('HINCRBY', t, TASK_GEN, 1)
      if f[2] == '1' then root_reopened(KEYS[2], st) end
    end
    redis.call('DEL', prefix .. SUFFIX_LEASE .. id)
    redis.call('HSET', t, TASK_STATE, RUNNING, TASK_TOKEN, token)
    out[#out + 1] = id
  end
end
return out
