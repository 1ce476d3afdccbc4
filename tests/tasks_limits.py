"""Task functions of tests/test_limits.py (importable by name from the worker children)."""
from __future__ import annotations

import os
import time
from pathlib import Path


def span(tag: str, seconds: float) -> tuple[str, int, float, float, str]:
    """Sleep ``seconds``; say when and where it ran: (tag, pid, start, end, host)."""
    start = time.time()
    time.sleep(seconds)
    return tag, os.getpid(), start, time.time(), os.environ.get("FORRESTQ_HOST", "")


def hang_while(flag: str, started: str) -> float:
    """Write this process's pid to ``started``, then sleep while the file ``flag`` exists (at most 60 s)."""
    Path(started).write_text(str(os.getpid()))
    deadline = time.monotonic() + 60
    while Path(flag).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return time.time()
