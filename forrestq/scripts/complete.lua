-- complete: record a task's end, fenced by its lease token, and release or fail its dependents.
-- KEYS[1] stream (stream)   KEYS[2] counts (hash)   KEYS[3] todo (zset)   KEYS[4] done (zset)
-- KEYS[5] failed (zset)     KEYS[6] finished (stream)   KEYS[7] delayed (zset)
-- ARGV[1] queue key prefix   ARGV[2] group   ARGV[3] task id
-- ARGV[4] token of the attempt; "" = the task was lost: accept only while no lease exists
-- ARGV[5] DONE | FAILED | RETRY (back to ready after ARGV[14] s; the error is kept for show)
-- ARGV[6] result blob   ARGV[7] error blob   ARGV[8] traceback text
-- ARGV[9] reason (one line)   ARGV[10] runtime (s)   ARGV[11] now (s)   ARGV[12] output tail
-- ARGV[13] host of the attempt ("" = unknown: the host recorded at claim stays, e.g. for a cancel)
-- ARGV[14] retry delay (s), with RETRY
-- Returns 1 when recorded, 0 when refused (the attempt no longer holds the task: a stale worker).
--- @include stream
--- @include counts
--- @include finished
--- @include upstream
local prefix, group, id, token, outcome, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[11]
local t = prefix .. SUFFIX_TASK .. id
local lease = prefix .. SUFFIX_LEASE .. id
local f = redis.call('HMGET', t, TASK_STATE, TASK_TOKEN, TASK_STREAM_ID, TASK_ROOT, TASK_GEN)
if f[1] ~= RUNNING then return 0 end
if token == '' then
  if redis.call('EXISTS', lease) == 1 then return 0 end
elseif f[2] ~= token then
  return 0
end
if outcome == RETRY then
  redis.call('HSET', t, TASK_STATE, READY, TASK_ERROR, ARGV[7], TASK_TRACEBACK, ARGV[8], TASK_REASON, ARGV[9],
             TASK_RUNTIME, ARGV[10])  -- TASK_TOKEN stays until the next claim: the worker knows its own attempt
  if ARGV[13] ~= '' then redis.call('HSET', t, TASK_HOST, ARGV[13]) end
  redis.call('HINCRBY', t, TASK_RETRIES_USED, 1)
  redis.call('HDEL', t, TASK_STREAM_ID)
  redis.call('DEL', lease)
  drop_entry(KEYS[1], group, f[3])
  redis.call('ZADD', KEYS[7], tonumber(now) + tonumber(ARGV[14]), id)
  move_count(KEYS[2], RUNNING, READY)
  return 1
end
-- a node leaves state `from` for the finished state `to` (DONE or FAILED): counts, zsets, announcement
local function finish(node, from, to, root, gen)
  move_count(KEYS[2], from, to)
  redis.call('ZREM', KEYS[3], node)
  redis.call('ZADD', to == DONE and KEYS[4] or KEYS[5], now, node)
  if root == '1' then
    announce(KEYS[6], node, gen)
    root_finished(KEYS[2], to)
  end
end
local fields = {TASK_STATE, outcome, TASK_FINISHED, now, TASK_RUNTIME, ARGV[10]}
if ARGV[13] ~= '' then fields[#fields+1] = TASK_HOST; fields[#fields+1] = ARGV[13] end
if outcome == DONE then
  fields[#fields+1] = TASK_RESULT; fields[#fields+1] = ARGV[6]
else
  fields[#fields+1] = TASK_ERROR; fields[#fields+1] = ARGV[7]
  fields[#fields+1] = TASK_TRACEBACK; fields[#fields+1] = ARGV[8]
  fields[#fields+1] = TASK_REASON; fields[#fields+1] = ARGV[9]
end
if ARGV[12] ~= '' then fields[#fields+1] = TASK_OUTPUT; fields[#fields+1] = ARGV[12] end
redis.call('HDEL', t, TASK_RESULT, TASK_ERROR, TASK_TRACEBACK, TASK_REASON, TASK_UPSTREAM, TASK_OUTPUT)
redis.call('HSET', t, unpack(fields))
redis.call('DEL', lease)
drop_entry(KEYS[1], group, f[3])
finish(id, RUNNING, outcome, f[4], f[5])
if outcome == DONE then
  for _, dep in ipairs(redis.call('SMEMBERS', prefix .. SUFFIX_DEPENDENTS .. id)) do
    local d = prefix .. SUFFIX_TASK .. dep
    if redis.call('HGET', d, TASK_STATE) == WAITING and redis.call('HINCRBY', d, TASK_PENDING, -1) <= 0 then
      redis.call('HSET', d, TASK_STATE, READY, TASK_STREAM_ID, push_entry(KEYS[1], dep))
      move_count(KEYS[2], WAITING, READY)
    end
  end
else
  -- fail every waiting node downstream, breadth first, naming the node that failed first
  local failure = upstream_failure(id, ARGV[9], now)
  local queue, head = {id}, 1
  while head <= #queue do
    for _, dep in ipairs(redis.call('SMEMBERS', prefix .. SUFFIX_DEPENDENTS .. queue[head])) do
      local d = prefix .. SUFFIX_TASK .. dep
      local g = redis.call('HMGET', d, TASK_STATE, TASK_ROOT, TASK_GEN)
      if g[1] == WAITING then
        redis.call('HSET', d, unpack(failure))
        finish(dep, WAITING, FAILED, g[2], g[3])
        queue[#queue + 1] = dep
      end
    end
    head = head + 1
  end
end
return 1
