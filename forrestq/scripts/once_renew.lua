-- once_renew: extend the leases of exactly-once keys this process holds, and move the lease end
-- their records show; a lease held by another token (or gone) is untouched.
-- KEYS[2i-1] lease key of claim i (string)   KEYS[2i] its record (hash)
-- ARGV[1] lease ms   ARGV[i+1] owner token of claim i
-- Returns a list of 1 (renewed) / 0 (lost: expired or claimed by another) per claim.
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local out = {}
for i = 1, #KEYS / 2 do
  if redis.call('GET', KEYS[2 * i - 1]) == ARGV[i + 1] then
    redis.call('PEXPIRE', KEYS[2 * i - 1], ARGV[1])
    redis.call('HSET', KEYS[2 * i], ONCE_UNTIL, tostring(now + tonumber(ARGV[1])))
    out[i] = 1
  else
    out[i] = 0
  end
end
return out
