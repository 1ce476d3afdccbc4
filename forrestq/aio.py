"""asyncio: ``await q.wait_async(ref)`` and ``async for task in q.results_async()``, on redis-py's
asyncio client (``redis.asyncio``), so that a notebook's running loop (or any coroutine) waits for
tasks without blocking its thread. An executor's futures are awaited directly (``await fut``, see
:mod:`forrestq.executor`).

One :class:`Hub` per event loop and queue serves every ``wait_async`` of that loop: one reader
coroutine follows the queue's ``finished`` stream (blocking XREAD, :data:`~forrestq.reading.BLOCK_MS`
at a time) for all the waits in progress and settles each one's future (an ``asyncio.gather`` of 100
waits is one blocking read, not 100), reading a waited task's state directly every
:data:`~forrestq.reading.SWEEP_EVERY` s without news and riding out a Redis outage for
:data:`~forrestq.reading.OUTAGE` s, as the blocking followers do (:mod:`forrestq.reading`). A wait
registers before it looks at its task, so a task that finishes meanwhile is seen either way; the
reader runs only while a wait is in progress, and the hub's connections (at most
:data:`MAX_CONNECTIONS`) are closed when none is, so a loop that ends leaves nothing open.

``results_async`` is ``Queue.results`` (every root of the queue once it has finished, whoever
scheduled it; returns when no root is left unfinished; ``timeout``: seconds without progress) on the
same client.

Which URLs: ``redis://``, ``rediss://`` and ``unix://`` use the asyncio client. A Sentinel or
Cluster URL (``redis+sentinel://``, ``redis+cluster://``: forrestq's own sync clients) and debug mode
(``Queue(local=True)``) fall back to the blocking call run in a thread (``asyncio.to_thread``: the
loop stays free, each wait in progress holds a thread of the loop's default executor).
"""
from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from functools import partial
from typing import Any, TypeVar
from urllib.parse import urlsplit

import redis
import redis.asyncio

from . import schema
from .connection import CONNECT_TIMEOUT
from .core import QueueCore
from .errors import ConfigError, UnknownTask, shown
from .reading import BLOCK_MS, OUTAGE, SWEEP_EVERY, check_timeout, no_worker_hint, task_id
from .task import Task, TaskRef

__all__ = ["Hub", "wait", "results", "ASYNC_SCHEMES", "MAX_CONNECTIONS"]

ASYNC_SCHEMES = ("redis", "rediss", "unix")  # what redis.asyncio serves; the rest run in a thread
MAX_CONNECTIONS = 8  # per hub: concurrent waits share them (one holds the blocking read)
FETCH_BATCH = 500
_RECORD = [f.encode() for f in schema.RECORD_FIELDS]
_FINISHED = {s.encode() for s in schema.FINISHED_STATES}
_ENTRY_TASK, _ENTRY_GEN = schema.ENTRY_TASK.encode(), schema.ENTRY_GEN.encode()
_RETRIED = (redis.ConnectionError, redis.TimeoutError)

T = TypeVar("T")


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _stream_id(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _record(q: QueueCore, tid: str, values: list[Any]) -> Task | None:
    fields = {n: v for n, v in zip(_RECORD, values) if v is not None}
    return Task(q.name, tid, fields) if fields else None


def served_here(q: QueueCore) -> bool:
    """Whether the asyncio client serves this queue (else the blocking call runs in a thread)."""
    return not q.local and urlsplit(q.url).scheme in ASYNC_SCHEMES


async def patiently(call: Callable[[], Awaitable[T]], give_up: float) -> T:
    """``await call()``, retried every 0.5 s while Redis is unreachable, until ``time.monotonic()``
    reaches ``give_up`` (then its error is raised)."""
    while True:
        try:
            return await call()
        except _RETRIED:
            if time.monotonic() >= give_up:
                raise
            await asyncio.sleep(0.5)


class Hub:
    """The asyncio client of one queue in one event loop, and the one reader for its waits."""

    def __init__(self, q: QueueCore) -> None:
        self.q = q
        self.pool = redis.asyncio.BlockingConnectionPool.from_url(
            q.url, max_connections=MAX_CONNECTIONS, timeout=None, socket_connect_timeout=CONNECT_TIMEOUT)
        self.r = redis.asyncio.Redis(connection_pool=self.pool)
        self.pending: dict[str, list[asyncio.Future[Task]]] = {}
        self.since: str | None = None  # where the reader reads from (None: not reading)
        self.rewound = False  # a wait moved ``since`` back while a read was under way
        self.reader: asyncio.Task[None] | None = None
        self.active = 0  # waits and result loops in progress

    # --- one wait -----------------------------------------------------------------------------
    async def wait(self, tid: str, timeout: float | None) -> Task:
        fut: asyncio.Future[Task] = asyncio.get_running_loop().create_future()
        self.pending.setdefault(tid, []).append(fut)  # before the look: nothing can end unseen
        self.active += 1
        try:
            last, task = await self._look(tid, timeout)
            if task.state in schema.FINISHED_STATES:
                return task
            if not task.root:
                raise ConfigError(f"task {tid} is not a scheduled root; wait_async() follows roots only")
            self._follow_from(last)
            try:
                return await asyncio.wait_for(fut, timeout)
            except asyncio.TimeoutError:
                raise TimeoutError(f"task {tid} did not finish within {timeout} s"
                                   f"{no_worker_hint(self.q.r, self.q.name)}") from None
        finally:
            await self._leave(tid, fut)

    async def _look(self, tid: str, timeout: float | None) -> tuple[str, Task]:
        """The newest entry of the finished stream and the task's record, read together."""
        async def read() -> list[Any]:
            async with self.r.pipeline(transaction=True) as pipe:
                pipe.xrevrange(self.q.keys.finished, count=1)
                pipe.hmget(self.q.keys.task(tid), schema.RECORD_FIELDS)
                return await pipe.execute()
        last, values = await patiently(read, time.monotonic() + (OUTAGE if timeout is None else timeout))
        task = _record(self.q, tid, values)
        if task is None:
            raise UnknownTask(f"no task {shown(tid)} in queue {self.q.name!r}")
        return (_text(last[0][0]) if last else "0-0"), task

    def _follow_from(self, last: str) -> None:
        """Make the reader read from ``last`` at the latest (starting it if needed)."""
        if self.since is None or _stream_id(last) < _stream_id(self.since):
            self.since = last
            self.rewound = True
        if self.reader is None:
            self.reader = asyncio.get_running_loop().create_task(self._read())

    async def _leave(self, tid: str, fut: asyncio.Future[Task]) -> None:
        waiting = self.pending.get(tid, [])
        if fut in waiting:
            waiting.remove(fut)
            if not waiting:
                del self.pending[tid]
        self.active -= 1
        if not self.pending and self.reader is not None:
            reader, self.reader, self.since = self.reader, None, None
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
        await self.idle()

    async def idle(self) -> None:
        """Close the connections once nothing is in progress."""
        if self.active == 0 and self.reader is None:
            await self.pool.disconnect(inuse_connections=False)

    # --- the reader ---------------------------------------------------------------------------
    async def _read(self) -> None:
        me = asyncio.current_task()
        next_sweep = time.monotonic() + SWEEP_EVERY
        try:
            while self.pending and self.since is not None:
                give_up = time.monotonic() + OUTAGE
                since, self.rewound = self.since, False
                entries = await patiently(partial(self.r.xread, {self.q.keys.finished: since}, count=1000,
                                                  block=BLOCK_MS), give_up)
                wanted: list[str] = []
                if entries:
                    batch = entries[0][1]
                    if not self.rewound:
                        self.since = _text(batch[-1][0])
                    wanted = [tid for tid in {_text(f[_ENTRY_TASK]) for _, f in batch} if tid in self.pending]
                elif time.monotonic() >= next_sweep:
                    wanted = list(self.pending)
                if wanted:
                    next_sweep = time.monotonic() + SWEEP_EVERY
                    await self._settle(wanted, give_up)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - no wait may hang on a broken reader
            for futures in self.pending.values():
                for f in futures:
                    if not f.done():
                        f.set_exception(exc)
        finally:
            if self.reader is me:
                self.reader, self.since = None, None

    async def _settle(self, ids: list[str], give_up: float) -> None:
        """Settle the waits of the tasks among ``ids`` that have finished (their records, read now)."""
        for i in range(0, len(ids), FETCH_BATCH):
            part = ids[i:i + FETCH_BATCH]

            async def read(part: list[str] = part) -> list[Any]:
                async with self.r.pipeline(transaction=False) as pipe:
                    for tid in part:
                        pipe.hmget(self.q.keys.task(tid), schema.RECORD_FIELDS)
                    return await pipe.execute()
            for tid, values in zip(part, await patiently(read, give_up)):
                task = _record(self.q, tid, values)
                if task is not None and task.state in schema.FINISHED_STATES:
                    for f in self.pending.pop(tid, []):
                        if not f.done():
                            f.set_result(task)

    # --- every root, as it finishes -----------------------------------------------------------
    async def results(self, timeout: float | None) -> AsyncIterator[Task]:
        self.active += 1
        try:
            async for task in _Roots(self, timeout).follow():
                yield task
        finally:
            self.active -= 1
            await self.idle()


class _Roots:
    """``results_async``: the roots of the queue once they have finished, each generation once."""

    def __init__(self, hub: Hub, timeout: float | None) -> None:
        self.hub, self.q, self.timeout = hub, hub.q, timeout
        self.since = "0"
        self.seen: dict[str, int] = {}
        self.deadline = None if timeout is None else time.monotonic() + timeout

    def give_up(self) -> float:
        return time.monotonic() + OUTAGE if self.deadline is None else self.deadline

    async def follow(self) -> AsyncIterator[Task]:
        k, r = self.q.keys, self.hub.r
        while True:
            async def look() -> list[Any]:
                async with r.pipeline(transaction=True) as pipe:
                    pipe.xread({k.finished: self.since}, count=1000)
                    pipe.hget(k.counts, schema.COUNT_OPEN)
                    return await pipe.execute()
            entries, open_n = await patiently(look, self.give_up())
            tasks = await self.take(entries)
            if not tasks:
                if int(open_n or 0) <= 0:
                    return
                left = None if self.deadline is None else self.deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError(f"no task of queue {self.q.name!r} finished for {self.timeout} s "
                                       f"({int(open_n or 0)} still unfinished){no_worker_hint(self.q.r, self.q.name)}")
                block = BLOCK_MS if left is None else max(1, min(BLOCK_MS, int(left * 1000)))
                tasks = await self.take(await patiently(
                    partial(r.xread, {k.finished: self.since}, count=1000, block=block), self.give_up()))
            for task in tasks:
                yield task

    async def take(self, entries: Any) -> list[Task]:
        if not entries:
            return []
        batch = entries[0][1]
        self.since = _text(batch[-1][0])
        wanted: dict[str, int] = {}
        for _, f in batch:
            tid, gen = _text(f[_ENTRY_TASK]), int(f.get(_ENTRY_GEN, b"0"))
            if self.seen.get(tid, -1) < gen:
                wanted[tid] = gen
        ids = list(wanted)

        async def read() -> list[Any]:
            async with self.hub.r.pipeline(transaction=False) as pipe:
                for tid in ids:
                    pipe.hmget(self.q.keys.task(tid), schema.RECORD_FIELDS)
                return await pipe.execute()
        out = []
        for tid, values in zip(ids, await patiently(read, self.give_up()) if ids else []):
            task = _record(self.q, tid, values)
            if task is not None and task.state in schema.FINISHED_STATES and task.generation == wanted[tid] \
                    and self.seen.get(tid, -1) < task.generation:
                self.seen[tid] = task.generation
                out.append(task)
        if out and self.timeout is not None:
            self.deadline = time.monotonic() + self.timeout
        return out


# ------------------------------------------------------------------------------- the entry points

_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[str, str], Hub]] = \
    weakref.WeakKeyDictionary()


def hub(q: QueueCore) -> Hub:
    """The hub of ``q`` in the running loop (made on first use)."""
    per_loop = _hubs.setdefault(asyncio.get_running_loop(), {})
    found = per_loop.get((q.url, q.name))
    if found is None:
        found = per_loop[(q.url, q.name)] = Hub(q)
    return found


async def wait(q: QueueCore, ref: TaskRef | Task | str, timeout: float | None,
               blocking: Callable[[], Task]) -> Task:
    """``await`` one root task's end and return its record (``blocking``: the same wait as a blocking
    call, run in a thread where the asyncio client cannot serve, see the module doc)."""
    check_timeout(timeout)
    if not served_here(q):
        return await asyncio.to_thread(blocking)
    return await hub(q).wait(task_id(ref), timeout)


async def results(q: QueueCore, timeout: float | None, blocking: Callable[[], Iterator[Task]]) -> AsyncIterator[Task]:
    """``async for task in ...``: ``Queue.results`` without blocking the loop (``blocking``: the
    same loop as a blocking iterator, advanced in a thread where the asyncio client cannot serve)."""
    check_timeout(timeout)
    if not served_here(q):
        done = object()
        it = blocking()
        while (task := await asyncio.to_thread(next, it, done)) is not done:
            assert isinstance(task, Task)
            yield task
        return
    async for task in hub(q).results(timeout):
        yield task
