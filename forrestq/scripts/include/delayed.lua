-- include delayed: tasks whose time has not come (issue 16): state SCHEDULED, in the queue's delayed zset
-- scored by the time they are due on the Redis server's clock (TIME: every host agrees on it, whatever its
-- own clock says): a delay or `at` (TASK_DUE), a retry's backoff. Needs the stream and counts includes.
local function server_now()  -- seconds, the server's clock
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
-- node `id` (hash `t`) leaves state `from` with nothing left to wait for: ready on the stream, or SCHEDULED
-- in `delayed` while its TASK_DUE is still ahead (a delayed node whose inputs finished early); it leaves the
-- todo zset, which indexes waiting tasks only (forrestq.unfinished). Its new state.
local function make_ready(stream, counts, delayed, todo, t, id, from)
  redis.call('ZREM', todo, id)
  local g = redis.call('HMGET', t, TASK_DUE, TASK_PRIORITY)
  local due = tonumber(g[1] or '')
  if due and due > server_now() then
    redis.call('HSET', t, TASK_STATE, SCHEDULED)
    redis.call('ZADD', delayed, due, id)
    move_count(counts, from, SCHEDULED)
    return SCHEDULED
  end
  redis.call('HSET', t, TASK_STATE, READY, TASK_STREAM_ID, push_entry(stream, id, g[2]))
  move_count(counts, from, READY)
  return READY
end
-- move up to `limit` tasks of `delayed` due by `now` onto the stream (SCHEDULED -> READY); how many. An
-- entry whose task left SCHEDULED meanwhile (cancelled, requeued, cleaned) is dropped; a READY task with no
-- stream entry is a retry an older forrestq put there (READY while delayed): pushed too.
local function promote_due(prefix, stream, counts, delayed, now, limit)
  local n = 0
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', delayed, '-inf', now, 'LIMIT', 0, limit)) do
    redis.call('ZREM', delayed, id)
    local t = prefix .. SUFFIX_TASK .. id
    local f = redis.call('HMGET', t, TASK_STATE, TASK_STREAM_ID, TASK_PRIORITY)
    if f[1] == SCHEDULED then
      redis.call('HSET', t, TASK_STATE, READY, TASK_STREAM_ID, push_entry(stream, id, f[3]))
      move_count(counts, SCHEDULED, READY)
      n = n + 1
    elseif f[1] == READY and not f[2] then
      redis.call('HSET', t, TASK_STREAM_ID, push_entry(stream, id, f[3]))
      n = n + 1
    end
  end
  return n
end
