"""The worker: supervises child processes that run tasks, and never runs user code itself.

One worker per machine (``forrestq worker --procs N``). It forks N children (``forrestq.child``) and
then only watches: it renews the leases of running tasks from the children's shared-memory slots,
kills a child's whole process group when its task runs past its time, records the failure of a task
whose child died, replaces dead or retired children, reclaims tasks that other (lost) workers held,
and on SIGTERM/SIGINT lets running tasks finish for a grace period before handing them back.
"""
from __future__ import annotations

import mmap
import os
import select
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import redis

from . import codec, keys
from .child import ChildConfig, Slot, child_main
from .connection import connect
from .errors import ConfigError, TaskKilled, TaskLost
from .keys import GROUP, QueueKeys
from .scripts import Scripts

TICK = 0.05  # seconds between supervision rounds when nothing wakes the worker earlier


def default_host() -> str:
    """The host name recorded with each task: $FORRESTQ_HOST (e.g. per network namespace), else the
    machine's name."""
    return os.environ.get("FORRESTQ_HOST") or socket.gethostname()


@dataclass
class WorkerConfig:
    url: str | None = None
    queues: list[str] = field(default_factory=lambda: ["default"])
    procs: int = os.cpu_count() or 1
    lease: float = 30.0  # seconds a claim lives without a heartbeat
    autokill: float = 0.0  # default per-task time limit in seconds, 0 = none
    max_memory: int = 0  # bytes per child, 0 = unlimited
    max_tasks_per_child: int = 0
    max_child_rss: int = 0
    grace: float = 30.0
    logfile: str | None = None
    verbose: int = 0
    host: str = field(default_factory=default_host)
    sweep_interval: float | None = None  # default: lease / 3, at most 5 s

    def __post_init__(self) -> None:
        if self.procs < 1:
            raise ConfigError(f"--procs must be at least 1, not {self.procs}")
        if self.lease <= 0:
            raise ConfigError(f"--lease must be positive, not {self.lease}")
        if not self.queues:
            raise ConfigError("at least one queue is needed")


def signal_reason(status: int, autokill: float | None) -> str:
    """Why a child ended, in words a person can act on."""
    if autokill is not None:
        return f"killed after {autokill:g} s (autokill)"
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        hint = " (out of memory?)" if sig == signal.SIGKILL else ""
        return f"killed by signal {sig} ({name}){hint}"
    return f"the process running the task exited with code {os.WEXITSTATUS(status)}"


class Worker:
    """Supervises ``procs`` children for ``queues``; ``run()`` returns the exit code."""

    def __init__(self, cfg: WorkerConfig) -> None:
        self.cfg = cfg
        self.r = connect(cfg.url)
        self.scripts = Scripts(self.r)
        self.keys = [QueueKeys(q) for q in cfg.queues]
        self.id = f"{cfg.host}:{os.getpid()}:{os.urandom(2).hex()}"
        self.lease_ms = int(cfg.lease * 1000)
        self.beat_every = cfg.lease / 3
        self.sweep_every = cfg.sweep_interval or min(cfg.lease / 3, 5.0)
        self.mem = mmap.mmap(-1, ctypes_size() * cfg.procs)
        self.slots = [Slot.from_buffer(self.mem, i * ctypes_size()) for i in range(cfg.procs)]
        self.pids: dict[int, int] = {}  # pid -> slot index
        self.killed: dict[int, float] = {}  # pid -> the time limit it was killed for
        self.spawns: list[list[float]] = [[] for _ in range(cfg.procs)]
        self.stopping = 0.0  # monotonic time the stop began, 0 = running
        self.hard_stop = False
        self.retired_done = 0
        self.retired_failed = 0
        self.started = time.time()

    # --- children -------------------------------------------------------------------------
    def child_config(self, index: int) -> ChildConfig:
        c = self.cfg
        from .connection import resolve_url

        return ChildConfig(url=resolve_url(c.url), queues=c.queues, worker_id=self.id,
                           consumer=f"{c.host}:{os.getpid()}:{index}", host=c.host,
                           lease_ms=self.lease_ms, autokill=c.autokill, max_memory=c.max_memory,
                           max_tasks=c.max_tasks_per_child, max_rss=c.max_child_rss,
                           logfile=c.logfile, verbose=c.verbose)

    def spawn(self, index: int) -> None:
        recent = [t for t in self.spawns[index] if t > time.monotonic() - 10]
        if len(recent) >= 5:  # a child that dies at once, again and again: do not spin
            return
        self.spawns[index] = recent + [time.monotonic()]
        slot = self.slots[index]
        slot.busy, slot.stop = 0, 0
        cfg = self.child_config(index)
        old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM, signal.SIGCHLD})
        try:
            pid = os.fork()
            if pid == 0:
                child_main(cfg, slot)  # never returns
        finally:
            if pid:
                signal.pthread_sigmask(signal.SIG_SETMASK, old)
        self.pids[pid] = index

    def reap(self) -> None:
        while self.pids:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            index = self.pids.pop(pid, None)
            if index is None:
                continue
            slot = self.slots[index]
            busy, qi, task, token, _, _ = slot.read()
            self.retired_done += slot.done
            self.retired_failed += slot.failed
            slot.done = slot.failed = 0
            try:
                os.killpg(pid, signal.SIGKILL)  # grandchildren the task left behind
            except (ProcessLookupError, PermissionError):
                pass
            limit = self.killed.pop(pid, None)
            if busy:
                k = self.keys[qi]
                if self.stopping and limit is None:
                    self.release(k, task, token)
                else:
                    reason = signal_reason(status, limit)
                    self.fail(k, task, token, reason, TaskKilled(reason))
                    self.log(f"failed {k.name} {task} {reason}")
            if not self.stopping:
                self.spawn(index)

    def release(self, k: QueueKeys, task: str, token: str) -> None:
        self.scripts.release(keys=[k.stream, k.counts], args=[k.prefix, GROUP, task, token])
        self.log(f"handed back {k.name} {task}")

    def fail(self, k: QueueKeys, task: str, token: str, reason: str, exc: BaseException) -> int:
        args = [k.prefix, GROUP, task, token, "failed", b"", codec.dump_exception(exc), reason, reason,
                "0", time.time(), b"", self.cfg.host, 0]
        return self.scripts.complete(keys=k.complete_keys(), args=args)

    def enforce_timeouts(self) -> None:
        now = time.time()
        for pid, index in list(self.pids.items()):
            if pid in self.killed:
                continue
            busy, _, _, _, started, limit = self.slots[index].read()
            if busy and limit > 0 and now - started > limit:
                self.killed[pid] = limit
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    # --- Redis bookkeeping ------------------------------------------------------------------
    def heartbeat(self) -> None:
        running: dict[int, list[tuple[str, str]]] = {}
        busy_n = done = failed = 0
        for index in self.pids.values():
            slot = self.slots[index]
            busy, qi, task, token, _, _ = slot.read()
            done += slot.done
            failed += slot.failed
            if busy:
                busy_n += 1
                running.setdefault(qi, []).append((task, token))
        for qi, tasks in running.items():
            k = self.keys[qi]
            kept = self.scripts.renew(keys=[k.lease(t) for t, _ in tasks],
                                      args=[self.lease_ms] + [tok for _, tok in tasks])
            for (task, _), ok in zip(tasks, kept):
                if not ok:
                    self.log(f"lease lost {k.name} {task}: another worker may run it; this result will be refused")
        now = time.time()
        info = {"host": self.cfg.host, "pid": os.getpid(), "procs": self.cfg.procs, "busy": busy_n,
                "done": done + self.retired_done, "failed": failed + self.retired_failed,
                "rss": self.rss(), "queues": ",".join(self.cfg.queues), "started": self.started,
                "beat": now, "stopping": 1 if self.stopping else 0}
        pipe = self.r.pipeline(transaction=False)
        pipe.hset(keys.worker(self.id), mapping=info)
        pipe.expire(keys.worker(self.id), max(3, int(self.beat_every * 3) + 1))
        pipe.zadd(keys.WORKERS, {self.id: now})
        pipe.execute()

    def rss(self) -> int:
        total = 0
        for pid in [os.getpid(), *self.pids]:
            try:
                with open(f"/proc/{pid}/statm") as f:
                    total += int(f.read().split()[1]) * mmap.PAGESIZE
            except OSError:
                pass
        return total

    def sweep(self) -> None:
        """Hand back tasks whose holder vanished (one sweeper per queue per interval)."""
        for k in self.keys:
            if not self.r.set(k.sweep, self.id, nx=True, px=int(self.sweep_every * 1000)):
                continue
            pending = self.r.xpending_range(k.stream, GROUP, min="-", max="+", count=1000,
                                            idle=self.lease_ms)
            if not pending:
                continue
            ids = [p["message_id"] for p in pending]
            gave_up = self.scripts.reclaim(keys=[k.stream, k.counts], args=[k.prefix, GROUP, time.time(), *ids])
            for i in range(0, len(gave_up), 3):
                task, n, host = (x.decode() for x in gave_up[i:i + 3])
                reason = f"lost {n} times; last on host {host}"
                if self.fail(k, task, "", reason, TaskLost(reason)):
                    self.log(f"failed {k.name} {task} {reason}")
            if len(ids) > len(gave_up) // 3:
                self.log(f"reclaimed {len(ids) - len(gave_up) // 3} abandoned task(s) of {k.name}")

    def ensure_groups(self) -> None:
        for k in self.keys:
            try:
                self.r.xgroup_create(k.stream, GROUP, id="0", mkstream=True)
            except redis.ResponseError as e:
                if "BUSYGROUP" not in str(e):
                    raise

    # --- main loop --------------------------------------------------------------------------
    def log(self, line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self.stopping and signum == signal.SIGINT:
            self.hard_stop = True
        elif not self.stopping:
            self.stopping = time.monotonic()

    def run(self) -> int:
        self.ensure_groups()
        rfd, wfd = os.pipe()
        os.set_blocking(wfd, False)
        os.set_blocking(rfd, False)
        signal.set_wakeup_fd(wfd)
        for s in (signal.SIGINT, signal.SIGTERM):
            signal.signal(s, self._on_signal)
        signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes the select through the wakeup fd
        try:
            for i in range(self.cfg.procs):
                self.spawn(i)
            next_beat = next_sweep = 0.0
            stop_announced = False
            while self.pids or not self.stopping:
                select.select([rfd], [], [], TICK)
                try:
                    while os.read(rfd, 512):
                        pass
                except BlockingIOError:
                    pass
                self.reap()
                self.enforce_timeouts()
                now = time.monotonic()
                try:
                    if now >= next_beat:
                        next_beat = now + self.beat_every
                        self.heartbeat()
                    if now >= next_sweep and not self.stopping:
                        next_sweep = now + self.sweep_every
                        self.sweep()
                except (redis.ConnectionError, redis.TimeoutError) as e:
                    self.log(f"worker: Redis unreachable ({e}); retrying")
                if self.stopping:
                    if not stop_announced:
                        stop_announced = True
                        self.log(f"stopping: waiting up to {self.cfg.grace:g} s for running tasks "
                                 "(Ctrl-C again to stop now)")
                        for slot in self.slots:
                            slot.stop = 1
                    if self.hard_stop or now - self.stopping > self.cfg.grace:
                        for pid in self.pids:
                            try:
                                os.killpg(pid, signal.SIGKILL)
                            except ProcessLookupError:
                                pass
            return 0
        finally:
            for pid in list(self.pids):
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                self.r.zrem(keys.WORKERS, self.id)
                self.r.delete(keys.worker(self.id))
            except redis.RedisError:
                pass
            signal.set_wakeup_fd(-1)
            os.close(rfd)
            os.close(wfd)


def ctypes_size() -> int:
    import ctypes

    return ctypes.sizeof(Slot)
