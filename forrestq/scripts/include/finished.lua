-- include finished: the finished stream (fq:{q}:finished) announces finished root tasks to
-- Queue.results: entries {ENTRY_TASK = id, ENTRY_GEN = generation}.
local function announce(finished, id, gen)  -- gen: the task's TASK_GEN (nil: '0')
  redis.call('XADD', finished, '*', ENTRY_TASK, id, ENTRY_GEN, gen or '0')
end
