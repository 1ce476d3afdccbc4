-- renew: extend the leases this worker still holds (a heartbeat); a lease held by another token is untouched.
-- KEYS[i]  lease key of running task i (string)
-- ARGV[1]  lease ms   ARGV[i+1] token of task i
-- Returns a list of 1 (renewed) / 0 (lost: expired or taken over) per key.
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
