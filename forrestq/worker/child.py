"""The child process: claims tasks from Redis, runs user code, records results.

A child is forked by the worker (:mod:`forrestq.worker.supervisor`), sits in its own process group,
and is reused for many tasks. It talks to Redis itself (claim and completion are one Lua script each,
pipelined together), so a task costs no round trip through the parent. It tells its parent what it
holds through a shared memory :class:`~forrestq.worker.slots.Slot`; the parent renews leases from
there, kills the process group on timeout, and records the failure when the child dies (segfault,
``os._exit``, OOM kill) — the child never has to survive.

A task is held from its claim until its completion is recorded (or refused): while Redis is away the
child keeps the completion and retries it, and its lease keeps being renewed, so a computed result is
never dropped while its fencing token is current. The slot's time limit covers the user's code only.

Loading, calling and judging a task is :class:`forrestq.runner.Runner`'s work; this module is the
loop around it: claim, run with the output captured and the slot armed, record.
"""
from __future__ import annotations

import asyncio
import contextlib
import gc
import inspect
import logging
import os
import resource
import signal
import time
import traceback
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import redis

from .. import durability, log, ops, shared
from ..cluster import ClusterClient, slot_groups
from ..connection import connect
from ..context import Where
from ..errors import TimeLimitExceeded, escape_controls
from ..lease import new_token
from ..runner import REFUSED, RELEASE, Outcome, Runner, completion, discard, one_line
from ..schema import CONTINUED, DONE, GROUP, QueueKeys
from .capacity import Capacity, Gate
from .claims import Claims
from .continuation import planned
from .forensics import Meter
from .peers import what_became_of
from .procs import PR_SET_CHILD_SUBREAPER, PR_SET_PDEATHSIG, Backoff, Capture, kill_tree, live_children, prctl, rss
from .refusals import Refuser
from .slots import Slot

logger = log.get("child")



T = TypeVar("T")

WAKE_EVERY = 0.2  # seconds between wake-ups of the worker while tasks keep ending


@dataclass
class ChildConfig:
    url: str
    queues: list[str]
    worker_id: str
    consumer: str
    host: str
    lease_ms: int
    autokill: float = 0.0  # 0 = none
    soft_timeout: float = 0.0  # s before TimeLimitExceeded is raised in a task without its own, 0 = none
    max_memory: int = 0  # bytes of address space, 0 = unlimited
    max_tasks: int = 0  # tasks before the child is replaced, 0 = unlimited
    max_rss: int = 0  # bytes: a child that grew past this after a task is replaced, 0 = unlimited
    logfile: str | None = None
    block_ms: int = 500
    socket_timeout: float = 30.0  # seconds without an answer before Redis counts as unreachable
    parent_pid: int = 0  # the worker; 0 = do not check
    wake_fd: int = -1  # a non-blocking pipe to the worker, written when a task ends
    async_concurrency: int = 1  # coroutine tasks run at once (one slot "lane" each)
    out_fd: int = -1  # the worker's output file for this child slot (-1: a scratch file of its own)
    stack_fd: int = -1  # the worker's stack file for this child slot (-1: no stack at death)
    extra: dict[str, Any] = field(default_factory=dict)
    capacity: Capacity | None = None  # the worker's, shared (forrestq.worker.capacity); None: admit all
    index: int = 0  # this child's index among the worker's children (its slots in ``capacity``)


@contextlib.contextmanager
def soft_limit(seconds: float) -> Iterator[None]:
    """Raise TimeLimitExceeded in this (the main) thread after ``seconds`` (0: never), via SIGALRM."""
    if seconds <= 0:
        yield
        return

    def expired(signum: int, frame: object) -> None:
        raise TimeLimitExceeded(f"soft time limit of {seconds:g} s exceeded")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


async def soft_limited(coro: Coroutine[Any, Any, Any], seconds: float) -> Any:
    """Await a coroutine task sharing the loop; past ``seconds`` (0: never) it is cancelled where it
    waits (its ``finally:`` blocks run) and fails with TimeLimitExceeded."""
    if seconds <= 0:
        return await coro
    task = asyncio.ensure_future(coro)
    done, _ = await asyncio.wait({task}, timeout=seconds)
    if task in done:
        return task.result()
    task.cancel()
    expired = TimeLimitExceeded(f"soft time limit of {seconds:g} s exceeded")
    try:
        await task
    except asyncio.CancelledError as stopped:
        raise expired from stopped  # the cause's traceback names the line it waited on
    raise expired


def read_ready(r: redis.Redis, consumer: str, streams: list[str], block_ms: int) -> Any:
    """XREADGROUP of the next ready entry of any of the streams, blocking up to block_ms; streams of
    several cluster slots: one read per slot, at once (it may deliver one entry per slot)."""
    if slot_groups(r, streams) > 1:
        return cast(ClusterClient, r).xreadgroup_any(GROUP, consumer, dict.fromkeys(streams, ">"), block_ms)
    return r.xreadgroup(GROUP, consumer, dict.fromkeys(streams, ">"), count=1, block=block_ms)


class Child:
    """The claim/run/complete loop of one child process."""

    def __init__(self, cfg: ChildConfig, slot: Slot, lanes: list[Slot] | None = None) -> None:
        self.cfg = cfg
        self.slot = slot
        every = lanes or [slot]
        self.lanes = every[:max(cfg.async_concurrency, 1)]  # the async lanes (one: the child's own slot)
        self.pid = os.getpid()
        # named by its consumer: a stopping worker finds it (CLIENT LIST) and ends its blocking read
        self.r: redis.Redis = connect(cfg.url, check=False, socket_timeout=cfg.socket_timeout,
                                      client_name=cfg.consumer)
        shared.set_client(self.r)  # shared inputs (Queue.put) load through this child's connection
        self.scripts = ops.Scripts(self.r)
        self.keys = [QueueKeys(q) for q in cfg.queues]
        self.runner = Runner(self._get, cfg.host, where=Where(cfg.url, cfg.host, cfg.autokill, cfg.soft_timeout))
        self.capture = Capture(cfg.out_fd)
        self.meter = Meter(cfg.stack_fd)
        log.redirect(self.capture.stderr)  # log lines go to the worker's stderr, not the task's output
        self.woke = 0.0
        self.tasks_run = 0
        self.backoff = Backoff()
        self.replicas = durability.replicas()  # $FORRESTQ_DURABILITY: a task's end waits for a replica
        # claims (several at once while tasks end fast, one lane each) and the ends not recorded yet
        self.claims = Claims(self.r, self.scripts, self.keys, ops.ClaimArgs(cfg.consumer, "", cfg.lease_ms, cfg.host,
                             cfg.worker_id), every if cfg.async_concurrency <= 1 else [slot], self.replicas,
                             self.wake, cfg.max_tasks)
        self.claims.stopping = lambda: self.slot.stop
        self.refuser = Refuser(self.r, self.scripts, cfg.host, slot)
        self.gate = Gate(cfg.capacity, cfg.index, self.r, self.scripts, cfg.host, self.refuser, self._patiently)

    # --- Redis side -------------------------------------------------------------------------
    def next_task(self, block: bool = True) -> tuple[int, ops.Claimed, Slot] | None:
        """The next task claimed ahead, else record the ends and claim in one round trip; block if
        idle (and ``block``). Returns (queue index, the claimed task, the lane that holds it), or None."""
        taken = self.claims.take()
        if taken is not None:
            return taken
        token = new_token()  # the fencing token of whatever this call claims
        # queues in the order given: the first has priority; one claim per call, never one per queue
        for qi, k in enumerate(self.keys):
            got = self.claims.exchange(k, token, self.claims.count(self.tasks_run))
            if isinstance(got, list) and got:
                return self.claims.hold(qi, got)
        if self.slot.stop or not block:
            return None
        return self._wait_for_task(token)

    def _wait_for_task(self, token: str) -> tuple[int, ops.Claimed, Slot] | None:
        """Block (up to ``block_ms``) until a task is ready on one of the queues, and claim it: in the
        same round trip (Claims.wait), or on a cluster, whose reads may span slots, in a second one.
        Holds the first task claimed; hands back any other (one read may deliver one per stream)."""
        found = self._read_then_claim(token) if isinstance(self.r, ClusterClient) else self.claims.wait(
            self.cfg.block_ms)
        held: tuple[int, ops.Claimed, Slot] | None = None
        for qi, c in found:
            if self.slot.stop or held is not None:  # stopping, or one task is held already: hand it back
                self._release(self.keys[qi], c.id, c.token)
            else:
                held = self.claims.hold(qi, [c])
        return held

    def _read_then_claim(self, token: str) -> Iterator[tuple[int, ops.Claimed]]:
        read = read_ready(self.r, self.cfg.consumer, [k.stream for k in self.keys], self.cfg.block_ms)
        for stream, entries in read or ():
            name = stream.decode() if isinstance(stream, bytes) else stream
            qi = [k.stream for k in self.keys].index(name)
            sid = entries[0][0]
            got = self.claims.exchange(self.keys[qi], token, 1, sid.decode() if isinstance(sid, bytes) else sid)
            if isinstance(got, list) and got:
                yield qi, got[0]
                token = new_token()

    def recreate_groups(self, error: Exception) -> bool:
        """After NOGROUP (the stream was deleted while this child read it, e.g. by ``clean(all=True)``
        or a FLUSHALL): create the groups again, quietly; True if that was the trouble."""
        if not isinstance(error, redis.ResponseError) or not str(error).startswith(("NOGROUP", "UNBLOCKED")):
            return False
        for k in self.keys:
            try:
                self.r.xgroup_create(k.stream, GROUP, id="0", mkstream=True)
            except redis.RedisError:
                pass  # BUSYGROUP, or Redis away: the next round tries again
        logger.debug("child %d: a queue's stream was deleted; its consumer group is created again", self.pid)
        return True

    def _release(self, k: QueueKeys, task_id: str, token: str) -> None:
        """Hand a task claimed by this call back at once (its attempt is not counted)."""
        ops.release(self.scripts, k, ops.ReleaseArgs(task_id, token))

    def flush(self) -> None:
        """Record the ends not recorded yet and hand back the tasks claimed ahead (the child is leaving).
        Retries while Redis is away: the worker ends the wait if it has to (its grace), and then hands
        the tasks back."""
        while self.claims.holding():
            try:
                self.claims.flush()
            except redis.RedisError as e:
                logger.warning("child %d: cannot record a result yet (%s); retrying", self.pid, one_line(e))
                self.backoff.pause()

    def _patiently(self, call: Callable[[], T]) -> T:
        """call(), retried while Redis is away (for commands that are safe to repeat)."""
        while True:
            try:
                return call()
            except (redis.ConnectionError, redis.TimeoutError) as e:
                logger.warning("child %d: Redis unreachable (%s); retrying", self.pid, one_line(e))
                self.backoff.pause()

    def _get(self, key: str) -> bytes | None:
        blob: bytes | None = self._patiently(lambda: self.r.get(key))
        return blob

    def redis_trouble(self, e: redis.RedisError) -> None:
        """A claim failed: mend what can be mended; else say so, and pause before the next try."""
        if self.recreate_groups(e):
            return
        logger.warning("child %d: Redis unreachable or refusing (%s); retrying", self.pid, one_line(e))
        self.backoff.pause()

    # --- running ----------------------------------------------------------------------------
    def wake(self) -> None:
        """Tell the worker a task ended (it publishes its counts, and may stop waiting for us). At
        most a few times a second while busy: waking the worker per task costs it a task's CPU."""
        now = time.monotonic()
        if self.cfg.wake_fd >= 0 and (now - self.woke > WAKE_EVERY or self.slot.stop):
            self.woke = now
            try:
                os.write(self.cfg.wake_fd, b"\0")
            except OSError:  # full (the worker is behind anyway) or gone
                pass

    def execute(self, qi: int, c: ops.Claimed, lane: Slot) -> Outcome:
        """Run one claimed task in its lane; its completion is left for the next round trip."""
        cfg = self.cfg
        k = self.keys[qi]
        lane.begin(qi, c.id, c.token, c.attempts, c.max_attempts, self.meter.begin())
        if not self.gate.admit(k, c, self.slot):  # not startable here (now): handed back unrun
            self.free(lane)
            return Outcome(REFUSED, reason="not startable here")
        lane.output_from(self.capture.start())
        try:
            loaded = self.runner.load(k, c)
            if isinstance(loaded, Outcome):
                outcome = self.refused(k, c, loaded)
            else:
                self.refuser.loaded()
                lane.arm(c.timeout or cfg.autokill, own=c.timeout > 0)
                self.claims.started(self.tasks_run)
                soft = c.soft_timeout or cfg.soft_timeout
                if soft:
                    with soft_limit(soft):
                        outcome = self.runner.call(c, loaded)
                else:
                    outcome = self.runner.call(c, loaded)
            outcome.cpu_time, outcome.peak_rss = self.meter.end()
        finally:
            if os.getpid() != self.pid:  # a fork made by the task returned here: it must not go on
                os._exit(0)
            self.claims.stopped()
            self.gate.done()
            lane.disarm()
            size = self.capture.stop()
        outcome = planned(outcome, self.r, k, c, self._patiently)  # a returned tree: its continuation
        if outcome.state == RELEASE:  # stale code: a fresh child runs it with the code as it is now
            self._patiently(lambda: self._release(k, c.id, c.token))
            logger.info("handed back %s %s: %s; starting a fresh process", k.name, c.id,
                        escape_controls(outcome.reason))
        if outcome.state in (RELEASE, REFUSED):
            self.free(lane)
            self.wake()
            return outcome
        out = self.capture.tail(size)
        if cfg.logfile:
            self.capture.copy_to(cfg.logfile, c.id, size)
        self.claims.ended(qi, completion(c, outcome, out, cfg.host, self.pid), lane, outcome.runtime)
        self.log_end(k, c.id, outcome)
        self.tasks_run += 1
        return outcome

    def free(self, lane: Slot) -> None:
        """The lane's task was handed back unrun (or refused): the lane holds nothing."""
        lane.end(None)
        self.claims.release_lane(lane)

    def record(self, lane: Slot, qi: int, c: ops.Claimed, outcome: Outcome) -> Slot:
        """Record one task's outcome now (fenced by its token); returns its lane, free again. (The
        async lanes record each task at once; output is not captured per task there.)"""
        lane.disarm()
        self.gate.done(self.lanes.index(lane))
        k = self.keys[qi]
        outcome = planned(self.refused(k, c, outcome), self.r, k, c, self._patiently)
        record = completion(c, outcome, b"", self.cfg.host, self.pid)
        if outcome.state == REFUSED:
            pass
        elif outcome.state == RELEASE:
            self._patiently(lambda: self._release(k, c.id, c.token))
        elif not self._patiently(lambda: durability.complete(self.scripts, k, record, self.replicas)):
            logger.warning("child %d: result of task %s refused: this attempt no longer holds it: %s", self.pid,
                           c.id, what_became_of(self.r, k, c.id, c.token))
        lane.end(None if outcome.state in (RELEASE, REFUSED) else outcome.state in (DONE, CONTINUED))
        self.wake()
        if outcome.state == REFUSED:
            return lane
        self.log_end(k, c.id, outcome)
        self.tasks_run += 1
        return lane

    def refused(self, k: QueueKeys, c: ops.Claimed, outcome: Outcome) -> Outcome:
        """``outcome`` of failing to load ``c``, unless it may be this host's fault: then the task is
        handed to another host (:mod:`forrestq.worker.refusals`), and the outcome says REFUSED, or
        the failure names every host that refused it."""
        if not outcome.refusal:
            return outcome
        return self._patiently(lambda: self.refuser.refuse(k, c, outcome))

    def log_end(self, k: QueueKeys, task_id: str, outcome: Outcome) -> None:
        """The task-end line (INFO: ``--quiet`` hides it)."""
        if logger.isEnabledFor(logging.INFO):
            what = f"{outcome.runtime:.3f}s" if outcome.state == DONE else escape_controls(outcome.reason)
            logger.info("%-6s %s %s %s", outcome.state, k.name, task_id, what)

    def loop(self) -> None:
        """Claim, run and record tasks until the worker asks this child to stop or it retires."""
        if len(self.lanes) > 1:
            return AsyncLanes(self).run()
        while not self.slot.stop:
            try:
                claimed = self.next_task()
                self.backoff.reset()
            except redis.RedisError as e:
                self.redis_trouble(e)
                continue
            if claimed is not None:
                why = self.retire_reason(self.execute(*claimed))
                if why:
                    logger.debug("child %d: replaced: %s", self.pid, why)
                    break
                self.refuser.pause(self.slot)  # after a refusal: not straight back to the queue
        self.flush()

    def retire_reason(self, outcome: Outcome) -> str:
        """Why this child should be replaced after the task it just ran, or ""."""
        cfg = self.cfg
        if outcome.state == RELEASE:
            return "the code it serves changed"
        if self.gate.used_gpu:
            return "it ran a GPU task (CUDA reads CUDA_VISIBLE_DEVICES once per process)"
        if cfg.max_tasks and self.tasks_run >= cfg.max_tasks:
            return f"ran {self.tasks_run} tasks"
        if outcome.reason.startswith("MemoryError"):
            return "its task ran out of memory"  # the heap may be in a bad state
        if live_children():
            return "its task left processes behind"  # the worker kills them with our process group
        if cfg.max_rss:
            grown = rss([self.pid])
            if grown > cfg.max_rss:
                return f"its memory grew to {grown >> 20} MiB"
        return ""


class AsyncLanes:
    """Several coroutine tasks at once in one child (``--async-concurrency``, taskmap's io_bound idea):
    claim tasks while a lane is free and run coroutine tasks concurrently on one event loop. A plain
    function runs to its end when called, as usual. Each task holds its own lane, so the worker renews
    its lease and enforces its time limit (a limit kills the whole child: the other tasks it held are
    handed back). Output is not captured per task here (the tasks share the process's stdout); it goes
    to the worker's log.

    Placement: only IO-bound coroutines (``Claimed.io_bound``) share the loop. Any other coroutine may
    block it (``time.sleep``, CPU work), so it runs alone: while it runs the child claims nothing. One
    claimed while IO-bound tasks run is *held*: called (which only makes the coroutine object; none
    of its code runs) but not started, and the child claims nothing more until it has run. It starts
    alone once those tasks have ended. It cannot starve: nothing new starts in this child while it
    waits, so it waits only for the IO-bound tasks already running, each of which ends by itself or
    by its time limit (that kills the child, and the worker hands every task the child held back,
    this one too, its attempt not counted). It cannot be lost: it holds its lane from the claim, so
    its lease is renewed like a running task's, and a stopping worker's child hands it back at once.
    It is never handed back only to be claimed by another busy child (no ping-pong)."""

    def __init__(self, child: Child) -> None:
        self.child = child
        self.runner = child.runner
        self.loop = asyncio.new_event_loop()
        self.running: dict[asyncio.Task[Any], tuple[int, ops.Claimed, Slot, float]] = {}
        self.free = list(reversed(child.lanes))
        # a coroutine that is not IO-bound, claimed while IO-bound ones ran: waits to run alone
        self.held: tuple[int, ops.Claimed, Slot, Coroutine[Any, Any, Any]] | None = None

    def run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            while self.running or self.held or not self.child.slot.stop:
                self.start_held()
                self.claim_while_free()
                if self.running:
                    self.collect()
        finally:
            self.loop.close()

    def claim_while_free(self) -> None:
        child = self.child
        if not self.running:
            child.refuser.pause(child.slot)  # after a refusal, and nothing else to do: wait a little
        while self.free and not self.alone() and not child.slot.stop and time.monotonic() >= child.refuser.ready_at:
            try:
                claimed = child.next_task(block=not self.running)
                child.backoff.reset()
            except redis.RedisError as e:
                child.redis_trouble(e)
                return
            if claimed is None:
                return
            self.child.claims.release_lane(claimed[2])  # the async lanes are this loop's own
            self.start(*claimed[:2])

    def start(self, qi: int, c: ops.Claimed) -> None:
        """Load the task and call its function; a coroutine it returns runs on the loop."""
        child = self.child
        lane = self.free.pop()
        lane.begin(qi, c.id, c.token, c.attempts, c.max_attempts)
        if not child.gate.admit(child.keys[qi], c, child.slot, child.lanes.index(lane), may_hold=not self.running):
            lane.end(None)
            self.free.append(lane)
            return
        loaded = self.runner.load(child.keys[qi], c)
        if isinstance(loaded, Outcome):
            self.free.append(child.record(lane, qi, c, loaded))
            return
        child.refuser.loaded()
        lane.arm(c.timeout or child.cfg.autokill, own=c.timeout > 0)
        t0 = time.perf_counter()
        try:
            value = self.runner.start(c, loaded, t0)  # a coroutine carries the task's context
        except BaseException as e:  # noqa: BLE001 - the task's failure
            self.free.append(child.record(lane, qi, c, self.runner.raised(c, e, t0)))
            return
        if inspect.iscoroutine(value) and not c.io_bound and self.running:
            lane.disarm()  # it has not started: its time limit starts with it
            self.held = (qi, c, lane, value)
        elif inspect.iscoroutine(value):
            self.running[self.loop.create_task(soft_limited(value, c.soft_timeout or child.cfg.soft_timeout))] = (
                qi, c, lane, t0)
        else:
            self.free.append(child.record(lane, qi, c, self.runner.returned(value, t0)))

    def alone(self) -> bool:
        """A coroutine that is not IO-bound runs or waits to run: claim nothing more."""
        return self.held is not None or any(not c.io_bound for _, c, _, _ in self.running.values())

    def start_held(self) -> None:
        """Start the held coroutine once no other task runs; hand it back if the worker is stopping."""
        if self.held is None or (self.running and not self.child.slot.stop):
            return
        qi, c, lane, coro = self.held
        self.held = None
        child = self.child
        if child.slot.stop:
            discard(coro)  # never started: none of its code ran
            child._patiently(lambda: child._release(child.keys[qi], c.id, c.token))
            child.gate.done(child.lanes.index(lane))
            lane.end(None)
            child.wake()
            self.free.append(lane)
            return
        lane.arm(c.timeout or child.cfg.autokill, own=c.timeout > 0)
        soft = c.soft_timeout or child.cfg.soft_timeout
        self.running[self.loop.create_task(soft_limited(coro, soft))] = (qi, c, lane, time.perf_counter())

    def collect(self) -> None:
        """Run the loop until a task ends (briefly, while more work might be claimed), record the ends."""
        # look for more work meanwhile, unless nothing may be claimed
        wait = 0.05 if self.free and not self.child.slot.stop and not self.alone() else 0.5
        done, _ = self.loop.run_until_complete(
            asyncio.wait(list(self.running), timeout=wait, return_when=asyncio.FIRST_COMPLETED))
        for fut in done:
            qi, c, lane, t0 = self.running.pop(fut)
            exc = fut.exception()
            outcome = self.runner.raised(c, exc, t0) if exc else self.runner.returned(fut.result(), t0)
            self.free.append(self.child.record(lane, qi, c, outcome))


def _ignore(signum: int, frame: Any) -> None:
    """SIGINT/SIGTERM: the worker decides when its children stop (through the slot). A handler, not
    SIG_IGN: an ignored signal would stay ignored in every program a task runs."""


def child_main(cfg: ChildConfig, slot: Slot, lanes: list[Slot] | None = None) -> None:
    """Entry point of a forked child; never returns."""
    code = 0
    try:
        os.setpgid(0, 0)
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # no orphan keeps a claimed task when the worker dies
        if cfg.parent_pid and os.getppid() != cfg.parent_pid:
            os._exit(0)  # the worker died before the line above
        prctl(PR_SET_CHILD_SUBREAPER, 1)  # orphaned grandchildren come to us, and so get killed
        signal.signal(signal.SIGINT, _ignore)
        signal.signal(signal.SIGTERM, _ignore)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.set_wakeup_fd(-1)
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        if cfg.max_memory:
            resource.setrlimit(resource.RLIMIT_AS, (cfg.max_memory, cfg.max_memory))
        # Everything inherited from the worker is long-lived: keep it out of the collector's scans (a
        # full collection would walk every module the package imported, once every few hundred tasks)
        # and its memory pages shared with the worker.
        gc.freeze()
        Child(cfg, slot, lanes).loop()
    except BaseException:  # noqa: BLE001
        traceback.print_exc()
        code = 70
    finally:
        kill_tree([p for p in live_children() if p > 0])
        os._exit(code)
