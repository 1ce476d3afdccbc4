"""A large random DAG (issue 3 "Scale", issue 7): scheduling time, drain rate, Redis memory per node.

    python -m bench.dag                       # 100,000 nodes, fan-in up to 5, --procs 2, 3 repetitions
    python -m bench.dag --quick               # 5,000 nodes, 1 repetition
    python -m bench.dag --nodes 100000 --fan-in 5 --window 1000 --procs 2 --reps 3 --seed 1

The graph: node i is ``defer(combine, i, *inputs)`` with k inputs, k uniform in 0..fan-in (fewer for the
first nodes), drawn without repetition from the ``--window`` nodes before it (so the DAG is deep as well
as wide). The nodes no other node uses (the sinks) are scheduled as roots with one
``q.schedule_many(sinks)``; every other node is reached through them, so all N nodes are written, in
one pipeline (``schedule.lua`` takes 2,000 nodes per call).

Per repetition, on a private server (``bench.harness.Bench``: valkey, loopback, ``appendonly no``),
after FLUSHALL:

- build time of the deferred values (not part of scheduling) and **scheduling time** (``schedule_many``
  wall time: planning, serialisation, the pipelined writes), with the number of EVALSHA calls it made;
- **memory per node**: ``INFO memory`` ``used_memory`` after scheduling minus before, / N (and after the
  drain, when every node also holds its result);
- **drain rate** with ``forrestq worker --procs P`` started after scheduling: (N - 1) / (last finish -
  first finish) over all N nodes (the ``done`` zset is scored by finish time);
- a check: no node failed, and 50 sinks' results equal the values computed here.
"""
from __future__ import annotations

import argparse
import json
import random
import time
from typing import Any

from bench.harness import Bench, context, median, print_context, server_cpu, tree_cpu, wait_quiet
from bench.tasks import combine
from forrestq import Queue, defer
from forrestq.schema import EVENTS_CAP, EVENTS_OFF, QueueKeys

QUEUE = "dag"
MOD = 1_000_003


def build(n: int, fan_in: int, window: int, seed: int) -> tuple[list[Any], list[int], list[int], int]:
    """(nodes, sink indices, expected values, number of edges)."""
    rng = random.Random(seed)
    nodes: list[Any] = []
    values: list[int] = []
    used = bytearray(n)
    edges = 0
    for i in range(n):
        lo = max(0, i - window)
        k = rng.randint(0, min(fan_in, i - lo))
        ins = rng.sample(range(lo, i), k) if k else []
        for j in ins:
            used[j] = 1
        edges += k
        nodes.append(defer(combine, i, *[nodes[j] for j in ins]))
        values.append((i + sum(values[j] for j in ins)) % MOD)
    sinks = [i for i in range(n) if not used[i]]
    return nodes, sinks, values, edges


def one_rep(b: Bench, args: argparse.Namespace, seed: int) -> dict[str, float]:
    b.flush()
    if args.events != "default":  # issue 13: the queue's event stream on or off (stored per queue)
        b.r.set(QueueKeys(QUEUE).events_cap, EVENTS_CAP if args.events == "on" else EVENTS_OFF)
    t0 = time.perf_counter()
    nodes, sinks, values, edges = build(args.nodes, args.fan_in, args.window, seed)
    built = time.perf_counter() - t0
    q = Queue(QUEUE, url=b.url)
    mem0 = b.used_memory()
    calls0 = b.commandstats().get("evalsha", {}).get("calls", 0)
    t0 = time.perf_counter()
    refs = q.schedule_many([nodes[i] for i in sinks])
    scheduled = time.perf_counter() - t0
    calls = b.commandstats().get("evalsha", {}).get("calls", 0) - calls0
    mem1 = b.used_memory()
    counts = q.counts()
    written = sum(counts.values())
    if written != args.nodes:
        raise RuntimeError(f"{written} nodes written, expected {args.nodes}: {counts}")
    proc = b.start_worker(QUEUE, args.procs)
    try:
        b.wait_finished(QUEUE, 1, 60, proc, interval=0.005)
        cpu0, srv0, done0 = tree_cpu(proc.pid), server_cpu(b.r), b.finished(QUEUE)
        b.wait_finished(QUEUE, args.nodes, 120 + args.nodes * 0.02, proc, interval=0.05)
        cpu1, srv1 = tree_cpu(proc.pid), server_cpu(b.r)
    finally:
        b.stop_worker(proc)
    first, last, count = b.finish_span(QUEUE)
    gap, incidents = b.max_gap(QUEUE), b.incidents(proc)
    failed = b.failed(QUEUE)
    if failed:
        raise RuntimeError(f"{failed} DAG nodes failed:\n{b.worker_log()}")
    rng = random.Random(seed + 1)
    for pos in rng.sample(range(len(sinks)), min(50, len(sinks))):
        got = q.get(refs[pos]).returnvalue
        if got != values[sinks[pos]]:
            raise RuntimeError(f"node {sinks[pos]}: result {got!r}, expected {values[sinks[pos]]}")
    mem2 = b.used_memory()
    per = max(1, args.nodes - done0)
    return {"build_s": built, "schedule_s": scheduled, "schedule_per_s": args.nodes / scheduled,
            "evalsha_calls": calls, "roots": len(sinks), "edges": edges,
            "mem_per_node": (mem1 - mem0) / args.nodes, "mem_per_node_after": (mem2 - mem0) / args.nodes,
            "drain_per_s": (count - 1) / (last - first),
            "cpu_server_us": (srv1 - srv0) / per * 1e6,
            "cpu_children_us": (cpu1["children"] - cpu0["children"]) / per * 1e6,
            "cpu_parent_us": (cpu1["parent"] - cpu0["parent"]) / per * 1e6,
            "max_gap_s": gap, **incidents}


ROWS = [
    ("build_s", "building {nodes} deferred nodes (not scheduling)", "{:.2f} s", ""),
    ("schedule_s", "scheduling time (schedule_many of the sinks)", "{:.2f} s", "< 5 s"),
    ("schedule_per_s", "  = nodes per second", "{:,.0f}/s", ""),
    ("evalsha_calls", "  EVALSHA calls (one pipeline)", "{:.0f}", ""),
    ("mem_per_node", "used_memory per node, queued", "{:,.0f} B", "<= 1 KiB"),
    ("mem_per_node_after", "used_memory per node, drained (results kept)", "{:,.0f} B", ""),
    ("drain_per_s", "drain rate, --procs {procs}", "{:,.0f}/s", ""),
    ("cpu_server_us", "  server CPU per node", "{:.0f} us", ""),
    ("cpu_children_us", "  children CPU per node", "{:.0f} us", ""),
    ("cpu_parent_us", "  worker parent CPU per node", "{:.0f} us", ""),
    ("max_gap_s", "longest pause between two finishes", "{:.2f} s", ""),
    ("lease_kills", "children killed for a 'lost' lease (worker log)", "{:.0f}", "0"),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nodes", type=int, default=100_000)
    ap.add_argument("--fan-in", type=int, default=5)
    ap.add_argument("--window", type=int, default=1000, help="inputs are drawn from this many previous nodes")
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--events", choices=("default", "on", "off"), default="default",
                    help="the queue's event stream (issue 13): as the queue's default, kept, or not")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="5,000 nodes, 1 repetition")
    ap.add_argument("--min-idle", type=float, default=1.6, help="before each repetition, wait until this "
                    "many cores were idle for a second (0 = do not wait)")
    ap.add_argument("--quiet-timeout", type=float, default=120, help="... but at most this many seconds")
    ap.add_argument("--json", help="also write the per-repetition figures to this file")
    args = ap.parse_args()
    if args.quick:
        args.nodes, args.reps = 5000, 1
    with Bench() as b:
        ctx = context(b.r)
        print_context(ctx)
        reps = []
        for i in range(args.reps):
            idle = wait_quiet(args.min_idle, args.quiet_timeout)
            got = one_rep(b, args, args.seed + i)
            got["idle_cores_before"] = idle
            reps.append(got)
            print(f"rep {i + 1}/{args.reps}: " + ", ".join(f"{k}={v:,.4g}" for k, v in got.items()), flush=True)
    print(f"# load after: {context()['load']}")
    print(f"\n{args.nodes:,} nodes, fan-in 0..{args.fan_in} from the previous {args.window}, "
          f"~{median([r['edges'] for r in reps]):,.0f} edges, ~{median([r['roots'] for r in reps]):,.0f} "
          f"sinks scheduled as roots; medians of {args.reps} repetition(s):")
    print("| figure | median | min .. max | aim |\n|---|---:|---:|---|")
    for key, label, fmt, aim in ROWS:
        xs = [r[key] for r in reps]
        print(f"| {label.format(**vars(args))} | {fmt.format(median(xs))} | {fmt.format(min(xs))} .. "
              f"{fmt.format(max(xs))} | {aim} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"context": ctx, "args": vars(args), "reps": reps}, f, indent=1)


if __name__ == "__main__":
    main()
