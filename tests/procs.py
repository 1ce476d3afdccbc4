"""Real worker processes for integration tests: started as `python -m forrestq worker`, always torn down."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def worker_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "tests"), str(ROOT), env.get("PYTHONPATH")) if p)
    env.update(extra or {})
    return env


def spawn_worker(url: str, queue: str | list[str], procs: int = 2, *args: str,
                 env: dict[str, str] | None = None, log: Path | None = None) -> subprocess.Popen:
    queues = [queue] if isinstance(queue, str) else queue
    cmd = [sys.executable, "-m", "forrestq", "worker", "--procs", str(procs), "--url", url, *args]
    for q in queues:
        cmd += ["--queue", q]
    out = open(log, "ab") if log else subprocess.DEVNULL
    return subprocess.Popen(cmd, env=worker_env(env), start_new_session=True, stdout=out,
                            stderr=subprocess.STDOUT if log else subprocess.DEVNULL)


def stop(proc: subprocess.Popen, timeout: float = 15.0) -> None:
    """Stop a worker (SIGTERM, then SIGKILL of its process group), and kill every child group it left."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(5)


@contextlib.contextmanager
def worker(url: str, queue: str | list[str], procs: int = 2, *args: str, env: dict[str, str] | None = None,
           log: Path | None = None) -> Iterator[subprocess.Popen]:
    proc = spawn_worker(url, queue, procs, *args, env=env, log=log)
    try:
        yield proc
    finally:
        stop(proc)


def child_pids(pid: int) -> list[int]:
    """Direct children of a process (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def deadline(seconds: float) -> float:
    return time.monotonic() + seconds
