"""What the per-function statistics (issue 14) cost complete.lua, measured on the server.

    python -m bench.stats_cost                  # 8 rounds of 3,000 completions per variant
    python -m bench.stats_cost --rounds 12 --n 5000

One private server (``bench.harness.Bench``). Each round schedules N no-ops, claims them all
(claim.lua, pipelined), then records their ends (complete.lua, pipelined, as a child does: outcome
done, runtime, peak memory, pid), and reads the server's own time for the completions from ``INFO
commandstats`` (EVALSHA usec, claims excluded: they ran before the counters were reset). The two
variants alternate round by round on the same server and script:

* ``stats``: the tasks carry their function name (as always), so complete.lua counts the run and
  pushes a sample (include/stats.lua);
* ``bare``: the same tasks with their name field deleted before completion, so ``record_stats``
  returns at once: the script as it was before the statistics (the HMGET reads one field more).

The difference of the medians is the bookkeeping's server time per task; the drain of
``bench.throughput`` spends about 250 us of server CPU and 550 us of CPU in all per no-op.
"""
from __future__ import annotations

import argparse
import statistics
import time

from bench.harness import Bench
from bench.tasks import noop
from forrestq import Queue, defer, ops, schema

BATCH = 200


def _evalsha_usec(b: Bench) -> float:
    assert b.r is not None
    stats = b.r.info("commandstats")
    return float(stats.get("cmdstat_evalsha", {}).get("usec", 0))


def one_round(b: Bench, name: str, n: int, bare: bool) -> float:
    """Server microseconds per completion for one round of ``n`` no-ops on queue ``name``."""
    assert b.r is not None
    q = Queue(name, url=b.url)
    q.clean(all=True)
    refs = q.schedule_many(defer(noop) for _ in range(n))
    scripts, k = q.scripts, q.keys
    claimed: list[ops.Claimed] = []
    for i in range(0, n, BATCH):
        pipe = b.r.pipeline(transaction=False)
        tokens = [f"tok-{i + j}" for j in range(min(BATCH, n - i))]
        for token in tokens:
            ops.claim.queue(scripts, pipe, k, ops.ClaimArgs("bench:1:0", token, 60_000, "bench-host", "bench:1"))
        for token, raw in zip(tokens, scripts.execute(pipe)):
            got = ops.claim.reply(raw)
            assert isinstance(got, ops.Claimed), got
            got.token = token
            claimed.append(got)
    assert len(claimed) == len(refs)
    if bare:
        pipe = b.r.pipeline(transaction=False)
        for c in claimed:
            pipe.hdel(k.task(c.id), schema.TASK_NAME)
        pipe.execute()
    b.r.config_resetstat()
    for i in range(0, n, BATCH):
        pipe = b.r.pipeline(transaction=False)
        for c in claimed[i:i + BATCH]:
            ops.complete.queue(scripts, pipe, k, ops.Completion(c.id, c.token, schema.DONE, result=b"\x80N.",
                                                                runtime=0.000123, host="bench-host",
                                                                cpu_time=0.0001, peak_rss=40_000_000, pid=4242))
        assert all(ops.complete.reply(raw) for raw in scripts.execute(pipe))
    return _evalsha_usec(b) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--n", type=int, default=3000)
    args = ap.parse_args()
    got: dict[str, list[float]] = {"bare": [], "stats": []}
    with Bench() as b:
        one_round(b, "warm", 500, False)
        for i in range(args.rounds):
            order = ("bare", "stats") if i % 2 == 0 else ("stats", "bare")
            for variant in order:
                got[variant].append(one_round(b, f"cost-{variant}", args.n, variant == "bare"))
            time.sleep(0.2)
    for variant, values in got.items():
        print(f"{variant:>5}: complete.lua {statistics.median(values):6.1f} us/task on the server "
              f"(median of {len(values)}; {min(values):.1f} .. {max(values):.1f})")
    diffs = [s - b_ for s, b_ in zip(got["stats"], got["bare"])]
    print(f"stats - bare: {statistics.median(diffs):+.1f} us/task (median of pairwise differences: "
          + " ".join(f"{d:+.1f}" for d in diffs) + ")")


if __name__ == "__main__":
    main()
