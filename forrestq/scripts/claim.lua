-- claim: take one ready task for this consumer, set its lease, return what the child needs to run it.
-- KEYS[1] stream (stream)   KEYS[2] counts (hash)   KEYS[3] delayed (zset): SCHEDULED tasks due by the
--                                                    server's clock (TIME) are moved onto the stream first
-- ARGV[1] queue key prefix   ARGV[2] group   ARGV[3] consumer   ARGV[4] token (fencing, new per claim)
-- ARGV[5] lease ms   ARGV[6] host   ARGV[7] worker id   ARGV[8] now (s, the worker's clock: TASK_STARTED; ""
--         = the server's clock, for a claim sent before a blocking read that may last)
-- ARGV[9] stream entry id already delivered to this consumer by XREADGROUP, or "" to read one here: from the
--         streams of the priority levels above 0, highest first, then KEYS[1] (include/stream.lua); or
--         CLAIM_DELIVERED: the entries of KEYS[1] a blocking XREADGROUP of this consumer delivered just
--         before (sent in the same pipeline, so no round trip lies between): its pending entries whose task
--         is still ready under them are claimed first (those of its running tasks are left as they are)
-- ARGV[10] (optional) how many tasks to claim at most, "1" if absent: with more, the n-th one claimed (from 1)
--         is fenced by the token ARGV[4] .. TOKEN_SEP .. n (the first by ARGV[4] itself), and the reply is
--         the list of the claims (each as below; empty when there is nothing to run). While the queue has
--         priority levels in use, one task only (in that list): claimed ahead, a task of a lower level
--         would start before a higher one scheduled meanwhile
-- ARGV[11] (optional) "1": a claim ahead of the child's turn (made while its task runs): nothing is claimed
--         while the queue has priority levels in use, for the reason above
-- Returns nil when there is nothing to run; {CLAIM_SKIP} when the given entry was stale (acked, deleted);
-- else {id, entry id, fn sha, args, timeout, attempts, max attempts, retry policy, retries used,
--       io-bound ("1"/""), soft timeout, resources ("" = cpus=1), resource hand-backs so far, limit keys ("a,b"; "" = none), input results...}
--   For an allow-failed task (TASK_ALLOW_FAILED), a failed input's result is INPUT_FAILED .. its id, then
--   INPUT_SEP, the id of the input that failed first ("" = itself), INPUT_SEP, the error blob's length,
--   INPUT_SEP, the error blob and its reason (forrestq.codec.load_input).
--- @include stream
--- @include counts
--- @include events
--- @include delayed
local prefix, group, consumer = ARGV[1], ARGV[2], ARGV[3]
local sid, most = ARGV[9], tonumber(ARGV[10] or '1')
local claims, token = {}, ARGV[4]
local started_at = ARGV[8] ~= '' and ARGV[8] or tostring(server_now())
promote_due(prefix, KEYS[1], KEYS[2], KEYS[3], server_now(), 16)
local levels = redis.call('EXISTS', KEYS[1] .. STREAM_LEVELS) == 1
if ARGV[11] == '1' and levels then
  if most == 1 then return nil end
  return claims
end
local cap = (most > 1 and levels) and 1 or most
local emit = event_writer(prefix)
local started = 0  -- tasks moved from READY to RUNNING: counted once, at the end
local function counted(reply)
  if started > 0 then
    redis.call('HINCRBY', KEYS[2], READY, -started)
    redis.call('HINCRBY', KEYS[2], RUNNING, started)
  end
  return reply
end
-- entries of the stream read at once (as many as claims are still wanted: none is left delivered unclaimed)
-- (at most 100 + most reads, so that a stream full of stale entries cannot hold the server up for long)
local batch, next_entry, reads = {}, 1, 0
local delivered = sid == CLAIM_DELIVERED
if delivered then
  sid = ''
  local got = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', 100, 'STREAMS', KEYS[1], '0')
  batch = got and got[1][2] or {}
end
while true do
  local tid
  if sid == '' then
    local entry = batch[next_entry]
    if entry then
      next_entry = next_entry + 1
    else
      reads = reads + 1
      if delivered or reads > 100 + most then break end  -- delivered: what was delivered only
      entry = levels and read_levels(KEYS[1], group, consumer)  -- priorities: the highest level above 0 first
      if not entry then
        local got = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', cap - #claims, 'STREAMS', KEYS[1], '>')
        if not got then break end
        batch, next_entry = got[1][2], 2
        entry = batch[1]
      end
    end
    sid = entry[1]
    tid = entry[2] and entry_task(entry)  -- (a pending entry deleted meanwhile has no fields)
  else
    tid = entry_task(redis.call('XRANGE', KEYS[1], sid, sid)[1])
  end
  local t = tid and (prefix .. SUFFIX_TASK .. tid)
  -- one read of everything the claim checks and returns (a no-op's record is read once, written once)
  local f = t and redis.call('HMGET', t, TASK_FN, TASK_ARGS, TASK_TIMEOUT, TASK_MAX_ATTEMPTS, TASK_INPUTS,
                             TASK_RETRY_POLICY, TASK_RETRIES_USED, TASK_IO_BOUND, TASK_SOFT_TIMEOUT,
                             TASK_RESOURCES, TASK_WAITS, TASK_ALLOW_FAILED, TASK_LIMITS, TASK_STATE,
                             TASK_STREAM_ID, TASK_ATTEMPTS)
  if f and f[14] == READY and f[15] == sid then
    local n = (tonumber(f[16]) or 0) + 1
    redis.call('HSET', t, TASK_STATE, RUNNING, TASK_TOKEN, token, TASK_STARTED, started_at, TASK_HOST, ARGV[6],
               TASK_WORKER, ARGV[7], TASK_ATTEMPTS, n)
    redis.call('SET', prefix .. SUFFIX_LEASE .. tid, token, 'PX', ARGV[5])
    started = started + 1
    emit(EVENT_STARTED, tid, EVENT_HOST, ARGV[6], EVENT_ATTEMPT, tostring(n))
    local out = {tid, sid, f[1], f[2], f[3] or '', n, f[4] or DEFAULT_MAX_ATTEMPTS, f[6] or '', f[7] or '0', f[8] or '',
                 f[9] or '', f[10] or '', f[11] or '0', f[13] or ''}
    if f[5] and f[5] ~= '' then
      for dep in string.gmatch(f[5], '[^,]+') do
        local d = prefix .. SUFFIX_TASK .. dep
        if f[12] == '1' and redis.call('HGET', d, TASK_STATE) == FAILED then
          local g = redis.call('HMGET', d, TASK_UPSTREAM, TASK_ERROR, TASK_REASON)
          local err = g[2] or ''
          out[#out + 1] = INPUT_FAILED .. dep .. INPUT_SEP .. (g[1] or '') .. INPUT_SEP .. #err .. INPUT_SEP .. err ..
                          (g[3] or FAILED)
        else
          out[#out + 1] = redis.call('HGET', d, TASK_RESULT) or ''
        end
      end
    end
    if most == 1 then return counted(out) end
    claims[#claims + 1] = out
    if #claims >= cap then return counted(claims) end
    token = ARGV[4] .. TOKEN_SEP .. (#claims + 1)
  elseif delivered and f and f[14] == RUNNING and f[15] == sid then
    -- a pending entry of a task this consumer runs (or ran, its end not recorded yet): not this claim's
  else
    -- stale entry (task cancelled, cleaned, or re-added under a newer entry): drop it
    drop_entry(KEYS[1], group, sid)
    if ARGV[9] ~= '' and not delivered and #claims == 0 then return {CLAIM_SKIP} end
  end
  sid = ''
end
if most == 1 then return nil end
return counted(claims)
