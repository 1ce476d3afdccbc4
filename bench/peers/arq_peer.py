"""arq driver: ``python -m bench.peers.arq_peer --url ... --workdir ...`` (inside arq's own venv: arq
needs redis<6).

Workers: two ``arq bench.peers.arq_tasks.WorkerSettings`` processes (defaults: poll every 0.5 s, up to
10 concurrent jobs each). ``--variant 10ms`` (system ``arq-10ms``) uses ``FastWorkerSettings``
(poll_delay 0.01 s) and waits for results with ``poll_delay=0.01``. Enqueue: ``await
pool.enqueue_job(...)`` in sequence (arq has no bulk enqueue; the single enqueue is the same loop).
Result wait: ``await job.result(...)`` (polls, every 0.5 s by default).
Completion count: enqueued minus ZCARD of ``arq:queue`` (a job leaves
the queue set when it finishes).
"""
from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from bench.common import Peer, run_driver


class ArqPeer(Peer):
    name = "arq"
    distributions = ("arq", "redis", "hiredis")

    def __init__(self, url: str, workdir: Path, variant: str = "") -> None:
        super().__init__(url, workdir)
        self.fast = variant == "10ms"
        self.poll = 0.01 if self.fast else 0.5
        if self.fast:
            self.name = "arq-10ms"
        self.notes = {
            "enqueue": "await enqueue_job() in sequence (no bulk API)",
            "single": "await enqueue_job() in sequence (as the enqueue)",
            "workers": "2 x `arq WorkerSettings`"
                       + (" (poll_delay=0.01)" if self.fast else " (defaults: poll_delay=0.5 s)"),
            "result wait": f"await job.result(poll_delay={self.poll})",
        }
        self.enqueued = 0

    def worker_cmds(self) -> list[list[str]]:
        exe = str(Path(sys.executable).parent / "arq")
        settings = "FastWorkerSettings" if self.fast else "WorkerSettings"
        return [[exe, f"bench.peers.arq_tasks.{settings}", "--custom-log-dict", "bench.peers.arq_tasks.LOG_CONFIG"]
                for _ in range(2)]

    def setup(self) -> None:
        os.environ["BENCH_REDIS_URL"] = self.url
        import redis
        from arq import create_pool

        from bench.peers import arq_tasks

        self.loop = asyncio.new_event_loop()
        self.pool = self.loop.run_until_complete(create_pool(arq_tasks.WorkerSettings.redis_settings))
        self.loop.run_until_complete(self.pool.ping())
        self.sync = redis.Redis.from_url(self.url)
        self.sync.ping()

    async def _many(self, fn: str, n: int) -> None:
        enqueue = self.pool.enqueue_job
        for _ in range(n):
            await enqueue(fn)
        self.enqueued += n

    def enqueue_noops(self, n: int) -> None:
        self.loop.run_until_complete(self._many("noop", n))

    def enqueue_one(self) -> None:
        self.loop.run_until_complete(self._many("noop", 1))

    def enqueue_single(self, n: int) -> None:
        self.loop.run_until_complete(self._many("noop", n))

    def enqueue_sleeps(self, n: int) -> None:
        self.loop.run_until_complete(self._many("sleep10", n))

    def done_count(self) -> int:
        return self.enqueued - self.sync.zcard("arq:queue")

    async def _rt(self) -> None:
        job = await self.pool.enqueue_job("noop")
        self.enqueued += 1
        await job.result(timeout=10, poll_delay=self.poll)

    def round_trip(self) -> None:
        self.loop.run_until_complete(self._rt())

    def close(self) -> None:
        self.loop.run_until_complete(self.pool.aclose())
        self.loop.close()
        self.sync.close()


if __name__ == "__main__":
    run_driver(ArqPeer)
