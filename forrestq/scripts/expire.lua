-- expire: delete the finished roots whose result TTL has run out (issue 16), with the inner nodes nobody
-- needs any more; called by a worker's timekeeper about once a second per queue.
-- KEYS[1] stream (stream)   KEYS[2] counts (hash)   KEYS[3] todo (zset)   KEYS[4] done (zset)
-- KEYS[5] failed (zset)     KEYS[6] expiry (zset: root id -> server-clock time its record expires)
-- ARGV[1] queue key prefix   ARGV[2] group   ARGV[3] most roots to look at in this call
-- Rules: the time is the server's clock (TIME). A root that is not finished any more (re-run, requeued) just
-- leaves the zset (complete.lua puts it back when it finishes again). A root some unfinished task still
-- needs as an input is kept and looked at again EXPIRE_RETRY s later. Deleting goes through
-- include/clean.lua (counters, continuations); then each input of a deleted node that is not a root itself,
-- has finished and has no dependent left is deleted too, and so on down the tree.
-- Returns {tasks deleted, earliest expiry left ("" = none)}.
--- @include stream
--- @include counts
--- @include delayed
--- @include clean
local prefix, group = ARGV[1], ARGV[2]
local keys = {KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]}
local now = server_now()
local deleted = 0
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[6], '-inf', now, 'LIMIT', 0, tonumber(ARGV[3]))) do
  local t = prefix .. SUFFIX_TASK .. id
  local f = redis.call('HMGET', t, TASK_STATE, TASK_INPUTS)
  redis.call('ZREM', KEYS[6], id)
  if f[1] == DONE or f[1] == FAILED then
    local n = clean_ids(keys, prefix, group, {id})
    if n == 0 then
      redis.call('ZADD', KEYS[6], now + EXPIRE_RETRY, id)  -- an unfinished task needs it: later
    else
      deleted = deleted + n
      local work, head = {}, 1
      for dep in string.gmatch(f[2] or '', '[^,]+') do work[#work + 1] = dep end
      while head <= #work do
        local x = work[head]
        local d = prefix .. SUFFIX_TASK .. x
        local g = redis.call('HMGET', d, TASK_STATE, TASK_ROOT, TASK_INPUTS, TASK_OWNER)
        if (g[1] == DONE or g[1] == FAILED) and g[2] ~= '1' and not g[4]
            and redis.call('SCARD', prefix .. SUFFIX_DEPENDENTS .. x) == 0 then
          local m = clean_ids(keys, prefix, group, {x})
          deleted = deleted + m
          if m > 0 then
            for dep in string.gmatch(g[3] or '', '[^,]+') do work[#work + 1] = dep end
          end
        end
        head = head + 1
      end
    end
  end
end
local first = redis.call('ZRANGE', KEYS[6], 0, 0, 'WITHSCORES')
return {deleted, first[2] or ''}
