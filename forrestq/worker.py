"""The worker: supervises child processes that run tasks, and never runs user code itself.

One worker per machine (``forrestq worker --procs N``). It forks N children (``forrestq.child``) and
then only watches: it renews the leases of the tasks its children hold (read from shared-memory
slots), kills a child's whole process group when its task runs past its time, records the failure of
a task whose child died, replaces dead or retired children, reclaims tasks that other (lost) workers
held, and on SIGTERM/SIGINT lets running tasks finish for a grace period before handing them back.

What becomes of a task whose child died:

* killed by the worker for its time limit: failed, "killed after N s (autokill)";
* killed by the worker because it is stopping: handed back, the attempt not counted;
* killed by the worker because its lease was lost (the task was taken over or cancelled): nothing
  to record, the task is someone else's;
* SIGKILLed by someone else (the OOM killer, an operator): handed back, the attempt counted; failed
  once it has used up its attempts;
* any other death (a segfault, ``os._exit``, an abort): failed, with the signal or the exit code.

Redis may be away for a while: writes the worker owes (a failure, a hand-back) wait in an outbox
and are retried every round; the supervision itself (timeouts, reaping) never waits on Redis.
"""
from __future__ import annotations

import mmap
import os
import select
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from . import codec, schema, signing
from .child import (PR_SET_CHILD_SUBREAPER, ChildConfig, Slot, SlotView, prctl, child_main, kill_tree, own_children,
                    transient)
from .connection import connect, resolve_url
from .errors import ConfigError, TaskKilled, TaskLost
from .schema import GROUP, QueueKeys
from .scripts import Scripts

TICK = 0.05  # seconds between supervision rounds when nothing wakes the worker earlier
CRASH_LOOP = (5, 10.0, 5.0)  # 5 children of one slot failing on their own within 10 s: pause 5 s
REDIS_TIMEOUT = 5.0  # seconds the worker waits for one answer from Redis


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
    heartbeat: float | None = None  # default: lease / 3
    async_concurrency: int = 1  # coroutine tasks one child may run at once (IO-bound work)

    def __post_init__(self) -> None:
        if self.procs < 1:
            raise ConfigError(f"--procs must be at least 1, not {self.procs}")
        if self.lease <= 0:
            raise ConfigError(f"--lease must be positive, not {self.lease}")
        if not self.queues:
            raise ConfigError("at least one queue is needed")
        if not 1 <= self.async_concurrency <= 64:
            raise ConfigError(f"--async-concurrency must be from 1 to 64, not {self.async_concurrency}")


def signal_name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


def signal_reason(status: int, autokill: float | None = None) -> str:
    """Why a child ended, in words a person can act on."""
    if autokill is not None:
        return f"killed after {autokill:g} s (autokill)"
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        hint = " (out of memory?)" if sig == signal.SIGKILL else ""
        return f"killed by signal {sig} ({signal_name(sig)}){hint}"
    return f"the process running the task exited with code {os.WEXITSTATUS(status)}"


class Kill(NamedTuple):
    """A child this worker killed: why, and the token of the task it held then."""

    why: str  # "autokill" | "stop" | "lost" (the task was taken over)
    token: str
    limit: float = 0.0


class Worker:
    """Supervises ``procs`` children for ``queues``; ``run()`` returns the exit code."""

    def __init__(self, cfg: WorkerConfig) -> None:
        signing.check()  # a bad $FORRESTQ_SECRET(_FILE) fails here, not at every task
        self.cfg = cfg
        self.url = resolve_url(cfg.url)
        # no retries inside a call: the loop retries, and supervision never waits long on Redis
        self.r = connect(self.url, retry=Retry(NoBackoff(), 0), socket_timeout=REDIS_TIMEOUT)
        self.scripts = Scripts(self.r)
        self.keys = [QueueKeys(q) for q in cfg.queues]
        self.id = f"{cfg.host}:{os.getpid()}:{os.urandom(2).hex()}"
        self.lease_ms = int(cfg.lease * 1000)
        self.beat_every = cfg.heartbeat or cfg.lease / 3
        self.sweep_every = cfg.sweep_interval or min(cfg.lease / 3, 5.0)
        size = ctypes_size()
        # one slot per task a child may hold: ``async_concurrency`` lanes per child, the first one the
        # child's own (its stop flag)
        self.nlanes = cfg.async_concurrency
        self.mem = mmap.mmap(-1, size * cfg.procs * self.nlanes)
        self.slots = [Slot.from_buffer(self.mem, i * size) for i in range(cfg.procs * self.nlanes)]
        self.pids: dict[int, int] = {}  # pid -> child index
        self.vacant: dict[int, float] = {}  # slot index -> monotonic time it may be filled
        self.killed: dict[int, Kill] = {}  # pid -> why this worker killed it
        self.crashes: list[list[float]] = [[] for _ in range(cfg.procs)]  # per slot, monotonic times
        self.outbox: list[tuple[str, Callable[[], Any]]] = []  # Redis writes owed, oldest first
        self.stopping = 0.0  # monotonic time the stop began, 0 = running
        self.hard_stop = False
        self.redis_down = False
        self.retired_done = 0
        self.retired_failed = 0
        self.started = time.time()
        self.foreign: set[int] = set()  # children this process had before run(): not ours to kill
        self.wake_fd = -1

    # --- children -------------------------------------------------------------------------
    def child_config(self, index: int) -> ChildConfig:
        c = self.cfg
        return ChildConfig(url=self.url, queues=c.queues, worker_id=self.id,
                           consumer=f"{c.host}:{os.getpid()}:{index}", host=c.host,
                           lease_ms=self.lease_ms, autokill=c.autokill, max_memory=c.max_memory,
                           max_tasks=c.max_tasks_per_child, max_rss=c.max_child_rss,
                           logfile=c.logfile, verbose=c.verbose, parent_pid=os.getpid(),
                           wake_fd=self.wake_fd, async_concurrency=c.async_concurrency)

    def lanes(self, index: int) -> list[Slot]:
        """The slots of child ``index``: one per task it may hold at once."""
        return self.slots[index * self.nlanes:(index + 1) * self.nlanes]

    def spawn(self, index: int) -> None:
        now = time.monotonic()
        lanes = self.lanes(index)
        for slot in lanes:
            slot.busy, slot.stop = 0, 0
        cfg = self.child_config(index)
        old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM, signal.SIGCHLD})
        try:
            pid = os.fork()
            if pid == 0:
                child_main(cfg, lanes[0], lanes)  # never returns
        except OSError as e:  # e.g. out of processes: try again later
            self.log(f"worker: cannot start a child ({e}); trying again in 1 s")
            self.vacant[index] = now + 1.0
            return
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
        self.pids[pid] = index

    def respawn_at(self, index: int, crashed: bool) -> float:
        """When to replace a dead child: at once, unless children of this slot keep failing on their
        own, holding no task (a broken environment, not a bad task): then after a pause."""
        now = time.monotonic()
        if not crashed:
            return now
        count, window, pause = CRASH_LOOP
        crashes = [t for t in self.crashes[index] if t > now - window] + [now]
        self.crashes[index] = crashes
        if len(crashes) < count:
            return now
        self.crashes[index] = []
        self.log(f"worker: child {index} failed {count} times within {window:g} s; "
                 f"waiting {pause:g} s before starting it again")
        return now + pause

    def fill_vacant(self) -> None:
        now = time.monotonic()
        for index, when in list(self.vacant.items()):
            if when <= now and not self.stopping:
                del self.vacant[index]
                self.spawn(index)

    def reap(self) -> None:
        """Collect dead children: settle the task each held, and mark its slot for a new child."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            index = self.pids.pop(pid, None)
            if index is None:
                continue  # an orphaned grandchild that came to us (we are a subreaper)
            try:
                os.killpg(pid, signal.SIGKILL)  # grandchildren the task left behind
            except (ProcessLookupError, PermissionError):
                pass
            kill_tree([p for p in own_children() if p not in self.pids and p not in self.foreign])
            kill = self.killed.pop(pid, None)
            held = False
            for slot in self.lanes(index):
                view = slot.read()
                self.retired_done += slot.done
                self.retired_failed += slot.failed
                slot.done = slot.failed = slot.busy = 0
                if view.busy:
                    held = True
                    self.settle(view, status, kill)
            if not self.stopping:
                crashed = not held and kill is None and status != 0  # a retiring child exits 0
                self.vacant[index] = self.respawn_at(index, crashed)

    def settle(self, view: SlotView, status: int, kill: Kill | None) -> None:
        """Record what becomes of the task a dead child held (see the module doc)."""
        k = self.keys[view.queue]
        if kill is not None and kill.token != view.token:
            kill = Kill("stop", view.token)  # it had moved on to another task: not that task's fault
        if kill is not None and kill.why == "stop":
            self.hand_back(k, view, counted=False)
        elif kill is not None and kill.why == "lost":
            pass  # the task is someone else's now
        elif kill is not None:
            self.fail(k, view, signal_reason(status, kill.limit), TaskKilled)
        elif os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL:
            if view.attempts >= view.max_attempts:
                self.fail(k, view, f"{signal_reason(status)}; attempt {view.attempts} of "
                                   f"{view.max_attempts}", TaskKilled)
            else:
                self.hand_back(k, view, counted=True)
        else:
            self.fail(k, view, signal_reason(status), TaskKilled)

    def hand_back(self, k: QueueKeys, view: SlotView, counted: bool) -> None:
        args = [k.prefix, GROUP, view.task, view.token, "1" if counted else ""]
        what = f"handed back {k.name} {view.task}" + (" (attempt counted)" if counted else "")
        self.send(what, lambda: self.scripts.release(keys=[k.stream, k.counts], args=args))

    def fail(self, k: QueueKeys, view: SlotView, reason: str, kind: type[Exception]) -> None:
        self.send(f"failed {k.name} {view.task} {reason}",
                  lambda: self.record_failure(k, view.task, view.token, reason, kind(reason)))

    def record_failure(self, k: QueueKeys, task: str, token: str, reason: str,
                       exc: BaseException) -> int:
        args = [k.prefix, GROUP, task, token, "failed", b"", codec.dump_exception(exc), reason, reason,
                "0", time.time(), b"", self.cfg.host, 0]
        return self.scripts.complete(keys=k.complete_keys(), args=args)

    def send(self, what: str, write: Callable[[], Any]) -> None:
        """A Redis write the worker owes: done now, or kept in the outbox while Redis is away."""
        self.outbox.append((what, write))
        self.flush_outbox()

    def flush_outbox(self) -> bool:
        while self.outbox:
            what, write = self.outbox[0]
            try:
                done = write()
            except redis.RedisError as e:
                if transient(e):
                    self.note_redis_error(e)
                    return False
                self.log(f"worker: Redis refused to record this, giving up: {what} ({e})")
                done = 0
            self.outbox.pop(0)
            if done:  # 0: the attempt no longer held the task (recorded elsewhere meanwhile)
                self.log(what)
        return True

    def enforce_timeouts(self) -> None:
        now = time.monotonic()
        for pid, index in list(self.pids.items()):
            for slot in self.lanes(index):
                if pid in self.killed:
                    break
                view = slot.read()
                if view.busy and view.timeout > 0 and now - view.started > view.timeout:
                    self.kill(pid, Kill("autokill", view.token, view.timeout))

    def kill(self, pid: int, why: Kill) -> None:
        self.killed[pid] = why
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    # --- Redis bookkeeping ------------------------------------------------------------------
    def heartbeat(self, renew: bool = True) -> None:
        """Renew the leases of the tasks the children hold, and publish this worker's state."""
        running: dict[int, list[tuple[int, SlotView]]] = {}
        busy_n = done = failed = 0
        for pid, index in self.pids.items():
            for slot in self.lanes(index):
                view = slot.read()
                done += slot.done
                failed += slot.failed
                if view.busy and pid not in self.killed:
                    busy_n += 1
                    running.setdefault(view.queue, []).append((pid, view))
        for qi, held in running.items() if renew else ():
            k = self.keys[qi]
            kept = self.scripts.renew(keys=[k.lease(v.task) for _, v in held],
                                      args=[self.lease_ms] + [v.token for _, v in held])
            lost = [(pid, v) for (pid, v), ok in zip(held, kept) if not ok]
            if lost:
                self.lease_lost(k, lost)
        now = time.time()
        info = {"host": self.cfg.host, "pid": os.getpid(), "procs": self.cfg.procs, "busy": busy_n,
                "done": done + self.retired_done, "failed": failed + self.retired_failed,
                "rss": self.rss(), "queues": ",".join(self.cfg.queues), "started": self.started,
                "beat": now, "stopping": 1 if self.stopping else 0}
        pipe = self.r.pipeline(transaction=False)
        pipe.hset(schema.worker(self.id), mapping=info)
        pipe.expire(schema.worker(self.id), max(3, int(self.beat_every * 3) + 1))
        pipe.zadd(schema.WORKERS, {self.id: now})
        pipe.execute()
        self.reported, self.reported_at = self.tally(), time.monotonic()

    def tally(self) -> tuple[int, int, int]:
        """(busy, done, failed) over the children, as published in the worker's hash."""
        slots = [s for i in self.pids.values() for s in self.lanes(i)]
        return (sum(s.busy for s in slots), sum(s.done for s in slots) + self.retired_done,
                sum(s.failed for s in slots) + self.retired_failed)

    def lease_lost(self, k: QueueKeys, lost: list[tuple[int, SlotView]]) -> None:
        """Leases that could not be renewed. While the task still carries our token it is ours: it
        either only saw its lease expire (Redis was away, or this worker was paused) and is still
        running, so the lease is set again, or our child has just recorded its end (the heartbeat
        came between the record and the slot's update), so nothing is to be done. A task carrying
        another token was taken over, cancelled or re-run: this attempt is pointless (its result
        would be refused), so its process group is killed and the child replaced."""
        pipe = self.r.pipeline(transaction=False)
        for _, v in lost:
            pipe.hmget(k.task(v.task), schema.TASK_STATE, schema.TASK_TOKEN)
        states = pipe.execute()
        for (pid, v), (state, token) in zip(lost, states):
            if token == v.token.encode():
                if state == b"running":
                    self.r.set(k.lease(v.task), v.token, nx=True, px=self.lease_ms)
                    self.log(f"lease of {k.name} {v.task} had expired; nobody took the task over: set again")
            else:
                self.log(f"lease lost {k.name} {v.task}: the task was taken over or cancelled; "
                         "killing this attempt")
                self.kill(pid, Kill("lost", v.token))

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
            try:
                pending = self.r.xpending_range(k.stream, GROUP, min="-", max="+", count=1000,
                                                idle=self.lease_ms)
            except redis.ResponseError as e:
                if "NOGROUP" not in str(e):
                    raise
                self.log(f"worker: the consumer group of {k.name} is gone (Redis lost its data?); "
                         "creating it again")
                self.ensure_groups()
                continue
            if not pending:
                continue
            ids = [p["message_id"] for p in pending]
            gave_up = self.scripts.reclaim(keys=[k.stream, k.counts], args=[k.prefix, GROUP, time.time(), *ids])
            for i in range(0, len(gave_up), 3):
                task, n, host = (x.decode() for x in gave_up[i:i + 3])
                reason = f"lost {n} times; last on host {host}"
                self.send(f"failed {k.name} {task} {reason}",
                          lambda k=k, task=task, reason=reason: self.record_failure(
                              k, task, "", reason, TaskLost(reason)))
            if len(ids) > len(gave_up) // 3:
                self.log(f"reclaimed {len(ids) - len(gave_up) // 3} abandoned task(s) of {k.name}")

    def ensure_groups(self) -> None:
        for k in self.keys:
            try:
                self.r.xgroup_create(k.stream, GROUP, id="0", mkstream=True)
            except redis.ResponseError as e:
                if "BUSYGROUP" not in str(e):
                    raise

    def note_redis_error(self, e: redis.RedisError) -> None:
        if not self.redis_down:
            self.log(f"worker: Redis unreachable or refusing ({e}); retrying")
        self.redis_down = True

    def redis_round(self, now: float) -> None:
        """The round's Redis work; an unreachable Redis skips it until the next round."""
        try:
            if not self.flush_outbox():
                return
            if now >= self.next_beat:
                self.heartbeat()
                self.next_beat = now + self.beat_every
            elif self.tally() != self.reported and (now >= self.reported_at + 1.0 or not self.tally()[0]):
                self.heartbeat(renew=False)  # `forrestq status` follows within a second (idle: at once)
            if now >= self.next_sweep and not self.stopping:
                self.sweep()
                self.next_sweep = now + self.sweep_every
            if self.redis_down:
                self.log("worker: Redis is back")
            self.redis_down = False
        except redis.RedisError as e:
            self.note_redis_error(e)

    # --- stopping ---------------------------------------------------------------------------
    def _on_signal(self, signum: int, frame: Any) -> None:
        if self.stopping and signum == signal.SIGINT:
            self.hard_stop = True
        elif not self.stopping:
            self.stopping = time.monotonic()

    def stop_round(self, now: float) -> None:
        if not self.stop_announced:
            self.stop_announced = True
            self.vacant.clear()
            self.log(f"stopping: waiting up to {self.cfg.grace:g} s for running tasks "
                     "(Ctrl-C again to stop now)")
            for slot in self.slots:
                slot.stop = 1
        if self.hard_stop or now - self.stopping >= self.cfg.grace:
            for pid, index in self.pids.items():
                if pid not in self.killed:
                    self.kill(pid, Kill("stop", self.slots[index].read().token))

    # --- main loop --------------------------------------------------------------------------
    def log(self, line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    def run(self) -> int:
        self.ensure_groups()
        # A task's orphans (e.g. started in a new session, so out of reach of killpg) come to this
        # process, which kills them once the child that ran the task is gone.
        self.foreign = set(own_children())
        prctl(PR_SET_CHILD_SUBREAPER, 1)
        rfd, wfd = os.pipe()
        os.set_blocking(wfd, False)
        os.set_blocking(rfd, False)
        signal.set_wakeup_fd(wfd, warn_on_full_buffer=False)
        for s in (signal.SIGINT, signal.SIGTERM):
            signal.signal(s, self._on_signal)
        signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes the select through the wakeup fd
        self.next_beat = self.next_sweep = self.reported_at = 0.0
        self.reported = (0, 0, 0)
        self.wake_fd = wfd  # children write here when a task ends: the worker looks at once
        self.stop_announced = False
        try:
            self.vacant = {i: 0.0 for i in range(self.cfg.procs)}
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
                if self.stopping:
                    self.stop_round(now)
                self.redis_round(now)
                self.fill_vacant()
            self.last_words()
            return 0
        finally:
            for pid in list(self.pids):
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:  # leave nothing behind: our entry, our hash, the sweep guards we hold
                ours = [k.sweep for k in self.keys if self.r.get(k.sweep) == self.id.encode()]
                self.r.zrem(schema.WORKERS, self.id)
                self.r.delete(schema.worker(self.id), *ours)
            except redis.RedisError:
                pass
            signal.set_wakeup_fd(-1)
            os.close(rfd)
            os.close(wfd)

    def last_words(self) -> None:
        """Every child is gone: send what the outbox still holds, for a few seconds at most
        (a task not handed back here comes back when its lease expires)."""
        deadline = time.monotonic() + min(5.0, max(1.0, self.cfg.grace))
        while not self.flush_outbox() and time.monotonic() < deadline:
            time.sleep(0.2)
        for what, _ in self.outbox:
            self.log(f"worker: Redis unreachable, not done: {what} (its lease will expire)")


def ctypes_size() -> int:
    import ctypes

    return ctypes.sizeof(Slot)
