-- clean: delete task records; never a running task, nor a finished input some unfinished task still needs.
-- KEYS[1] stream (stream)   KEYS[2] counts (hash)   KEYS[3] todo (zset)   KEYS[4] done (zset)
-- KEYS[5] failed (zset)     KEYS[6] finished (stream)
-- ARGV[1] queue key prefix   ARGV[2] group   ARGV[3..] task ids
-- When the queue is left with no task at all, its finished stream is reset too.
-- Returns the number of tasks deleted.
local prefix, group = ARGV[1], ARGV[2]
local deleted = 0
for i = 3, #ARGV do
  local id = ARGV[i]
  local t = prefix .. 't:' .. id
  local f = redis.call('HMGET', t, 'st', 'sid', 'root', 'in')
  local st = f[1]
  local keep = (st == nil) or st == 'running'
  if not keep and (st == 'done' or st == 'failed') then
    for _, dep in ipairs(redis.call('SMEMBERS', prefix .. 'd:' .. id)) do
      local dst = redis.call('HGET', prefix .. 't:' .. dep, 'st')
      if dst == 'waiting' or dst == 'ready' or dst == 'running' then keep = true; break end
    end
  end
  if not keep then
    if f[2] then
      redis.call('XACK', KEYS[1], group, f[2])
      redis.call('XDEL', KEYS[1], f[2])
    end
    if f[3] == '1' and st ~= 'done' and st ~= 'failed' then redis.call('HINCRBY', KEYS[2], 'open', -1) end
    if f[4] then
      for dep in string.gmatch(f[4], '[^,]+') do redis.call('SREM', prefix .. 'd:' .. dep, id) end
    end
    redis.call('HINCRBY', KEYS[2], st, -1)
    redis.call('DEL', t, prefix .. 'd:' .. id, prefix .. 'lease:' .. id)
    redis.call('ZREM', KEYS[3], id)
    redis.call('ZREM', KEYS[4], id)
    redis.call('ZREM', KEYS[5], id)
    deleted = deleted + 1
  end
end
local left = 0
for _, v in ipairs(redis.call('HVALS', KEYS[2])) do left = left + math.abs(tonumber(v)) end
if left == 0 then redis.call('DEL', KEYS[6]) end
return deleted
