-- clean: delete task records; never a running task, nor a finished input some unfinished task still needs.
-- KEYS[1] stream (stream)   KEYS[2] counts (hash)   KEYS[3] todo (zset)   KEYS[4] done (zset)
-- KEYS[5] failed (zset)     KEYS[6] finished (stream)
-- ARGV[1] queue key prefix   ARGV[2] group   ARGV[3..] task ids
-- When the queue is left with no task at all, its finished stream is reset too.
-- Continuations: deleting a task that returned a deferred tree (TASK_CONT) deletes that tree too, by the
-- same rules (the nodes marked TASK_OWNER = the task, found from the tree's root through their inputs;
-- nested ones likewise); a continuation's root is kept while its task waits for it (a waiting dependent).
-- Returns the number of tasks deleted, those of continuations included.
--- @include stream
--- @include counts
local prefix, group = ARGV[1], ARGV[2]
local deleted = 0
local work, owners, head = {}, {}, 1  -- the ids given, then continuation nodes (owners: the owner required)
for i = 3, #ARGV do work[#work + 1] = ARGV[i] end
while head <= #work do
  local id = work[head]
  local t = prefix .. SUFFIX_TASK .. id
  local f = redis.call('HMGET', t, TASK_STATE, TASK_STREAM_ID, TASK_ROOT, TASK_INPUTS, TASK_CONT, TASK_OWNER)
  local st = f[1]
  local keep = (st == nil) or st == RUNNING or (owners[head] ~= nil and f[6] ~= owners[head])
  if not keep and (st == DONE or st == FAILED) then
    for _, dep in ipairs(redis.call('SMEMBERS', prefix .. SUFFIX_DEPENDENTS .. id)) do
      local dst = redis.call('HGET', prefix .. SUFFIX_TASK .. dep, TASK_STATE)
      if dst == WAITING or dst == SCHEDULED or dst == READY or dst == RUNNING then keep = true; break end
    end
  end
  if not keep then
    drop_entry(KEYS[1], group, f[2])
    if f[3] == '1' then  -- a root: one less unfinished, done or failed
      redis.call('HINCRBY', KEYS[2], (st == DONE or st == FAILED) and root_count(st) or COUNT_OPEN, -1)
    end
    if f[4] then
      for dep in string.gmatch(f[4], '[^,]+') do redis.call('SREM', prefix .. SUFFIX_DEPENDENTS .. dep, id) end
    end
    redis.call('HINCRBY', KEYS[2], st, -1)
    redis.call('DEL', t, prefix .. SUFFIX_DEPENDENTS .. id, prefix .. SUFFIX_LEASE .. id)
    redis.call('ZREM', KEYS[3], id)
    redis.call('ZREM', KEYS[4], id)
    redis.call('ZREM', KEYS[5], id)
    deleted = deleted + 1
    if f[5] then work[#work + 1] = f[5]; owners[#work] = id end  -- its continuation's root
    if f[6] and f[4] then  -- a continuation's node: the inputs of the same continuation go with it
      for dep in string.gmatch(f[4], '[^,]+') do work[#work + 1] = dep; owners[#work] = f[6] end
    end
  end
  head = head + 1
end
local left = 0
for _, v in ipairs(redis.call('HVALS', KEYS[2])) do left = left + math.abs(tonumber(v)) end
if left == 0 then redis.call('DEL', KEYS[6]) end
return deleted
