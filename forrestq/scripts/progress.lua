-- progress: record how far a running attempt got (forrestq.progress() inside the task), fenced by its token.
-- KEYS[1] the task's hash (hash)   KEYS[2] progress index of the queue (zset: task id -> time of the report)
-- ARGV[1] task id   ARGV[2] token of the attempt   ARGV[3] progress (JSON; "" = nothing new to write)
-- ARGV[4] now (s)   ARGV[5] "1": the attempt's last report (its code returned): the id leaves the index
-- Returns 1 when recorded, 0 when refused (the task is not running, or another attempt holds it: a
-- stale attempt never overwrites a newer one's progress).
local f = redis.call('HMGET', KEYS[1], TASK_STATE, TASK_TOKEN)
if f[1] ~= RUNNING or f[2] ~= ARGV[2] then return 0 end
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], TASK_PROGRESS, ARGV[3]) end
if ARGV[5] == '1' then
  redis.call('ZREM', KEYS[2], ARGV[1])
else
  redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
end
return 1
