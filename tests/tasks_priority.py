"""Task functions for tests/test_expiry_priority.py (result expiry, issue 16), importable by workers
(tests/ is on their path)."""
from __future__ import annotations

import os
import time


def add(a: int, b: int) -> int:
    return a + b


def gate(path: str, value: int, timeout: float = 60.0) -> int:
    """Return ``value`` once ``path`` exists (the test opens the gate), at most ``timeout`` s later."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.02)
    return value


def stamp(path: str, tag: str, seconds: float = 0.0) -> str:
    """Append "<tag> <start time>" to ``path`` (one line, one write: starts from any process keep their
    order), then sleep ``seconds``; returns the tag."""
    line = f"{tag} {time.time()!r}\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
    time.sleep(seconds)
    return tag


def fail_once(path: str) -> int:
    """Raise OSError on the first attempt (``path`` does not exist yet), then return 7."""
    if not os.path.exists(path):
        open(path, "w").close()
        raise OSError("first attempt fails")
    return 7


def starts(path: str) -> list[tuple[str, float]]:
    """The (tag, start time) lines :func:`stamp` wrote, in the order written."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [(tag, float(t)) for tag, t in (line.split() for line in f if line.strip())]
