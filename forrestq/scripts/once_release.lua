-- once_release: give a claimed key back at once (its body raised), only if this claim still holds it.
-- KEYS[1] the key's lease key (string)
-- ARGV[1] owner token of the claim
-- Returns 1 released, 0 not held by this token (expired, or taken over by another process).
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
