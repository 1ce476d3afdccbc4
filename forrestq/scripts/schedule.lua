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
-- KEYS[7] signer   (string)  the fingerprint of the producers' secret, SET to ARGV[5] unless that is "" (or it is that)
-- KEYS[8..] the function blobs' keys (fq:{q}:fn:<sha>, content-addressed), ARGV[6] of them: each SET NX to
--                            its blob, ARGV[7..]
-- ARGV[1] queue key prefix "fq:{q}:"   ARGV[2] now (s)   ARGV[3] number of nodes   ARGV[4] "1": return the
--         finished stream's newest id ("" = not wanted: the later chunks of one schedule)
-- ARGV[5] the producer's signer fingerprint ("" = not set here)   ARGV[6] F, the number of function blobs
-- ARGV[7 .. 6+F] the blobs of KEYS[8 .. 7+F]
-- ARGV[7+F ..] the call's node options (NODE_OPTIONS: timeout, max attempts, retry policy blob, soft timeout,
--           resources, due, result TTL, limit keys, priority), then per node NODE_FIELDS fields (id, fn sha,
--           args blob, inputs, name, flags) and what its flags say follows (metadata, key, its own options):
--           include/nodes.lua, write_nodes
-- Returns {each node's state after the call, comma-separated; the newest id of the finished stream ("" when
--   ARGV[4] is "")}. An existing node is left as it is (a shared node runs once), except that a root flag and its metadata are
--   added (and a node already finished is announced on the finished stream at once).
-- Events: EVENT_SCHEDULED (name) per new node; EVENT_FAILED (reason) after it when an input had failed.
-- One new plain root (a single schedule() of one call, the common case) takes write_root, the lean path.
--- @include stream
--- @include counts
--- @include finished
--- @include upstream
--- @include events
--- @include delayed
--- @include nodes
local prefix, now, n, nf = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[6])
-- one read: the events cap and the queue's result TTL (a new node emits, a new root may need the TTL), and
-- what a schedule writes besides its nodes, the signer and (the first BLOBS_READ of) the function blobs,
-- so that only what is missing or differs is written: a redis.call costs more than a key more in the MGET
local BLOBS_READ = 100
local got = redis.call('MGET', prefix .. SUFFIX_EVENTS_CAP, prefix .. SUFFIX_RESULT_TTL, KEYS[7],
                       unpack(KEYS, 8, 7 + math.min(nf, BLOBS_READ)))
-- the signer: workers compare their secret's with it
if ARGV[5] ~= '' and got[3] ~= ARGV[5] then redis.call('SET', KEYS[7], ARGV[5]) end
for i = 1, nf do  -- content-addressed: a blob there is kept (SET NX)
  if i > BLOBS_READ or not got[3 + i] then redis.call('SET', KEYS[7 + i], ARGV[6 + i], 'NX') end
end
local emit = event_writer(prefix, got[1] or '0')
-- KEYS: stream, counts, todo, finished, failed, delayed
local one = n == 1 and write_root(prefix, now, 7 + nf, KEYS, emit, got[2] or '')  -- the common case, lean
local out = one and {one} or write_nodes(prefix, now, n, 7 + nf, KEYS, emit, nil, got[2] or '')
-- last: the finished stream's newest id, so a waiter can block from here without a first look
local last = ARGV[4] == '1' and (redis.call('XREVRANGE', KEYS[4], '+', '-', 'COUNT', 1)[1] or {'0-0'}) or {''}
return {table.concat(out, ','), last[1]}  -- one string, not a reply per node (states hold no comma)
