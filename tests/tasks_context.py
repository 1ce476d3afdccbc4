"""Task functions for tests/test_task_context.py, importable by workers (tests/ is on their PYTHONPATH).

Waits are bounded (a task that waits on a file the test writes gives up after a minute and fails)."""
from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import forrestq


def _seen() -> dict[str, Any] | None:
    ctx = forrestq.current_task()
    if ctx is None:
        return None
    return {"id": ctx.id, "queue": ctx.queue_name, "attempt": ctx.attempt, "host": ctx.host,
            "metadata": ctx.metadata, "deadline": ctx.deadline, "queue_obj": ctx.queue.name}


def whoami() -> dict[str, Any] | None:
    """What current_task() says inside a plain task."""
    return _seen()


async def whoami_async(started_dir: str, name: str, n: int) -> dict[str, Any] | None:
    """An IO-bound coroutine that reads its context after ``n`` of its kind started (so they share the
    loop while each reads its own context)."""
    Path(started_dir, name).touch()
    deadline = time.monotonic() + 60
    while len(list(Path(started_dir).iterdir())) < n:
        if time.monotonic() > deadline:
            raise TimeoutError("the other coroutines never started")
        await asyncio.sleep(0.01)
    seen = _seen()
    assert seen is not None
    seen["name"] = name
    return seen


def fails_first(marker: str) -> int:
    """Raises on its first run (a file marks it), returns its attempt number after that."""
    path = Path(marker)
    if not path.exists():
        path.touch()
        raise OSError("first attempt fails")
    ctx = forrestq.current_task()
    assert ctx is not None
    return ctx.attempt


def _wait_file(path: Path, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.01)


def stepper(gate_dir: str, steps: int = 10) -> int:
    """Reports progress ``i`` of ``steps`` and waits for the file ``go<i>`` in ``gate_dir`` before the
    next step: the test sets the pace."""
    for i in range(1, steps + 1):
        forrestq.progress(i, steps, f"step {i}")
        _wait_file(Path(gate_dir, f"go{i}"))
    return steps


def reports(n: int) -> str:
    """Reports ``n`` steps as fast as it can and returns what the context kept of the last one."""
    for i in range(1, n + 1):
        forrestq.progress(i, n, "fast")
    ctx = forrestq.current_task()
    return repr(ctx.progress if ctx else None)


def reports_then_fails_first(marker: str) -> str:
    """Reports progress and fails on its first run; after that returns what its context holds."""
    path = Path(marker)
    if not path.exists():
        path.touch()
        forrestq.progress(3, 10, "first attempt")
        raise OSError("first attempt fails")
    ctx = forrestq.current_task()
    return repr(ctx.progress if ctx else "no context")


def reports_until(gate_dir: str, seconds: float = 120.0) -> int:
    """Reports progress every 20 ms (one character appended to ``calls`` after each report) until the
    file ``end`` appears in ``gate_dir``; returns how many reports it made."""
    gate = Path(gate_dir)
    deadline = time.monotonic() + seconds
    i = 0
    while not (gate / "end").exists():
        if time.monotonic() > deadline:
            raise TimeoutError("never told to end")
        i += 1
        forrestq.progress(i)
        with open(gate / "calls", "a") as f:
            f.write("x")
        time.sleep(0.02)
    return i


def from_a_thread() -> list[bool]:
    """Whether the task is seen here, in a plain thread it starts, and in one given its context."""
    import contextvars
    import threading

    seen: list[bool] = [forrestq.current_task() is not None]
    t = threading.Thread(target=lambda: seen.append(forrestq.current_task() is not None))
    t.start()
    t.join()
    ctx = contextvars.copy_context()
    t = threading.Thread(target=ctx.run, args=(lambda: seen.append(forrestq.current_task() is not None),))
    t.start()
    t.join()
    return seen
