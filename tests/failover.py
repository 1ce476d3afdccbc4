"""Load through a failover: a real worker drains sleeping tasks while a test kills or fails over the
primary under it; what every failover test asserts afterwards (every task done, none lost, each
recorded once) is :func:`assert_all_done_once`."""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import tasks
from procs import worker

from forrestq import Queue, defer


@dataclass
class Drained:
    q: Queue
    n: int
    results: list[int] = field(default_factory=list)
    broke_at: float = 0.0  # monotonic time of the failure
    first_after: float = 0.0  # seconds from the failure to the next result the reader saw


def drain_through(url: str, name: str, n: int, break_it: Callable[[], None], log: Path, at: int = 25,
                  procs: int = 2, seconds: float = 0.03, late: int = 20) -> Drained:
    """Schedule n tasks (each returns its index after ``seconds``), start a worker, call
    ``break_it`` once ``at`` results came back, and schedule ``late`` more at once, while the
    failover goes on (the producer rides it out); returns what ``results()`` yielded."""
    q = Queue(name, url)
    q.schedule_many([defer(tasks.sleep_then, seconds, i) for i in range(n)])
    out = Drained(q, n + late)
    with worker(url, name, procs, "--lease", "2", "--grace", "5", log=log):
        for task in q.results(timeout=60):
            out.results.append(task.returnvalue)
            if out.broke_at and not out.first_after:
                out.first_after = time.monotonic() - out.broke_at
            if len(out.results) == at:
                out.broke_at = time.monotonic()
                break_it()
                for i in range(n, n + late):
                    q.schedule(defer(tasks.sleep_then, seconds, i))
    return out


def assert_all_done_once(d: Drained, log: Path) -> None:
    """Every task done, none failed or lost, each result yielded exactly once."""
    assert sorted(d.results) == list(range(d.n)), log.read_text()[-3000:]
    counts = d.q.counts()
    assert (counts["done"], counts["failed"], counts["ready"], counts["running"]) == (d.n, 0, 0, 0), counts
    assert d.q.r.zcard(d.q.keys.done) == d.n
