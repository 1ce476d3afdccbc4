"""Task functions for tests/test_dynamic.py (importable by workers: tests/ is on their path).

Tasks that return deferred trees (continuations), reductions that tolerate failures, and tasks that
schedule more tasks from inside."""
from __future__ import annotations

import os
import time

from forrestq import Failed, Queue, allow_failed, current_task, defer


def work(path: str, seconds: float = 0.3) -> tuple[str, int]:
    """One file's work: its name, its text, and the pid of the worker process that ran it."""
    time.sleep(seconds)
    with open(path) as f:
        text = f.read()
    return f"{os.path.basename(path)}={text}", os.getppid()


def join(results: list[tuple[str, int]]) -> dict[str, object]:
    return {"items": sorted(r[0] for r in results), "workers": len({r[1] for r in results})}


def listing(directory: str, seconds: float = 0.3) -> object:
    """Learns its inputs at run time: fans out over the directory's files and joins them."""
    files = sorted(os.listdir(directory))
    return defer(join, [defer(work, os.path.join(directory, f), seconds) for f in files])


def items(joined: dict[str, object]) -> int:
    """A dependent of a continued task: gets the continuation's result."""
    return len(joined["items"])  # type: ignore[arg-type]


def maybe_fail(i: int, bad: list[int]) -> int:
    if i in bad:
        raise ValueError(f"bad input {i}")
    return i * 10


def total(values: list[int]) -> int:
    return sum(values)


def fanout(n: int, bad: list[int]) -> object:
    return defer(total, [defer(maybe_fail, i, bad) for i in range(n)])


def summary(values: list[object]) -> list[object]:
    """An allow-failed join: what it got, a Failed turned into a plain tuple."""
    return [("failed", v.task_id, v.exc_type, v.reason) if isinstance(v, Failed) else v for v in values]


def tolerant_fanout(n: int, bad: list[int]) -> object:
    return defer(allow_failed(summary), [defer(maybe_fail, i, bad) for i in range(n)])


def wrap(x: object) -> str:
    return f"[{x}]"


def nested(depth: int) -> object:
    """A continuation whose task returns a continuation, ``depth`` deep."""
    if depth == 0:
        return "leaf"
    return defer(wrap, defer(nested, depth - 1))


def sleepy(seconds: float, i: int) -> int:
    time.sleep(seconds)
    return i


def collect(values: list[int]) -> list[int]:
    return sorted(values)


def slow_fanout(n: int, seconds: float) -> object:
    return defer(collect, [defer(sleepy, seconds, i) for i in range(n)])


def flaky(marker: str) -> str:
    if not os.path.exists(marker):
        raise RuntimeError("marker missing")
    return "fixed"


def flaky_fanout(marker: str) -> object:
    return defer(collect_text, [defer(flaky, marker), defer(wrap, "ok")])


def collect_text(values: list[str]) -> str:
    return "+".join(values)


def double(x: int) -> int:
    return 2 * x


def spawner(n: int, other: str) -> list[str]:
    """Schedules more tasks from inside: on its own queue and on another queue of the same server."""
    ctx = current_task()
    assert ctx is not None
    mine = ctx.queue.schedule_many([defer(double, i) for i in range(n)])
    theirs = Queue(other, url=ctx.url).schedule(defer(double, 100))
    return [r.id for r in mine] + [theirs.id]


def returns_keyed() -> object:
    """Returns a node scheduled before (keyed "answer"): the continuation's root exists already."""
    from forrestq import producer
    return producer.keyed(defer(double, 21), "answer")
