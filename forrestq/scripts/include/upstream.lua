-- include upstream: a node fails, unrun, because one of its inputs failed (complete.lua when the
-- input fails; schedule.lua when the input had failed before the node was scheduled). The reason
-- names the node that failed first, once: 'input task A failed: ValueError: x'.
local function upstream_failure(input, reason, now)  -- the task-hash fields (HSET pairs) to write when
  -- node `input` failed (ran and failed, was cancelled or lost) with `reason`
  return {TASK_STATE, FAILED, TASK_UPSTREAM, input, TASK_REASON, 'input task ' .. input .. ' failed: ' .. reason,
          TASK_FINISHED, now}
end
local function failure_after(prefix, input, now)  -- the same for an input (id) found failed already
  local f = redis.call('HMGET', prefix .. SUFFIX_TASK .. input, TASK_UPSTREAM, TASK_REASON)
  if f[1] then  -- it failed because of its own input: name that one, with the same reason
    return {TASK_STATE, FAILED, TASK_UPSTREAM, f[1], TASK_REASON, f[2] or FAILED, TASK_FINISHED, now}
  end
  return upstream_failure(input, f[2] or FAILED, now)  -- failed without a reason: reads "failed"
end
