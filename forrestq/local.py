"""Local worker processes: a ``forrestq worker`` this process starts for one queue, and stops, with
nothing left behind. The one owner of that job for ``Queue.run``, ``map``/``starmap``/``submitting``
with ``procs=N`` and ``Queue.workers(N)``.

Starting: :class:`LocalWorkers` spawns the lean launcher (:mod:`forrestq.worker.launch`, not the
full command line: no typer, no rich) in its own session, with the calling script's directory and
the working directory on its import path (where ``map``'s functions live), and waits until the
worker says on a pipe that it is registered and has forked its children. A worker that cannot start
(a bad option, a server it cannot reach, a secret it cannot read) says why on that pipe, or dies:
either way the call raises one :class:`~forrestq.errors.WorkerStartError` at once, never hangs.

Stopping: SIGTERM (the worker hands running tasks back after its grace, 0 s by default here: these
workers exist for this process's calls), then SIGKILL of the worker's group and of each child's
group if it has not exited in time; a second Ctrl-C while stopping goes straight to SIGKILL. The
worker dies with this process too (its parent-death signal), so a killed script leaves no worker.

Warm workers: inside ``with warm(...)`` (``Queue.workers``) the workers serve every call of this
process on that queue that asks for local workers (:func:`serving`): ``map(procs=N)`` and
``run(procs=N)`` reuse them instead of starting more.
"""
from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from .errors import ConfigError, WorkerStartError, shown

LAUNCHER = "forrestq.worker.launch"
START_TIMEOUT = 60.0  # seconds a worker may take to register (a slow disk, a cold import cache)
STOP_TIMEOUT = 10.0  # seconds between SIGTERM and SIGKILL

# the worker options a local worker takes (``forrestq worker``'s, spelled as Python names); the
# launcher reads the same names
WORKER_OPTIONS = ("autokill", "max_memory", "lease", "grace", "max_tasks_per_child", "max_child_rss",
                  "logfile", "async_concurrency", "secret_file", "path", "verbose", "quiet", "resources",
                  "admit_by_memory")
DEFAULTS = {"grace": 0.0, "quiet": True}


def check_procs(procs: Any, allow_zero: bool = True) -> int:
    """``procs`` as given by a user: a non-negative integer (0: debug mode, where allowed)."""
    low = 0 if allow_zero else 1
    if isinstance(procs, bool) or not isinstance(procs, int) or procs < low:
        kind = "non-negative" if allow_zero else "positive"
        raise ConfigError(f"procs must be a {kind} integer, not {shown(procs)}")
    return procs


def worker_spec(url: str, queue: str, procs: int, options: dict[str, Any]) -> dict[str, Any]:
    """What the launcher is told (JSON): the queue, the server, procs and the worker options;
    an unknown option is refused here, before anything starts."""
    unknown = sorted(set(options) - set(WORKER_OPTIONS))
    if unknown:
        raise ConfigError(f"unknown worker option {shown(unknown[0])}; worker options are "
                          f"{', '.join(WORKER_OPTIONS)}")
    spec = {**DEFAULTS, **options, "url": url, "queues": [queue], "procs": check_procs(procs, False),
            "parent": os.getpid()}
    try:
        json.dumps(spec)
    except (TypeError, ValueError):
        raise ConfigError("worker options must be numbers, strings, booleans or lists of strings") from None
    return spec


def _import_paths() -> str:
    """PYTHONPATH for the worker: the calling script's directory and the working directory first
    (where the functions of ``map`` are importable by name), then the caller's own PYTHONPATH."""
    here = os.path.dirname(os.path.abspath(sys.argv[0])) if sys.argv and sys.argv[0] else os.getcwd()
    return os.pathsep.join(p for p in (here, os.getcwd(), os.environ.get("PYTHONPATH")) if p)


def _children(pid: int) -> list[int]:
    """Direct children of a process, from /proc (empty where /proc does not say)."""
    found: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                found += [int(p) for p in f.read().split()]
    except OSError:
        pass
    return found


def wait_exit(proc: subprocess.Popen[bytes], timeout: float) -> bool:
    """Wait up to ``timeout`` s for ``proc`` to exit (and reap it); True if it did. Woken by the
    exit itself (a pidfd) where Linux has them: ``Popen.wait(timeout)`` polls, up to 50 ms late."""
    if proc.poll() is not None:
        return True
    try:
        fd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):  # no pidfd here: poll
        try:
            proc.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            return False
    try:
        select.select([fd], [], [], timeout)
    finally:
        os.close(fd)
    return proc.poll() is not None


def _killpg(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


class LocalWorkers:
    """One ``forrestq worker`` process with ``procs`` children serving ``queue``, owned by this
    process. ``start()`` returns once it is registered and has forked its children (or raises
    WorkerStartError); ``stop()`` leaves no process behind. A context manager of both."""

    def __init__(self, url: str, queue: str, procs: int, options: dict[str, Any] | None = None) -> None:
        self.queue = queue
        self.procs = procs
        self.spec = worker_spec(url, queue, procs, dict(options or {}))
        self.proc: subprocess.Popen[bytes] | None = None
        self.owner = os.getpid()
        self.children: list[int] = []  # the worker's children when it said it was ready

    @property
    def pid(self) -> int:
        """The worker process's pid (0 before start)."""
        return self.proc.pid if self.proc is not None else 0

    def child_pids(self) -> list[int]:
        """The worker's live children (the processes that run tasks), from /proc."""
        return _children(self.pid) if self.running else []

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self) -> LocalWorkers:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout: float = START_TIMEOUT) -> LocalWorkers:
        """Spawn the worker and wait until it is ready; raise WorkerStartError if it cannot start."""
        env = dict(os.environ, PYTHONPATH=_import_paths())
        secret_file = self.spec.get("secret_file")
        if secret_file is not None:  # as `forrestq worker --secret-file`: the file wins over the variable
            env.pop("FORRESTQ_SECRET", None)
            env["FORRESTQ_SECRET_FILE"] = str(secret_file)
        rfd, wfd = os.pipe()
        try:
            self.proc = subprocess.Popen([sys.executable, "-m", LAUNCHER, str(wfd), json.dumps(self.spec)],
                                         env=env, stdin=subprocess.DEVNULL, pass_fds=(wfd,),
                                         start_new_session=True)
            os.close(wfd)
            wfd = -1
            self._await_ready(rfd, timeout)
        except BaseException:  # also KeyboardInterrupt while waiting: nothing may stay behind
            self.stop()
            raise
        finally:
            os.close(rfd)
            if wfd >= 0:
                os.close(wfd)
        return self

    def _await_ready(self, rfd: int, timeout: float) -> None:
        """Read the worker's word: ``ready PID...``, or ``error MESSAGE``, or nothing (it died)."""
        deadline = time.monotonic() + timeout
        said = b""
        while not said.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0:
                raise WorkerStartError(f"the local worker for queue {self.queue!r} did not start within "
                                       f"{timeout:g} s")
            ready, _, _ = select.select([rfd], [], [], left)
            if ready:
                chunk = os.read(rfd, 4096)
                if not chunk:
                    break
                said += chunk
        word, _, rest = said.decode(errors="replace").strip().partition(" ")
        if word == "ready":
            self.children = [int(p) for p in rest.split()]
            return
        if word == "error":
            raise WorkerStartError(f"the local worker for queue {self.queue!r} could not start: {rest}")
        assert self.proc is not None
        code = self.proc.wait(STOP_TIMEOUT)
        how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
        raise WorkerStartError(f"the local worker for queue {self.queue!r} {how} before it was ready "
                               "(its error is on stderr above)")

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM the worker; SIGKILL its group and its children's groups if it has not exited within
        ``timeout`` seconds (at once on Ctrl-C, which then propagates). Only the process that started
        it stops it; stopping twice does nothing."""
        proc = self.proc
        if proc is None or os.getpid() != self.owner or proc.returncode is not None:
            return
        try:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                wait_exit(proc, timeout)
        finally:
            if proc.poll() is None:  # hung, or Ctrl-C came while it stopped
                for pgid in _children(proc.pid):  # each child leads a group (with its task's processes)
                    _killpg(pgid)
                _killpg(proc.pid)
                try:
                    proc.wait(STOP_TIMEOUT)
                except subprocess.TimeoutExpired:  # unkillable (D state): nothing more to do from here
                    pass


# ------------------------------------------------------------------------------- warm workers

_warm: dict[tuple[str, str], list[LocalWorkers]] = {}
_warm_lock = threading.Lock()


def warm_for(url: str, queue: str) -> LocalWorkers | None:
    """The innermost open ``warm`` block's workers of this queue in this process, if any."""
    with _warm_lock:
        for w in reversed(_warm.get((url, queue), [])):
            if w.owner == os.getpid() and w.running:
                return w
    return None


def warm(url: str, queue: str, procs: int,
         options: dict[str, Any] | None = None) -> AbstractContextManager[LocalWorkers]:
    """``with warm(...) as w:`` N local workers serve the queue for the whole block, and every call of
    this process that asks for local workers of the queue uses them; stopped when the block exits
    (also on an exception or Ctrl-C). Bad options are refused here, at the call."""
    return _warm_block(LocalWorkers(url, queue, procs, options))


@contextmanager
def _warm_block(w: LocalWorkers) -> Iterator[LocalWorkers]:
    url, queue = w.spec["url"], w.queue
    w.start()
    with _warm_lock:
        _warm.setdefault((url, queue), []).append(w)
    try:
        yield w
    finally:
        with _warm_lock:
            stack = _warm.get((url, queue), [])
            if w in stack:
                stack.remove(w)
            if not stack:
                _warm.pop((url, queue), None)
        w.stop()


@contextmanager
def serving(url: str, queue: str, procs: int | None,
            options: dict[str, Any] | None = None) -> Iterator[LocalWorkers | None]:
    """Local workers for one call that asked for ``procs`` of them: the warm ones of the queue if a
    ``warm`` block is open (and no other worker options are asked for), else ``procs`` started for
    this call and stopped after it. ``procs=None``: none (the queue's workers run elsewhere)."""
    if procs is None:
        yield None
        return
    check_procs(procs, allow_zero=False)
    reuse = None if options else warm_for(url, queue)
    if reuse is not None:
        yield reuse
        return
    with LocalWorkers(url, queue, procs, options) as w:
        yield w
