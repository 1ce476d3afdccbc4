-- periodic_tick: make the task of one due tick of a periodic schedule, exactly once (issue 16).
-- KEYS[1] stream (stream)   KEYS[2] counts (hash)   KEYS[3] todo (zset)   KEYS[4] finished (stream)
-- KEYS[5] failed (zset)     KEYS[6] delayed (zset)  (the tick's task is written as schedule.lua writes nodes)
-- KEYS[7] periodic (zset: schedule name -> next due)   KEYS[8] the schedule (hash fq:{q}:p:<name>)
-- ARGV[1] queue key prefix   ARGV[2] schedule name   ARGV[3] its PERIODIC_NEXT as the caller read it: the
-- tick   ARGV[4] its PERIODIC_SPEC as the caller read it   ARGV[5] the next due time after this tick (the
-- caller computes it: the interval's next step, or the cron expression's next time, after now)
-- ARGV[6] now (s: TASK_CREATED)   ARGV[7..] the tick's task as write_nodes takes nodes (include/nodes.lua):
-- NODE_OPTIONS (9) options, then its one node, its id (ARGV[16]) derived from the name and the tick
-- Compare-and-set: nothing is written unless the schedule still holds ARGV[3] and ARGV[4] and is not paused,
-- so of many workers calling this for one tick exactly one makes its task and moves PERIODIC_NEXT on; and as
-- the node id is the tick's, a repeated call finds the task made and makes no second one.
-- Returns 1 when this call made the tick's task, 0 when the schedule had moved on, changed, was paused or
-- removed (nothing written).
-- Events: EVENT_SCHEDULED for the tick's task.
--- @include stream
--- @include counts
--- @include finished
--- @include upstream
--- @include events
--- @include delayed
--- @include nodes
local prefix, name, tick = ARGV[1], ARGV[2], ARGV[3]
local f = redis.call('HMGET', KEYS[8], PERIODIC_NEXT, PERIODIC_SPEC, PERIODIC_PAUSED)
if f[1] ~= tick or f[2] ~= ARGV[4] or f[3] == '1' then return 0 end
write_nodes(prefix, ARGV[6], 1, 7, KEYS, event_writer(prefix), {TASK_PERIODIC, name})
redis.call('HSET', KEYS[8], PERIODIC_NEXT, ARGV[5], PERIODIC_LAST, tick, PERIODIC_LAST_TASK, ARGV[16])
redis.call('HINCRBY', KEYS[8], PERIODIC_RUNS, 1)
redis.call('ZADD', KEYS[7], ARGV[5], name)
return 1
