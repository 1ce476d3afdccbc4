-- promote: a worker's look at a queue's clock, about once a second (issue 16): move the SCHEDULED tasks that
-- are due by the server's clock (TIME) onto the stream, and say which periodic schedules are due.
-- KEYS[1] stream (stream)   KEYS[2] counts (hash)   KEYS[3] delayed (zset)   KEYS[4] periodic (zset:
-- schedule name -> next due; paused ones +inf)
-- ARGV[1] queue key prefix   ARGV[2] most tasks to move in this call (the rest: the next call, or a claim)
-- Returns {server now, earliest due time left in the delayed zset ("" = none), earliest next due of a
--          periodic schedule ("" = none; "inf": all paused), then the names of the periodic schedules due
--          now, at most 16 (the caller makes their ticks with periodic_tick.lua)}.
--- @include stream
--- @include counts
--- @include delayed
local now = server_now()
promote_due(ARGV[1], KEYS[1], KEYS[2], KEYS[3], now, tonumber(ARGV[2]))
local function earliest(key)
  local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  return first[2] or ''
end
local out = {tostring(now), earliest(KEYS[3]), earliest(KEYS[4])}
for _, name in ipairs(redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now, 'LIMIT', 0, 16)) do
  out[#out + 1] = name
end
return out
