-- include stream: entries of the queue's ready stream (fq:{q}:stream, group GROUP). One entry per
-- ready or running task, with the one field ENTRY_TASK = task id; the task hash keeps the entry's id
-- in TASK_STREAM_ID, so an entry whose id differs from its task's TASK_STREAM_ID is stale.
local function push_entry(stream, id)  -- a new entry for task `id`; returns the entry id
  return redis.call('XADD', stream, '*', ENTRY_TASK, id)
end
local function drop_entry(stream, group, sid)  -- ack and delete entry `sid` (nil: no entry, no-op)
  if sid then
    redis.call('XACK', stream, group, sid)
    redis.call('XDEL', stream, sid)
  end
end
local function entry_task(entry)  -- task id of an XRANGE/XREADGROUP entry {id, {ENTRY_TASK, id}} (nil: nil)
  return entry and entry[2][2]
end
