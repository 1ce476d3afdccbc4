-- include clean: delete task records (clean.lua, expire.lua). Needs the stream and counts includes.
-- clean_ids(keys, prefix, group, ids): keys = {stream, counts, todo, done, failed, expiry}; deletes the tasks
-- `ids`, never a running task, nor a finished input some unfinished task still needs. Continuations: deleting
-- a task that returned a deferred tree (TASK_CONT) deletes that tree too, by the same rules (the nodes marked
-- TASK_OWNER = the task, found from the tree's root through their inputs; nested ones likewise); a
-- continuation's root is kept while its task waits for it (a waiting dependent). Counters follow.
-- Returns the number of tasks deleted, those of continuations included.
local function clean_ids(keys, prefix, group, ids)
  local deleted = 0
  local work, owners, head = {}, {}, 1  -- the ids given, then continuation nodes (owners: the owner required)
  for _, x in ipairs(ids) do work[#work + 1] = x end
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
      drop_entry(keys[1], group, f[2])
      if f[3] == '1' then  -- a root: one less unfinished, done or failed
        redis.call('HINCRBY', keys[2], (st == DONE or st == FAILED) and root_count(st) or COUNT_OPEN, -1)
      end
      if f[4] then
        for dep in string.gmatch(f[4], '[^,]+') do redis.call('SREM', prefix .. SUFFIX_DEPENDENTS .. dep, id) end
      end
      redis.call('HINCRBY', keys[2], st, -1)
      redis.call('DEL', t, prefix .. SUFFIX_DEPENDENTS .. id, prefix .. SUFFIX_LEASE .. id)
      redis.call('ZREM', keys[3], id)
      redis.call('ZREM', keys[4], id)
      redis.call('ZREM', keys[5], id)
      redis.call('ZREM', keys[6], id)
      deleted = deleted + 1
      if f[5] then work[#work + 1] = f[5]; owners[#work] = id end  -- its continuation's root
      if f[6] and f[4] then  -- a continuation's node: the inputs of the same continuation go with it
        for dep in string.gmatch(f[4], '[^,]+') do work[#work + 1] = dep; owners[#work] = f[6] end
      end
    end
    head = head + 1
  end
  return deleted
end
