"""Task functions for tests/test_time.py (importable by workers: tests/ is on their path): they note
when they started, by this host's clock, from inside the task."""
from __future__ import annotations

import os
import time

from forrestq import current_task


def stamp(path: str, tag: str = "") -> float:
    """Append "<tag> <task id> <start time>" to ``path`` and return the start time."""
    started = time.time()
    ctx = current_task()
    with open(path, "a") as f:
        f.write(f"{tag or '-'} {ctx.id if ctx else '-'} {started!r}\n")
    return started


def fail_once(path: str) -> str:
    """Raise OSError on the first attempt (``path`` does not exist yet), then return "ok"."""
    if not os.path.exists(path):
        open(path, "w").close()
        raise OSError("first attempt fails")
    return "ok"


def add(a: int, b: int) -> int:
    return a + b


def one() -> int:
    return 1


def stamps(path: str) -> list[tuple[str, str, float]]:
    """The lines :func:`stamp` wrote: (tag, task id, start time)."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [(tag, tid, float(t)) for tag, tid, t in (line.split() for line in f if line.strip())]
