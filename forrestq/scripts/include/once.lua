-- include once: every once_* script but once_renew gets the four state indexes of one version as
-- KEYS[1..4] (zsets fq:{q}:once:<v>:s:<state>, in the order of schema.ONCE_STATES: running, done,
-- failed, expired) and that version's key prefix "fq:{q}:once:<v>:" as ARGV[1]. A key with a record
-- is in exactly one index; a key without one is free. `now`: the server's clock in ms, the clock that
-- also judges lease expiry, so every time of a record comes from one clock.
local once_index = {[RUNNING] = KEYS[1], [DONE] = KEYS[2], [FAILED] = KEYS[3], [EXPIRED] = KEYS[4]}
local once_clock = redis.call('TIME')
local now = tonumber(once_clock[1]) * 1000 + math.floor(tonumber(once_clock[2]) / 1000)
local function once_keys(key)  -- the key's lease (string) and its record (hash)
  return ARGV[1] .. SUFFIX_LEASE .. key, ARGV[1] .. SUFFIX_ONCE_KEY .. key
end
local function once_move(rec, key, from, to)  -- the key's record and index entry go to state `to`
  if from and once_index[from] then redis.call('ZREM', once_index[from], key) end
  redis.call('ZADD', once_index[to], 0, key)
  redis.call('HSET', rec, ONCE_STATE, to)
end
local function once_settle(rec, key, from, to)  -- ... settled now (done, failed): no token to keep
  once_move(rec, key, from, to)
  redis.call('HSET', rec, ONCE_SETTLED_AT, tostring(now))
  redis.call('HDEL', rec, ONCE_TOKEN)
end
local function once_expire(rec, key)  -- a running key whose lease is gone: expired at the lease's end
  local ended = redis.call('HGET', rec, ONCE_UNTIL) or tostring(now)
  once_move(rec, key, RUNNING, EXPIRED)
  redis.call('HSET', rec, ONCE_SETTLED_AT, ended)
end
local function once_forget(rec, key, from)  -- the key becomes free: no record, in no index
  if from and once_index[from] then redis.call('ZREM', once_index[from], key) end
  redis.call('DEL', rec)
end
