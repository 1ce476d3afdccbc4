"""Benchmark: 100 tasks sharing one 100 MB NumPy array, ``q.put(arr)`` versus passing the array itself.

    python -m bench.shared                     # 100 tasks, 100 MB, 2 worker procs, 3 repetitions
    python -m bench.shared --quick             # 20 tasks, 10 MB, 1 repetition (a smoke check)
    python -m bench.shared --tasks 100 --mb 100 --procs 2 --reps 3

Both modes run the same code: schedule ``defer(touch, X, i)`` 100 times with ``q.schedule`` and follow
those tasks to the end as ``q.map`` does; X is the array itself ("direct") or the reference
``q.put(arr)`` returned ("shared", the ``put`` included in the time). (Not ``q.results()``: it reads
whole task records, arguments included, 1000 at a time: 100 GB replies for 100 MB arguments.)
Measured per repetition, on a private server without
persistence (``bench.common.Server``), each run on a fresh queue served by its own
``forrestq worker --procs P`` started (and registered) before the clock starts; the queue's keys are
deleted after each run:

- wall time from the first write to the last result;
- Redis ``used_memory`` growth (task records keep their arguments until cleaned, so this is what the
  queue holds afterwards);
- bytes Redis received (``total_net_input_bytes``) and sent (``total_net_output_bytes``);
- how many child processes ran tasks (each loads a shared object once).

Medians over the repetitions are printed as a Markdown table. Needs numpy (the ``test`` extra).

One run (2-core VM shared with other benchmarks, load average 3 to 7; defaults: 100 tasks, 100 MB,
``--procs 2``, 3 repetitions): shared 1.87 s, +100 MB used_memory, 100 MB written to Redis; direct
109 s (90 to 173 s), +10,000 MB, 10,000 MB written: 58x the time, 100x the memory and bytes.
Memory: "direct" stores tasks x MB in Redis (10 GB for the defaults); check free memory first.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any


def touch(arr: Any, i: int) -> tuple[float, int]:
    """The task: read one element (the cost is the array's transfer, not the work)."""
    return float(arr[i % len(arr)]), os.getpid()


def _info(r: Any) -> dict[str, int]:
    stats = r.info("stats")
    mem = r.info("memory")
    return {"mem": mem["used_memory"], "in": stats["total_net_input_bytes"], "out": stats["total_net_output_bytes"]}


def run_once(url: str, mode: str, arr: Any, tasks: int, queue: str) -> dict[str, float]:
    import bench.shared as me  # by reference, so workers import it rather than unpickling a copy
    from forrestq import Queue, defer, mapping

    q = Queue(queue, url)
    before = _info(q.r)
    t0 = time.perf_counter()
    arg = q.put(arr) if mode == "shared" else arr
    since = mapping._last_finished(q)
    # one schedule call per task (q.map would hold every payload in memory at once: 10 GB "direct");
    # results are followed as q.map does (records read without their argument payloads)
    ids = [q.schedule(defer(me.touch, arg, i)).id for i in range(tasks)]
    got = list(mapping._follow(q, ids, since, timeout=600))
    wall = time.perf_counter() - t0
    after = _info(q.r)
    assert len(got) == tasks and all(t.state == "done" for t in got), [t.reason for t in got if t.state != "done"]
    return {"wall": wall, "mem": (after["mem"] - before["mem"]) / 1e6, "in": (after["in"] - before["in"]) / 1e6,
            "out": (after["out"] - before["out"]) / 1e6, "children": len({t.returnvalue[1] for t in got})}


def _drop(r: Any, queue: str) -> None:
    """Delete every key of one queue (its worker is stopped already)."""
    from forrestq.schema import QueueKeys

    keys = list(r.scan_iter(match=QueueKeys(queue).pattern(), count=1000))
    for i in range(0, len(keys), 500):
        r.delete(*keys[i:i + 500])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", type=int, default=None, help="tasks per run (100)")
    ap.add_argument("--mb", type=float, default=None, help="array size in MB (100)")
    ap.add_argument("--procs", type=int, default=2, help="worker child processes (2)")
    ap.add_argument("--reps", type=int, default=None, help="repetitions (3)")
    ap.add_argument("--modes", default="shared,direct")
    ap.add_argument("--quick", action="store_true", help="20 tasks, 10 MB, 1 repetition")
    a = ap.parse_args(argv)
    tasks = a.tasks or (20 if a.quick else 100)
    mb = a.mb or (10 if a.quick else 100)
    reps = a.reps or (1 if a.quick else 3)

    import numpy as np

    from bench.common import ROOT, Server, Workers, wait_until

    arr = np.random.default_rng(0).random(int(mb * 1e6 / 8))
    print(f"array: {arr.nbytes / 1e6:.0f} MB float64; {tasks} tasks; worker --procs {a.procs}; {reps} reps",
          flush=True)
    rows: dict[str, list[dict[str, float]]] = {m: [] for m in a.modes.split(",")}
    with Server() as server:
        import redis

        r = redis.Redis.from_url(server.url)
        env = {"PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
        log = Path(os.environ.get("TMPDIR", "/tmp")) / "fq-bench-shared-worker.log"
        for rep in range(reps):
            for mode in rows:
                queue = f"bench-shared-{mode}-{rep}"  # a fresh queue (and worker) per run
                workers = Workers([[sys.executable, "-m", "forrestq", "worker", "--procs", str(a.procs), "--url",
                                    server.url, "--queue", queue, "--quiet"]], log, None, env=env)
                workers.start()
                try:
                    wait_until(lambda: r.zcard("fq:workers") > 0, 30, "the worker to register")
                    time.sleep(0.5)  # its children are up and blocking on the stream
                    res = run_once(server.url, mode, arr, tasks, queue)
                    workers.check_alive()
                finally:
                    workers.stop()
                    r.delete("fq:workers")
                    _drop(r, queue)
                rows[mode].append(res)
                print(f"rep {rep + 1} {mode:6}: {res['wall']:7.2f} s, used_memory +{res['mem']:9.1f} MB, "
                      f"Redis in {res['in']:9.1f} MB, out {res['out']:9.1f} MB, {res['children']:.0f} children",
                      flush=True)
    med = {m: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for m, rs in rows.items() if rs}
    print(f"\nMedians over {reps} repetition(s), {tasks} tasks sharing a {arr.nbytes / 1e6:.0f} MB array, "
          f"worker --procs {a.procs}:\n")
    print("| mode | wall time (s) | Redis used_memory growth (MB) | Redis received (MB) | Redis sent (MB) |")
    print("|---|---:|---:|---:|---:|")
    for m, v in med.items():
        print(f"| {m} | {v['wall']:.2f} | {v['mem']:.1f} | {v['in']:.1f} | {v['out']:.1f} |")
    if "shared" in med and "direct" in med:
        s, d = med["shared"], med["direct"]
        print(f"\ndirect / shared: {d['wall'] / s['wall']:.1f}x the time, {d['mem'] / max(s['mem'], 1e-9):.0f}x the "
              f"memory, {d['in'] / max(s['in'], 1e-9):.0f}x the bytes written")


if __name__ == "__main__":
    main()
