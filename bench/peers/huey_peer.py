"""Huey driver: ``python -m bench.peers.huey_peer --url ... --workdir ...`` (inside the peers' venv).

Worker: ``huey_consumer bench.peers.huey_tasks.huey -w 2 -k process -q`` (one consumer process and 2
worker processes; RedisHuey, blocking BRPOP dequeue). Enqueue: ``task.map(...)`` (one LPUSH per task;
Huey has no pipelined bulk enqueue); single enqueue: ``noop()`` (calling a task enqueues it).
Result wait: ``result.get(blocking=True, timeout=...)`` with ``notify_result=True`` (a BLPOP on a
per-task notification key). Completion count: HLEN of the result hash (``store_none=True``).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from bench.common import Peer, run_driver


class HueyPeer(Peer):
    name = "huey"
    distributions = ("huey", "redis", "hiredis")
    notes = {
        "enqueue": "task.map() (one LPUSH per task, no pipelining)",
        "single": "noop() (the task call enqueues)",
        "workers": "`huey_consumer -w 2 -k process`, RedisHuey(notify_result=True, store_none=True)",
        "result wait": "result.get(blocking=True) with notify_result (BLPOP)",
    }

    def worker_cmds(self) -> list[list[str]]:
        exe = str(Path(sys.executable).parent / "huey_consumer")
        return [[exe, "bench.peers.huey_tasks.huey", "-w", "2", "-k", "process", "-q"]]

    def setup(self) -> None:
        os.environ["BENCH_REDIS_URL"] = self.url
        from bench.peers import huey_tasks

        self.t = huey_tasks
        self.storage = huey_tasks.huey.storage
        self.conn = self.storage.conn
        self.conn.ping()

    def enqueue_noops(self, n: int) -> None:
        self.t.noop.map([()] * n)

    def enqueue_one(self) -> None:
        self.t.noop()

    def enqueue_sleeps(self, n: int) -> None:
        self.t.sleep10.map([()] * n)

    def done_count(self) -> int:
        return self.conn.hlen(self.storage.result_key)

    def round_trip(self) -> None:
        # preserve=True keeps the result in the hash, so that HLEN keeps counting finished tasks
        self.t.noop().get(blocking=True, timeout=10, preserve=True)


if __name__ == "__main__":
    run_driver(HueyPeer)
