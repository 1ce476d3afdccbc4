-- include nodes: write DAG nodes, inputs before dependents, and push the ready ones onto the stream
-- (schedule.lua; complete.lua for the tree a task returned, its continuation). Needs the stream,
-- counts, finished, upstream, events and delayed includes before it.
-- write_nodes(prefix, now, n, b, keys, emit, extra): `n` nodes from ARGV[b..], NODE_FIELDS each: id, fn sha,
--   args blob, inputs ("a,b,c" or ""), name, root ("1"/""), metadata blob, timeout, max attempts, key, retry
--   policy blob, io-bound ("1"/""), soft timeout, resources (forrestq.resources text form, "" = cpus=1),
--   allow-failed ("1"/""), due ("" = at once; "+S": S seconds from now by the server's clock; else the
--   server-clock time: kept as TASK_DUE, and a node with nothing to wait for is SCHEDULED in the delayed zset
--   until then), result TTL (s, on a root: TASK_RESULT_TTL, see complete.lua; "" = the queue's default, the
--   string at prefix .. SUFFIX_RESULT_TTL, read once per call and only for a new root; "0" = none), limit keys ("a,b": TASK_LIMITS, limit_acquire.lua; "" = none),
--   priority ("" = 0; 1..PRIORITY_MAX: TASK_PRIORITY, its entries on that level's stream, include/stream.lua). keys: {stream, counts, todo, finished, failed, delayed} keys. `extra`: HSET pairs added to
--   every new node (nil: none). Returns the list of each node's state after the call.
-- An existing node is left as it is (a shared node runs once), except that a root flag and its metadata
-- are added (and a node already finished is announced on the finished stream at once). A node whose
-- input failed before it was written fails at once, unless it is allow-failed: then a failed input
-- counts as finished. Events: EVENT_SCHEDULED (name) per new node; EVENT_FAILED (reason) after it when
-- an input had failed.
local NODE_FIELDS = 19
local function write_nodes(prefix, now, n, first, keys, emit, extra)
  local out, counts, clock, qttl = {}, {}, nil, nil
  local function bump(state, by) counts[state] = (counts[state] or 0) + by end
  for i = 0, n - 1 do
    local b = first + i * NODE_FIELDS
    local id, fn, args, inputs, name, root = ARGV[b], ARGV[b+1], ARGV[b+2], ARGV[b+3], ARGV[b+4], ARGV[b+5]
    local allow = ARGV[b+14] == '1'
    local t = prefix .. SUFFIX_TASK .. id
    local st = redis.call('HGET', t, TASK_STATE)
    if st then
      if root == '1' and redis.call('HGET', t, TASK_ROOT) ~= '1' then
        redis.call('HSET', t, TASK_ROOT, '1')
        if ARGV[b+6] ~= '' then redis.call('HSET', t, TASK_META, ARGV[b+6]) end
        if st == DONE or st == FAILED then
          announce(keys[4], id, redis.call('HGET', t, TASK_GEN))
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
            if not allow then failed_input = failed_input or dep end  -- allow-failed: a finished input
          elseif dst ~= DONE then
            -- waiting, ready or running (or not written yet: impossible, inputs come first)
            redis.call('SADD', prefix .. SUFFIX_DEPENDENTS .. dep, id)
            pend = pend + 1
          end
        end
      end
      -- only what differs from the defaults every reader assumes (no inputs, attempt 0, generation 0,
      -- DEFAULT_MAX_ATTEMPTS): a queued no-op's record is what a queue's memory is made of
      local fields = {TASK_FN, fn, TASK_ARGS, args, TASK_NAME, name, TASK_CREATED, now}
      if inputs ~= '' then fields[#fields+1] = TASK_INPUTS; fields[#fields+1] = inputs end
      if ARGV[b+8] ~= DEFAULT_MAX_ATTEMPTS then fields[#fields+1] = TASK_MAX_ATTEMPTS; fields[#fields+1] = ARGV[b+8] end
      if root == '1' then
        fields[#fields+1] = TASK_ROOT; fields[#fields+1] = '1'
        local ttl = ARGV[b+16]
        if ttl == '' then
          qttl = qttl or redis.call('GET', prefix .. SUFFIX_RESULT_TTL) or ''
          ttl = qttl
        end
        if ttl ~= '' and ttl ~= '0' then fields[#fields+1] = TASK_RESULT_TTL; fields[#fields+1] = ttl end
      end
      if ARGV[b+6] ~= '' then fields[#fields+1] = TASK_META; fields[#fields+1] = ARGV[b+6] end
      if ARGV[b+7] ~= '' then fields[#fields+1] = TASK_TIMEOUT; fields[#fields+1] = ARGV[b+7] end
      if ARGV[b+9] ~= '' then fields[#fields+1] = TASK_KEY; fields[#fields+1] = ARGV[b+9] end
      if ARGV[b+10] ~= '' then fields[#fields+1] = TASK_RETRY_POLICY; fields[#fields+1] = ARGV[b+10] end
      if ARGV[b+11] == '1' then fields[#fields+1] = TASK_IO_BOUND; fields[#fields+1] = '1' end
      if ARGV[b+12] ~= '' then fields[#fields+1] = TASK_SOFT_TIMEOUT; fields[#fields+1] = ARGV[b+12] end
      if ARGV[b+13] ~= '' then fields[#fields+1] = TASK_RESOURCES; fields[#fields+1] = ARGV[b+13] end
      if ARGV[b+17] ~= '' then fields[#fields+1] = TASK_LIMITS; fields[#fields+1] = ARGV[b+17] end
      if allow then fields[#fields+1] = TASK_ALLOW_FAILED; fields[#fields+1] = '1' end
      if ARGV[b+18] ~= '' then fields[#fields+1] = TASK_PRIORITY; fields[#fields+1] = ARGV[b+18] end
      local due = ARGV[b+15]
      if due ~= '' then  -- a delay is counted from now on the server's clock, whatever the producer's says
        clock = clock or server_now()
        due = string.sub(due, 1, 1) == '+' and clock + tonumber(string.sub(due, 2)) or tonumber(due)
        fields[#fields+1] = TASK_DUE; fields[#fields+1] = tostring(due)
      else
        due = nil
      end
      if extra then for _, v in ipairs(extra) do fields[#fields+1] = v end end
      if failed_input then
        -- an input failed before this node was written: fail it the way complete.lua would
        local failure = failure_after(prefix, failed_input, now)
        for _, v in ipairs(failure) do fields[#fields+1] = v end
        redis.call('HSET', t, unpack(fields))
        emit(EVENT_SCHEDULED, id, EVENT_NAME, name)
        emit(EVENT_FAILED, id, EVENT_REASON, failure[6])  -- failure: HSET pairs, the 3rd one TASK_REASON
        redis.call('ZADD', keys[5], now, id)
        bump(FAILED, 1)
        if root == '1' then
          announce(keys[4], id, '0')
          bump(COUNT_ROOTS_FAILED, 1)
        end
        out[#out + 1] = FAILED
      else
        -- waiting for inputs, scheduled for later (in the delayed zset), or ready at once (on the stream)
        local state = pend > 0 and WAITING or (due and due > clock) and SCHEDULED or READY
        fields[#fields+1] = TASK_STATE; fields[#fields+1] = state
        if pend > 0 then
          fields[#fields+1] = TASK_PENDING; fields[#fields+1] = pend
        elseif state == SCHEDULED then
          redis.call('ZADD', keys[6], due, id)
        else
          fields[#fields+1] = TASK_STREAM_ID; fields[#fields+1] = push_entry(keys[1], id, ARGV[b+18])
        end
        redis.call('HSET', t, unpack(fields))
        emit(EVENT_SCHEDULED, id, EVENT_NAME, name)
        if state == WAITING then redis.call('ZADD', keys[3], now, id) end  -- else its entry or the delayed zset
        bump(state, 1)
        if root == '1' then bump(COUNT_OPEN, 1) end
        out[#out + 1] = state
      end
    end
  end
  for state, by in pairs(counts) do redis.call('HINCRBY', keys[2], state, by) end
  return out
end
