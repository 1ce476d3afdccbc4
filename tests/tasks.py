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
