"""Tasks that die badly, for tests/test_forensics.py (imported by real worker children)."""
from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import time


def fit_model(seconds: float) -> None:
    time.sleep(seconds)  # the line a stack at death must name


def hung_fit(seconds: float = 60.0) -> None:
    print("fitting the model", flush=True)
    fit_model(seconds)


def segfault_in_solver() -> None:
    print("solving", flush=True)
    ctypes.string_at(0)


def allocate(mib: int, hold: float = 0.0) -> int:
    """Touch ``mib`` MiB (so it is resident), hold it for ``hold`` s, return its size."""
    block = bytearray(mib << 20)
    for i in range(0, len(block), 4096):
        block[i] = 1
    time.sleep(hold)
    return len(block)


def spin(cpu_seconds: float, wall_limit: float = 60.0) -> int:
    """Burn ``cpu_seconds`` of CPU (at most ``wall_limit`` s of wall time, on a busy machine)."""
    end, stop, n = time.process_time() + cpu_seconds, time.monotonic() + wall_limit, 0
    while time.process_time() < end and time.monotonic() < stop:
        n += 1
    return n


def hold_then_sleep(mib: int, pidfile: str, seconds: float = 60.0) -> None:
    """Hold ``mib`` MiB, write this process's pid, then sleep (to be killed from outside)."""
    block = bytearray(mib << 20)
    for i in range(0, len(block), 4096):
        block[i] = 1
    with open(pidfile, "w") as f:
        f.write(str(os.getpid()))
    time.sleep(seconds)


def greedy_helpers(n: int, mib: int, seconds: float = 60.0) -> None:
    """Start ``n`` processes holding ``mib`` MiB each, then wait (over a --max-memory together)."""
    code = f"b = bytearray({mib} << 20)\nfor i in range(0, len(b), 4096): b[i] = 1\nimport time; time.sleep({seconds})"
    procs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(n)]
    for p in procs:
        p.wait()


def fit_with_cleanup(marker: str, seconds: float = 60.0) -> None:
    """Sleep in fit_model; write ``marker`` in ``finally`` (a soft time limit lets it run)."""
    try:
        fit_model(seconds)
    finally:
        with open(marker, "w") as f:
            f.write("cleaned up")


def fork_and_hold(n: int, mib: int, seconds: float) -> str:
    """Touch ``mib`` MiB, fork ``n`` copies that share it (copy-on-write) for ``seconds``; reap them."""
    block = bytearray(mib << 20)
    for i in range(0, len(block), 4096):
        block[i] = 1
    pids = []
    for _ in range(n):
        pid = os.fork()
        if pid == 0:
            time.sleep(seconds)
            os._exit(0)
        pids.append(pid)
    for pid in pids:
        os.waitpid(pid, 0)
    return "shared"


async def slow_io(marker: str, seconds: float = 60.0) -> None:
    """An IO-bound coroutine that waits; writes ``marker`` in ``finally``."""
    import asyncio
    try:
        await asyncio.sleep(seconds)
    finally:
        with open(marker, "w") as f:
            f.write("cleaned up")


def say(text: str, grandchild: bool = False) -> str:
    """Print ``text`` (from a grandchild process too, when asked) and return it."""
    print(text, flush=True)
    if grandchild:
        subprocess.run([sys.executable, "-c", f"print({text + ' (grandchild)'!r})"], check=True, timeout=60)
    return text


def chatter(lines: int, tag: str) -> int:
    """Print ``lines`` numbered lines of about 100 bytes each."""
    for i in range(lines):
        print(f"{tag} {i:08d} " + "x" * 80)
    return lines
