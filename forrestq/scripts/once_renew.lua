-- once_renew: extend the leases of keys whose bodies are still running here (a heartbeat).
-- KEYS[i] lease key of held key i (string)
-- ARGV[1] lease ms   ARGV[i+1] owner token of claim i
-- Returns one 1 (renewed) / 0 (lost: expired or taken over) per key; a lease held by another token
-- is left untouched.
local out = {}
for i, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[i + 1] then
    redis.call('PEXPIRE', key, ARGV[1])
    out[i] = 1
  else
    out[i] = 0
  end
end
return out
