-- include events: the queue's event stream, a task's history (fq:{q}:events, built from the queue
-- prefix as prefix .. SUFFIX_EVENTS, in the queue's slot like the per-task keys). The script that
-- changes a task's state writes its event, so no event is missing or out of order with the change.
-- Entry: {EVENT_KIND = kind, ENTRY_TASK = id, then EVENT_* field/value pairs}; its id is its time.
-- XADD MAXLEN ~ the cap in prefix .. SUFFIX_EVENTS_CAP, read once per script call at its first event;
-- unset or '0': the queue keeps no events (opt-in: Queue(name, events=True) sets the cap). `known_cap`: the
-- cap as the caller read it already this call ('0' for none; nil: read here).
local function event_writer(prefix, known_cap)  -- returns emit(kind, id, field, value, ...); values are strings
  local stream, cap = prefix .. SUFFIX_EVENTS, known_cap
  return function(kind, id, ...)
    if cap == nil then cap = redis.call('GET', prefix .. SUFFIX_EVENTS_CAP) or '0' end
    if cap ~= '0' then
      redis.call('XADD', stream, 'MAXLEN', '~', cap, '*', EVENT_KIND, kind, ENTRY_TASK, id, ...)
    end
  end
end
