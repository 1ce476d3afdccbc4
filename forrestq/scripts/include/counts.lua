-- include counts: the counts hash (fq:{q}:counts) holds state -> number of tasks (DAG nodes), and the
-- roots (the tasks users scheduled) apart: COUNT_OPEN unfinished, COUNT_ROOTS_DONE, COUNT_ROOTS_FAILED.
local function move_count(counts, from, to)  -- one task went from state `from` to state `to`
  redis.call('HINCRBY', counts, from, -1)
  redis.call('HINCRBY', counts, to, 1)
end
local function root_count(state)  -- the roots counter of a finished state (DONE or FAILED)
  if state == DONE then return COUNT_ROOTS_DONE end
  return COUNT_ROOTS_FAILED
end
local function root_finished(counts, to)  -- a root went from unfinished to `to` (DONE or FAILED)
  redis.call('HINCRBY', counts, COUNT_OPEN, -1)
  redis.call('HINCRBY', counts, root_count(to), 1)
end
local function root_reopened(counts, from)  -- a root finished as `from` (DONE or FAILED) is unfinished again
  redis.call('HINCRBY', counts, root_count(from), -1)
  redis.call('HINCRBY', counts, COUNT_OPEN, 1)
end
