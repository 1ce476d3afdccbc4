"""Inside a running task: who it is (:func:`current_task`) and how far it got (:func:`progress`).

The runner (:mod:`forrestq.runner`) sets a :class:`contextvars.ContextVar` to a small :class:`Current`
around the call of every task it runs — in a worker child, on a child's coroutine lanes (each lane's
coroutine runs in its own asyncio task, which copies the context it was created in: each sees its
own), in debug mode (``Queue(local=True)``, ``procs=0``) and by hand (``Queue.run_here``, ``forrestq
run``). Setting it costs a ContextVar set and reset and one small object per task; the
:class:`TaskContext` users see is built on first use, its metadata read (and unpickled) on first use.
A thread the task starts does not inherit the context (``contextvars.copy_context().run`` passes it
on; ``asyncio.to_thread`` does so by itself): there :func:`current_task` is None.

Progress is one field of the task's hash (``TASK_PROGRESS``, JSON ``{"done", "total", "message",
"at"}`` plus the writer's token), written by progress.lua: only while the task runs and only by the
attempt whose token holds it, so a stale attempt never overwrites a newer one's progress; readers show
it only while its token is the task's (a new attempt starts with none). The script also keeps the
queue's index of running tasks with progress (``fq:{q}:progress``) that the bars and ``forrestq
status`` read. Writes are throttled (:data:`WRITE_EVERY`; a value held back is written when due by
one daemon thread per process, started by the first one held back), go through a client of this
process with a short timeout (:data:`TIMEOUT`) and no retries, and never fail the task: an error is logged once (debug
level) and writes pause for :data:`PAUSE` s, the value kept in memory. The last value is flushed when
the task's code returns. By hand (``run_here``) progress stays in memory (the task's record is not
written): the Task that comes back carries it.
"""
from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import cached_property
from importlib import import_module
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from . import codec, ops
from .connection import connect
from .errors import ConfigError, shown
from .schema import TASK_META, QueueKeys

__all__ = ["Current", "TaskContext", "Where", "current_task", "progress", "set_queue_factory"]

WRITE_EVERY = 0.25  # s between two progress writes of one task: at most 4 a second
TIMEOUT = 0.5  # s a progress write waits for Redis (connect, reply), without retries
PAUSE = 5.0  # s without progress writes after one failed (the value is kept; the next write sends it)
MESSAGE_LIMIT = 200  # characters of a progress message kept

logger = logging.getLogger("forrestq.context")

_CURRENT: ContextVar[Current | None] = ContextVar("forrestq_current_task", default=None)
_clients: dict[tuple[str, bool], tuple[int, redis.Redis, ops.Scripts]] = {}
_queue_factory: Callable[[str, str, bool], Any] | None = None


def set_queue_factory(factory: Callable[[str, str, bool], Any]) -> None:
    """How :attr:`TaskContext.queue` makes a queue from (name, url, local): the facade
    (:mod:`forrestq.queue`) registers itself when imported, since this module, below the runner,
    may not import it."""
    global _queue_factory
    _queue_factory = factory


@dataclass(frozen=True)
class Where:
    """What a runner knows of where it runs its tasks (one per runner): the Redis URL, the host, the
    worker's default time limits (0: none), debug mode (``local``) and whether progress is written
    to the task's record (``record``; False by hand: kept in memory)."""

    url: str
    host: str
    autokill: float = 0.0
    soft_timeout: float = 0.0
    local: bool = False
    record: bool = True


@dataclass(frozen=True)
class TaskContext:
    """The running task, as :func:`current_task` gives it.

    ``id``: the task's id (its node in the queue); ``queue_name``; ``attempt``: the number of this
    attempt, 1 for the first (2 after one retry or one lost attempt); ``host`` it runs on;
    ``deadline``: the wall-clock time (``time.time()``) at which this attempt will be stopped — its
    soft time limit if it has one (``TimeLimitExceeded`` is raised), else its hard one (``timeout``,
    ``--autokill``) — or None without a limit (always in debug mode and by hand); ``url``: the Redis
    URL of the queue; ``local``: debug mode. ``metadata`` (read and unpickled on first use) is what
    ``schedule(..., metadata=)`` stored; ``queue`` a :class:`~forrestq.Queue` for the task's queue
    (on the same server, in debug mode too when the task runs so), for scheduling from inside a task;
    ``progress`` the last value this attempt reported here (see :func:`progress`), or None."""

    id: str
    queue_name: str
    attempt: int
    host: str
    deadline: float | None
    url: str = field(repr=False)
    local: bool = field(default=False, repr=False)
    _current: Current | None = field(default=None, repr=False, compare=False)

    @cached_property
    def metadata(self) -> Any:
        """The task's metadata, read from Redis and unpickled on first use (None without any)."""
        blob = _client(self.url, quick=False)[1].hget(QueueKeys(self.queue_name).task(self.id), TASK_META)
        return codec.loads(blob) if blob else None

    @property
    def queue(self) -> Any:
        """A :class:`forrestq.Queue` for this task's queue (one per process and queue, made on first use)."""
        if _queue_factory is None:  # the facade registers its factory when imported, and `import forrestq`
            # does not import it (issue 18): a task that asks for its queue loads it now (by name: it
            # imports this module, so a static import here would be a cycle)
            import_module("forrestq.queue")
        if _queue_factory is None:  # pragma: no cover - forrestq.queue registers it at import
            raise RuntimeError("forrestq.queue did not register its factory")
        return _queue_factory(self.queue_name, self.url, self.local)

    @property
    def progress(self) -> dict[str, Any] | None:
        """The last progress this attempt reported in this process: ``{"done", "total", "message", "at"}``."""
        reporter = self._current.reporter if self._current is not None else None
        return dict(reporter.value) if reporter is not None else None


class Current:
    """The task the runner runs in this context: what :func:`current_task` and :func:`progress` read.
    Built per task, so it holds references only; the context and the reporter are made on first use."""

    __slots__ = ("where", "queue", "claimed", "t0", "ctx", "reporter")

    def __init__(self, where: Where, queue: str, claimed: ops.Claimed, t0: float) -> None:
        self.where, self.queue, self.claimed, self.t0 = where, queue, claimed, t0  # t0: perf_counter at start
        self.ctx: TaskContext | None = None
        self.reporter: _Reporter | None = None

    def context(self) -> TaskContext:
        if self.ctx is None:
            w, c = self.where, self.claimed
            limits = [s for s in (c.soft_timeout or w.soft_timeout, c.timeout or w.autokill) if s > 0]
            started = time.time() - (time.perf_counter() - self.t0)
            self.ctx = TaskContext(c.id, self.queue, c.attempts, w.host, started + min(limits) if limits else None,
                                   w.url, w.local, self)
        return self.ctx

    def stored(self) -> str:
        """The last progress as the record holds it ("" if none was reported)."""
        return "" if self.reporter is None else self.reporter.encoded()

    def finish(self) -> None:
        """The task's code returned: flush its last progress (once), and leave the queue's index."""
        if self.reporter is not None:
            self.reporter.finish()


class _Reporter:
    """The progress of one attempt: the last value, and when it was written (see the module doc).
    Its state changes under the module's lock: the task's thread reports, the flusher thread writes
    a value that was held back by the throttle once it is due."""

    __slots__ = ("current", "value", "dirty", "written_at", "indexed", "paused_until", "refused", "warned", "ended")

    def __init__(self, current: Current) -> None:
        self.current = current
        self.value: dict[str, Any] = {}
        self.dirty = self.indexed = self.refused = self.warned = self.ended = False
        self.written_at = self.paused_until = -math.inf

    def encoded(self) -> str:
        return json.dumps({**self.value, "tok": self.current.claimed.token}, separators=(",", ":"))

    def report(self, value: dict[str, Any]) -> None:
        with _flusher.lock:
            self.value, self.dirty = value, True
            due = max(self.written_at + WRITE_EVERY, self.paused_until)
            if time.monotonic() >= due:
                self.write(final=False)
            elif self.current.where.record and not self.refused:
                _flusher.later(self, due)  # held back: written when due, even if no report follows

    def due(self) -> None:
        """The flusher's call: write the value held back, unless a later write or the end came first."""
        with _flusher.lock:
            if self.dirty and not self.ended:
                self.write(final=False)

    def finish(self) -> None:
        with _flusher.lock:
            self.ended = True
            if self.dirty or self.indexed:
                self.write(final=True)

    def write(self, final: bool) -> None:
        """One progress.lua call; an error pauses writing (logged once), never reaches the task."""
        cur = self.current
        if not cur.where.record or self.refused:
            self.dirty = False
            return
        args = ops.ProgressArgs(cur.claimed.id, cur.claimed.token, self.encoded() if self.dirty else "", final)
        try:
            ok = ops.progress(_client(cur.where.url, quick=True)[2], QueueKeys(cur.queue), args)
        except (redis.RedisError, OSError) as e:
            self.paused_until = time.monotonic() + PAUSE
            if not self.warned:
                self.warned = True
                logger.debug("progress of task %s not written (%s); retrying in %g s", cur.claimed.id, e, PAUSE)
            if not final:
                _flusher.later(self, self.paused_until)
            return
        self.written_at, self.dirty = time.monotonic(), False
        self.refused, self.indexed = not ok, ok and not final


class _Flusher:
    """One daemon thread per process, started by the first report the throttle held back: it
    writes each held-back value when it is due (a task that reports 3/10 and then works for an hour
    on step 4 shows 3/10 meanwhile). Made anew in a forked child (the thread does not survive a fork)."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.wake = threading.Condition(threading.Lock())
        self.pending: dict[_Reporter, float] = {}
        self.thread: threading.Thread | None = None

    def later(self, reporter: _Reporter, at: float) -> None:
        with self.wake:
            self.pending[reporter] = min(at, self.pending.get(reporter, math.inf))
            if self.thread is None:
                self.thread = threading.Thread(target=self.run, name="forrestq-progress", daemon=True)
                self.thread.start()
            self.wake.notify()

    def run(self) -> None:
        while True:
            with self.wake:
                now = time.monotonic()
                ready = [rep for rep, at in self.pending.items() if at <= now]
                for rep in ready:
                    del self.pending[rep]
                if not ready:
                    self.wake.wait(min(self.pending.values(), default=now + 60.0) - now)
                    continue
            for rep in ready:
                rep.due()

    def after_fork(self) -> None:
        self.__init__()  # type: ignore[misc]


_flusher = _Flusher()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_flusher.after_fork)


def _client(url: str, quick: bool) -> tuple[int, redis.Redis, ops.Scripts]:
    """This process's client for ``url``: ``quick`` (progress) waits :data:`TIMEOUT` and never retries;
    the other (metadata) has the usual patience. Made on first use, again after a fork."""
    got = _clients.get((url, quick))
    if got is None or got[0] != os.getpid():
        options: dict[str, Any] = {"socket_timeout": TIMEOUT, "socket_connect_timeout": TIMEOUT,
                                   "retry": Retry(NoBackoff(), 0)} if quick else {}
        r = connect(url, check=False, **options)
        got = _clients[(url, quick)] = (os.getpid(), r, ops.Scripts(r))
    return got


def enter(current: Current) -> Any:
    """Make ``current`` the running task of this context; returns the token for :func:`leave`."""
    return _CURRENT.set(current)


def leave(token: Any) -> None:
    _CURRENT.reset(token)


def current_task() -> TaskContext | None:
    """The task running here: its id, queue, attempt number, host, metadata, deadline and a Queue
    for its queue (:class:`TaskContext`); None outside a task. Works in plain and coroutine tasks,
    in worker children, in debug mode (``Queue(local=True)``) and by hand (``forrestq run``)."""
    current = _CURRENT.get()
    return None if current is None else current.context()


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"progress: {what} must be a finite number, not {shown(value)}")
    return value


def progress(done: float, total: float | None = None, message: str = "") -> None:
    """Record how far the running task got: ``done`` (of ``total``, if known) and a short message.

    Readers see it as ``Task.progress`` (``{"done", "total", "message", "at"}``), in ``forrestq
    show``, ``forrestq tasks --state running``, ``forrestq status``, and the ``results``/``map`` bars
    count the fraction done/total of running tasks. Throttled (at most 4 writes a second; the last
    value is written when the task returns); it never blocks the task on Redis for more than about
    half a second nor fails it when Redis is away. Outside a task it checks its arguments and does
    nothing. Bad arguments (a negative or non-number ``done``, a ``total`` that is not positive, a
    message that is not text) raise ConfigError and record nothing."""
    done = _number(done, "done")
    if done < 0:
        raise ConfigError(f"progress: done must be >= 0, not {shown(done)}")
    if total is not None and _number(total, "total") <= 0:
        raise ConfigError(f"progress: total must be a positive number or None, not {shown(total)}")
    if not isinstance(message, str):
        raise ConfigError(f"progress: message must be text, not {shown(message)}")
    current = _CURRENT.get()
    if current is None:
        return
    if current.reporter is None:
        current.reporter = _Reporter(current)
    current.reporter.report({"done": done, "total": total, "message": message[:MESSAGE_LIMIT], "at": time.time()})
