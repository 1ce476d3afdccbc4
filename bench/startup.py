"""Start-up and stop of workers (issue 13, item 5): how long from spawning a worker until its first task
starts and ends, how long an idle worker takes to stop, and what warm workers (``q.workers``) save.

    python -m bench.startup                # 7 repetitions, medians (about a minute)
    python -m bench.startup --reps 3 --quick

Each repetition, on one private server (``bench.harness.Bench``: loopback, ``appendonly no``), after
FLUSHALL; the clock of a task's start is its claim (``t0``, written by the child), of its end ``t1``:

1. **cli**: 2 no-ops scheduled, then ``python -m forrestq worker --procs 2 --quiet`` spawned (the full
   command line, default ``--grace``): spawn -> first task started, spawn -> first task finished;
   once idle, SIGTERM -> exit.
2. **launcher**: the same through :class:`forrestq.local.LocalWorkers` (the lean launcher
   ``forrestq.worker.launch`` that ``q.run``, ``map(procs=)`` and ``q.workers`` use; grace 0 s):
   spawn -> first task started/finished, ``stop()`` of the idle worker; and once more with
   ``grace=30`` (children must leave by themselves: idle stop without the kill).
3. **run**: 4 x ``time.sleep(0.4)`` scheduled, then ``list(q.run(procs=2))`` (taskmap's timing test: 4
   tasks of 0.4 s on 2 processes, ideal 0.8 s): call -> first task started, call -> loop ended.
4. **warm**: inside ``with q.workers(2):`` (started before the clock runs), ``q.starmap(time.time,
   [()] * 2)``: call -> the earliest time a task read (its function started); and
   ``q.map(time.sleep, [0.4] * 4, procs=2)``: call -> returned. The same map with ``procs=2`` and no
   warm workers (a fresh worker per call) for comparison.

Also printed: the wall time of ``python -c "import ..."`` for nothing, redis-py, the worker command of
the command line (``forrestq.cli.work``: since issue 18 ``forrestq.cli`` alone no longer imports its
commands) and the launcher: the floor under any spawn -> first task.
Goals: first task started <= 0.1 s after the spawn, idle stop <= 0.1 s.
"""
from __future__ import annotations

import argparse
import json
import os
import select
import signal
import subprocess
import sys
import time
from typing import Any

from bench.harness import ROOT, Bench, context, median, print_context, wait_quiet
from bench.tasks import noop
from forrestq import Queue, defer
from forrestq.schema import TASK_FINISHED, TASK_STARTED, QueueKeys

try:
    from forrestq.local import LocalWorkers
    WARM = True
except ImportError:  # a tree from before issue 13 (the "before" figures): the cli and run() only
    WARM = False


def task_times(b: Bench, queue: str) -> tuple[float, float]:
    """(earliest t0, earliest t1) of the queue's done tasks."""
    assert b.r is not None
    k = QueueKeys(queue)
    ids = [i.decode() for i in b.r.zrange(k.done, 0, -1)]
    pipe = b.r.pipeline(transaction=False)
    for i in ids:
        pipe.hmget(k.task(i), TASK_STARTED, TASK_FINISHED)
    rows = [(float(t0), float(t1)) for t0, t1 in pipe.execute() if t0 and t1]
    return min(r[0] for r in rows), min(r[1] for r in rows)


def exited(proc: subprocess.Popen, timeout: float) -> None:
    """Wait for ``proc`` to exit, woken by the exit itself (a pidfd): ``Popen.wait(timeout)`` polls and
    would add up to 50 ms to a stop time."""
    fd = os.pidfd_open(proc.pid)
    try:
        select.select([fd], [], [], timeout)
    finally:
        os.close(fd)
    proc.wait(5)


def cli_worker(b: Bench, procs: int) -> dict[str, float]:
    q = Queue("su-cli", url=b.url)
    q.schedule_many(defer(noop) for _ in range(procs))
    cmd = [sys.executable, "-m", "forrestq", "worker", "--procs", str(procs), "--queue", q.name, "--url", b.url,
           "--quiet"]
    spawned = time.time()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        b.wait_finished(q.name, procs, 60, proc, interval=0.005)
        t0, t1 = task_times(b, q.name)
        time.sleep(0.3)  # idle: the children wait in XREADGROUP
        s0 = time.perf_counter()
        proc.send_signal(signal.SIGTERM)
        exited(proc, 60)
        stop = time.perf_counter() - s0
    finally:
        b.stop_worker(proc)
    return {"cli_started_s": t0 - spawned, "cli_finished_s": t1 - spawned, "cli_stop_s": stop}


def launcher_worker(b: Bench, procs: int, grace: float, prefix: str) -> dict[str, float]:
    q = Queue(f"su-{prefix}", url=b.url)
    q.schedule_many(defer(noop) for _ in range(procs))
    w = LocalWorkers(b.url, q.name, procs, {"grace": grace})
    spawned = time.time()
    try:
        w.start()
        ready = time.time() - spawned
        b.wait_finished(q.name, procs, 60, interval=0.005)
        t0, t1 = task_times(b, q.name)
        time.sleep(0.3)
        s0 = time.perf_counter()
        w.stop()
        stop = time.perf_counter() - s0
    finally:
        w.stop()
    return {f"{prefix}_ready_s": ready, f"{prefix}_started_s": t0 - spawned, f"{prefix}_finished_s": t1 - spawned,
            f"{prefix}_stop_s": stop}


def run_call(b: Bench, procs: int) -> dict[str, float]:
    q = Queue("su-run", url=b.url)
    q.schedule_many(defer(time.sleep, 0.4) for _ in range(4))
    called = time.time()
    got = list(q.run(procs=procs, timeout=60))
    took = time.time() - called
    assert len(got) == 4 and all(t.state == "done" for t in got), got
    return {"run_started_s": task_times(b, q.name)[0] - called, "run_total_s": took}


def warm_calls(b: Bench, procs: int) -> dict[str, float]:
    q = Queue("su-warm", url=b.url)
    with q.workers(procs):
        called = time.time()
        started = min(q.starmap(time.time, [()] * procs, progress=False)) - called  # the task's own clock
        t = time.perf_counter()
        q.map(time.sleep, [0.4] * 4, progress=False, procs=procs)
        warm_total = time.perf_counter() - t
    b.flush()
    q2 = Queue("su-fresh", url=b.url)
    t = time.perf_counter()
    q2.map(time.sleep, [0.4] * 4, progress=False, procs=procs)
    fresh_total = time.perf_counter() - t
    return {"warm_started_s": started, "warm_map_s": warm_total, "fresh_map_s": fresh_total}


def one_rep(b: Bench, args: argparse.Namespace) -> dict[str, float]:
    out: dict[str, float] = {}
    steps = [lambda: cli_worker(b, args.procs), lambda: run_call(b, args.procs)]
    if WARM:
        steps += [lambda: launcher_worker(b, args.procs, 0.0, "launcher"),
                  lambda: launcher_worker(b, args.procs, 30.0, "graceful"), lambda: warm_calls(b, args.procs)]
    for step in steps:
        b.flush()
        out.update(step())
    return out


def import_times(reps: int) -> dict[str, float]:
    """Median wall seconds of a bare interpreter, and of importing the command line / the launcher."""
    out = {}
    for key, code in (("python_s", "pass"), ("import_redis_s", "import redis"),
                      ("import_cli_s", "import forrestq.cli.work"),  # what `forrestq worker` imports
                      ("import_launcher_s", "import forrestq.worker.launch" if WARM else "import forrestq.worker")):
        xs = []
        for _ in range(reps):
            t = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
            xs.append(time.perf_counter() - t)
        out[key] = median(xs)
    return out


ROWS = [  # key, label, aim
    ("cli_started_s", "`forrestq worker` (CLI): spawn -> first task started", "<= 0.1 s"),
    ("cli_finished_s", "  spawn -> first task finished", ""),
    ("cli_stop_s", "  SIGTERM -> exit, idle (default --grace 30)", "<= 0.1 s"),
    ("launcher_ready_s", "launcher (`LocalWorkers`, as run/map/workers): spawn -> ready", ""),
    ("launcher_started_s", "  spawn -> first task started", "<= 0.1 s"),
    ("launcher_finished_s", "  spawn -> first task finished", ""),
    ("launcher_stop_s", "  stop() -> exit, idle (grace 0)", "<= 0.1 s"),
    ("graceful_stop_s", "  stop() -> exit, idle, grace=30 (children leave by themselves)", "<= 0.1 s"),
    ("run_started_s", "`q.run(procs=2)`: call -> first task started", ""),
    ("run_total_s", "  4 x sleep(0.4) on 2 procs: call -> loop ended (ideal 0.8 s)", ""),
    ("warm_started_s", "`with q.workers(2)`: map call -> first task started", ""),
    ("warm_map_s", "  map of 4 x sleep(0.4), procs=2 (warm): call -> returned (ideal 0.8 s)", ""),
    ("fresh_map_s", "map of 4 x sleep(0.4), procs=2, no warm workers: call -> returned", ""),
]


def report(reps: list[dict[str, float]]) -> list[str]:
    lines = ["| figure | median | min .. max | aim |", "|---|---:|---:|---|"]
    for key, label, aim in ROWS:
        xs = [r[key] for r in reps if key in r]
        if not xs:
            continue
        lines.append(f"| {label} | {median(xs):.3f} s | {min(xs):.3f} .. {max(xs):.3f} s | {aim} |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="1 repetition")
    ap.add_argument("--json", help="also write the per-repetition figures to this file")
    ap.add_argument("--min-idle", type=float, default=1.6, help="before each repetition, wait until this "
                    "many cores were idle for a second (0 = do not wait)")
    ap.add_argument("--quiet-timeout", type=float, default=60, help="... but at most this many seconds")
    args = ap.parse_args()
    if args.quick:
        args.reps = 1
    os.chdir(ROOT)  # the workers import bench.tasks from the working directory
    with Bench() as b:
        ctx = context(b.r)
        print_context(ctx)
        imports = import_times(max(3, args.reps))
        print("# import (wall, median): " + ", ".join(f"{k} {v:.3f} s" for k, v in imports.items()))
        reps: list[dict[str, Any]] = []
        for i in range(args.reps):
            idle = wait_quiet(args.min_idle, args.quiet_timeout)
            got = one_rep(b, args)
            got["idle_cores_before"] = idle
            reps.append(got)
            print(f"rep {i + 1}/{args.reps}: " + ", ".join(f"{k}={v:.3f}" for k, v in got.items()), flush=True)
        ctx["load after"] = context()["load"]
    print(f"# load after: {ctx['load after']}")
    print(f"\nmedians of {args.reps} repetition(s):")
    for line in report(reps):
        print(line)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"context": ctx, "args": vars(args), "imports": imports, "reps": reps}, f, indent=1)


if __name__ == "__main__":
    main()
