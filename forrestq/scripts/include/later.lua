-- include later: writes a script gathers while it works and makes at its end, one call per key (complete.lua,
-- whose call records several ends: a child's 8 ends of no-ops take 4 HINCRBY of the counts, not 32, one DEL of
-- their leases, one XACK and one XDEL of their entries, one ZADD): counter changes (HINCRBY; a field whose
-- changes sum to 0 is left alone), key deletions (DEL), zset members (ZADD), stream entries to drop (as
-- drop_entry: XACK, XDEL), values pushed on a capped list (LPUSH, newest first; trimmed back to the cap once it
-- holds a tenth more). Each write is made at once unless the script gathers (later_direct = false); then
-- it must not read what it gathered before its last step, later_write().
local LATER_SLICE = 1000  -- items per call at most (an even number: ZADD's score-member pairs stay whole)
-- each write {kind, key, extra, items...} in first-use order; kind -> key -> its write. For HINCRBY the items
-- are the fields, the write also maps each field to its sum
local later_writes, later_by = {}, {}
local later_direct = true  -- false: gather (a call with one thing to record gains nothing from it)
local function made(w)  -- make one gathered write
  local kind, key, extra = w[1], w[2], w[3]
  if kind == 'HINCRBY' then
    for i = 4, #w do
      local by = w[w[i]]
      if by ~= 0 then redis.call('HINCRBY', key, w[i], by) end
    end
    return
  end
  local length
  for i = 4, #w, LATER_SLICE do
    local j = math.min(i + LATER_SLICE - 1, #w)
    if kind == 'DEL' then
      redis.call('DEL', unpack(w, i, j))
    elseif kind == 'ZADD' then
      redis.call('ZADD', key, unpack(w, i, j))
    elseif kind == 'XDEL' then
      redis.call('XACK', key, extra, unpack(w, i, j))
      redis.call('XDEL', key, unpack(w, i, j))
    else
      length = redis.call('LPUSH', key, unpack(w, i, j))
    end
  end
  if length and length > extra + extra / 10 then redis.call('LTRIM', key, 0, extra - 1) end
end
-- one write of `kind`, named by its command: 'HINCRBY' field a by b, 'DEL' key a (key ''), 'ZADD' score a member b,
-- 'XDEL' the entry a of stream key (and its XACK by the group `extra`), 'LPUSH' a on a list capped at `extra`
local function later_add(kind, key, extra, a, b)
  if later_direct then
    if kind == 'HINCRBY' then
      redis.call('HINCRBY', key, a, b)
    else
      made({kind, key, extra or false, a, b})
    end
    return
  end
  local by = later_by[kind]
  if not by then by = {}; later_by[kind] = by end
  local w = by[key]
  if not w then
    w = {kind, key, extra or false}  -- (no hole: the length operator counts the items)
    by[key] = w
    later_writes[#later_writes + 1] = w
  end
  if kind == 'HINCRBY' then
    if w[a] == nil then w[#w + 1] = a; w[a] = 0 end
    w[a] = w[a] + b
    return
  end
  w[#w + 1] = a
  if b then w[#w + 1] = b end
end
local function later_write()  -- make the gathered writes, in the order their keys were first used
  for _, w in ipairs(later_writes) do made(w) end
  later_writes, later_by = {}, {}
end
