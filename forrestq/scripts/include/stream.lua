-- include stream: entries of the queue's ready stream (fq:{q}:stream, group GROUP). One entry per
-- ready or running task, with the one field ENTRY_TASK = task id; the task hash keeps the entry's id
-- in TASK_STREAM_ID, so an entry whose id differs from its task's TASK_STREAM_ID is stale.
-- Priorities (issue 16): a task of level n > 0 (TASK_PRIORITY) has its entry on the stream
-- `stream .. STREAM_LEVEL .. n` instead (same group; the levels in use in `stream .. STREAM_LEVELS`), and
-- its TASK_STREAM_ID is "n" .. LEVEL_SEP .. entry id. Each such push also adds a nudge to the stream itself
-- (same task id, so stale at once): a child blocked on the stream wakes, finds it stale, and claims again,
-- highest level first (read_levels). Level 0 is exactly the stream of before.
local function push_entry(stream, id, level)  -- a new entry for task `id` on its level; returns its id
  if not level or level == '' or level == '0' then
    return redis.call('XADD', stream, '*', ENTRY_TASK, id)
  end
  local s = stream .. STREAM_LEVEL .. level
  if redis.call('ZADD', stream .. STREAM_LEVELS, 'NX', level, level) == 1 then
    redis.pcall('XGROUP', 'CREATE', s, GROUP, '0', 'MKSTREAM')  -- BUSYGROUP: it exists
  end
  local sid = level .. LEVEL_SEP .. redis.call('XADD', s, '*', ENTRY_TASK, id)
  redis.call('XADD', stream, '*', ENTRY_TASK, id)  -- the nudge
  return sid
end
local function entry_stream(stream, sid)  -- the stream entry `sid` (a TASK_STREAM_ID) is on, and its own id
  local at = string.find(sid, LEVEL_SEP, 1, true)
  if not at then return stream, sid end
  return stream .. STREAM_LEVEL .. string.sub(sid, 1, at - 1), string.sub(sid, at + 1)
end
local function drop_entry(stream, group, sid)  -- ack and delete entry `sid` (nil: no entry, no-op)
  if sid then
    local s, e = entry_stream(stream, sid)
    redis.call('XACK', s, group, e)
    redis.call('XDEL', s, e)
  end
end
local function entry_task(entry)  -- task id of an XRANGE/XREADGROUP entry {id, {ENTRY_TASK, id}} (nil: nil)
  return entry and entry[2][2]
end
local function entry_at(stream, sid)  -- the entry `sid` (a TASK_STREAM_ID) as XRANGE gives it (nil: gone)
  local s, e = entry_stream(stream, sid)
  return redis.call('XRANGE', s, e, e)[1]
end
local function read_levels(stream, group, consumer)  -- the next entry of the highest level above 0 with one
  for _, level in ipairs(redis.call('ZREVRANGE', stream .. STREAM_LEVELS, 0, -1)) do
    local got = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', 1, 'STREAMS',
                           stream .. STREAM_LEVEL .. level, '>')
    if got then
      local entry = got[1][2][1]
      return {level .. LEVEL_SEP .. entry[1], entry[2]}  -- its id as TASK_STREAM_ID spells it
    end
  end
  return nil
end
