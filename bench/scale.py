"""Scale (issue 7): a million queued tasks, ``forrestq status`` while they wait, drain with 1-8 procs.

    python -m bench.scale                                   # 1,000,000 tasks; drains of 20,000 x 3 reps
    python -m bench.scale --quick                           # 50,000 tasks; drains of 2,000, 1 rep
    python -m bench.scale --tasks 1000000 --batch 100000 --drain-n 20000 --procs 1,2,4,8 --reps 3

On a private server (``bench.harness.Bench``: valkey, loopback, ``appendonly no``):

1. **Schedule** --tasks no-ops (``defer(noop)``) with ``q.schedule_many`` in batches of --batch (each batch
   one pipelined call; the deferred values of a batch are built just before it). Printed: total wall
   time and rate (building included), and Redis ``used_memory`` per task (after - before) / tasks,
   payload included. Aim: <= 1 KiB per task.
2. **Status while they are queued** (no worker): wall time of the subprocess
   ``python -m forrestq status --json --url URL`` (median of --status-runs), next to the same command on an
   empty server (so interpreter start-up and imports can be told apart from the part that depends on
   the queue), and in-process: ``Queue.counts()`` and ``forrestq.status.gather(r)`` (what the command
   computes), median of 50 calls each. Aim: < 100 ms.
3. **Drain rate with P procs** for P in --procs: FLUSHALL, --drain-n no-ops, then ``forrestq worker --procs
   P``; rate = (N - 1) / (last finish - first finish) from the ``done`` zset; --reps repetitions, medians.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from bench.harness import ROOT, Bench, context, median, print_context, server_cpu, tree_cpu, wait_quiet
from bench.tasks import noop
from forrestq import Queue, defer
from forrestq.status import gather

QUEUE = "scale"


def schedule(b: Bench, total: int, batch: int) -> dict[str, float]:
    b.flush()
    q = Queue(QUEUE, url=b.url)
    q.schedule_many([defer(noop)])  # warm-up: group, scripts, function blob
    mem0 = b.used_memory()
    t0 = time.perf_counter()
    left = total
    while left > 0:
        n = min(batch, left)
        q.schedule_many([defer(noop) for _ in range(n)])
        left -= n
    took = time.perf_counter() - t0
    mem1 = b.used_memory()
    counts = q.counts()
    if counts["ready"] != total + 1:
        raise RuntimeError(f"expected {total + 1} ready tasks, counts say {counts}")
    return {"schedule_s": took, "schedule_per_s": total / took, "mem_per_task": (mem1 - mem0) / total,
            "used_memory_mib": mem1 / 2**20}


def _cli(url: str) -> float:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH"))
                                                         if p)}
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "forrestq", "status", "--json", "--url", url],
                         capture_output=True, text=True, timeout=60, env=env, cwd=ROOT)
    took = time.perf_counter() - t0
    if res.returncode:
        raise RuntimeError(f"forrestq status failed: {res.stderr[-2000:]}")
    json.loads(res.stdout)
    return took


def status_latency(b: Bench, runs: int) -> dict[str, float]:
    q = Queue(QUEUE, url=b.url)
    cli = [_cli(b.url) for _ in range(runs)]
    counts, gathers = [], []
    for _ in range(50):
        t0 = time.perf_counter()
        q.counts()
        counts.append(time.perf_counter() - t0)
    for _ in range(50):
        t0 = time.perf_counter()
        gather(b.r)
        gathers.append(time.perf_counter() - t0)
    return {"status_cli_ms": median(cli) * 1e3, "counts_ms": median(counts) * 1e3,
            "gather_ms": median(gathers) * 1e3}


def empty_cli(runs: int) -> float:
    with Bench() as empty:
        Queue("empty", url=empty.url).schedule_many([defer(noop)])
        return median([_cli(empty.url) for _ in range(runs)]) * 1e3


def drain(b: Bench, n: int, procs: int) -> dict[str, float]:
    b.flush()
    Queue(QUEUE, url=b.url).schedule_many([defer(noop) for _ in range(n)])
    proc = b.start_worker(QUEUE, procs)
    try:
        b.wait_finished(QUEUE, 1, 60, proc, interval=0.005)
        cpu0, srv0, done0 = tree_cpu(proc.pid), server_cpu(b.r), b.finished(QUEUE)
        b.wait_finished(QUEUE, n, 60 + n * 0.05, proc)
        cpu1, srv1 = tree_cpu(proc.pid), server_cpu(b.r)
    finally:
        b.stop_worker(proc)
    if b.failed(QUEUE):
        raise RuntimeError(f"{b.failed(QUEUE)} no-ops failed:\n{b.worker_log()}")
    first, last, count = b.finish_span(QUEUE)
    gap, incidents = b.max_gap(QUEUE), b.incidents(proc)
    per = max(1, n - done0)
    return {"drain_per_s": (count - 1) / (last - first), "cpu_server_us": (srv1 - srv0) / per * 1e6,
            "cpu_children_us": (cpu1["children"] - cpu0["children"]) / per * 1e6,
            "cpu_parent_us": (cpu1["parent"] - cpu0["parent"]) / per * 1e6,
            "max_gap_s": gap, **incidents}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=100_000)
    ap.add_argument("--status-runs", type=int, default=5)
    ap.add_argument("--drain-n", type=int, default=20_000)
    ap.add_argument("--procs", default="1,2,4,8")
    ap.add_argument("--reps", type=int, default=3, help="repetitions of each drain")
    ap.add_argument("--skip-schedule", action="store_true", help="only the drains")
    ap.add_argument("--quick", action="store_true", help="50,000 tasks, drains of 2,000, 1 rep")
    ap.add_argument("--json", help="also write the figures to this file")
    ap.add_argument("--min-idle", type=float, default=1.6, help="before each measurement, wait until this "
                    "many cores were idle for a second (0 = do not wait)")
    ap.add_argument("--quiet-timeout", type=float, default=120, help="... but at most this many seconds")
    args = ap.parse_args()
    if args.quick:
        args.tasks, args.drain_n, args.reps, args.status_runs = 50_000, 2000, 1, 3
    procs = [int(p) for p in args.procs.split(",")]
    result: dict[str, object] = {"args": vars(args)}
    with Bench() as b:
        ctx = context(b.r)
        print_context(ctx)
        result["context"] = ctx
        if not args.skip_schedule:
            idle = wait_quiet(args.min_idle, args.quiet_timeout)
            got = schedule(b, args.tasks, args.batch)
            got["idle_cores_before"] = idle
            print(f"\nscheduled {args.tasks:,} no-ops in batches of {args.batch:,}: {got['schedule_s']:.1f} s "
                  f"= {got['schedule_per_s']:,.0f} tasks/s; used_memory {got['used_memory_mib']:,.0f} MiB, "
                  f"{got['mem_per_task']:,.0f} B per task (aim <= 1,024 B)", flush=True)
            st = status_latency(b, args.status_runs)
            got.update(st)
            base = empty_cli(args.status_runs)
            got["status_cli_empty_ms"] = base
            print(f"with {args.tasks:,} queued: `python -m forrestq status --json` {st['status_cli_ms']:.0f} ms "
                  f"wall (median of {args.status_runs}; {base:.0f} ms on an empty server: interpreter + "
                  f"imports); in-process Queue.counts() {st['counts_ms']:.2f} ms, status.gather() "
                  f"{st['gather_ms']:.2f} ms (medians of 50); aim < 100 ms", flush=True)
            result["schedule"] = got
            b.flush()
        drains: dict[int, list[dict[str, float]]] = {p: [] for p in procs}
        for rep in range(args.reps):
            for p in procs:  # interleaved, so slow drifts of a shared machine spread over all
                idle = wait_quiet(args.min_idle, args.quiet_timeout)
                got = drain(b, args.drain_n, p)
                got["idle_cores_before"] = idle
                drains[p].append(got)
                print(f"rep {rep + 1}/{args.reps} procs {p}: " +
                      ", ".join(f"{k}={v:,.4g}" for k, v in got.items()), flush=True)
        result["drains"] = {str(p): v for p, v in drains.items()}
    print(f"# load after: {context()['load']}")
    print(f"\ndrain of {args.drain_n:,} no-ops, medians of {args.reps}:")
    print("| procs | tasks/s | min .. max | server CPU/task | children CPU/task | parent CPU/task | "
          "longest pause | lease kills (all reps) |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for p, reps in drains.items():
        xs = [r["drain_per_s"] for r in reps]
        print(f"| {p} | {median(xs):,.0f} | {min(xs):,.0f} .. {max(xs):,.0f} | "
              f"{median([r['cpu_server_us'] for r in reps]):.0f} us | "
              f"{median([r['cpu_children_us'] for r in reps]):.0f} us | "
              f"{median([r['cpu_parent_us'] for r in reps]):.0f} us | "
              f"{median([r['max_gap_s'] for r in reps]):.2f} s | {sum(r['lease_kills'] for r in reps)} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
