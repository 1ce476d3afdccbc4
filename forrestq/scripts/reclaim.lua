-- reclaim: hand back stream entries whose holder is gone (no lease key any more).
-- KEYS[1] stream (stream)   KEYS[2] counts (hash)
-- ARGV[1] queue key prefix   ARGV[2] group   ARGV[3] now (s)   ARGV[4..] entry ids idle longer than a lease
-- A running task whose lease expired counts as lost: it goes back on the stream as a new entry, unless it
-- has used up its attempts; those are returned for the caller to fail with complete.lua (token "").
-- An entry delivered but never claimed goes back on the stream; entries of ended tasks are dropped.
-- Returns {task id, attempts, last host, ...} of the tasks that used up their attempts.
local prefix, group, now = ARGV[1], ARGV[2], ARGV[3]
local giveup = {}
for i = 4, #ARGV do
  local sid = ARGV[i]
  local entry = redis.call('XRANGE', KEYS[1], sid, sid)[1]
  local tid = entry and entry[2][2]
  local t = tid and (prefix .. 't:' .. tid)
  if t and redis.call('EXISTS', prefix .. 'lease:' .. tid) == 0 then
    local f = redis.call('HMGET', t, 'st', 'sid', 'n', 'ma', 'host')
    if f[2] ~= sid or (f[1] ~= 'running' and f[1] ~= 'ready') then
      redis.call('XACK', KEYS[1], group, sid)
      redis.call('XDEL', KEYS[1], sid)
    elseif f[1] == 'running' and tonumber(f[3]) >= tonumber(f[4] or '3') then
      giveup[#giveup + 1] = tid
      giveup[#giveup + 1] = f[3]
      giveup[#giveup + 1] = f[5] or '?'
    else
      redis.call('XACK', KEYS[1], group, sid)
      redis.call('XDEL', KEYS[1], sid)
      local new = redis.call('XADD', KEYS[1], '*', 't', tid)
      redis.call('HSET', t, 'sid', new)
      if f[1] == 'running' then
        redis.call('HSET', t, 'st', 'ready', 'lost', f[5] or '?')
        redis.call('HINCRBY', KEYS[2], 'running', -1)
        redis.call('HINCRBY', KEYS[2], 'ready', 1)
      end
    end
  end
end
return giveup
