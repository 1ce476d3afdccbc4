"""Task functions of tests/test_resources.py (importable by name from the worker children)."""
from __future__ import annotations

import os
import time
from pathlib import Path


def span(tag: str, seconds: float) -> tuple[str, int, float, float, str | None]:
    """Sleep ``seconds``; say when it ran, where, and which GPUs it was given:
    (tag, pid, start, end, CUDA_VISIBLE_DEVICES)."""
    start = time.time()
    time.sleep(seconds)
    return tag, os.getpid(), start, time.time(), os.environ.get("CUDA_VISIBLE_DEVICES")


def together(rendezvous: str, n: int) -> tuple[str | None, int]:
    """Wait (at most 20 s) until ``n`` tasks are in ``rendezvous`` at once, so they surely run
    concurrently; return this task's CUDA_VISIBLE_DEVICES and pid."""
    here = Path(rendezvous)
    (here / str(os.getpid())).touch()
    deadline = time.monotonic() + 20
    while len(list(here.iterdir())) < n and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)  # the others see us too
    return os.environ.get("CUDA_VISIBLE_DEVICES"), os.getpid()


def hog() -> str:
    """The function --admit-by-memory must not start (the test records a huge peak for it)."""
    return "ran"
