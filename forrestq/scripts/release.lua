-- release: hand a running task back at once (worker stopping), without waiting for its lease to expire.
-- KEYS[1] stream (stream)   KEYS[2] counts (hash)
-- ARGV[1] queue key prefix   ARGV[2] group   ARGV[3] task id   ARGV[4] token of the attempt
-- ARGV[5] (optional) "1": count the attempt (its process was killed from outside, e.g. by the OOM
--         killer); else the attempt is not counted: the task did not fail, its worker left.
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
redis.call('HSET', t, TASK_STATE, READY, TASK_STREAM_ID, push_entry(KEYS[1], id))
if ARGV[5] ~= '1' then redis.call('HINCRBY', t, TASK_ATTEMPTS, -1) end
move_count(KEYS[2], RUNNING, READY)
event_writer(prefix)(EVENT_RELEASED, id, EVENT_HOST, f[4] or '', EVENT_ATTEMPT, f[5] or '0')
return 1
