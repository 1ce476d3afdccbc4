"""Task functions of the executor, joblib and asyncio tests (issue 20), importable by workers
(tests/ is on the workers' PYTHONPATH)."""
from __future__ import annotations

import os
import time


def square(x):
    return x * x


def add(a, b):
    return a + b


def boom(message="exploded"):
    raise ValueError(message)


def sleep_then(seconds, value=None):
    time.sleep(seconds)
    return value


def pid_then_sleep(path, seconds):
    """Write this process's pid to ``path``, then sleep: the test sees it run, and sees it killed."""
    with open(path, "w") as f:
        f.write(str(os.getpid()))
    time.sleep(seconds)
    return "slept"


def nested_parallel(n):
    """A task that runs a joblib loop itself: the backend it got (nested: not forrestq) and the results."""
    from joblib import Parallel, delayed
    from joblib.parallel import get_active_backend

    backend, _ = get_active_backend()
    return type(backend).__name__, Parallel(n_jobs=-1)(delayed(square)(i) for i in range(n)), os.getpid()


def gated(path, value, limit=60.0):
    """Return ``value`` once the file ``path`` exists (the test opens the gate when it is ready)."""
    deadline = time.monotonic() + limit
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the gate {path} never opened")
        time.sleep(0.01)
    return value
