-- clean: delete task records; never a running task, nor a finished input some unfinished task still needs.
-- KEYS[1] stream (stream)   KEYS[2] counts (hash)   KEYS[3] todo (zset)   KEYS[4] done (zset)
-- KEYS[5] failed (zset)     KEYS[6] finished (stream)   KEYS[7] expiry (zset: a deleted task leaves it too)
-- ARGV[1] queue key prefix   ARGV[2] group   ARGV[3..] task ids
-- When the queue is left with no task at all, its finished stream is reset too.
-- Continuations: deleting a task that returned a deferred tree (TASK_CONT) deletes that tree too, by the
-- same rules (include/clean.lua); a continuation's root is kept while its task waits for it.
-- Returns the number of tasks deleted, those of continuations included.
--- @include stream
--- @include counts
--- @include clean
local ids = {}
for i = 3, #ARGV do ids[#ids + 1] = ARGV[i] end
local deleted = clean_ids({KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[7]}, ARGV[1], ARGV[2], ids)
local left = 0
for _, v in ipairs(redis.call('HVALS', KEYS[2])) do left = left + math.abs(tonumber(v)) end
if left == 0 then redis.call('DEL', KEYS[6]) end
return deleted
