"""forrestq driver: ``python -m bench.peers.forrestq_peer --url ... --workdir ...`` (forrestq's own
environment: the one ``python -m bench.compare`` runs in).

Worker: ``python -m forrestq worker --procs 2 --queue bench --url URL --quiet`` (one worker, 2 killable
child processes). Enqueue: ``Queue.schedule_many`` (pipelined batch); single enqueue:
``Queue.schedule(defer(noop))`` per task. Result wait: ``Queue.wait(ref, timeout=...)`` (blocking XREAD
on the queue's stream of finished tasks). Completion count: the ``done`` + ``failed`` counters of
``Queue.counts()`` (one HGETALL).

Extras (forrestq only): a random DAG of ``--dag-nodes`` nodes (as ``bench/dag.py``: fan-in 0..5 from the
1,000 nodes before, seed 1) scheduled with one ``schedule_many`` of its sinks and drained by a fresh
``forrestq worker --procs 2``; and the wall time of ``python -m forrestq status --url URL`` as a process.

``--variant base`` (system ``forrestq-base``): the same driver, run by the orchestrator with
``BENCH_PATH`` at a directory whose ``forrestq`` is another checkout's (``--forrestq-base``); the
worker side reports the file it imported forrestq from.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import Peer, Workers, bench_path, run_driver, wait_until

QUEUE = "bench"
DAG_QUEUE = "bench-dag"


class ForrestqPeer(Peer):
    name = "forrestq"
    distributions = ("forrestq", "redis", "hiredis", "dill")
    has_bulk = True
    na: dict[str, str] = {}

    def __init__(self, url: str, workdir: Path, variant: str = "") -> None:
        super().__init__(url, workdir)
        if variant == "base":
            self.name = "forrestq-base"
        self.notes = {
            "enqueue": "Queue.schedule_many (pipelined batch)",
            "single": "Queue.schedule(defer(noop))",
            "workers": "`forrestq worker --procs 2 --quiet` (every task in a killable child)",
            "result wait": "Queue.wait(ref) (blocking XREAD)",
        }

    def worker_cmds(self) -> list[list[str]]:
        return [self.worker_cmd(QUEUE)]

    def worker_cmd(self, queue: str) -> list[str]:
        return [sys.executable, "-m", "forrestq", "worker", "--procs", "2", "--queue", queue,
                "--url", self.url, "--quiet"]

    def setup(self) -> None:
        import forrestq
        from bench.peers.tasks import noop, sleep10, where
        from forrestq import Queue, defer

        self.notes["forrestq (driver side)"] = os.path.realpath(forrestq.__file__)
        self.q = Queue(QUEUE, url=self.url)
        self.Queue, self.defer, self.noop, self.sleep10, self.where = Queue, defer, noop, sleep10, where
        self.q.counts()

    def enqueue_noops(self, n: int) -> None:
        defer, noop = self.defer, self.noop
        self.q.schedule_many(defer(noop) for _ in range(n))

    def enqueue_one(self) -> None:
        self.q.schedule(self.defer(self.noop))

    def enqueue_single(self, n: int) -> None:
        schedule, defer, noop = self.q.schedule, self.defer, self.noop
        for _ in range(n):
            schedule(defer(noop))

    def enqueue_sleeps(self, n: int) -> None:
        defer, fn = self.defer, self.sleep10
        self.q.schedule_many(defer(fn) for _ in range(n))

    def done_count(self) -> int:
        c = self.q.counts()
        return c.get("done", 0) + c.get("failed", 0)

    def round_trip(self) -> None:
        ref = self.q.schedule(self.defer(self.noop))
        task = self.q.wait(ref, timeout=10)
        if task.state != "done":
            raise RuntimeError(f"forrestq round trip ended in state {task.state!r}")

    def probe(self, res: dict[str, Any]) -> None:
        task = self.q.wait(self.q.schedule(self.defer(self.where)), timeout=10)
        self.notes["forrestq (worker side)"] = str(task.returnvalue)
        res["notes"] = dict(self.notes)

    def extras(self, a: argparse.Namespace, res: dict[str, Any], skip: set[str], workers_log: Path,
               phase: Callable[[str], None]) -> None:
        # a failure here is reported (the run's exit status is 1) without losing the other figures
        if "dag" in skip or a.dag_nodes < 1:
            res["na"]["dag_schedule_s"] = res["na"]["dag_drain_rate"] = "skipped (--skip dag)"
        else:
            try:
                self.dag(a.dag_nodes, res, a.pgid_file, workers_log)
            except Exception as e:  # noqa: BLE001 - any failure of the code under test
                why = f"failed: {type(e).__name__}: {str(e)[:200]}"
                res["na"]["dag_schedule_s"] = res["na"]["dag_drain_rate"] = why
                res.setdefault("failures", []).append(f"DAG of {a.dag_nodes:,} nodes {why}")
                res.pop("dag_schedule_s", None)
            phase("dag")
        if "status" in skip or a.status_n < 1:
            res["na"]["status_ms"] = "skipped (--skip status)"
        else:
            try:
                self.status(a.status_n, res)
            except Exception as e:  # noqa: BLE001
                res["na"]["status_ms"] = f"failed: {type(e).__name__}: {e}"
                res.setdefault("failures", []).append(f"`forrestq status` failed: {type(e).__name__}: {e}")
            phase("status")

    def dag(self, n: int, res: dict[str, Any], pgid_file: Path | None, workers_log: Path) -> None:
        t0 = time.perf_counter()
        from bench.dag import build  # bench/dag.py's graph: fan-in 0..5 from the 1,000 nodes before, seed 1

        nodes, sinks, _, _ = build(n, 5, 1000, 1)
        res["dag_build_s"] = time.perf_counter() - t0
        q = self.Queue(DAG_QUEUE, url=self.url)
        t0 = time.perf_counter()
        q.schedule_many([nodes[i] for i in sinks])
        res["dag_schedule_s"] = time.perf_counter() - t0
        del nodes
        written = sum(q.counts().values())
        if written != n:
            raise RuntimeError(f"DAG: {written} nodes written, expected {n}")

        def finished() -> int:
            c = q.counts()
            return c.get("done", 0) + c.get("failed", 0)
        w = Workers([self.worker_cmd(DAG_QUEUE)], workers_log, pgid_file, self.worker_env(), cwd=Path(bench_path()))
        try:
            w.start()

            def started() -> bool:
                w.check_alive()
                return finished() >= 1
            wait_until(started, 120, "the DAG worker's first node", interval=0.002)
            t0, c0 = time.perf_counter(), finished()

            def all_done() -> bool:
                w.check_alive()
                return finished() >= n
            wait_until(all_done, 120 + n * 0.03, f"the DAG's {n} nodes", interval=0.005)
            res["dag_drain_s"] = time.perf_counter() - t0
        finally:
            w.stop()
        res["dag_drain_rate"] = (n - c0) / res["dag_drain_s"]
        failed = q.counts().get("failed", 0)
        if failed:
            raise RuntimeError(f"DAG: {failed} nodes failed")

    def status(self, reps: int, res: dict[str, Any]) -> None:
        cmd = [sys.executable, "-m", "forrestq", "status", "--url", self.url]
        env = {**os.environ, **self.worker_env()}
        xs = []
        for _ in range(reps):
            t0 = time.perf_counter()
            p = subprocess.run(cmd, cwd=bench_path(), env=env, stdin=subprocess.DEVNULL, capture_output=True,
                               timeout=60)
            xs.append(time.perf_counter() - t0)
            if p.returncode != 0:
                raise RuntimeError(f"forrestq status exited with {p.returncode}: {p.stderr.decode()[-500:]}")
        res["status_ms"] = statistics.median(xs) * 1000
        res["status_all_ms"] = [round(x * 1000, 1) for x in xs]


if __name__ == "__main__":
    run_driver(ForrestqPeer)
