"""Coroutine tasks for tests/test_placement.py, importable by workers (tests/ is on their PYTHONPATH).

Each task appends one JSON line ``{"name", "kind", "pid", "t0", "t1"}`` to a log file when it ends, so
a test can see which child ran what and which runs overlapped. Waits are bounded, never "a bit".
"""
from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path


def _note(log: str, name: str, kind: str, t0: float, **extra: object) -> None:
    line = json.dumps({"name": name, "kind": kind, "pid": os.getpid(), "t0": t0, "t1": time.time(), **extra})
    with open(log, "a") as f:
        f.write(line + "\n")


def read_log(log: str | Path) -> list[dict]:
    path = Path(log)
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


async def io_together(log: str, name: str, started_dir: str, n: int, timeout: float = 30.0) -> str:
    """An IO-bound coroutine that only ends once ``n`` of its kind have started (a barrier): if they
    could not run at the same time, it times out and fails."""
    t0 = time.time()
    Path(started_dir, name).write_text(str(os.getpid()))
    deadline = time.monotonic() + timeout
    while len(list(Path(started_dir).iterdir())) < n:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{name}: only {len(list(Path(started_dir).iterdir()))} of {n} started")
        await asyncio.sleep(0.01)
    _note(log, name, "io", t0)
    return name


async def io_short(log: str, name: str, seconds: float) -> str:
    """An IO-bound coroutine: awaits ``seconds``."""
    t0 = time.time()
    await asyncio.sleep(seconds)
    _note(log, name, "io", t0)
    return name


async def blocking(log: str, name: str, seconds: float) -> str:
    """A coroutine that blocks its event loop (``time.sleep``) after one await: two of these on one
    loop interleave, so their intervals overlap in one pid."""
    t0 = time.time()
    await asyncio.sleep(0.02)
    time.sleep(seconds)
    await asyncio.sleep(0)
    _note(log, name, "cpu", t0)
    return name


async def io_gated(log: str, name: str, gate: str, timeout: float = 60.0) -> str:
    """An IO-bound coroutine that waits (awaiting) until the file ``gate`` exists."""
    t0 = time.time()
    deadline = time.monotonic() + timeout
    while not Path(gate).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(gate)
        await asyncio.sleep(0.01)
    _note(log, name, "io", t0)
    return name


async def after(log: str, name: str, marker: str) -> str:
    """A coroutine (not IO-bound): records whether ``marker`` existed when it started."""
    t0 = time.time()
    seen = Path(marker).exists()
    await asyncio.sleep(0)
    _note(log, name, "cpu", t0, marker_seen=seen)
    return name


async def io_gated_then_mark(log: str, name: str, gate: str, marker: str, timeout: float = 60.0) -> str:
    """:func:`io_gated`, then creates ``marker`` as its last act."""
    out = await io_gated(log, name, gate, timeout)
    Path(marker).write_text("ended")
    return out
