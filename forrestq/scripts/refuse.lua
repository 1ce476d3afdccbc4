-- refuse: this host cannot load a task it claimed (a module missing here, a payload signed with another
-- secret than this worker's): record the host on the task, then hand the task back unrun or say it must fail.
-- KEYS[1] stream (stream)   KEYS[2] counts (hash)
-- ARGV[1] queue key prefix   ARGV[2] group   ARGV[3] task id   ARGV[4] token of the attempt
-- ARGV[5] this host   ARGV[6] most distinct refusing hosts before the task fails
-- ARGV[7..] the hosts that might still load it (live workers serving the queue, this host included)
-- The host joins TASK_REFUSED (distinct hosts, comma-separated, in order). When every host of ARGV[7..] is
-- in it, or it holds ARGV[6] hosts, the task stays running under the token and the caller records its
-- failure with complete.lua (returns {2, hosts...}). Else it goes back to ready with its attempt not
-- counted, as a new entry at the end of the stream, where a consumer blocked in XREADGROUP (an idle
-- worker elsewhere) gets it at once; the refusing child pauses before it claims again (returns
-- {1, hosts...}). Returns {0} when the token no longer holds the task.
-- Events: EVENT_RELEASED (this host, the attempt) when it is handed back.
--- @include stream
--- @include counts
--- @include events
local prefix, group, id, token, host = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local t = prefix .. SUFFIX_TASK .. id
local f = redis.call('HMGET', t, TASK_STATE, TASK_TOKEN, TASK_STREAM_ID, TASK_REFUSED)
if f[1] ~= RUNNING or f[2] ~= token then return {0} end
local hosts, seen = {}, {}
for h in string.gmatch(f[4] or '', '[^,]+') do
  if not seen[h] then hosts[#hosts + 1] = h; seen[h] = true end
end
if not seen[host] then hosts[#hosts + 1] = host; seen[host] = true end
redis.call('HSET', t, TASK_REFUSED, table.concat(hosts, ','))
local final = #hosts >= tonumber(ARGV[6])
if not final then
  final = true
  for i = 7, #ARGV do
    if not seen[ARGV[i]] then final = false; break end
  end
end
if final then return {2, unpack(hosts)} end
-- TASK_TOKEN stays (as with release.lua): the worker tells its own hand-back apart
redis.call('DEL', prefix .. SUFFIX_LEASE .. id)
drop_entry(KEYS[1], group, f[3])
redis.call('HSET', t, TASK_STATE, READY, TASK_STREAM_ID, push_entry(KEYS[1], id, redis.call('HGET', t, TASK_PRIORITY)))
local attempt = redis.call('HINCRBY', t, TASK_ATTEMPTS, -1) + 1
move_count(KEYS[2], RUNNING, READY)
event_writer(prefix)(EVENT_RELEASED, id, EVENT_HOST, host, EVENT_ATTEMPT, tostring(attempt))
return {1, unpack(hosts)}
