-- takeover: make the caller the holder of unfinished (or, with ARGV[5]="1", any) tasks, so that a
-- complete.lua call with ARGV[4] as token can end them: cancel, and `forrestq run --record`.
-- KEYS[1] stream (stream)   KEYS[2] counts (hash)   KEYS[3] todo (zset)   KEYS[4] done (zset)
-- KEYS[5] failed (zset)
-- ARGV[1] queue key prefix   ARGV[2] group   ARGV[3] now (s)   ARGV[4] token
-- ARGV[5] "1" = finished tasks too (they are re-opened)   ARGV[6..] task ids
-- A running task's lease is dropped: its worker's completion is refused and its heartbeat sees the loss.
-- Returns the ids taken over (each now 'running' with the token).
local prefix, group, now, token, finished_too = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5] == '1'
local out = {}
for i = 6, #ARGV do
  local id = ARGV[i]
  local t = prefix .. 't:' .. id
  local f = redis.call('HMGET', t, 'st', 'root')
  local st = f[1]
  if st and (finished_too or (st ~= 'done' and st ~= 'failed')) then
    redis.call('HINCRBY', KEYS[2], st, -1)
    redis.call('HINCRBY', KEYS[2], 'running', 1)
    if st == 'done' or st == 'failed' then
      redis.call('ZREM', KEYS[4], id)
      redis.call('ZREM', KEYS[5], id)
      redis.call('ZADD', KEYS[3], now, id)
      redis.call('HINCRBY', t, 'g', 1)
      if f[2] == '1' then redis.call('HINCRBY', KEYS[2], 'open', 1) end
    end
    redis.call('DEL', prefix .. 'lease:' .. id)
    redis.call('HSET', t, 'st', 'running', 'tok', token)
    out[#out + 1] = id
  end
end
return out
