-- include counts: the counts hash (fq:{q}:counts) holds state -> number of tasks, and COUNT_OPEN.
local function move_count(counts, from, to)  -- one task went from state `from` to state `to`
  redis.call('HINCRBY', counts, from, -1)
  redis.call('HINCRBY', counts, to, 1)
end
