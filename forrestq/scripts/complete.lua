-- complete: record a task's end, fenced by its lease token, and release or fail its dependents.
-- KEYS[1] stream (stream)   KEYS[2] counts (hash)   KEYS[3] todo (zset)   KEYS[4] done (zset)
-- KEYS[5] failed (zset)     KEYS[6] finished (stream)   KEYS[7] delayed (zset)
-- KEYS[8] expiry (zset: a root with TASK_RESULT_TTL that finishes goes here, scored by the server-clock time
--         its record expires; expire.lua deletes it then)
-- ARGV[1] queue key prefix   ARGV[2] group; then one block per task end (one call records several: the ends a
--         child's next claim carries), each its length L, then its L fields F[3] .. F[L+2], numbered as below:
-- F[3] task id
-- F[4] token of the attempt; "" = the task was lost: accept only while no lease exists
-- F[5] DONE | FAILED | RETRY (SCHEDULED in KEYS[7] until F[14] s from now by the server's clock,
--         TIME, then ready; the error is kept for show, the progress dropped) | CONTINUED
--         (the task returned a deferred tree, its continuation: F[20] nodes from F[22] as
--         write_nodes takes them (include/nodes.lua: the options, then the nodes), root F[21]; they are written, each marked TASK_OWNER = this task, and the task
--         waits (WAITING, TASK_CONT = the root, a dependent of it) until the root ends, then ends as it did)
-- F[6] result blob   F[7] error blob   F[8] traceback text
-- F[9] reason (one line)   F[10] runtime (s)   F[11] now (s)   F[12] output tail
-- F[13] host of the attempt ("" = unknown: the host recorded at claim stays, e.g. for a cancel)
-- F[14] retry delay (s), with RETRY   F[15] "1": a cancel (its event is EVENT_CANCELLED)
-- F[16] CPU time (s)   F[17] peak resident memory (bytes)   F[18] pid of the attempt ("" =
-- unknown: the figures recorded so far stay)   F[19] Python stack at death ("" = none)
-- Events: EVENT_DONE, EVENT_FAILED (EVENT_CANCELLED), EVENT_RETRIED or EVENT_CONTINUED for the task, after
-- EVENT_LOST when token is ""; EVENT_FAILED for each dependent failed because of it; EVENT_DONE or
-- EVENT_FAILED for each task that waited for it as its continuation's root (and so on up: nested).
-- Dependents: a done node releases the waiting ones whose last input it was; a task waiting for its
-- continuation (TASK_CONT) ends with the root's result or fails naming the node that failed first. A
-- failed node fails its waiting dependents, breadth first, except allow-failed ones (TASK_ALLOW_FAILED):
-- for them it counts as a finished input. A released node whose TASK_DUE is still ahead goes to SCHEDULED in
-- KEYS[7] instead of the stream (include/delayed.lua).
-- Stats (include/stats.lua): a DONE or FAILED end that is not a cancel counts for the task's function
-- (TASK_NAME); a sample of its runtime, peak memory and host is kept when F[18] names its pid.
-- The counts, the done/failed/expiry zsets, the leases' deletion, the stream entries' drop and the stats go
-- in one call per key at the end (include/later.lua): a call of several ends costs little more than one.
-- Returns per block, in order: 1 when recorded, 0 when refused (the attempt no longer holds the task: a
-- stale worker).
--- @include stream
--- @include counts
--- @include finished
--- @include upstream
--- @include events
--- @include later
--- @include stats
--- @include delayed
--- @include nodes
local prefix, group = ARGV[1], ARGV[2]
local emit = event_writer(prefix)  -- one for the call: the events cap is read once
local o = 0  -- the block's offset: its field n is ARGV[o + n]
local function complete_one()
  local id, token, outcome, now = ARGV[o + 3], ARGV[o + 4], ARGV[o + 5], ARGV[o + 11]
  local t = prefix .. SUFFIX_TASK .. id
  local lease = prefix .. SUFFIX_LEASE .. id
  local f = redis.call('HMGET', t, TASK_STATE, TASK_TOKEN, TASK_STREAM_ID, TASK_ROOT, TASK_GEN, TASK_HOST,
                       TASK_ATTEMPTS, TASK_NAME, TASK_RESULT_TTL)
  if f[1] ~= RUNNING then return 0 end
  if token == '' then
    if redis.call('EXISTS', lease) == 1 then return 0 end
  elseif f[2] ~= token then
    return 0
  end
  -- the events' host: the caller's, unless the task was lost (then the host it was lost on, from the claim)
  local host, attempt = (token ~= '' and ARGV[o + 13] ~= '') and ARGV[o + 13] or (f[6] or ''), f[7] or '0'
  -- what this attempt leaves on the record whatever its end: host, output tail, CPU and memory, stack
  local function evidence(fields)
    if ARGV[o + 13] ~= '' then fields[#fields+1] = TASK_HOST; fields[#fields+1] = ARGV[o + 13] end
    if ARGV[o + 12] ~= '' then fields[#fields+1] = TASK_OUTPUT; fields[#fields+1] = ARGV[o + 12] end
    if ARGV[o + 18] ~= '' then
      fields[#fields+1] = TASK_CPU; fields[#fields+1] = ARGV[o + 16]
      fields[#fields+1] = TASK_PEAK_RSS; fields[#fields+1] = ARGV[o + 17]
      fields[#fields+1] = TASK_PID; fields[#fields+1] = ARGV[o + 18]
    end
    if ARGV[o + 19] ~= '' then fields[#fields+1] = TASK_STACK; fields[#fields+1] = ARGV[o + 19] end
    return fields
  end
  local result, reason, failure = ARGV[o + 6], ARGV[o + 9], nil  -- failure: HSET pairs, when it fails unrun
  if outcome == CONTINUED then
    local croot = ARGV[o + 21]
    write_nodes(prefix, now, tonumber(ARGV[o + 20]), o + 22, {KEYS[1], KEYS[2], KEYS[3], KEYS[6], KEYS[5], KEYS[7]},
                emit, {TASK_OWNER, id})
    local c = redis.call('HMGET', prefix .. SUFFIX_TASK .. croot, TASK_STATE, TASK_RESULT)
    if c[1] == DONE then  -- the root is a node that had finished already (shared): so does this task, now
      outcome, result = DONE, c[2]
    elseif c[1] == FAILED then
      outcome, failure = FAILED, failure_after(prefix, croot, now)
      reason = failure[6]
    else  -- wait for the root, as its dependent; counted as waiting, still unfinished (a root stays open)
      redis.call('HDEL', t, TASK_RESULT, TASK_ERROR, TASK_TRACEBACK, TASK_REASON, TASK_UPSTREAM, TASK_OUTPUT,
                 TASK_STACK, TASK_STREAM_ID)
      redis.call('HSET', t, unpack(evidence({TASK_STATE, WAITING, TASK_CONT, croot, TASK_PENDING, 1,
                                             TASK_RUNTIME, ARGV[o + 10]})))
      redis.call('SADD', prefix .. SUFFIX_DEPENDENTS .. croot, id)
      redis.call('ZADD', KEYS[3], now, id)  -- off the stream: the todo zset indexes it while it waits
      redis.call('DEL', lease)
      drop_entry(KEYS[1], group, f[3])
      move_count(KEYS[2], RUNNING, WAITING)
      record_stats(prefix, f[8], false, ARGV[o + 10], ARGV[o + 17], ARGV[o + 18], host)
      emit(EVENT_CONTINUED, id, EVENT_HOST, host, EVENT_ATTEMPT, attempt, EVENT_RUNTIME, ARGV[o + 10])
      return 1
    end
  end
  if outcome == RETRY then
    redis.call('HSET', t, TASK_STATE, SCHEDULED, TASK_ERROR, ARGV[o + 7], TASK_TRACEBACK, ARGV[o + 8], TASK_REASON, ARGV[o + 9],
               TASK_RUNTIME, ARGV[o + 10])  -- TASK_TOKEN stays until the next claim: the worker knows its own attempt
    if ARGV[o + 13] ~= '' then redis.call('HSET', t, TASK_HOST, ARGV[o + 13]) end
    redis.call('HINCRBY', t, TASK_RETRIES_USED, 1)
    redis.call('HDEL', t, TASK_STREAM_ID, TASK_PROGRESS)  -- the next attempt starts with no progress
    redis.call('DEL', lease)
    drop_entry(KEYS[1], group, f[3])
    redis.call('ZADD', KEYS[7], server_now() + tonumber(ARGV[o + 14]), id)
    move_count(KEYS[2], RUNNING, SCHEDULED)
    emit(EVENT_RETRIED, id, EVENT_HOST, host, EVENT_ATTEMPT, attempt, EVENT_REASON, ARGV[o + 9], EVENT_RUNTIME,
         ARGV[o + 10], EVENT_DELAY, ARGV[o + 14])
    return 1
  end
  -- a node leaves state `from` for the finished state `to` (DONE or FAILED): counts, zsets, announcement
  -- (ttl: the root's TASK_RESULT_TTL, nil for none; on_stream: it has a stream entry, so it is not in the todo
  -- zset, which indexes the unfinished tasks that have none: forrestq.unfinished); counts and zsets are
  -- written at the call's end (include/later.lua)
  local function finish(node, from, to, root, gen, ttl, on_stream)
    later_add('HINCRBY', KEYS[2], nil, from, -1)
    later_add('HINCRBY', KEYS[2], nil, to, 1)
    if not on_stream then redis.call('ZREM', KEYS[3], node) end
    later_add('ZADD', to == DONE and KEYS[4] or KEYS[5], nil, now, node)
    if root == '1' then
      announce(KEYS[6], node, gen)
      later_add('HINCRBY', KEYS[2], nil, COUNT_OPEN, -1)
      later_add('HINCRBY', KEYS[2], nil, root_count(to), 1)
      if ttl then later_add('ZADD', KEYS[8], nil, server_now() + tonumber(ttl), node) end
    end
  end
  local fields = {TASK_STATE, outcome, TASK_FINISHED, now, TASK_RUNTIME, ARGV[o + 10]}
  if outcome == DONE then
    fields[#fields+1] = TASK_RESULT; fields[#fields+1] = result
  elseif failure then  -- its continuation failed: UpstreamFailed, naming the node that failed first
    for _, v in ipairs(failure) do fields[#fields+1] = v end
  else
    fields[#fields+1] = TASK_ERROR; fields[#fields+1] = ARGV[o + 7]
    fields[#fields+1] = TASK_TRACEBACK; fields[#fields+1] = ARGV[o + 8]
    fields[#fields+1] = TASK_REASON; fields[#fields+1] = ARGV[o + 9]
  end
  evidence(fields)
  if f[7] ~= '1' or f[5] then  -- what an earlier attempt or generation left (a first attempt finds none)
    redis.call('HDEL', t, TASK_RESULT, TASK_ERROR, TASK_TRACEBACK, TASK_REASON, TASK_UPSTREAM, TASK_OUTPUT, TASK_STACK)
  end
  redis.call('HSET', t, unpack(fields))
  later_add('DEL', '', nil, lease)
  if f[3] then  -- its stream entry
    local s, e = entry_stream(KEYS[1], f[3])
    later_add('XDEL', s, group, e)
  end
  finish(id, RUNNING, outcome, f[4], f[5], f[9], f[3])
  if ARGV[o + 15] ~= '1' then record_stats(prefix, f[8], outcome ~= DONE, ARGV[o + 10], ARGV[o + 17], ARGV[o + 18], host) end
  if token == '' then emit(EVENT_LOST, id, EVENT_HOST, host, EVENT_ATTEMPT, attempt) end
  if outcome == DONE then
    emit(EVENT_DONE, id, EVENT_HOST, host, EVENT_ATTEMPT, attempt, EVENT_RUNTIME, ARGV[o + 10])
  else
    emit(ARGV[o + 15] == '1' and EVENT_CANCELLED or EVENT_FAILED, id, EVENT_HOST, host, EVENT_ATTEMPT, attempt,
         EVENT_REASON, reason, EVENT_RUNTIME, ARGV[o + 10])
  end
  if outcome == DONE then
    -- release the waiting dependents; a task waiting for this node as its continuation ends with its result
    local queue, head = {id}, 1
    while head <= #queue do
      local x = queue[head]
      for _, dep in ipairs(redis.call('SMEMBERS', prefix .. SUFFIX_DEPENDENTS .. x)) do
        local d = prefix .. SUFFIX_TASK .. dep
        local g = redis.call('HMGET', d, TASK_STATE, TASK_CONT, TASK_ROOT, TASK_GEN, TASK_RESULT_TTL)
        if g[1] == WAITING and g[2] == x then
          redis.call('HSET', d, TASK_STATE, DONE, TASK_RESULT, result, TASK_FINISHED, now)
          finish(dep, WAITING, DONE, g[3], g[4], g[5])
          emit(EVENT_DONE, dep)
          queue[#queue + 1] = dep
        elseif g[1] == WAITING and not g[2] and redis.call('HINCRBY', d, TASK_PENDING, -1) <= 0 then
          make_ready(KEYS[1], KEYS[2], KEYS[7], KEYS[3], d, dep, WAITING)
        end
      end
      head = head + 1
    end
  else
    -- fail every waiting node downstream, breadth first, naming the node that failed first; an allow-failed
    -- node takes the failure as a finished input; a continued task fails only by its continuation's root
    failure = failure or upstream_failure(id, ARGV[o + 9], now)
    local queue, head = {id}, 1
    while head <= #queue do
      local x = queue[head]
      for _, dep in ipairs(redis.call('SMEMBERS', prefix .. SUFFIX_DEPENDENTS .. x)) do
        local d = prefix .. SUFFIX_TASK .. dep
        local g = redis.call('HMGET', d, TASK_STATE, TASK_ROOT, TASK_GEN, TASK_CONT, TASK_ALLOW_FAILED,
                             TASK_RESULT_TTL)
        if g[1] ~= WAITING or (g[4] and g[4] ~= x) then  -- not waiting, or waiting for another continuation
          -- nothing to do
        elseif g[5] == '1' and not g[4] then
          if redis.call('HINCRBY', d, TASK_PENDING, -1) <= 0 then
            make_ready(KEYS[1], KEYS[2], KEYS[7], KEYS[3], d, dep, WAITING)
          end
        else
          redis.call('HSET', d, unpack(failure))
          finish(dep, WAITING, FAILED, g[2], g[3], g[6])
          emit(EVENT_FAILED, dep, EVENT_REASON, failure[6])  -- failure: HSET pairs, the 3rd one TASK_REASON
          queue[#queue + 1] = dep
        end
      end
      head = head + 1
    end
  end
  return 1
end
if 4 + tonumber(ARGV[3]) > #ARGV then  -- one end: its writes go at once (gathering would cost more)
  o = 1
  return {complete_one()}
end
later_direct = false
local out, i = {}, 3
while i <= #ARGV do
  o = i - 2
  local ok, kept = pcall(complete_one)
  if not ok then  -- the ends before this one keep every write, as if each had gone in a call of its own
    later_write()
    error(kept, 0)
  end
  out[#out + 1] = kept
  i = i + 1 + tonumber(ARGV[i])
end
later_write()
return out
