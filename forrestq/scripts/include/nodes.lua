-- include nodes: write DAG nodes, inputs before dependents, and push the ready ones onto the stream
-- (schedule.lua; complete.lua for the tree a task returned, its continuation; periodic_tick.lua). Needs the
-- stream, counts, finished, upstream, events and delayed includes before it.
-- write_nodes(prefix, now, n, b, keys, emit, extra, qttl): `n` nodes from ARGV[b..], laid out as
--   ARGV[b .. b+NODE_OPTIONS-1]: the call's node options, once per call (every node has them unless it
--     brings its own): timeout ("" = none), max attempts, retry policy blob, soft timeout, resources
--     (forrestq.resources text form, "" = cpus=1), due ("" = at once; "+S": S seconds from now by the
--     server's clock; else the server-clock time: kept as TASK_DUE, and a node with nothing to wait for is
--     SCHEDULED in the delayed zset until then), result TTL (s, on a root only: TASK_RESULT_TTL, see
--     complete.lua; "" = the queue's default, the string at prefix .. SUFFIX_RESULT_TTL; "0" = none), limit
--     keys ("a,b": TASK_LIMITS, limit_acquire.lua; "" = none), priority ("" = 0; 1..PRIORITY_MAX:
--     TASK_PRIORITY, its entries on that level's stream, include/stream.lua);
--   then per node NODE_FIELDS fields: id, fn sha, args blob, inputs ("a,b,c" or ""), name, flags (letters,
--     "" = none: NODE_ROOT a root, NODE_IO io-bound, NODE_ALLOW allow-failed, NODE_HAS_META its metadata
--     blob follows, NODE_HAS_KEY its key follows, NODE_HAS_OPTIONS its own NODE_OPTIONS options follow, in
--     place of the call's), then what the flags say
--     follows, in that order (metadata, key, options).
--   keys: {stream, counts, todo, finished, failed, delayed} keys. `extra`: HSET pairs added to every new
--   node (nil: none). `qttl`: the queue's default result TTL as read ("" = none; nil: read here, once and
--   only for a new root). Returns the list of each node's state after the call.
-- An existing node is left as it is (a shared node runs once), except that a root flag and its metadata
-- are added (and a node already finished is announced on the finished stream at once). Whether the nodes
-- exist is asked once per EXISTS_BATCH nodes (EXISTS: none exists, the common case, then no node is read;
-- a call of fewer than EXISTS_MIN nodes reads each);
-- a node written earlier in the call (an input, a shared node named twice) is known without a read. A node
-- whose input failed before it was written fails at once, unless it is allow-failed: then a failed input
-- counts as finished. Events: EVENT_SCHEDULED (name) per new node; EVENT_FAILED (reason) after it when
-- an input had failed.
local NODE_FIELDS, NODE_OPTIONS, EXISTS_BATCH, EXISTS_MIN = 6, 9, 500, 4
local function option_pairs(o)  -- the HSET pairs of the options at ARGV[o..] but due and result TTL
  local f = {}
  if ARGV[o+1] ~= DEFAULT_MAX_ATTEMPTS then f[#f+1] = TASK_MAX_ATTEMPTS; f[#f+1] = ARGV[o+1] end
  if ARGV[o] ~= '' then f[#f+1] = TASK_TIMEOUT; f[#f+1] = ARGV[o] end
  if ARGV[o+2] ~= '' then f[#f+1] = TASK_RETRY_POLICY; f[#f+1] = ARGV[o+2] end
  if ARGV[o+3] ~= '' then f[#f+1] = TASK_SOFT_TIMEOUT; f[#f+1] = ARGV[o+3] end
  if ARGV[o+4] ~= '' then f[#f+1] = TASK_RESOURCES; f[#f+1] = ARGV[o+4] end
  if ARGV[o+7] ~= '' then f[#f+1] = TASK_LIMITS; f[#f+1] = ARGV[o+7] end
  if ARGV[o+8] ~= '' then f[#f+1] = TASK_PRIORITY; f[#f+1] = ARGV[o+8] end
  return f
end
local function node_flags(j)  -- the node at ARGV[j]: root, io-bound, allow-failed, metadata, key, options
  -- index (nil: the call's), and the index of the next node
  local flags, x = ARGV[j+5], j + NODE_FIELDS
  if flags == '' then return false, false, false, '', '', nil, x end
  if flags == NODE_ROOT then return true, false, false, '', '', nil, x end
  local find, meta, key, o = string.find, '', '', nil
  if find(flags, NODE_HAS_META, 1, true) then meta = ARGV[x]; x = x + 1 end
  if find(flags, NODE_HAS_KEY, 1, true) then key = ARGV[x]; x = x + 1 end
  if find(flags, NODE_HAS_OPTIONS, 1, true) then o = x; x = x + NODE_OPTIONS end
  return find(flags, NODE_ROOT, 1, true) ~= nil, find(flags, NODE_IO, 1, true) ~= nil, find(flags, NODE_ALLOW, 1, true) ~= nil,
         meta, key, o, x
end
local function fresh_batches(prefix, n, j)  -- per EXISTS_BATCH nodes from ARGV[j]: true when none exists
  local fresh, batch = {}, {}
  for i = 1, n do
    batch[#batch + 1] = prefix .. SUFFIX_TASK .. ARGV[j]
    if #batch == EXISTS_BATCH or i == n then
      fresh[#fresh + 1] = redis.call('EXISTS', unpack(batch)) == 0
      batch = {}
    end
    j = select(7, node_flags(j))
  end
  return fresh
end
local function write_root(prefix, now, first, keys, emit, qttl)
  -- write_nodes for its common case, one call's lone node: a new root (flags exactly NODE_ROOT), no inputs,
  -- no due time, no extra pairs (schedule.lua). The same record, events and counts, with fewer tables and
  -- calls. Returns its state, or nil (nothing written) when it does not apply: then call write_nodes.
  local j = first + NODE_OPTIONS
  if ARGV[j+5] ~= NODE_ROOT or ARGV[j+3] ~= '' or ARGV[first+5] ~= '' then return nil end
  local id = ARGV[j]
  local t = prefix .. SUFFIX_TASK .. id
  if redis.call('EXISTS', t) == 1 then return nil end  -- an existing node: write_nodes knows what to do
  local fields = {TASK_FN, ARGV[j+1], TASK_ARGS, ARGV[j+2], TASK_NAME, ARGV[j+4], TASK_CREATED, now}
  for _, v in ipairs(option_pairs(first)) do fields[#fields+1] = v end
  fields[#fields+1] = TASK_ROOT; fields[#fields+1] = '1'
  local ttl = ARGV[first+6]
  if ttl == '' then ttl = qttl end
  if ttl ~= '' and ttl ~= '0' then fields[#fields+1] = TASK_RESULT_TTL; fields[#fields+1] = ttl end
  fields[#fields+1] = TASK_STATE; fields[#fields+1] = READY
  fields[#fields+1] = TASK_STREAM_ID; fields[#fields+1] = push_entry(keys[1], id, ARGV[first+8])
  redis.call('HSET', t, unpack(fields))
  emit(EVENT_SCHEDULED, id, EVENT_NAME, ARGV[j+4])
  redis.call('HINCRBY', keys[2], READY, 1)
  redis.call('HINCRBY', keys[2], COUNT_OPEN, 1)
  return READY
end
local function write_nodes(prefix, now, n, first, keys, emit, extra, qttl)
  local out, counts, known = {}, {}, {}  -- known: id -> state, of the nodes of this call
  local function bump(state, by) counts[state] = (counts[state] or 0) + by end
  local defaults, clock = option_pairs(first), nil
  local function due_of(o)  -- the due time of the options at ARGV[o] (nil: at once), as a number
    local due = ARGV[o+5]
    if due == '' then return nil end
    clock = clock or server_now()  -- a delay is counted from now on the server's clock, whatever the producer's
    return string.sub(due, 1, 1) == '+' and clock + tonumber(string.sub(due, 2)) or tonumber(due)
  end
  local ddue = due_of(first)
  local j, x = first + NODE_OPTIONS, nil
  local fresh = n >= EXISTS_MIN and fresh_batches(prefix, n, j)  -- false: a few nodes, each read
  for i = 1, n do
    local id, fn, args, inputs, name = ARGV[j], ARGV[j+1], ARGV[j+2], ARGV[j+3], ARGV[j+4]
    local root, io, allow, meta, key, o
    root, io, allow, meta, key, o, x = node_flags(j)
    j = x
    local t = prefix .. SUFFIX_TASK .. id
    local st = known[id]
    if st == nil and not (fresh and fresh[math.floor((i - 1) / EXISTS_BATCH) + 1]) then
      st = redis.call('HGET', t, TASK_STATE)
    end
    if st then
      if root and redis.call('HGET', t, TASK_ROOT) ~= '1' then
        redis.call('HSET', t, TASK_ROOT, '1')
        if meta ~= '' then redis.call('HSET', t, TASK_META, meta) end
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
          local dst = known[dep]
          if dst == nil then dst = redis.call('HGET', prefix .. SUFFIX_TASK .. dep, TASK_STATE) end
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
      for _, v in ipairs(o and option_pairs(o) or defaults) do fields[#fields+1] = v end
      if root then
        fields[#fields+1] = TASK_ROOT; fields[#fields+1] = '1'
        local ttl = ARGV[(o or first) + 6]
        if ttl == '' then
          qttl = qttl or redis.call('GET', prefix .. SUFFIX_RESULT_TTL) or ''
          ttl = qttl
        end
        if ttl ~= '' and ttl ~= '0' then fields[#fields+1] = TASK_RESULT_TTL; fields[#fields+1] = ttl end
      end
      if meta ~= '' then fields[#fields+1] = TASK_META; fields[#fields+1] = meta end
      if key ~= '' then fields[#fields+1] = TASK_KEY; fields[#fields+1] = key end
      if io then fields[#fields+1] = TASK_IO_BOUND; fields[#fields+1] = '1' end
      if allow then fields[#fields+1] = TASK_ALLOW_FAILED; fields[#fields+1] = '1' end
      local due
      if o then due = due_of(o) else due = ddue end
      if due then fields[#fields+1] = TASK_DUE; fields[#fields+1] = tostring(due) end
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
        if root then
          announce(keys[4], id, '0')
          bump(COUNT_ROOTS_FAILED, 1)
        end
        st = FAILED
      else
        -- waiting for inputs, scheduled for later (in the delayed zset), or ready at once (on the stream)
        st = pend > 0 and WAITING or (due and due > clock) and SCHEDULED or READY
        fields[#fields+1] = TASK_STATE; fields[#fields+1] = st
        if pend > 0 then
          fields[#fields+1] = TASK_PENDING; fields[#fields+1] = pend
        elseif st == SCHEDULED then
          redis.call('ZADD', keys[6], due, id)
        else
          fields[#fields+1] = TASK_STREAM_ID; fields[#fields+1] = push_entry(keys[1], id, ARGV[(o or first) + 8])
        end
        redis.call('HSET', t, unpack(fields))
        emit(EVENT_SCHEDULED, id, EVENT_NAME, name)
        if st == WAITING then redis.call('ZADD', keys[3], now, id) end  -- else its entry or the delayed zset
        bump(st, 1)
        if root then bump(COUNT_OPEN, 1) end
      end
      out[#out + 1] = st
    end
    known[id] = st
  end
  for state, by in pairs(counts) do redis.call('HINCRBY', keys[2], state, by) end
  return out
end
