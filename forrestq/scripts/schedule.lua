-- schedule: create DAG nodes (inputs before dependents) and push the ready ones onto the stream.
-- KEYS[1] stream   (stream)  ready task ids
-- KEYS[2] counts   (hash)    state -> number, "open" -> unfinished roots
-- KEYS[3] todo     (zset)    unfinished task ids by creation time
-- KEYS[4] finished (stream)  finished roots
-- ARGV[1] queue key prefix "fq:{q}:"   ARGV[2] now (s)   ARGV[3] number of nodes
-- ARGV[4..] per node, 11 fields: id, fn sha, args blob, inputs ("a,b,c" or ""), name, root ("1"/""),
--           metadata blob, timeout, max attempts, key, retry policy blob
-- Returns, per node, its state after the call, then the newest id of the finished stream: an existing node is left as it is (a shared node runs once), except that a
--   root flag and its metadata are added (and a node already finished is announced on the finished
--   stream at once).
local prefix, now, n = ARGV[1], ARGV[2], tonumber(ARGV[3])
local out = {}
local counts = {}
local function bump(state, by) counts[state] = (counts[state] or 0) + by end
local F = 11
for i = 0, n - 1 do
  local b = 4 + i * F
  local id, fn, args, inputs, name, root = ARGV[b], ARGV[b+1], ARGV[b+2], ARGV[b+3], ARGV[b+4], ARGV[b+5]
  local t = prefix .. 't:' .. id
  local st = redis.call('HGET', t, 'st')
  if st then
    if root == '1' and redis.call('HGET', t, 'root') ~= '1' then
      redis.call('HSET', t, 'root', '1')
      if ARGV[b+6] ~= '' then redis.call('HSET', t, 'md', ARGV[b+6]) end
      if st == 'done' or st == 'failed' then
        redis.call('XADD', KEYS[4], '*', 't', id, 'g', redis.call('HGET', t, 'g') or '0')
      else
        bump('open', 1)
      end
    end
    out[#out + 1] = st
  else
    local pend, failed_input = 0, nil
    if inputs ~= '' then
      for dep in string.gmatch(inputs, '[^,]+') do
        local dst = redis.call('HGET', prefix .. 't:' .. dep, 'st')
        if dst == 'failed' then
          failed_input = failed_input or dep
        elseif dst ~= 'done' then
          -- waiting, ready or running (or not written yet: impossible, inputs come first)
          redis.call('SADD', prefix .. 'd:' .. dep, id)
          pend = pend + 1
        end
      end
    end
    local fields = {'fn', fn, 'a', args, 'in', inputs, 'name', name, 'ct', now, 'n', 0, 'g', 0,
                    'ma', ARGV[b+8]}
    if root == '1' then fields[#fields+1] = 'root'; fields[#fields+1] = '1' end
    if ARGV[b+6] ~= '' then fields[#fields+1] = 'md'; fields[#fields+1] = ARGV[b+6] end
    if ARGV[b+7] ~= '' then fields[#fields+1] = 'to'; fields[#fields+1] = ARGV[b+7] end
    if ARGV[b+9] ~= '' then fields[#fields+1] = 'key'; fields[#fields+1] = ARGV[b+9] end
    if ARGV[b+10] ~= '' then fields[#fields+1] = 'rp'; fields[#fields+1] = ARGV[b+10] end
    if failed_input then
      -- an input failed before this node was scheduled: fail it the way complete.lua would
      local why = redis.call('HGET', prefix .. 't:' .. failed_input, 'why') or 'failed'
      for _, v in ipairs({'st', 'failed', 'up', failed_input, 't1', now,
                          'why', 'input task ' .. failed_input .. ' failed: ' .. why}) do
        fields[#fields+1] = v
      end
      redis.call('HSET', t, unpack(fields))
      redis.call('ZADD', prefix .. 'failed', now, id)
      bump('failed', 1)
      if root == '1' then redis.call('XADD', KEYS[4], '*', 't', id, 'g', '0') end
      out[#out + 1] = 'failed'
    else
      -- waiting for inputs, or ready at once (on the stream)
      local state = pend > 0 and 'waiting' or 'ready'
      fields[#fields+1] = 'st'; fields[#fields+1] = state
      if pend > 0 then
        fields[#fields+1] = 'pend'; fields[#fields+1] = pend
      else
        fields[#fields+1] = 'sid'; fields[#fields+1] = redis.call('XADD', KEYS[1], '*', 't', id)
      end
      redis.call('HSET', t, unpack(fields))
      redis.call('ZADD', KEYS[3], now, id)
      bump(state, 1)
      if root == '1' then bump('open', 1) end
      out[#out + 1] = state
    end
  end
end
for state, by in pairs(counts) do redis.call('HINCRBY', KEYS[2], state, by) end
-- last: the finished stream's newest id, so a waiter can block from here without a first look
local last = redis.call('XREVRANGE', KEYS[4], '+', '-', 'COUNT', 1)[1]
out[#out + 1] = last and last[1] or '0-0'
return out
