-- include upstream: a node fails, unrun, because one of its inputs failed (complete.lua when the
-- input fails; schedule.lua when the input had failed before the node was scheduled).
local function upstream_failure(input, reason, now)  -- the task-hash fields (HSET pairs) to write
  return {TASK_STATE, FAILED, TASK_UPSTREAM, input, TASK_REASON, 'input task ' .. input .. ' failed: ' .. reason,
          TASK_FINISHED, now}
end
