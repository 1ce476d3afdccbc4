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


# --- robustness and chaos (tests/test_worker.py, tests/test_chaos.py) ---
def start_sleepers(pidfile, n=3, new_session=False, hang=True):
    """Start n `sleep 1000` processes (in the task's process group, or each in a new session), write
    their pids to pidfile, then hang (or return the pids)."""
    import subprocess

    procs = [subprocess.Popen(["sleep", "1000"], start_new_session=new_session) for _ in range(n)]
    Path(pidfile).write_text(" ".join(str(p.pid) for p in procs))
    if hang:
        time.sleep(1000)
    return [p.pid for p in procs]


def segfault():
    import ctypes

    ctypes.string_at(0)


def exit_now(code=3):
    os._exit(code)


def kill_myself(after=0.0):
    import signal

    time.sleep(after)
    os.kill(os.getpid(), signal.SIGKILL)


def memory_bomb(mib=4096):
    """Allocate (and touch) up to mib MiB in 32 MiB blocks."""
    blocks = []
    for _ in range(mib // 32):
        blocks.append(b"x" * (32 << 20))
    return len(blocks)


def fork_sleepers(pidfile, n=50):
    """Fork n copies of this process that sleep, write their pids, then fail."""
    pids = []
    for _ in range(n):
        pid = os.fork()
        if pid == 0:
            time.sleep(1000)
            os._exit(0)
        pids.append(pid)
    Path(pidfile).write_text(" ".join(map(str, pids)))
    raise RuntimeError(f"forked {n} sleeping children")


def fork_and_return(pidfile):
    """Fork a copy that returns from this function just like its parent."""
    pid = os.fork()
    if pid == 0:
        return "from the fork"
    Path(pidfile).write_text(str(pid))
    return "from the parent"


def shout(mib=10):
    """Print mib MiB of numbered lines (stdout and stderr), then fail."""
    import sys

    for i in range(mib * 1024 * 1024 // 100):
        (sys.stdout if i % 2 else sys.stderr).write(f"{i:09d} " + "x" * 89 + "\n")
    sys.stdout.write("THE END\n")
    raise RuntimeError("shouted")


def unpicklable_result():
    return (i for i in range(3))


def whoami(seconds=0.0):
    """(FORRESTQ_HOST, pid) of the process that ran the task, after sleeping."""
    time.sleep(seconds)
    return os.environ.get("FORRESTQ_HOST"), os.getpid()


def talk(tag, lines=3):
    for i in range(lines):
        print(f"{tag} line {i}")
    return tag


def hog(mib):
    """Keep mib MiB alive in this process (a leak), return its pid."""
    global _HOARD
    try:
        _HOARD
    except NameError:
        _HOARD = []
    _HOARD.append(b"y" * (mib << 20))
    return os.getpid()


def chaos_work(path, i, seconds):
    """Log "start i pid time" and, after sleeping, "end i pid time" (the chaos tests count them)."""
    with open(path, "a") as f:
        f.write(f"start {i} {os.getpid()} {time.time()}\n")
    time.sleep(seconds)
    with open(path, "a") as f:
        f.write(f"end {i} {os.getpid()} {time.time()}\n")
    return i


def note_pid(path, seconds):
    """Write this process's pid to path, sleep, return the pid."""
    Path(path).write_text(str(os.getpid()))
    time.sleep(seconds)
    return os.getpid()


def segfault_after(path, timeout=60.0):
    """Wait for a file to exist, then segfault."""
    wait_for_file(path, timeout)
    segfault()


async def io_wait(path, name, seconds):
    """An IO-bound coroutine: records (name, pid, start, end)."""
    import asyncio

    start = time.time()
    await asyncio.sleep(seconds)
    with open(path, "a") as f:
        f.write(f"{name} {os.getpid()} {start} {time.time()}\n")
    return name
