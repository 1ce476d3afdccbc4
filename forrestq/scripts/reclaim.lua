-- reclaim: hand back stream entries whose holder is gone (no lease key any more).
-- KEYS[1] stream (stream)   KEYS[2] counts (hash)   KEYS[3] lost (hash: LOST_ATTEMPTS += each running task
--                                                    found lost, put back or given up)
-- ARGV[1] queue key prefix   ARGV[2] group   ARGV[3] now (s)   ARGV[4..] entry ids idle longer than a lease
-- A running task whose lease expired counts as lost: it goes back on the stream as a new entry, unless it
-- has used up its attempts; those are returned for the caller to fail with complete.lua (token "").
-- An entry delivered but never claimed goes back on the stream; entries of ended tasks are dropped.
-- Returns {number of running tasks found lost, then task id, attempts, last host, ... of those that used up
--         their attempts}.
-- Events: EVENT_LOST (host, attempt) per running task put back (complete.lua writes the others').
--- @include stream
--- @include counts
--- @include events
local prefix, group, now = ARGV[1], ARGV[2], ARGV[3]
local emit = event_writer(prefix)
local giveup, lost = {}, 0
for i = 4, #ARGV do
  local sid = ARGV[i]
  local tid = entry_task(entry_at(KEYS[1], sid))
  local t = tid and (prefix .. SUFFIX_TASK .. tid)
  if t and redis.call('EXISTS', prefix .. SUFFIX_LEASE .. tid) == 0 then
    local f = redis.call('HMGET', t, TASK_STATE, TASK_STREAM_ID, TASK_ATTEMPTS, TASK_MAX_ATTEMPTS, TASK_HOST,
                         TASK_PRIORITY)
    if f[2] ~= sid or (f[1] ~= RUNNING and f[1] ~= READY) then
      drop_entry(KEYS[1], group, sid)
    elseif f[1] == RUNNING and tonumber(f[3]) >= tonumber(f[4] or DEFAULT_MAX_ATTEMPTS) then
      lost = lost + 1
      giveup[#giveup + 1] = tid
      giveup[#giveup + 1] = f[3]
      giveup[#giveup + 1] = f[5] or '?'
    else
      drop_entry(KEYS[1], group, sid)
      redis.call('HSET', t, TASK_STREAM_ID, push_entry(KEYS[1], tid, f[6]))  -- on its own level
      if f[1] == RUNNING then
        redis.call('HSET', t, TASK_STATE, READY, TASK_LOST_ON, f[5] or '?')
        lost = lost + 1
        move_count(KEYS[2], RUNNING, READY)
        emit(EVENT_LOST, tid, EVENT_HOST, f[5] or '?', EVENT_ATTEMPT, f[3] or '0')
      end
    end
  end
end
if lost > 0 then redis.call('HINCRBY', KEYS[3], LOST_ATTEMPTS, lost) end
return {lost, unpack(giveup)}
