"""The producer's cost per task (issue 18): single ``Queue.schedule`` calls and one ``schedule_many``.

A private server (``bench.harness.Bench``), no workers. Per run: ``--single`` calls of
``q.schedule(defer(noop))`` and one ``q.schedule_many`` of ``--many`` no-ops, the database flushed
before each. Reported: rates (median of ``--runs``), and the split per task between the server (``INFO
cpu`` of the server process; ``commandstats`` for the usec of EVALSHA alone: it includes the commands its
script calls, which commandstats also counts apart), the client process's CPU, and the rest of the wall
time. ``--profile`` prints a cProfile of one more run of each.

A/B against another build: run it with another ``PYTHONPATH`` (the figures name the forrestq imported)::

    cd /tmp && PYTHONPATH=/work/h_sched python /work/h_sched/bench/schedule_cost.py --runs 5
    cd /tmp && PYTHONPATH=/work/base0 python /work/h_sched/bench/schedule_cost.py --runs 5

(run by path from another directory: ``python -m`` from the worktree would put the worktree first on
``sys.path``, ahead of PYTHONPATH; ``bench.harness`` and ``bench.tasks`` come from the build's own ``bench``).
"""
from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import time
from collections.abc import Callable
from typing import Any

import redis

import forrestq
from bench.harness import Bench, median, server_cpu
from bench.tasks import noop
from forrestq import Queue, defer


def server_usec(r: redis.Redis) -> tuple[float, dict[str, float]]:
    """usec the server spent in commands since the last CONFIG RESETSTAT, and per command."""
    stats = r.info("commandstats")
    per = {name.removeprefix("cmdstat_"): float(v["usec"]) for name, v in stats.items()}
    return sum(per.values()), per


def phase(b: Bench, q: Queue, run: Callable[[], Any], n: int) -> dict[str, float]:
    assert b.r is not None
    b.r.execute_command("FLUSHALL", "SYNC")  # SYNC: no background free competing with the phase for the cores
    q.core.group_ready = False
    q.counts()  # connect now, not inside the timing
    b.r.config_resetstat()
    cpu0 = server_cpu(b.r)
    c0, t0 = time.process_time(), time.perf_counter()
    run()
    wall, client = time.perf_counter() - t0, time.process_time() - c0
    cpu = server_cpu(b.r) - cpu0
    total, per = server_usec(b.r)
    return {"rate": n / wall, "wall_us": wall / n * 1e6, "client_cpu_us": client / n * 1e6,
            "server_cpu_us": cpu / n * 1e6, "server_us": total / n, "evalsha_us": per.get("evalsha", 0.0) / n}


def profiled(run: Callable[[], Any], top: int) -> str:
    prof = cProfile.Profile()
    prof.enable()
    run()
    prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(top)
    return out.getvalue()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--single", type=int, default=3000, help="single schedule() calls per run")
    p.add_argument("--many", type=int, default=20000, help="no-ops in the one schedule_many per run")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--profile", action="store_true", help="print a cProfile of one more run of each")
    p.add_argument("--top", type=int, default=30)
    p.add_argument("--json", action="store_true")
    a = p.parse_args()

    with Bench() as b:
        q = Queue("cost", url=b.url)

        def single() -> None:
            schedule = q.schedule
            for _ in range(a.single):
                schedule(defer(noop))

        def many() -> None:
            q.schedule_many([defer(noop) for _ in range(a.many)])

        for _ in range(2):  # warm: scripts loaded, caches filled
            phase(b, q, lambda: [q.schedule(defer(noop)) for _ in range(200)], 200)
        singles, manys = [], []
        for _ in range(a.runs):  # interleaved
            singles.append(phase(b, q, single, a.single))
            manys.append(phase(b, q, many, a.many))

        def med(rows: list[dict[str, float]]) -> dict[str, float]:
            return {k: median([r[k] for r in rows]) for k in rows[0]}

        s, m = med(singles), med(manys)
        result = {"forrestq": os.path.dirname(os.path.realpath(forrestq.__file__)), "runs": a.runs,
                  "single": s, "many": m, "single_rates": [r["rate"] for r in singles],
                  "many_rates": [r["rate"] for r in manys]}
        if a.json:
            print(json.dumps(result))
        else:
            print(f"forrestq: {result['forrestq']}  runs: {a.runs} (medians)")
            for label, r in ((f"single x{a.single}", s), (f"many {a.many}", m)):
                idle = r["wall_us"] - r["client_cpu_us"] - r["server_cpu_us"]
                print(f"  {label:>14}: {r['rate']:>9,.0f}/s   {r['wall_us']:6.1f} us/task wall = client cpu "
                      f"{r['client_cpu_us']:5.1f} + server cpu {r['server_cpu_us']:5.1f} (evalsha "
                      f"{r['evalsha_us']:4.1f}) + {idle:5.1f} neither (latency, or both at once if < 0)")
        if a.profile:
            b.r.execute_command("FLUSHALL", "SYNC") if b.r is not None else None
            print(profiled(single, a.top))
            b.r.execute_command("FLUSHALL", "SYNC") if b.r is not None else None
            print(profiled(many, a.top))


if __name__ == "__main__":
    main()
