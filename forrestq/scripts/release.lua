-- release: hand a running task back at once (worker stopping), without waiting for its lease to expire.
-- KEYS[1] stream (stream)   KEYS[2] counts (hash)
-- ARGV[1] queue key prefix   ARGV[2] group   ARGV[3] task id   ARGV[4] token of the attempt
-- ARGV[5] (optional) "1": count the attempt (its process was killed from outside, e.g. by the OOM
--         killer); else the attempt is not counted: the task did not fail, its worker left.
-- Returns 1, or 0 when the token no longer holds the task.
local prefix, group, id = ARGV[1], ARGV[2], ARGV[3]
local t = prefix .. 't:' .. id
local f = redis.call('HMGET', t, 'st', 'tok', 'sid')
if f[1] ~= 'running' or f[2] ~= ARGV[4] then return 0 end
redis.call('DEL', prefix .. 'lease:' .. id)
if f[3] then
  redis.call('XACK', KEYS[1], group, f[3])
  redis.call('XDEL', KEYS[1], f[3])
end
local sid = redis.call('XADD', KEYS[1], '*', 't', id)
redis.call('HSET', t, 'st', 'ready', 'sid', sid)  -- tok stays: the worker tells its own hand-back apart
if ARGV[5] ~= '1' then redis.call('HINCRBY', t, 'n', -1) end
redis.call('HINCRBY', KEYS[2], 'running', -1)
redis.call('HINCRBY', KEYS[2], 'ready', 1)
return 1
