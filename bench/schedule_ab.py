"""Single ``Queue.schedule`` calls of two builds in lockstep on one server (issue 18): an A/B that holds
on a noisy machine, where runs of one build after the other (``bench/schedule_cost.py``) drift apart
with the load of whatever else runs.

One private server (``bench.harness.Bench``); one process per build (its ``PYTHONPATH``), each with its own
queue, taking turns in blocks of ``--calls`` calls (the database flushed before each pair; the order within
a pair alternates). Per block: wall and client CPU per call (the build's process), the server's CPU
(``INFO cpu``) and EVALSHA usec (``commandstats``) per call. Reported: medians and first quartiles over the
blocks of each build, and the per-block wall ratio A/B (median, quartiles)::

    cd /tmp && PYTHONPATH=/work/h_sched python /work/h_sched/bench/schedule_ab.py /work/h_sched /work/base1
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from bench.harness import Bench, server_cpu


def side(url: str, name: str) -> None:
    """One build's process: reads a number of calls per line, answers with its client CPU and wall per call."""
    from bench.tasks import noop
    from forrestq import Queue, defer

    q = Queue(name, url=url)
    for _ in range(200):  # warm: scripts loaded, caches filled
        q.schedule(defer(noop))
    print("ready", flush=True)
    for line in sys.stdin:
        n = int(line)
        q.core.group_ready = False  # the database was flushed
        c0, t0 = time.process_time(), time.perf_counter()
        for _ in range(n):
            q.schedule(defer(noop))
        print(json.dumps([(time.process_time() - c0) / n * 1e6, (time.perf_counter() - t0) / n * 1e6]), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("builds", nargs=2, help="two PYTHONPATHs (worktrees), A and B")
    p.add_argument("--blocks", type=int, default=200, help="blocks per build")
    p.add_argument("--calls", type=int, default=50, help="schedule() calls per block")
    a = p.parse_args()
    with Bench() as b:
        assert b.r is not None
        procs = []
        for i, build in enumerate(a.builds):
            env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"} | {"PYTHONPATH": build}
            proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--side", b.url, f"ab{i}"],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
            procs.append(proc)
        rows: list[list[tuple[float, ...]]] = [[], []]
        for block in range(a.blocks):
            b.r.execute_command("FLUSHALL", "SYNC")
            for i in ((0, 1) if block % 2 == 0 else (1, 0)):
                proc = procs[i]
                assert proc.stdin is not None and proc.stdout is not None
                b.r.config_resetstat()
                cpu0 = server_cpu(b.r)
                proc.stdin.write(f"{a.calls}\n")
                proc.stdin.flush()
                client, wall = json.loads(proc.stdout.readline())
                server = (server_cpu(b.r) - cpu0) / a.calls * 1e6
                evalsha = float(b.r.info("commandstats").get("cmdstat_evalsha", {}).get("usec", 0)) / a.calls
                rows[i].append((wall, client, server, evalsha))
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.close()
            proc.wait(timeout=30)
    for build, xs in zip(a.builds, rows):
        med = [statistics.median(x[j] for x in xs) for j in range(4)]
        q1 = [sorted(x[j] for x in xs)[len(xs) // 4] for j in range(4)]
        print(f"{build}: median wall {med[0]:6.1f} us/call ({1e6 / med[0]:,.0f}/s), client cpu {med[1]:5.1f}, "
              f"server cpu {med[2]:5.1f}, evalsha {med[3]:5.1f}; first quartile wall {q1[0]:6.1f}, client "
              f"{q1[1]:5.1f}, server {q1[2]:5.1f}, evalsha {q1[3]:5.1f}")
    ratio = sorted(x[0] / y[0] for x, y in zip(*rows))
    print(f"per-block wall ratio A/B: median {statistics.median(ratio):.3f} (quartiles {ratio[len(ratio) // 4]:.3f}"
          f"..{ratio[3 * len(ratio) // 4]:.3f})")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--side"]:
        side(sys.argv[2], sys.argv[3])
    else:
        main()
