-- complete: record a task's end, fenced by its lease token, and release or fail its dependents.
-- KEYS[1] stream (stream)   KEYS[2] counts (hash)   KEYS[3] todo (zset)   KEYS[4] done (zset)
-- KEYS[5] failed (zset)     KEYS[6] finished (stream)   KEYS[7] delayed (zset)
-- ARGV[1] queue key prefix   ARGV[2] group   ARGV[3] task id
-- ARGV[4] token of the attempt; "" = the task was lost: accept only while no lease exists
-- ARGV[5] "done" | "failed" | "retry" (back to ready after ARGV[14] s; the error is kept for show)
-- ARGV[6] result blob   ARGV[7] error blob   ARGV[8] traceback text
-- ARGV[9] reason (one line)   ARGV[10] runtime (s)   ARGV[11] now (s)   ARGV[12] output tail
-- ARGV[13] host   ARGV[14] retry delay (s), with "retry"
-- Returns 1 when recorded, 0 when refused (the attempt no longer holds the task: a stale worker).
local prefix, group, id, token, outcome, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[11]
local t = prefix .. 't:' .. id
local lease = prefix .. 'lease:' .. id
local f = redis.call('HMGET', t, 'st', 'tok', 'sid', 'root', 'g')
if f[1] ~= 'running' then return 0 end
if token == '' then
  if redis.call('EXISTS', lease) == 1 then return 0 end
elseif f[2] ~= token then
  return 0
end
if outcome == 'retry' then
  redis.call('HSET', t, 'st', 'ready', 'ev', ARGV[7], 'tb', ARGV[8], 'why', ARGV[9], 'rt', ARGV[10],
             'host', ARGV[13])  -- tok stays until the next claim: the worker knows its own attempt
  redis.call('HINCRBY', t, 'rtn', 1)
  redis.call('HDEL', t, 'sid')
  redis.call('DEL', lease)
  if f[3] then
    redis.call('XACK', KEYS[1], group, f[3])
    redis.call('XDEL', KEYS[1], f[3])
  end
  redis.call('ZADD', KEYS[7], tonumber(now) + tonumber(ARGV[14]), id)
  redis.call('HINCRBY', KEYS[2], 'running', -1)
  redis.call('HINCRBY', KEYS[2], 'ready', 1)
  return 1
end
local fields = {'st', outcome, 't1', now, 'rt', ARGV[10], 'host', ARGV[13]}
if outcome == 'done' then
  fields[#fields+1] = 'rv'; fields[#fields+1] = ARGV[6]
else
  fields[#fields+1] = 'ev'; fields[#fields+1] = ARGV[7]
  fields[#fields+1] = 'tb'; fields[#fields+1] = ARGV[8]
  fields[#fields+1] = 'why'; fields[#fields+1] = ARGV[9]
end
if ARGV[12] ~= '' then fields[#fields+1] = 'out'; fields[#fields+1] = ARGV[12] end
redis.call('HDEL', t, 'rv', 'ev', 'tb', 'why', 'up', 'out')
redis.call('HSET', t, unpack(fields))
redis.call('DEL', lease)
if f[3] then
  redis.call('XACK', KEYS[1], group, f[3])
  redis.call('XDEL', KEYS[1], f[3])
end
redis.call('HINCRBY', KEYS[2], 'running', -1)
redis.call('HINCRBY', KEYS[2], outcome, 1)
redis.call('ZREM', KEYS[3], id)
redis.call('ZADD', outcome == 'done' and KEYS[4] or KEYS[5], now, id)
if f[4] == '1' then
  redis.call('XADD', KEYS[6], '*', 't', id, 'g', f[5] or '0')
  redis.call('HINCRBY', KEYS[2], 'open', -1)
end
if outcome == 'done' then
  for _, dep in ipairs(redis.call('SMEMBERS', prefix .. 'd:' .. id)) do
    local d = prefix .. 't:' .. dep
    if redis.call('HGET', d, 'st') == 'waiting' and redis.call('HINCRBY', d, 'pend', -1) <= 0 then
      local sid = redis.call('XADD', KEYS[1], '*', 't', dep)
      redis.call('HSET', d, 'st', 'ready', 'sid', sid)
      redis.call('HINCRBY', KEYS[2], 'waiting', -1)
      redis.call('HINCRBY', KEYS[2], 'ready', 1)
    end
  end
else
  -- fail every waiting node downstream, breadth first, naming the node that failed first
  local why = 'input task ' .. id .. ' failed: ' .. ARGV[9]
  local queue, head = {id}, 1
  while head <= #queue do
    for _, dep in ipairs(redis.call('SMEMBERS', prefix .. 'd:' .. queue[head])) do
      local d = prefix .. 't:' .. dep
      local g = redis.call('HMGET', d, 'st', 'root', 'g')
      if g[1] == 'waiting' then
        redis.call('HSET', d, 'st', 'failed', 'up', id, 'why', why, 't1', now)
        redis.call('HINCRBY', KEYS[2], 'waiting', -1)
        redis.call('HINCRBY', KEYS[2], 'failed', 1)
        redis.call('ZREM', KEYS[3], dep)
        redis.call('ZADD', KEYS[5], now, dep)
        if g[2] == '1' then
          redis.call('XADD', KEYS[6], '*', 't', dep, 'g', g[3] or '0')
          redis.call('HINCRBY', KEYS[2], 'open', -1)
        end
        queue[#queue + 1] = dep
      end
    end
    head = head + 1
  end
end
return 1
