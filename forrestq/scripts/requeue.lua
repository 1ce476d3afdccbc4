-- requeue: run nodes again, with the dependents that must follow them; nodes that succeeded stay done.
-- KEYS[1] stream (stream)   KEYS[2] counts (hash)   KEYS[3] todo (zset)   KEYS[4] done (zset)
-- KEYS[5] failed (zset)
-- ARGV[1] queue key prefix   ARGV[2] group   ARGV[3] now (s)
-- ARGV[4] FOLLOW_FAILED "failed" (or any word but FOLLOW_ALL): follow only dependents that failed because
--         of an input (requeue_failed);  FOLLOW_ALL "all": follow every dependent, whatever its state
--         (rerun after a fix)
-- ARGV[5..] ids of the nodes to run again
-- Each node of the set gets a new generation, its attempts reset and its old result, error and progress cleared;
-- it goes on the stream if all its inputs are done, else it waits. A running node loses its attempt
-- (the lease is dropped, so the old worker's completion is refused). Returns the ids in the set. An
-- allow-failed node (TASK_ALLOW_FAILED) counts a failed input outside the set as finished.
-- Continuations: a node given here that had returned a deferred tree runs again from scratch (its old
-- continuation is dropped: no longer linked, left as it is); a task reached because it waited for a node
-- of the set as its continuation's root (TASK_CONT) is not run again but waits for that root again.
-- Events: EVENT_REQUEUED per node of the set.
--- @include stream
--- @include counts
--- @include events
local prefix, group, now, mode = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local emit = event_writer(prefix)
local set, index, resume = {}, {}, {}
for i = 5, #ARGV do
  if not index[ARGV[i]] and redis.call('EXISTS', prefix .. SUFFIX_TASK .. ARGV[i]) == 1 then
    set[#set + 1] = ARGV[i]; index[ARGV[i]] = true
  end
end
local head = 1
while head <= #set do
  for _, dep in ipairs(redis.call('SMEMBERS', prefix .. SUFFIX_DEPENDENTS .. set[head])) do
    if not index[dep] then
      local f = redis.call('HMGET', prefix .. SUFFIX_TASK .. dep, TASK_STATE, TASK_UPSTREAM, TASK_CONT)
      if f[1] and (mode == FOLLOW_ALL or (f[1] == FAILED and f[2])) then
        set[#set + 1] = dep; index[dep] = true
        if f[3] == set[head] then resume[dep] = true end  -- it waits for its continuation again, not run again
      end
    end
  end
  head = head + 1
end
-- first take every node of the set out of its state, so inputs inside the set count as not done
for _, id in ipairs(set) do
  local t = prefix .. SUFFIX_TASK .. id
  local f = redis.call('HMGET', t, TASK_STATE, TASK_STREAM_ID, TASK_ROOT, TASK_CONT)
  redis.call('HINCRBY', KEYS[2], f[1], -1)
  if f[4] and not resume[id] then  -- runs again: its old continuation is dropped
    redis.call('SREM', prefix .. SUFFIX_DEPENDENTS .. f[4], id)
    redis.call('HDEL', t, TASK_CONT)
  end
  drop_entry(KEYS[1], group, f[2])
  if f[3] == '1' and (f[1] == DONE or f[1] == FAILED) then root_reopened(KEYS[2], f[1]) end
  redis.call('DEL', prefix .. SUFFIX_LEASE .. id)
  redis.call('HDEL', t, TASK_RESULT, TASK_ERROR, TASK_TRACEBACK, TASK_REASON, TASK_UPSTREAM, TASK_OUTPUT,
             TASK_STREAM_ID, TASK_TOKEN, TASK_STARTED, TASK_FINISHED, TASK_RUNTIME, TASK_LOST_ON, TASK_REFUSED,
             TASK_PROGRESS)
  redis.call('HSET', t, TASK_STATE, WAITING)
  if not resume[id] then redis.call('HSET', t, TASK_ATTEMPTS, 0) end  -- a resumed task keeps its attempt
  redis.call('HINCRBY', t, TASK_GEN, 1)
  redis.call('ZREM', KEYS[4], id)
  redis.call('ZREM', KEYS[5], id)
  redis.call('ZADD', KEYS[3], now, id)
  emit(EVENT_REQUEUED, id)
end
for _, id in ipairs(set) do
  local t = prefix .. SUFFIX_TASK .. id
  local pend = 0
  local g = redis.call('HMGET', t, TASK_CONT, TASK_INPUTS, TASK_ALLOW_FAILED)
  local inputs = resume[id] and g[1] or (g[2] or '')
  local allow = g[3] == '1' and not resume[id]  -- allow-failed: an input failed (outside the set) is finished
  for dep in string.gmatch(inputs, '[^,]+') do
    local st = redis.call('HGET', prefix .. SUFFIX_TASK .. dep, TASK_STATE)
    if st ~= DONE and not (allow and st == FAILED) then
      redis.call('SADD', prefix .. SUFFIX_DEPENDENTS .. dep, id)
      pend = pend + 1
    end
  end
  if pend == 0 then
    redis.call('ZREM', KEYS[3], id)  -- indexed by its entry now (forrestq.unfinished)
    redis.call('HSET', t, TASK_STATE, READY, TASK_STREAM_ID, push_entry(KEYS[1], id, redis.call('HGET', t, TASK_PRIORITY)),
               TASK_PENDING, 0)
    redis.call('HINCRBY', KEYS[2], READY, 1)
  else
    redis.call('HSET', t, TASK_PENDING, pend)
    redis.call('HINCRBY', KEYS[2], WAITING, 1)
  end
end
return set
