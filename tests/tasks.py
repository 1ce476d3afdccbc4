"""Task functions importable by workers (tests/ is on the workers' PYTHONPATH)."""
from __future__ import annotations

import os
import time
from pathlib import Path


def identity(x):
    return x


def add(a, b):
    return a + b


def record(path, value):
    """Append one line per execution: the tests count executions from the file."""
    with open(path, "a") as f:
        f.write(f"{value}\n")
    return value


def crash(message="TESTING"):
    raise ValueError(message)


def sleep_then(seconds, value=None):
    time.sleep(seconds)
    return value


def pid_of_worker_child():
    return os.getpid()


def wait_for_file(path, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not Path(path).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(path)
        time.sleep(0.01)
    return True


class Unpicklable(Exception):
    def __init__(self, a, b):
        super().__init__(f"{a}/{b}")
        self.lock = __import__("threading").Lock()


# --- DAG helpers (tests/test_dag.py) ---
def span(path, name, seconds, *inputs):
    """Record (name, pid, start, end) of an execution, for overlap and count checks; inputs only order it."""
    start = time.time()
    time.sleep(seconds)
    end = time.time()
    with open(path, "a") as f:
        f.write(f"{name} {os.getpid()} {start} {end}\n")
    return name


def total(base, *values):
    return base + sum(values)


def fail_unless_exists(flag, log, name):
    with open(log, "a") as f:
        f.write(f"{name}\n")
    if not Path(flag).exists():
        raise RuntimeError(f"flag {flag} missing")
    return name


def counted(log, name, *inputs):
    with open(log, "a") as f:
        f.write(f"{name}\n")
    return name + "".join(f"({i})" for i in inputs)


async def coro_add(a, b, delay=0.01):
    import asyncio

    await asyncio.sleep(delay)
    return a + b


def flaky(counter_path, fail_times, exc_name="OSError"):
    """Fail the first `fail_times` calls (counted in a file), then succeed."""
    p = Path(counter_path)
    n = int(p.read_text()) if p.exists() else 0
    p.write_text(str(n + 1))
    if n < fail_times:
        raise {"OSError": OSError, "KeyError": KeyError}[exc_name](f"attempt {n + 1}")
    return n + 1
