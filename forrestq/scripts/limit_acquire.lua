-- limit_acquire: take a slot of every limit key a claimed task holds, all or nothing, before it starts
-- (forrestq.worker.limits; concurrency and rate limits by key, issue 16).
-- KEYS[1] limits (hash: key -> how many holders may run at once)
-- KEYS[2] rates (hash: key -> "<starts>" LIMIT_SEP "<per seconds>")
-- ARGV[1] queue key prefix   ARGV[2] task id   ARGV[3] token of the attempt (its lease holds it)
-- ARGV[4] the task's limit keys, "a,b"
-- A key's holders (prefix .. SUFFIX_LIMIT_HOLDERS .. key: task id -> token) count only while that token
-- still holds the task's lease key: a holder that ended (complete.lua, release.lua delete the lease) or
-- whose worker died (its lease expired) is dropped here, so a slot is never leaked and nothing needs
-- renewing but the lease itself. A rate-limited key keeps its starts of the last window (server clock, TIME)
-- in prefix .. SUFFIX_LIMIT_STARTS .. key. A key with neither a limit nor a rate does not constrain.
-- Returns "" when every key had room (the task holds them all now), else {the first key that had none,
-- "" for a full limit or, for a rate, the seconds until its window has room} (nothing taken; the task is
-- noted in prefix .. SUFFIX_LIMIT_WAITING .. key, for forrestq status).
--- @include delayed
local prefix, id, token = ARGV[1], ARGV[2], ARGV[3]
local now = server_now()
local keys = {}
for name in string.gmatch(ARGV[4], '[^,]+') do keys[#keys + 1] = name end
local limits = #keys > 0 and redis.call('HMGET', KEYS[1], unpack(keys)) or {}
local rates = #keys > 0 and redis.call('HMGET', KEYS[2], unpack(keys)) or {}
local windows = {}
for i, name in ipairs(keys) do
  local most = tonumber(limits[i])
  if most then
    local h = prefix .. SUFFIX_LIMIT_HOLDERS .. name
    local held, n = redis.call('HGETALL', h), 0
    for j = 1, #held, 2 do
      local other, tok = held[j], held[j + 1]
      if other ~= id and redis.call('GET', prefix .. SUFFIX_LEASE .. other) == tok then
        n = n + 1
      else
        redis.call('HDEL', h, other)  -- ended, lost, or an older attempt of this very task
      end
    end
    if n >= most then
      redis.call('ZADD', prefix .. SUFFIX_LIMIT_WAITING .. name, now, id)
      return {name, ''}
    end
  end
  if rates[i] then
    local cut = string.find(rates[i], LIMIT_SEP, 1, true)
    local starts, per = tonumber(string.sub(rates[i], 1, cut - 1)), tonumber(string.sub(rates[i], cut + 1))
    local w = prefix .. SUFFIX_LIMIT_STARTS .. name
    redis.call('ZREMRANGEBYSCORE', w, '-inf', now - per)
    if redis.call('ZCARD', w) >= starts then
      redis.call('ZADD', prefix .. SUFFIX_LIMIT_WAITING .. name, now, id)
      local oldest = redis.call('ZRANGE', w, 0, 0, 'WITHSCORES')
      return {name, tostring(math.max(0, tonumber(oldest[2]) + per - now))}
    end
    windows[name] = per
  end
end
for i, name in ipairs(keys) do
  if limits[i] then redis.call('HSET', prefix .. SUFFIX_LIMIT_HOLDERS .. name, id, token) end
  if windows[name] then
    local w = prefix .. SUFFIX_LIMIT_STARTS .. name
    redis.call('ZADD', w, now, id .. LIMIT_SEP .. token)
    redis.call('PEXPIRE', w, math.ceil(windows[name] * 1000) + 1000)
  end
  redis.call('ZREM', prefix .. SUFFIX_LIMIT_WAITING .. name, id)
end
return ''
