-- include stats: a function's statistics, kept as its tasks end (fq:{q}:stats and
-- fq:{q}:stats:s:<name>, built from the queue prefix with SUFFIX_STATS and SUFFIX_STATS_SAMPLES, in
-- the queue's slot like the per-task keys; forrestq.stats reads them). Counters of runs and failed
-- runs per function name (fields STATS_RUNS .. name, STATS_FAILED .. name), and, for an attempt
-- measured by its worker (a pid is known), a sample "runtime peak_rss host" (STATS_SEP between the
-- parts) on a list of the last STATS_SAMPLES, newest first: p50/p95 are over the last runs only.
-- The list is trimmed back to STATS_SAMPLES once it holds a tenth more (one call less per task; the
-- reader reads the first STATS_SAMPLES). Written at the script's end (include/later.lua, needed before it):
-- the ends of one call that ran the same function count in one HINCRBY and push in one LPUSH.
local function record_stats(prefix, name, failed, runtime, peak, pid, host)
  if not name or name == '' then return end
  local stats = prefix .. SUFFIX_STATS
  later_add('HINCRBY', stats, nil, STATS_RUNS .. name, 1)
  if failed then later_add('HINCRBY', stats, nil, STATS_FAILED .. name, 1) end
  if pid ~= '' then
    later_add('LPUSH', prefix .. SUFFIX_STATS_SAMPLES .. name, tonumber(STATS_SAMPLES),
              runtime .. STATS_SEP .. peak .. STATS_SEP .. host)
  end
end
