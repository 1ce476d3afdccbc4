"""Celery driver: ``python -m bench.peers.celery_peer --url ... --workdir ...`` (inside the peers' venv).

Worker: ``celery -A bench.peers.celery_tasks worker -P prefork -c 2 -l WARNING`` (one main process
and 2 forked pool children; Redis broker, Redis result backend). Enqueue: ``group(...).apply_async()``
(Celery has no pipelined bulk send: it publishes one message per task over one producer).
Single enqueue: ``noop.delay()``. Result wait: ``AsyncResult.get(timeout=...)`` (the Redis backend waits on pub/sub).
Completion count: DBSIZE of the result database (db 1).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from bench.common import Peer, run_driver


class CeleryPeer(Peer):
    name = "celery"
    distributions = ("celery", "kombu", "redis", "hiredis")
    notes = {
        "enqueue": "group(...).apply_async() (one publish per task, no pipelining)",
        "single": "noop.delay()",
        "workers": "`celery worker -P prefork -c 2`, redis broker + redis result backend",
        "result wait": "AsyncResult.get (pub/sub)",
    }

    def worker_cmds(self) -> list[list[str]]:
        celery = str(Path(sys.executable).parent / "celery")
        return [[celery, "-A", "bench.peers.celery_tasks", "worker", "-P", "prefork", "-c", "2",
                 "-l", "WARNING"]]

    def setup(self) -> None:
        os.environ["BENCH_REDIS_URL"] = self.url
        import redis
        from celery import group

        from bench.peers import celery_tasks

        self.group = group
        self.t = celery_tasks
        self.results = redis.Redis.from_url(celery_tasks.BACKEND)
        self.results.ping()
        # open the producer connection before anything is timed
        celery_tasks.app.connection_for_write().ensure_connection(max_retries=3)

    def _many(self, task, n: int) -> None:
        self.group(task.s() for _ in range(n)).apply_async()

    def enqueue_noops(self, n: int) -> None:
        self._many(self.t.noop, n)

    def enqueue_one(self) -> None:
        self.t.noop.delay()

    def enqueue_sleeps(self, n: int) -> None:
        self._many(self.t.sleep10, n)

    def done_count(self) -> int:
        return self.results.dbsize()

    def round_trip(self) -> None:
        self.t.noop.delay().get(timeout=10)

    def close(self) -> None:
        self.results.close()


if __name__ == "__main__":
    run_driver(CeleryPeer)
