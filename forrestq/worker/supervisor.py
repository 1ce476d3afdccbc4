"""The worker: supervises child processes that run tasks, and never runs user code itself.

One worker per machine (``forrestq worker --procs N``). It forks N children
(:mod:`forrestq.worker.child`) and then only watches: it renews the leases of the tasks its children
hold (read from shared-memory slots), kills a child's whole process group when its task runs past its
time, records the failure of a task whose child died, replaces dead or retired children, reclaims
tasks that other (lost) workers held, and on SIGTERM/SIGINT lets running tasks finish for a grace
period before handing them back.

The supervision loop (:meth:`Worker.run`) is a list of named steps, run every tick (50 ms) or as soon
as a signal or a child wakes the worker: ``reap`` (collect dead children, settle their tasks),
``check_refusals`` (stop claiming when this worker's secret is not the producers'),
``enforce_timeouts``, ``stop_round`` (while stopping), ``redis_round`` (outbox, heartbeat, sweep, time
keeping: due delayed tasks and periodic ticks, :mod:`forrestq.worker.timekeeper`),
``fill_vacant`` (start children) and ``idle.step`` (``--idle-exit``: stop once no task was held that
long, :mod:`forrestq.worker.idle`). Set-up (which puts the working directory and ``paths`` on the
children's import path) and tear-down sit outside the loop; all state is made in ``__init__``.

What becomes of a task whose child died:

* killed by the worker for its time limit: failed, "killed after N s (timeout of this task)" for the
  task's own ``timeout``, "killed after N s (worker --autokill)" for the worker's default;
* killed by the worker because it is stopping: handed back, the attempt not counted;
* killed by the worker because its lease was lost (the task was taken over or cancelled): nothing
  to record, the task is someone else's;
* SIGKILLed by someone else (the OOM killer, an operator): handed back, the attempt counted; failed
  once it has used up its attempts;
* any other death (a segfault, ``os._exit``, an abort): failed, with the signal or the exit code.

A task a child cannot load for a reason of this host (a missing module, another secret) is handed
to another host (:mod:`forrestq.worker.refusals`); a worker whose children keep refusing payloads
for their signature stops claiming (:meth:`Worker.check_refusals`), says why in one line, and shows it
in ``forrestq status`` until it is restarted with the right secret.

Redis may be away for a while: writes the worker owes (a failure, a hand-back) wait in an outbox
(:class:`~forrestq.worker.bookkeeping.Bookkeeper`) and are retried every round; the supervision
itself (timeouts, reaping) never waits on Redis.
"""
from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from .. import durability, log, schema, signing
from ..cluster import primaries
from ..connection import connect, resolve_url
from ..errors import ConfigError, shown
from ..schema import QueueKeys
from .access import first_round, on_redis_error, settled
from .bookkeeping import Bookkeeper
from .capacity import Capacity, worker_totals
from .child import ChildConfig, child_main
from .claims import LANES
from .forensics import Kill, TaskFiles, ask_for_stack, of_dead_child
from .idle import IdleWatch
from .procs import PR_SET_CHILD_SUBREAPER, descendants, kill_tree, killpg, own_children, prctl, pss, rss
from .refusals import SIGNATURE_LIMIT, stop_claiming_words
from .slots import SlotTable, SlotView

logger = log.get("worker")

TICK = 0.05  # seconds between supervision rounds when nothing wakes the worker earlier
CRASH_LOOP = (5, 10.0, 5.0)  # 5 children of one slot failing on their own within 10 s: pause 5 s
REDIS_TIMEOUT = 5.0  # seconds the worker waits for one answer from Redis
UNBLOCK_EVERY = 0.1  # seconds between two unblock() while stopping
MAX_PROCS = 4096  # more children than this is a typo (a fork bomb), not a machine
MIB = 1024 * 1024
CHILD_MARGIN = 64 * MIB  # address space a child needs beyond the worker's to start and load a task


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
    soft_timeout: float = 0.0  # default seconds before TimeLimitExceeded is raised in a task, 0 = none
    max_memory: int = 0  # bytes per child, 0 = unlimited
    max_tasks_per_child: int = 0
    max_child_rss: int = 0
    grace: float = 30.0
    logfile: str | None = None
    verbose: int = 0  # -1 = --quiet; the CLI maps it onto log levels (forrestq.log.setup)
    host: str = field(default_factory=default_host)
    sweep_interval: float | None = None  # default: lease / 3, at most 5 s
    heartbeat: float | None = None  # default: lease / 3
    async_concurrency: int = 1  # coroutine tasks one child may run at once (IO-bound work)
    # directories put in front of the import path of the children (``--path``), before the working
    # directory, which is always put there (as ``python -m`` does, and RQ and Celery)
    paths: list[str] = field(default_factory=list)
    # what the worker has (``--resources mem=32G,gpu=2``: text or a dict; forrestq.worker.capacity);
    # ``totals`` is the checked form, with the defaults (cpus = procs, mem = the machine's memory)
    resources: str | dict[str, Any] | None = None
    admit_by_memory: bool = False  # no task without a declared mem starts while MemAvailable < its p95 peak
    idle_exit: float = 0.0  # seconds without a task after which the worker stops by itself, 0 = never
    job: str = field(default_factory=lambda: os.environ.get("FORRESTQ_JOB", ""))  # its batch job ("slurm:123")
    totals: dict[str, float] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.queues = list(dict.fromkeys(self.queues))  # `--queue a --queue a` serves a once
        if self.procs < 1:
            raise ConfigError(f"--procs must be at least 1, not {self.procs}")
        if self.procs > MAX_PROCS:
            raise ConfigError(f"--procs must be at most {MAX_PROCS}, not {self.procs}")
        if self.lease <= 0:
            raise ConfigError(f"--lease must be positive, not {self.lease}")
        if not self.queues:
            raise ConfigError("at least one queue is needed")
        if not 1 <= self.async_concurrency <= 64:
            raise ConfigError(f"--async-concurrency must be from 1 to 64, not {self.async_concurrency}")
        if self.soft_timeout < 0 or (self.autokill and self.soft_timeout >= self.autokill):
            raise ConfigError(f"--soft-timeout must be 0 (never) or a positive number of seconds below --autokill, "
                              f"not {self.soft_timeout:g}")
        if self.autokill < 0:
            raise ConfigError(f"--autokill must be 0 (never) or a positive number of seconds, not {self.autokill:g}")
        if self.grace < 0:
            raise ConfigError(f"--grace must be 0 or more seconds, not {self.grace:g}")
        if self.idle_exit < 0:
            raise ConfigError(f"--idle-exit must be 0 (never) or a positive number of seconds, not {self.idle_exit:g}")
        if self.max_tasks_per_child < 0:
            raise ConfigError(f"--max-tasks-per-child must be 0 (never) or more, not {self.max_tasks_per_child}")
        for path in self.paths:
            if not isinstance(path, str) or not os.path.isdir(path):
                raise ConfigError(f"--path {shown(path)}: no such directory")
        self.totals = worker_totals(self.resources, self.procs)

    def import_paths(self) -> list[str]:
        """What the children find modules in, before the rest of ``sys.path``: ``paths``, then the
        working directory (absolute: a task may change directory; none if it was deleted)."""
        try:
            cwd = [os.getcwd()]
        except OSError:
            cwd = []
        return [os.path.abspath(p) for p in (*self.paths, *cwd)]


def address_space() -> int:
    """This process's address-space size in bytes (``VmSize``), 0 where /proc does not say."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024  # "VmSize:   46984 kB"
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _mib(size: int) -> str:
    return f"{round(size / MIB, 1):g}"


def check_start(cfg: WorkerConfig) -> None:
    """What would make every child fail, refused before any is started (a ConfigError, one line)."""
    durability.replicas()  # a bad $FORRESTQ_DURABILITY: every child would refuse to start
    if cfg.logfile is not None:
        try:  # every child appends each task's output here: a file it cannot open fails every task
            with open(cfg.logfile, "a"):
                pass
        except OSError as e:
            raise ConfigError(f"cannot write --logfile {cfg.logfile}: {e.strerror or e}") from None
    # --max-memory is RLIMIT_AS, which limits the address space (not the RSS), and a forked child
    # starts with all of the worker's: below VmSize plus a margin, every child dies of MemoryError
    # before it runs a task, and is replaced, forever.
    if cfg.max_memory:
        own = address_space()
        need = own + CHILD_MARGIN if own else 0
        if cfg.max_memory < need:
            raise ConfigError(f"--max-memory {_mib(cfg.max_memory)} MiB is too small: a worker child needs about "
                              f"{-(-need // MIB)} MiB of address space before it runs a task")


def unblock(r: redis.Redis, names: set[str], now: float) -> float:
    """End the blocking XREADGROUP of the connections named ``names`` (a stopping worker's children,
    named by their consumers): a child waiting for work would see its stop flag only when the read
    times out (``block_ms``). CLIENT UNBLOCK, so an idle worker stops at once; returns ``now``."""
    try:
        for node in primaries(r) if names else ():  # a cluster: the children's reads are on every node
            for client in node.client_list():  # not a WAIT (durability): it would end unconfirmed
                if client.get("name") in names and client.get("cmd") == "xreadgroup":
                    node.client_unblock(int(client["id"]))
    except redis.RedisError:  # Redis away, or CLIENT not allowed: the children leave at their timeout
        pass
    return now


def respawn_at(crashes: list[float], index: int, crashed: bool) -> float:
    """When to replace dead child ``index`` (``crashes``: its slot's recent failure times, updated):
    at once, unless children of this slot keep failing on their own, holding no task (a broken
    environment, not a bad task): then after a pause."""
    now = time.monotonic()
    if not crashed:
        return now
    count, window, pause = CRASH_LOOP
    crashes[:] = [t for t in crashes if t > now - window] + [now]
    if len(crashes) < count:
        return now
    crashes.clear()
    logger.warning("child %d failed %d times within %g s; waiting %g s before starting it again",
                   index, count, window, pause)
    return now + pause


class Worker:
    """Supervises ``procs`` children for ``queues``; ``run()`` returns the exit code."""

    def __init__(self, cfg: WorkerConfig) -> None:
        signing.check()  # a bad $FORRESTQ_SECRET(_FILE) fails here, not at every task
        check_start(cfg)  # likewise a --logfile no child can write, a --max-memory no child fits in
        self.cfg = cfg
        self.url = resolve_url(cfg.url)
        # no retries inside a call: the loop retries, and supervision never waits long on Redis
        self.r = connect(self.url, retry=Retry(NoBackoff(), 0), socket_timeout=REDIS_TIMEOUT)
        self.keys = [QueueKeys(q) for q in cfg.queues]
        self.id = f"{cfg.host}:{os.getpid()}:{os.urandom(2).hex()}"
        self.lease_ms = int(cfg.lease * 1000)
        self.beat_every = cfg.heartbeat or cfg.lease / 3
        self.sweep_every = cfg.sweep_interval or min(cfg.lease / 3, 5.0)
        self.books = Bookkeeper(self.r, self.keys, self.id, cfg.host, self.lease_ms, self.sweep_every)
        # one slot per task a child may hold: ``async_concurrency`` lanes per child, or claims.LANES
        self.slots = SlotTable(cfg.procs, cfg.async_concurrency if cfg.async_concurrency > 1 else LANES)
        self.capacity = Capacity(cfg.totals, cfg.procs, cfg.async_concurrency, cfg.admit_by_memory)
        self.pids: dict[int, int] = {}  # pid -> child index
        self.vacant: dict[int, float] = {}  # child index -> monotonic time it may be filled
        self.killed: dict[int, Kill] = {}  # pid -> why this worker killed it
        self.dumping: dict[int, float] = {}  # pid -> when it was asked for its stack (a time-limit kill)
        self.files: dict[int, TaskFiles] = {}  # child index -> its output and stack files
        self.crashes: list[list[float]] = [[] for _ in range(cfg.procs)]  # per child index, monotonic times
        self.stopping = 0.0  # monotonic time the stop began, 0 = running
        self.refusing = ""  # why this worker stopped claiming tasks ("": it claims)
        self.stop_announced = self.hard_stop = False
        self.unblocked_at = 0.0  # monotonic time of the last unblock() while stopping
        self.retired_done = self.retired_failed = 0
        self.started = time.time()
        self.foreign: set[int] = set()  # children this process had before run(): not ours to kill
        self.wake_r = self.wake_fd = -1  # a pipe: signals and children write to it, the loop waits on it
        self.next_beat = self.next_sweep = self.reported_at = 0.0
        self.reported = (0, 0, 0)  # tally() as last published
        self.denied: redis.exceptions.NoPermissionError | None = None  # an ACL refusal: the worker ends
        self.idle = IdleWatch(cfg.idle_exit)  # --idle-exit: stops the worker once it held no task that long
        first_round(self, REDIS_TIMEOUT)  # what the ACL refuses is one line now, before any child starts

    # --- the loop ---------------------------------------------------------------------------
    def run(self) -> int:
        self.setup()
        try:
            self.vacant = {i: 0.0 for i in range(self.cfg.procs)}
            while self.pids or not self.stopping:
                self.reap()
                self.check_refusals()
                self.enforce_timeouts()
                self.stop_round()
                self.redis_round()
                self.fill_vacant()
                self.idle.step(self.slots.all)
                self.sleep()  # last: the first round (register, fork the children) starts at once
            self.books.last_words(self.cfg.grace)
            return settled(self.denied)  # 0, or raises what the ACL refused (the CLI: one line, EXIT_AUTH)
        finally:
            self.teardown()

    def setup(self) -> None:
        self.books.ensure_groups()
        # the children import tasks' modules from the working directory and --path, whether this
        # process was started as `python -m forrestq` (which puts the working directory there) or
        # as the `forrestq` console script (which does not)
        sys.path[0:0] = [p for p in dict.fromkeys(self.cfg.import_paths()) if p not in sys.path]
        # A task's orphans (e.g. started in a new session, so out of reach of killpg) come to this
        # process, which kills them once the child that ran the task is gone.
        self.foreign = set(own_children())
        prctl(PR_SET_CHILD_SUBREAPER, 1)
        self.wake_r, self.wake_fd = os.pipe()  # children write here when a task ends: we look at once
        os.set_blocking(self.wake_fd, False)
        os.set_blocking(self.wake_r, False)
        signal.set_wakeup_fd(self.wake_fd, warn_on_full_buffer=False)
        for s in (signal.SIGINT, signal.SIGTERM):
            signal.signal(s, self._on_signal)
        signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes the select through the wakeup fd

    def teardown(self) -> None:
        for pid in list(self.pids):
            killpg(pid)
        self.books.leave()
        signal.set_wakeup_fd(-1)
        for files in self.files.values():
            files.close()
        os.close(self.wake_r)
        os.close(self.wake_fd)

    def sleep(self) -> None:
        """Until a tick has passed, or a signal or a child's write to the wake pipe ends it (not at
        all once the loop ends: stopping, and the last child is gone)."""
        select.select([self.wake_r], [], [], 0 if self.stopping and not self.pids else TICK)
        with contextlib.suppress(BlockingIOError):
            while os.read(self.wake_r, 512):
                pass

    # --- children ---------------------------------------------------------------------------
    def child_config(self, index: int) -> ChildConfig:
        c = self.cfg
        files = self.files.get(index) or self.files.setdefault(index, TaskFiles())
        return ChildConfig(url=self.url, queues=c.queues, worker_id=self.id,
                           consumer=f"{c.host}:{os.getpid()}:{index}", host=c.host,
                           lease_ms=self.lease_ms, autokill=c.autokill, soft_timeout=c.soft_timeout,
                           max_memory=c.max_memory,
                           max_tasks=c.max_tasks_per_child, max_rss=c.max_child_rss,
                           logfile=c.logfile, parent_pid=os.getpid(),
                           wake_fd=self.wake_fd, async_concurrency=c.async_concurrency,
                           out_fd=files.out_fd, stack_fd=files.stack_fd, capacity=self.capacity, index=index)

    def spawn(self, index: int) -> None:
        now = time.monotonic()
        lanes = self.slots.lanes(index)
        for slot in lanes:
            slot.busy, slot.stop, slot.refused, slot.parked = 0, 0, 0, 0
        cfg = self.child_config(index)
        self.files[index].clear_stack()  # nothing of the child before
        old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM, signal.SIGCHLD})
        try:
            pid = os.fork()
            if pid == 0:
                child_main(cfg, lanes[0], lanes)  # never returns
        except OSError as e:  # e.g. out of processes: try again later
            logger.warning("cannot start a child (%s); trying again in 1 s", e)
            self.vacant[index] = now + 1.0
            return
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
        self.pids[pid] = index

    def fill_vacant(self) -> None:
        now = time.monotonic()
        for index, when in list(self.vacant.items()):
            if when <= now and not self.stopping and not self.refusing:
                del self.vacant[index]
                self.spawn(index)

    def reap(self) -> None:
        """Collect dead children: settle the task each held, and mark its slot for a new child."""
        while True:
            try:
                pid, status, usage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            index = self.pids.pop(pid, None)
            if index is None:
                continue  # an orphaned grandchild that came to us (we are a subreaper)
            killpg(pid)  # grandchildren the task left behind
            kill_tree([p for p in own_children() if p not in self.pids and p not in self.foreign])
            kill = self.killed.pop(pid, None)
            self.dumping.pop(pid, None)
            held = False
            for slot in self.slots.lanes(index):
                view = slot.read()
                self.retired_done += slot.done
                self.retired_failed += slot.failed
                slot.done = slot.failed = slot.busy = 0
                if view.busy:
                    held = True
                    ev = of_dead_child(pid, usage, view.cpu0, time.monotonic() - view.started, self.files.get(index),
                                       view.output_at)
                    self.books.settle(self.keys[view.queue], view, status, kill, ev)
            self.capacity.release_child(index)  # what its tasks reserved (forrestq.worker.capacity)
            if not self.stopping and not self.refusing:
                crashed = not held and kill is None and status != 0  # a retiring child exits 0
                self.vacant[index] = respawn_at(self.crashes[index], index, crashed)

    def enforce_timeouts(self) -> None:
        """Kill the children whose task is past its time limit (after asking for its stack), or
        whose task's processes hold more than --max-memory."""
        now = time.monotonic()
        for pid, index in list(self.pids.items()):
            for slot in self.slots.lanes(index):
                if pid in self.killed:
                    break
                view = slot.read()
                if view.busy and view.timeout > 0 and now - view.started > view.timeout:
                    self.kill_with_stack(pid, index, Kill("autokill", view.token, view.timeout, view.own_limit), now)
                elif view.busy and self.cfg.max_memory:
                    tree = descendants(pid)  # shared pages counted once (pss) when the cheap sum is over
                    if rss(tree) > self.cfg.max_memory and (used := pss(tree)) > self.cfg.max_memory:
                        self.kill(pid, Kill("memory", view.token, self.cfg.max_memory, peak=used))

    def kill_with_stack(self, pid: int, index: int, why: Kill, now: float) -> None:
        """Kill a child for its time limit once it wrote its stack (see :func:`ask_for_stack`)."""
        if ask_for_stack(pid, self.dumping, self.files[index], now):
            self.kill(pid, why)

    def check_refusals(self) -> None:
        """Stop claiming once the children handed back SIGNATURE_LIMIT payloads in a row for their
        signature (each while a worker with another secret served the queue): this worker's secret is
        not the producers'. Said once (ERROR) and published; the worker stays up, idle, until stopped."""
        if self.refusing or self.stopping:
            return
        refused = sum(self.slots.first(i).refused for i in self.pids.values())
        if refused < SIGNATURE_LIMIT:
            return
        line, self.refusing = stop_claiming_words(self.r, self.id, self.cfg.queues, refused)
        logger.error("%s", line)
        self.vacant.clear()
        for slot in self.slots.all:
            slot.stop = 1  # each child finishes what it holds and leaves; none is started again
        self.next_beat = 0.0  # `forrestq status` shows it at once

    def kill(self, pid: int, why: Kill) -> None:
        self.killed[pid] = why
        killpg(pid)

    # --- Redis bookkeeping ------------------------------------------------------------------
    def redis_round(self) -> None:
        """The round's Redis work; an unreachable Redis skips it until the next round."""
        now = time.monotonic()
        try:
            if not self.books.flush_outbox():
                return
            if now >= self.next_beat:
                self.heartbeat()
                self.next_beat = now + self.beat_every
            elif self.tally() != self.reported and (now >= self.reported_at + 1.0 or not self.tally()[0]) \
                    or self.books.env.due(bool(self.pids)):  # its environment: once the children run
                self.heartbeat(renew=False)  # `forrestq status` follows within a second (idle: at once)
            if now >= self.next_sweep and not self.stopping:
                self.books.sweep()
                self.next_sweep = now + self.sweep_every
            self.books.clock.step(bool(self.stopping))  # due delayed tasks to the stream, periodic ticks
            self.books.note_redis_ok()
        except redis.RedisError as e:
            self.denied = on_redis_error(self, e)  # an ACL refusal stops the worker; else retried next round

    def heartbeat(self, renew: bool = True) -> None:
        """Renew the leases of the tasks the children hold, and publish this worker's state."""
        running: dict[int, list[tuple[int, SlotView]]] = {}
        for pid, index in self.pids.items():
            for slot in self.slots.lanes(index):
                view = slot.read()
                if view.busy and pid not in self.killed:
                    running.setdefault(view.queue, []).append((pid, view))
        for qi, held in running.items() if renew else ():
            k = self.keys[qi]
            lost = self.books.renew(k, [v for _, v in held])
            if lost:
                pid_of = {v.token: pid for pid, v in held}
                for v in self.books.taken_over(k, lost):
                    self.kill(pid_of[v.token], Kill("lost", v.token))
        busy = sum(not v.parked for held in running.values() for _, v in held)  # parked: not running
        _, done, failed = snap = self.tally()  # what is published: a change while it is sent shows next round
        c = self.cfg
        info = {schema.WORKER_HOST: c.host, schema.WORKER_PID: os.getpid(), schema.WORKER_PROCS: c.procs,
                schema.WORKER_BUSY: busy, schema.WORKER_DONE: done, schema.WORKER_FAILED: failed,
                schema.WORKER_RSS: rss([os.getpid(), *self.pids]), schema.WORKER_QUEUES: ",".join(c.queues),
                schema.WORKER_STARTED: self.started, schema.WORKER_BEAT: time.time(),
                schema.WORKER_STOPPING: 1 if self.stopping else 0, schema.WORKER_RESOURCES: self.capacity.text,
                schema.WORKER_FINGERPRINT: signing.fingerprint(), schema.WORKER_REFUSING: self.refusing,
                schema.WORKER_JOB: c.job}
        self.books.publish(info, max(3, int(self.beat_every * 3) + 1), forked=bool(self.pids))
        self.reported, self.reported_at = snap, time.monotonic()

    def tally(self) -> tuple[int, int, int]:
        """(busy, done, failed) over the children, as published in the worker's hash."""
        slots = [s for i in self.pids.values() for s in self.slots.lanes(i)]
        return (sum(s.busy and not s.parked for s in slots), sum(s.done for s in slots) + self.retired_done,
                sum(s.failed for s in slots) + self.retired_failed)

    # --- stopping ---------------------------------------------------------------------------
    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.stopping and signum == signal.SIGINT:
            self.hard_stop = True
        elif not self.stopping:
            self.stopping = time.monotonic()

    def stop_round(self) -> None:
        """While stopping: ask every child to finish its task and leave (an idle one's read is ended:
        `unblock`); past the grace (or at a second Ctrl-C) kill them (their tasks are handed back)."""
        if not self.stopping:
            return
        now = time.monotonic()
        if not self.stop_announced:
            self.stop_announced = True
            self.vacant.clear()
            logger.info("stopping: waiting up to %g s for running tasks (Ctrl-C again to stop now)",
                        self.cfg.grace)
            for slot in self.slots.all:
                slot.stop = 1
        if self.hard_stop or now - self.stopping >= self.cfg.grace:
            for pid, index in self.pids.items():
                if pid not in self.killed:
                    self.kill(pid, Kill("stop", self.slots.first(index).read().token))
        elif now - self.unblocked_at >= UNBLOCK_EVERY:  # again later: a child may have been about to block
            self.unblocked_at = unblock(self.r, {self.child_config(i).consumer for i in self.pids.values()}, now)
