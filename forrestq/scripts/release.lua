-- release: hand a running task back at once (worker stopping), without waiting for its lease to expire.
-- KEYS[1] stream (stream)   KEYS[2] counts (hash)   KEYS[3] unfit (hash: task id -> its request)
-- ARGV[1] queue key prefix   ARGV[2] group   ARGV[3] task id   ARGV[4] token of the attempt
-- ARGV[5] (optional) "1": count the attempt (its process was killed from outside, e.g. by the OOM
--         killer); else the attempt is not counted: the task did not fail, its worker left.
-- ARGV[6] (optional) why it is handed back unrun for its resources (forrestq.worker.capacity):
--         RELEASE_WAIT (not startable on this worker now) or RELEASE_UNFIT (it needs more than this
--         worker has: host ARGV[7] joins TASK_UNFIT, and KEYS[3] maps the task to its request, for
--         forrestq status); either adds 1 to TASK_WAITS. "": neither.
-- Returns 1, or 0 when the token no longer holds the task.
-- Events: EVENT_RELEASED (host, attempt).
--- @include stream
--- @include counts
--- @include events
local prefix, group, id = ARGV[1], ARGV[2], ARGV[3]
local t = prefix .. SUFFIX_TASK .. id
local f = redis.call('HMGET', t, TASK_STATE, TASK_TOKEN, TASK_STREAM_ID, TASK_HOST, TASK_ATTEMPTS)
if f[1] ~= RUNNING or f[2] ~= ARGV[4] then return 0 end
redis.call('DEL', prefix .. SUFFIX_LEASE .. id)
drop_entry(KEYS[1], group, f[3])
-- TASK_TOKEN stays: the worker tells its own hand-back apart
redis.call('HSET', t, TASK_STATE, READY, TASK_STREAM_ID, push_entry(KEYS[1], id, redis.call('HGET', t, TASK_PRIORITY)))
if ARGV[5] ~= '1' then redis.call('HINCRBY', t, TASK_ATTEMPTS, -1) end
if ARGV[6] == RELEASE_WAIT or ARGV[6] == RELEASE_UNFIT then redis.call('HINCRBY', t, TASK_WAITS, 1) end
if ARGV[6] == RELEASE_UNFIT then
  local hosts, seen = {}, false
  for h in string.gmatch(redis.call('HGET', t, TASK_UNFIT) or '', '[^,]+') do
    hosts[#hosts + 1] = h
    if h == ARGV[7] then seen = true end
  end
  if not seen then hosts[#hosts + 1] = ARGV[7] end
  redis.call('HSET', t, TASK_UNFIT, table.concat(hosts, ','))
  redis.call('HSET', KEYS[3], id, redis.call('HGET', t, TASK_RESOURCES) or '')
end
move_count(KEYS[2], RUNNING, READY)
event_writer(prefix)(EVENT_RELEASED, id, EVENT_HOST, f[4] or '', EVENT_ATTEMPT, f[5] or '0')
return 1
