"""What a queued task costs the server, and what a short task waits between runs (issue 18).

    python -m bench.claims_cost                        # all parts, 5 repetitions (about 2 minutes)
    python -m bench.claims_cost --parts memory --reps 3
    cd OTHER && PYTHONPATH=OTHER python /this/checkout/bench/claims_cost.py   # another build's figures

Parts, each on a private server (``bench.harness.Bench``: valkey, loopback, ``appendonly no``):

``memory``  ``used_memory`` delta per queued no-op after ``schedule_many`` of N (after FLUSHALL SYNC),
            and ``MEMORY USAGE`` of one task hash, the stream, the todo zset, per task.
``scripts`` server time of claim.lua and complete.lua per task (``INFO commandstats`` usec of EVALSHA,
            commands inside the scripts included), with no worker: claims of 8 (``ops.claim_many``) of N
            no-ops, then their completions pipelined 48 at a time, 8 per call the way a child sends them
            (``ops.complete_many``; ``complete1_us``: one per call, for comparison).
``sleep``   ``forrestq worker --procs 2`` drains 200 x ``time.sleep(0.01)``: schedule_many -> the last
            one done (ideal 1.0 s), and how far over the ideal that is; from the task records, where the
            excess goes: the first task's start after the call, the median gap in a child between one
            task's end and the next one's start, and the median of its runtime over the 10 ms it sleeps.
``drain``   ``forrestq worker --procs 2`` drains N queued no-ops: the rate, and the CPU each costs the
            worker's process tree (supervisor and children, from /proc) and the server (``INFO cpu``).
``wait``    a child's wait for work (``Claims.wait``: its blocking XREADGROUP and the claim pipelined
            behind it), called in a loop in this process on a backlog of N no-ops, so that it never
            blocks: this process's CPU and the wall time per call (each call as a consumer of its own,
            so that its pending entries hold only the one it was just delivered).

Medians of ``--reps``. This VM is noisy: compare builds in one session, interleaved (run this command
with ``PYTHONPATH`` set to each checkout in turns).
"""
from __future__ import annotations

import argparse
import statistics
import time

from bench.harness import Bench, context, print_context, server_cpu, tree_cpu
from bench.tasks import noop, sleep10
from forrestq import Queue, defer, ops, schema
from forrestq.connection import connect
from forrestq.schema import QueueKeys
from forrestq.worker.claims import Claims
from forrestq.worker.slots import Slot


def memory(b: Bench, n: int) -> dict[str, float]:
    b.r.flushall(asynchronous=False)
    q = Queue("mem", url=b.url)
    q.schedule(defer(noop))  # the queue's own keys first (registration, group, counters)
    m0 = int(b.r.info("memory")["used_memory"])
    q.schedule_many([defer(noop) for _ in range(n)])
    m1 = int(b.r.info("memory")["used_memory"])
    k = q.keys
    tid = q.r.xrange(k.stream, count=1)[0][1][schema.ENTRY_TASK.encode()].decode()
    return {"per_task_b": (m1 - m0) / n, "task_hash_b": float(b.r.memory_usage(k.task(tid)) or 0),
            "stream_b": (b.r.memory_usage(k.stream, samples=0) or 0) / n,
            "todo_b": (b.r.memory_usage(k.todo, samples=0) or 0) / n}


def scripts(b: Bench, n: int) -> dict[str, float]:
    b.r.flushall(asynchronous=False)
    q = Queue("cost", url=b.url)
    q.schedule_many([defer(noop) for _ in range(n)])
    s, k = ops.Scripts(b.r), QueueKeys("cost")
    b.r.config_resetstat()
    claimed: list[ops.Claimed] = []
    while len(claimed) < n:
        token = f"tok{len(claimed)}"
        got = ops.claim_many(s, k, ops.ClaimArgs("bench", token, 60_000, "h", "w", count=8))
        for i, c in enumerate(got):
            c.token = ops.claim_token(token, i)
        claimed += got
    claim_us = b.r.info("commandstats")["cmdstat_evalsha"]["usec"] / n
    out = {"claim_us": claim_us}
    for label, per_call, part in (("complete_us", 8, claimed[:n // 2]), ("complete1_us", 1, claimed[n // 2:])):
        b.r.config_resetstat()
        for i in range(0, len(part), 48):
            pipe = b.r.pipeline(transaction=False)
            ends = [ops.Completion(c.id, c.token, schema.DONE, result=b"\x80N.", runtime=0.0001)
                    for c in part[i:i + 48]]
            for j in range(0, len(ends), per_call):
                ops.complete_many.queue(s, pipe, k, ends[j:j + per_call])
            s.execute(pipe)
        out[label] = b.r.info("commandstats")["cmdstat_evalsha"]["usec"] / len(part)
    if q.counts()["done"] != n:
        raise RuntimeError(f"expected {n} done, got {q.counts()}")
    return out


def sleep(b: Bench, n: int) -> dict[str, float]:
    b.r.flushall(asynchronous=False)
    q = Queue("sleep", url=b.url)
    with b.worker("sleep", 2):
        q.schedule_many([defer(noop) for _ in range(4)]).wait(timeout=60)  # the worker is up and warm
        base = q.counts()["done"]
        t0, clock0 = time.perf_counter(), time.time()
        refs = q.schedule_many(defer(sleep10) for _ in range(n))
        deadline = time.monotonic() + 60 + n * 0.05
        while q.counts()["done"] < base + n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{n} sleep tasks not done in time")
            time.sleep(0.002)
        wall = time.perf_counter() - t0
    ideal = n * 0.01 / 2
    # from the records (the child's clock; t1 - rt: when its code started): per child, the gap between one
    # task's end and the next one's start, and the overshoot of the sleep itself; the first start's delay
    tasks = [q.get(ref) for ref in refs]
    starts: dict[int | None, list[tuple[float, float]]] = {}
    for t in tasks:
        assert t.finished is not None and t.runtime is not None
        starts.setdefault(t.pid, []).append((t.finished - t.runtime, t.finished))
    for runs in starts.values():
        runs.sort()
    gaps = [later[0] - before[1] for runs in starts.values() for before, later in zip(runs, runs[1:])]
    return {"sleep_s": wall, "over_ideal_pct": 100 * (wall / ideal - 1),
            "first_start_ms": 1000 * (min(s for runs in starts.values() for s, _ in runs) - clock0),
            "gap_us": 1e6 * statistics.median(gaps),
            "overshoot_us": 1e6 * statistics.median(finished - start - 0.01 for runs in starts.values()
                                                    for start, finished in runs)}


def worker_cpu(pid: int) -> float:
    """CPU seconds of the worker ``pid`` and its live children, summed."""
    return sum(tree_cpu(pid).values())


def drain(b: Bench, n: int) -> dict[str, float]:
    b.r.flushall(asynchronous=False)
    q = Queue("drain", url=b.url)
    with b.worker("drain", 2) as proc:
        q.schedule_many([defer(noop) for _ in range(4)]).wait(timeout=60)  # the worker is up and warm
        base = q.counts()["done"]
        q.schedule_many([defer(noop) for _ in range(n)])
        cpu0, server0, t0 = worker_cpu(proc.pid), server_cpu(b.r), time.perf_counter()
        b.wait_finished("drain", base + n, 60 + n * 0.01, proc, interval=0.002)
        wall = time.perf_counter() - t0
        cpu, server = worker_cpu(proc.pid) - cpu0, server_cpu(b.r) - server0
    return {"rate": n / wall, "worker_cpu_us": cpu / n * 1e6, "server_cpu_us": server / n * 1e6}


def wait(b: Bench, n: int) -> dict[str, float]:
    b.r.flushall(asynchronous=False)
    q = Queue("wait", url=b.url)
    q.schedule_many([defer(noop) for _ in range(n + 1)])
    r = connect(b.url, check=False, socket_timeout=30, client_name="bench-wait")
    claims = Claims(r, ops.Scripts(r), [QueueKeys("wait")], ops.ClaimArgs("bench-wait", "", 60_000, "bench", "bench"),
                    [Slot()], 0, lambda: None)
    claims.wait(10)  # the connection and the scripts
    cpu0, t0 = time.process_time(), time.perf_counter()
    for i in range(n):
        claims.args.consumer = f"bench-wait-{i}"
        if not claims.wait(10):
            raise RuntimeError("a wait claimed nothing from the backlog")
    return {"client_cpu_us": (time.process_time() - cpu0) / n * 1e6, "wall_us": (time.perf_counter() - t0) / n * 1e6}


PARTS = {"memory": (memory, 20_000), "scripts": (scripts, 8_000), "sleep": (sleep, 200), "drain": (drain, 8_000),
         "wait": (wait, 4_000)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", default=",".join(PARTS))
    ap.add_argument("--reps", type=int, default=5)
    a = ap.parse_args()
    with Bench() as b:
        print_context(context(b.r))
        for name in a.parts.split(","):
            fn, n = PARTS[name]
            runs = [fn(b, n) for _ in range(a.reps)]
            shown = ", ".join(f"{key} {statistics.median(r[key] for r in runs):,.1f}" for key in runs[0])
            print(f"{name} (N={n:,}, median of {a.reps}): {shown}", flush=True)


if __name__ == "__main__":
    main()
