"""RQ driver: ``python -m bench.peers.rq_peer --url ... --workdir ...`` (inside the peers' venv).

Workers: two ``rq worker -u URL -q bench`` processes (default forking ``rq.Worker``: one fork per
job), or with ``--variant simple`` two ``rq worker -u URL -q -w rq.SimpleWorker bench`` (jobs run in
the worker process itself). Enqueue: ``Queue.enqueue_many`` of ``Queue.prepare_data`` (one
pipeline). Single enqueue: ``Queue.enqueue(noop)``. Result wait: ``job.latest_result(timeout=...)``
(a blocking XREAD on the job's result stream). Completion count: ZCARD of the finished and failed registries.
"""
from __future__ import annotations

import sys
from pathlib import Path

from bench.common import Peer, run_driver

QUEUE = "bench"


class RQPeer(Peer):
    name = "rq"
    distributions = ("rq", "redis", "hiredis")
    has_bulk = True

    def __init__(self, url: str, workdir: Path, variant: str = "") -> None:
        super().__init__(url, workdir)
        self.simple = variant == "simple"
        if self.simple:
            self.name = "rq-simple"
        self.notes = {
            "enqueue": "Queue.enqueue_many (pipelined)",
            "single": "Queue.enqueue(noop)",
            "workers": "2 x `rq worker -q" + (" -w rq.SimpleWorker`" if self.simple else "` (fork per job)"),
            "result wait": "job.latest_result(timeout) (blocking XREAD)",
        }

    def worker_cmds(self) -> list[list[str]]:
        rq = str(Path(sys.executable).parent / "rq")
        extra = ["-w", "rq.SimpleWorker"] if self.simple else []
        return [[rq, "worker", "-u", self.url, "-q", *extra, QUEUE] for _ in range(2)]

    def setup(self) -> None:
        from redis import Redis
        from rq import Queue

        from bench.peers.tasks import noop, sleep10

        self.conn = Redis.from_url(self.url)
        self.conn.ping()
        self.q = Queue(QUEUE, connection=self.conn)
        self.noop, self.sleep10 = noop, sleep10
        self.keys = [self.q.finished_job_registry.key, self.q.failed_job_registry.key]

    def _many(self, fn, n: int) -> None:
        from rq import Queue

        self.q.enqueue_many([Queue.prepare_data(fn) for _ in range(n)])

    def enqueue_noops(self, n: int) -> None:
        self._many(self.noop, n)

    def enqueue_one(self) -> None:
        self.q.enqueue(self.noop)

    def enqueue_sleeps(self, n: int) -> None:
        self._many(self.sleep10, n)

    def done_count(self) -> int:
        p = self.conn.pipeline(transaction=False)
        for k in self.keys:
            p.zcard(k)
        return sum(p.execute())

    def round_trip(self) -> None:
        job = self.q.enqueue(self.noop)
        res = job.latest_result(timeout=10)
        if res is None or res.type != res.Type.SUCCESSFUL:
            raise RuntimeError(f"rq round trip failed: {res!r}")

    def close(self) -> None:
        self.conn.close()


if __name__ == "__main__":
    run_driver(RQPeer)
