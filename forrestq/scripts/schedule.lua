-- schedule: create DAG nodes (inputs before dependents) and push the ready ones onto the stream.
-- KEYS[1] stream   (stream)  ready task ids
-- KEYS[2] counts   (hash)    state -> number of nodes; roots: COUNT_OPEN unfinished, COUNT_ROOTS_DONE,
--                            COUNT_ROOTS_FAILED
-- KEYS[3] todo     (zset)    unfinished task ids by creation time
-- KEYS[4] finished (stream)  finished roots
-- KEYS[5] failed   (zset)    failed task ids by finish time: a node whose input failed before it was
--                            scheduled is failed at once
-- ARGV[1] queue key prefix "fq:{q}:"   ARGV[2] now (s)   ARGV[3] number of nodes
-- ARGV[4..] per node, 14 fields: id, fn sha, args blob, inputs ("a,b,c" or ""), name, root ("1"/""),
--           metadata blob, timeout, max attempts, key, retry policy blob, io-bound ("1"/""), soft timeout,
--           resources (forrestq.resources text form, "" = cpus=1)
-- Returns, per node, its state after the call, then the newest id of the finished stream. An existing
--   node is left as it is (a shared node runs once), except that a root flag and its metadata are
--   added (and a node already finished is announced on the finished stream at once).
-- Events: EVENT_SCHEDULED (name) per new node; EVENT_FAILED (reason) after it when an input had failed.
--- @include stream
--- @include counts
--- @include finished
--- @include upstream
--- @include events
local prefix, now, n = ARGV[1], ARGV[2], tonumber(ARGV[3])
local emit = event_writer(prefix)
local out = {}
local counts = {}
local function bump(state, by) counts[state] = (counts[state] or 0) + by end
local F = 14
for i = 0, n - 1 do
  local b = 4 + i * F
  local id, fn, args, inputs, name, root = ARGV[b], ARGV[b+1], ARGV[b+2], ARGV[b+3], ARGV[b+4], ARGV[b+5]
  local t = prefix .. SUFFIX_TASK .. id
  local st = redis.call('HGET', t, TASK_STATE)
  if st then
    if root == '1' and redis.call('HGET', t, TASK_ROOT) ~= '1' then
      redis.call('HSET', t, TASK_ROOT, '1')
      if ARGV[b+6] ~= '' then redis.call('HSET', t, TASK_META, ARGV[b+6]) end
      if st == DONE or st == FAILED then
        announce(KEYS[4], id, redis.call('HGET', t, TASK_GEN))
        bump(root_count(st), 1)
      else
        bump(COUNT_OPEN, 1)
      end
    end
    out[#out + 1] = st
  else
    local pend, failed_input = 0, nil
    if inputs ~= '' then
      for dep in string.gmatch(inputs, '[^,]+') do
        local dst = redis.call('HGET', prefix .. SUFFIX_TASK .. dep, TASK_STATE)
        if dst == FAILED then
          failed_input = failed_input or dep
        elseif dst ~= DONE then
          -- waiting, ready or running (or not written yet: impossible, inputs come first)
          redis.call('SADD', prefix .. SUFFIX_DEPENDENTS .. dep, id)
          pend = pend + 1
        end
      end
    end
    local fields = {TASK_FN, fn, TASK_ARGS, args, TASK_INPUTS, inputs, TASK_NAME, name, TASK_CREATED, now,
                    TASK_ATTEMPTS, 0, TASK_GEN, 0, TASK_MAX_ATTEMPTS, ARGV[b+8]}
    if root == '1' then fields[#fields+1] = TASK_ROOT; fields[#fields+1] = '1' end
    if ARGV[b+6] ~= '' then fields[#fields+1] = TASK_META; fields[#fields+1] = ARGV[b+6] end
    if ARGV[b+7] ~= '' then fields[#fields+1] = TASK_TIMEOUT; fields[#fields+1] = ARGV[b+7] end
    if ARGV[b+9] ~= '' then fields[#fields+1] = TASK_KEY; fields[#fields+1] = ARGV[b+9] end
    if ARGV[b+10] ~= '' then fields[#fields+1] = TASK_RETRY_POLICY; fields[#fields+1] = ARGV[b+10] end
    if ARGV[b+11] == '1' then fields[#fields+1] = TASK_IO_BOUND; fields[#fields+1] = '1' end
    if ARGV[b+12] ~= '' then fields[#fields+1] = TASK_SOFT_TIMEOUT; fields[#fields+1] = ARGV[b+12] end
    if ARGV[b+13] ~= '' then fields[#fields+1] = TASK_RESOURCES; fields[#fields+1] = ARGV[b+13] end
    if failed_input then
      -- an input failed before this node was scheduled: fail it the way complete.lua would
      local failure = failure_after(prefix, failed_input, now)
      for _, v in ipairs(failure) do fields[#fields+1] = v end
      redis.call('HSET', t, unpack(fields))
      emit(EVENT_SCHEDULED, id, EVENT_NAME, name)
      emit(EVENT_FAILED, id, EVENT_REASON, failure[6])  -- failure: HSET pairs, the 3rd one TASK_REASON
      redis.call('ZADD', KEYS[5], now, id)
      bump(FAILED, 1)
      if root == '1' then
        announce(KEYS[4], id, '0')
        bump(COUNT_ROOTS_FAILED, 1)
      end
      out[#out + 1] = FAILED
    else
      -- waiting for inputs, or ready at once (on the stream)
      local state = pend > 0 and WAITING or READY
      fields[#fields+1] = TASK_STATE; fields[#fields+1] = state
      if pend > 0 then
        fields[#fields+1] = TASK_PENDING; fields[#fields+1] = pend
      else
        fields[#fields+1] = TASK_STREAM_ID; fields[#fields+1] = push_entry(KEYS[1], id)
      end
      redis.call('HSET', t, unpack(fields))
      emit(EVENT_SCHEDULED, id, EVENT_NAME, name)
      redis.call('ZADD', KEYS[3], now, id)
      bump(state, 1)
      if root == '1' then bump(COUNT_OPEN, 1) end
      out[#out + 1] = state
    end
  end
end
for state, by in pairs(counts) do redis.call('HINCRBY', KEYS[2], state, by) end
-- last: the finished stream's newest id, so a waiter can block from here without a first look
local last = redis.call('XREVRANGE', KEYS[4], '+', '-', 'COUNT', 1)[1]
out[#out + 1] = last and last[1] or '0-0'
return out
