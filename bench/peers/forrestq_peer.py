"""forrestq driver: ``python -m bench.peers.forrestq_peer --url ... --workdir ...`` (forrestq's own
environment: the one ``python -m bench.compare`` runs in).

Worker: ``python -m forrestq worker --procs 2 --queue bench --url URL --quiet`` (one worker, 2 killable
child processes). Enqueue: ``Queue.schedule_many`` (pipelined batch). Result wait:
``Queue.wait(ref, timeout=...)`` (blocking XREAD on the queue's stream of finished tasks).
Completion count: the ``done`` + ``failed`` counters of ``Queue.counts()`` (one HGETALL).
"""
from __future__ import annotations

import sys

from bench.common import Peer, run_driver

QUEUE = "bench"


class ForrestqPeer(Peer):
    name = "forrestq"
    distributions = ("forrestq", "redis", "hiredis", "dill")
    notes = {
        "enqueue": "Queue.schedule_many (pipelined batch)",
        "workers": "`forrestq worker --procs 2 --quiet` (every task in a killable child)",
        "result wait": "Queue.wait(ref) (blocking XREAD)",
    }

    def worker_cmds(self) -> list[list[str]]:
        return [[sys.executable, "-m", "forrestq", "worker", "--procs", "2", "--queue", QUEUE,
                 "--url", self.url, "--quiet"]]

    def setup(self) -> None:
        from bench.peers.tasks import noop, sleep10
        from forrestq import Queue, defer

        self.q = Queue(QUEUE, url=self.url)
        self.defer, self.noop, self.sleep10 = defer, noop, sleep10
        self.q.counts()

    def enqueue_noops(self, n: int) -> None:
        defer, noop = self.defer, self.noop
        self.q.schedule_many(defer(noop) for _ in range(n))

    def enqueue_sleeps(self, n: int) -> None:
        defer, fn = self.defer, self.sleep10
        self.q.schedule_many(defer(fn) for _ in range(n))

    def done_count(self) -> int:
        c = self.q.counts()
        return c.get("done", 0) + c.get("failed", 0)

    def round_trip(self) -> None:
        ref = self.q.schedule(self.defer(self.noop))
        if hasattr(self.q, "wait"):
            task = self.q.wait(ref, timeout=10)
        else:  # exactly one unfinished task on the queue: the next result is ours
            task = next(iter(self.q.results(timeout=10)))
        if task.state != "done":
            raise RuntimeError(f"forrestq round trip ended in state {task.state!r}")


if __name__ == "__main__":
    run_driver(ForrestqPeer)
