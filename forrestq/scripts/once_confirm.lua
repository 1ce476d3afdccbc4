-- once_confirm: mark a key done for good once its body completed, and drop this process's lease.
-- KEYS[1] done set of this version (set)   KEYS[2] the key's lease key (string)
-- ARGV[1] owner token of the claim   ARGV[2] the key
-- Returns 1 confirmed (the lease was still ours); 2 confirmed late (our lease had expired and nobody
-- else held the key); 3 confirmed while another process held the key (its body may run twice);
-- 0 already done before (nothing changed; our lease, if still there, is dropped).
local holder = redis.call('GET', KEYS[2])
if redis.call('SISMEMBER', KEYS[1], ARGV[2]) == 1 then
  if holder == ARGV[1] then redis.call('DEL', KEYS[2]) end
  return 0
end
redis.call('SADD', KEYS[1], ARGV[2])
if holder == ARGV[1] then
  redis.call('DEL', KEYS[2])
  return 1
elseif not holder then
  return 2
end
return 3
