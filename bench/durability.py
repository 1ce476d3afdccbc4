"""What durability ``replica`` costs (issue 17): enqueue and drain, none vs replica, on a Sentinel set.

    python -m bench.durability                 # 5 interleaved rounds (about two minutes)
    python -m bench.durability --rounds 7 --single 300 --many 2000 --drain 2000 --procs 2

One ``forrestq.topology.LocalSentinel`` (a primary + one replica + 3 sentinels on loopback, the nodes as
the launcher starts them: ``appendonly yes``, ``appendfsync everysec``), reached through its
``redis+sentinel://`` URL by the producer and the workers. Each round runs both settings, the order
alternating (none, replica; replica, none; ...), after FLUSHALL:

1. **single**: --single sequential ``q.schedule(defer(noop))`` calls (2 untimed first), rate = calls / s;
2. **schedule_many**: one ``q.schedule_many`` of --many no-ops, rate = tasks / s;
3. **drain**: ``forrestq worker --procs P`` with ``FORRESTQ_DURABILITY`` set likewise, started after the
   enqueue on the queue's backlog (--drain no-ops, scheduled with the single calls and the batch above
   on a queue of their own); rate = (count - 1) / (last t1 - first t1) from the ``done`` zset.

The producer's queue is ``Queue(name, durability="none"|"replica")``. ``WAIT`` calls per task on the
primary (INFO commandstats) are printed to show the setting took effect. Medians over the rounds and
the ratio replica/none per round (then its median). The topology and every worker are stopped in a
``finally``; every wait is bounded.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.capacity import Workers, med
from bench.harness import context, print_context, wait_for, wait_quiet
from bench.tasks import noop
from forrestq import Queue, defer
from forrestq.connection import connect
from forrestq.schema import QueueKeys
from forrestq.topology import LocalSentinel

MODES = ("none", "replica")


def wait_calls(r: Any) -> int:
    return int(r.info("commandstats").get("cmdstat_wait", {}).get("calls", 0))


def one(mode: str, url: str, sentinel: LocalSentinel, w: Workers, args: argparse.Namespace, tag: str,
        ) -> dict[str, float]:
    sentinel.flush()
    prim = sentinel.primary().client()
    try:
        r = connect(url, socket_timeout=60)
        out: dict[str, float] = {}
        q = Queue(f"dur-{tag}", url=url, durability=mode)
        for _ in range(2):
            q.schedule(defer(noop))
        w0 = wait_calls(prim)
        t0 = time.perf_counter()
        for _ in range(args.single):
            q.schedule(defer(noop))
        out["single_per_s"] = args.single / (time.perf_counter() - t0)
        tasks = [defer(noop) for _ in range(args.many)]
        t0 = time.perf_counter()
        q.schedule_many(tasks)
        out["many_per_s"] = args.many / (time.perf_counter() - t0)
        out["wait_per_schedule"] = (wait_calls(prim) - w0) / (args.single + 1)
        # the drain: a queue of its own holding --drain no-ops (+2 warm-ups)
        name = f"dur-drain-{tag}"
        qd = Queue(name, url=url, durability=mode)
        qd.schedule_many([defer(noop) for _ in range(2)])
        for s in range(0, args.drain, 2000):
            qd.schedule_many([defer(noop) for _ in range(min(2000, args.drain - s))])
        total = args.drain + 2
        counts = QueueKeys(name).counts

        def finished() -> int:
            done, failed = r.hmget(counts, "done", "failed")
            return int(done or 0) + int(failed or 0)

        w1 = wait_calls(prim)
        proc = w.start(url, [name], args.procs, env={"FORRESTQ_DURABILITY": mode})
        try:
            wait_for(lambda: w.check() and finished() >= total, 60 + args.drain * 0.05, f"{total} tasks", 0.01)
        finally:
            w.stop(proc)
        k = QueueKeys(name).done
        first = r.zrange(k, 0, 0, withscores=True)[0][1]
        last = r.zrange(k, -1, -1, withscores=True)[0][1]
        out["drain_per_s"] = (r.zcard(k) - 1) / (last - first)
        out["wait_per_task"] = (wait_calls(prim) - w1) / total
        out["failed"] = int(r.hget(counts, "failed") or 0)
        r.close()
        return out
    finally:
        prim.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--single", type=int, default=300, help="sequential schedule() calls")
    ap.add_argument("--many", type=int, default=2000, help="tasks of one schedule_many")
    ap.add_argument("--drain", type=int, default=2000, help="no-ops drained")
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--min-idle", type=float, default=1.2)
    ap.add_argument("--json", help="also write every figure to this file")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="fq-durability-"))
    sentinel = LocalSentinel(tmp / "sentinel")
    rounds: list[dict[str, dict[str, float]]] = []
    ctx: dict[str, str] = {}
    try:
        sentinel.start()
        url = sentinel.url
        prim = sentinel.primary().client(decode_responses=True)
        try:
            conf = prim.config_get("appendonly")["appendonly"] + ", appendfsync " + \
                prim.config_get("appendfsync")["appendfsync"]
            ctx = context(prim)
        finally:
            prim.close()
        ctx["server"] = ctx.get("server", "").split(",")[0] + f", appendonly {conf}, loopback TCP"
        ctx["topology"] = f"LocalSentinel: primary + 1 replica + 3 sentinels, {url}"
        print_context(ctx)
        with contextlib.ExitStack() as stack:
            w = Workers(tmp)
            stack.callback(w.stop_all)
            for i in range(args.rounds):
                idle = wait_quiet(args.min_idle, 60)
                got: dict[str, dict[str, float]] = {}
                for mode in (MODES if i % 2 == 0 else MODES[::-1]):
                    got[mode] = one(mode, url, sentinel, w, args, f"{mode}-{i}")
                    got[mode]["idle_cores_before"] = idle
                rounds.append(got)
                print(f"round {i + 1}/{args.rounds}: {json.dumps(got)}", flush=True)
            incidents = w.incidents()
        print(f"# worker logs: {incidents}")
        print(f"# load after: {context()['load']}")
        report(rounds, args)
    finally:
        with contextlib.suppress(Exception):
            sentinel.stop()
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"context": ctx, "args": vars(args), "rounds": rounds}, f, indent=1)
        shutil.rmtree(tmp, ignore_errors=True)


def report(rounds: list[dict[str, dict[str, float]]], args: argparse.Namespace) -> None:
    print(f"\nmedians of {len(rounds)} interleaved round(s); ratio = replica / none, per round, then its median")
    print("| figure | none | replica | ratio replica/none (min .. max) |")
    print("|---|---:|---:|---:|")
    for key, label, fmt in (("single_per_s", f"enqueue, {args.single} single schedule() calls", "{:,.0f}/s"),
                            ("many_per_s", f"enqueue, schedule_many of {args.many:,}", "{:,.0f}/s"),
                            ("drain_per_s", f"drain {args.drain:,} no-ops, --procs {args.procs}", "{:,.0f}/s")):
        a = [r["none"][key] for r in rounds]
        b = [r["replica"][key] for r in rounds]
        ratio = [y / x for x, y in zip(a, b)]
        print(f"| {label} | {fmt.format(med(a))} | {fmt.format(med(b))} | {med(ratio):.2f} "
              f"({min(ratio):.2f} .. {max(ratio):.2f}) |")
    for key, label in (("wait_per_schedule", "WAIT per schedule() or schedule_many call"),
                       ("wait_per_task", "WAIT per drained task")):
        print(f"| {label} (primary's commandstats) | {med([r['none'][key] for r in rounds]):.2f} | "
              f"{med([r['replica'][key] for r in rounds]):.2f} | |")


if __name__ == "__main__":
    main()
