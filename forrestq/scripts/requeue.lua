-- requeue: run nodes again, with the dependents that must follow them; nodes that succeeded stay done.
-- KEYS[1] stream (stream)   KEYS[2] counts (hash)   KEYS[3] todo (zset)   KEYS[4] done (zset)
-- KEYS[5] failed (zset)
-- ARGV[1] queue key prefix   ARGV[2] group   ARGV[3] now (s)
-- ARGV[4] "failed": follow only dependents that failed because of an input (requeue_failed)
--         "all":    follow every dependent, whatever its state (rerun after a fix)
-- ARGV[5..] ids of the nodes to run again
-- Each node of the set gets a new generation, its attempts reset and its old result or error cleared;
-- it goes on the stream if all its inputs are done, else it waits. A running node loses its attempt
-- (the lease is dropped, so the old worker's completion is refused). Returns the ids in the set.
local prefix, group, now, mode = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local set, index = {}, {}
for i = 5, #ARGV do
  if not index[ARGV[i]] and redis.call('EXISTS', prefix .. 't:' .. ARGV[i]) == 1 then
    set[#set + 1] = ARGV[i]; index[ARGV[i]] = true
  end
end
local head = 1
while head <= #set do
  for _, dep in ipairs(redis.call('SMEMBERS', prefix .. 'd:' .. set[head])) do
    if not index[dep] then
      local f = redis.call('HMGET', prefix .. 't:' .. dep, 'st', 'up')
      if f[1] and (mode == 'all' or (f[1] == 'failed' and f[2])) then
        set[#set + 1] = dep; index[dep] = true
      end
    end
  end
  head = head + 1
end
-- first take every node of the set out of its state, so inputs inside the set count as not done
for _, id in ipairs(set) do
  local t = prefix .. 't:' .. id
  local f = redis.call('HMGET', t, 'st', 'sid', 'root')
  redis.call('HINCRBY', KEYS[2], f[1], -1)
  if f[2] then
    redis.call('XACK', KEYS[1], group, f[2])
    redis.call('XDEL', KEYS[1], f[2])
  end
  if f[3] == '1' and (f[1] == 'done' or f[1] == 'failed') then redis.call('HINCRBY', KEYS[2], 'open', 1) end
  redis.call('DEL', prefix .. 'lease:' .. id)
  redis.call('HDEL', t, 'rv', 'ev', 'tb', 'why', 'up', 'out', 'sid', 'tok', 't0', 't1', 'rt', 'lost')
  redis.call('HSET', t, 'st', 'waiting', 'n', 0)
  redis.call('HINCRBY', t, 'g', 1)
  redis.call('ZREM', KEYS[4], id)
  redis.call('ZREM', KEYS[5], id)
  redis.call('ZADD', KEYS[3], now, id)
end
for _, id in ipairs(set) do
  local t = prefix .. 't:' .. id
  local pend = 0
  local inputs = redis.call('HGET', t, 'in') or ''
  for dep in string.gmatch(inputs, '[^,]+') do
    if redis.call('HGET', prefix .. 't:' .. dep, 'st') ~= 'done' then
      redis.call('SADD', prefix .. 'd:' .. dep, id)
      pend = pend + 1
    end
  end
  if pend == 0 then
    local sid = redis.call('XADD', KEYS[1], '*', 't', id)
    redis.call('HSET', t, 'st', 'ready', 'sid', sid, 'pend', 0)
    redis.call('HINCRBY', KEYS[2], 'ready', 1)
  else
    redis.call('HSET', t, 'pend', pend)
    redis.call('HINCRBY', KEYS[2], 'waiting', 1)
  end
end
return set
