"""Dramatiq driver: ``python -m bench.peers.dramatiq_peer --url ... --workdir ...`` (in the peers' venv).

Worker: ``dramatiq bench.peers.dramatiq_tasks -p 2 -t 1`` (2 worker processes of one thread each;
RedisBroker, Results middleware with a RedisBackend). Enqueue: ``actor.send()`` per message (Dramatiq
has no bulk enqueue; ``group().run()`` does the same loop; the single enqueue is the same call). Result wait:
``message.get_result(block=True, timeout=...)`` (a blocking BRPOPLPUSH). Completion count: DBSIZE of
the result database (db 1).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from bench.common import Peer, run_driver


class DramatiqPeer(Peer):
    name = "dramatiq"
    distributions = ("dramatiq", "redis", "hiredis")
    notes = {
        "enqueue": "actor.send() per message (no bulk API)",
        "single": "actor.send()",
        "workers": "`dramatiq -p 2 -t 1`, Results middleware (redis)",
        "result wait": "message.get_result(block=True) (BRPOPLPUSH)",
    }

    def worker_cmds(self) -> list[list[str]]:
        exe = str(Path(sys.executable).parent / "dramatiq")
        return [[exe, "bench.peers.dramatiq_tasks", "-p", "2", "-t", "1"]]

    def setup(self) -> None:
        os.environ["BENCH_REDIS_URL"] = self.url
        import redis

        from bench.peers import dramatiq_tasks

        self.t = dramatiq_tasks
        self.results = redis.Redis.from_url(dramatiq_tasks.RESULTS_URL)
        self.results.ping()
        dramatiq_tasks.broker.client.ping()

    def _many(self, actor, n: int) -> None:
        send = actor.send
        for _ in range(n):
            send()

    def enqueue_noops(self, n: int) -> None:
        self._many(self.t.noop, n)

    def enqueue_one(self) -> None:
        self.t.noop.send()

    def enqueue_sleeps(self, n: int) -> None:
        self._many(self.t.sleep10, n)

    def done_count(self) -> int:
        return self.results.dbsize()

    def round_trip(self) -> None:
        self.t.noop.send().get_result(block=True, timeout=10_000)

    def close(self) -> None:
        self.results.close()


if __name__ == "__main__":
    run_driver(DramatiqPeer)
