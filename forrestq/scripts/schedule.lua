-- schedule: create DAG nodes (inputs before dependents) and push the ready ones onto the stream.
-- KEYS[1] stream   (stream)  ready task ids
-- KEYS[2] counts   (hash)    state -> number of nodes; roots: COUNT_OPEN unfinished, COUNT_ROOTS_DONE,
--                            COUNT_ROOTS_FAILED
-- KEYS[3] todo     (zset)    waiting task ids by creation time
-- KEYS[4] finished (stream)  finished roots
-- KEYS[5] failed   (zset)    failed task ids by finish time: a node whose input failed before it was
--                            scheduled is failed at once
-- KEYS[6] delayed  (zset)    SCHEDULED task ids by the server-clock time they are due (a node with a due
--                            time still ahead and no input to wait for goes here, not on the stream)
-- ARGV[1] queue key prefix "fq:{q}:"   ARGV[2] now (s)   ARGV[3] number of nodes
-- ARGV[4..] per node, NODE_FIELDS (include/nodes.lua, 19) fields: id, fn sha, args blob, inputs ("a,b,c" or ""), name, root ("1"/""),
--           metadata blob, timeout, max attempts, key, retry policy blob, io-bound ("1"/""), soft timeout,
--           resources (forrestq.resources text form, "" = cpus=1), allow-failed ("1"/"": a failed input
--           counts as finished, see include/nodes.lua), due ("" = at once, "+S" = S s from now by the
--           server's clock (TIME), else a server-clock time; include/nodes.lua), result TTL (s; "" = the
--           queue's default, "0" = none; on a root only: include/nodes.lua), limit keys, priority ("" = 0,
--           else 1..PRIORITY_MAX: on that level's stream, include/stream.lua)
-- Returns, per node, its state after the call, then the newest id of the finished stream. An existing
--   node is left as it is (a shared node runs once), except that a root flag and its metadata are
--   added (and a node already finished is announced on the finished stream at once).
-- Events: EVENT_SCHEDULED (name) per new node; EVENT_FAILED (reason) after it when an input had failed.
--- @include stream
--- @include counts
--- @include finished
--- @include upstream
--- @include events
--- @include delayed
--- @include nodes
local prefix, now, n = ARGV[1], ARGV[2], tonumber(ARGV[3])
local emit = event_writer(prefix)
local out = write_nodes(prefix, now, n, 4, KEYS, emit, nil)  -- KEYS: stream, counts, todo, finished, failed, delayed
-- last: the finished stream's newest id, so a waiter can block from here without a first look
local last = redis.call('XREVRANGE', KEYS[4], '+', '-', 'COUNT', 1)[1]
out[#out + 1] = last and last[1] or '0-0'
return out
