"""``Queue.executor()``: a :class:`concurrent.futures.Executor` whose calls run as tasks of a queue.

``submit(fn, *args, **kwargs)`` schedules one task (one round trip) and returns a :class:`TaskFuture`;
``map(fn, *iterables, timeout=, chunksize=)`` schedules all its calls in one round trip (``chunksize``
calls per task), and yields the results in order. The futures are real ``concurrent.futures.Future``
objects: ``concurrent.futures.wait``/``as_completed``, ``result(timeout)``, ``exception()``,
``add_done_callback`` work as with a thread or process pool, and ``await fut`` works in a running
event loop (:func:`asyncio.wrap_future`; as for any wrapped future, cancelling the coroutine that awaits it,
``asyncio.wait_for`` at its timeout too, cancels the future, and so the task).

One reader thread per executor follows the queue's ``finished`` stream for all its futures (blocking
XREAD, on its own connection; no Redis call per future), fetches the records of the ones that
finished and resolves them: the return value, or the task's exception (its own type, the remote
traceback attached as a note, :func:`forrestq.mapping.task_exception`). Like every follower it
falls back every :data:`~forrestq.reading.SWEEP_EVERY` s without news to reading the states of its
futures' tasks directly, rides out a Redis outage for :data:`~forrestq.reading.OUTAGE` s (then the
futures waiting fail with the connection error), and sleeps (no Redis call) while no future waits.
Done callbacks run in that thread.

``cancel()`` ends a task that has not finished through ``Queue.cancel``: a queued one never starts, a
running one is killed by its worker at its next heartbeat; the future is then cancelled. It returns
False once the task has finished. A task cancelled from elsewhere (``forrestq cancel``) cancels its
future too. ``shutdown(wait=True, cancel_futures=False)``: no new calls; ``wait`` blocks until every
future is done; ``cancel_futures`` cancels every unfinished one (running tasks are killed, unlike a
thread pool, which lets them finish).

``procs=N`` starts N local warm workers for the executor's life (:func:`forrestq.local.warm`: every
``procs=`` call of this process on the queue uses them meanwhile), stopped at ``shutdown`` (with
``wait=False``: once the last future is done); inside an open ``with q.workers():`` block those serve
instead. Without ``procs`` the workers already serving the queue run the calls, on every host.
``procs=0`` (or a debug-mode queue) runs each call at ``submit``, in this process, through the
serialisation path a worker uses (:func:`forrestq.plan.evaluate`): pdb works.
"""
from __future__ import annotations

import asyncio
import concurrent.futures as cf
import threading
import time
import traceback
from collections.abc import Callable, Generator, Iterable, Iterator
from contextlib import ExitStack
from typing import Any

import redis

from . import codec, local, producer, schema
from .connection import connect
from .core import QueueCore
from .deferred import Call, defer
from .errors import Cancelled, ConfigError, shown
from .mapping import task_exception
from .plan import evaluate
from .reading import BLOCK_MS, OUTAGE, SWEEP_EVERY, check_timeout, fetch_records, last_finished
from .task import Task

__all__ = ["QueueExecutor", "TaskFuture", "SCHEDULE_OPTIONS"]

# the options of Queue.schedule an executor applies to every task it schedules
SCHEDULE_OPTIONS = ("timeout", "max_attempts", "retries", "retry_backoff", "retry_on", "soft_timeout",
                    "resources", "delay", "at", "result_ttl", "limits", "priority")
_FINISHED = {s.encode() for s in schema.FINISHED_STATES}
_ENTRY_TASK, _ENTRY_GEN = schema.ENTRY_TASK.encode(), schema.ENTRY_GEN.encode()


def _run_chunk(fn: Callable[..., Any], chunk: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """The task function of one ``map`` chunk: ``fn(*args)`` for each, each outcome kept apart
    (``(True, result blob)`` or ``(False, exception blob, traceback text)``), so one failing call does
    not fail its neighbours."""
    out: list[tuple[Any, ...]] = []
    for args in chunk:
        try:
            out.append((True, codec.dumps(fn(*args))))
        except Exception as exc:  # noqa: BLE001 - the call's failure is its outcome
            out.append((False, codec.dump_exception(exc), traceback.format_exc()))
    return out


def _call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Call:
    """``defer(fn, *args, **kwargs)``, one node (whose id is known before it is scheduled)."""
    call = defer(fn, *args, **kwargs)
    if not isinstance(call, Call):
        raise TypeError(f"submit needs a callable first, not {type(fn).__name__}")
    return call


def _chunk_values(task_id: str, host: str, outcomes: list[tuple[Any, ...]]) -> Iterator[Any]:
    """The results of one chunk in order; the first failed call raises, its remote traceback attached."""
    for i, outcome in enumerate(outcomes):
        if outcome[0]:
            yield codec.loads(outcome[1])
            continue
        exc = codec.loads(outcome[1])
        if hasattr(exc, "add_note"):
            exc.add_note(f"remote traceback (task {task_id} call {i} on {host or '?'}):\n{outcome[2].rstrip()}")
        raise exc


class TaskFuture(cf.Future[Any]):
    """The future of one task: ``task_id``; ``task``, its :class:`~forrestq.task.Task` record once it
    has finished (host, runtime, output...). ``cancel()`` cancels the task itself (see the module doc);
    ``running()`` asks Redis; ``await fut`` works in a running event loop."""

    def __init__(self, executor: QueueExecutor, task_id: str) -> None:
        super().__init__()
        self.executor = executor
        self.task_id = task_id
        self.task: Task | None = None

    def cancel(self) -> bool:
        if self.done():
            return self.cancelled()
        return self.task_id in self.executor.cancel_tasks([self])

    def running(self) -> bool:
        if self.done() or self.executor.inline:
            return False
        return self.executor.core.r.hget(self.executor.core.keys.task(self.task_id), schema.TASK_STATE) == \
            schema.RUNNING.encode()

    def mark_cancelled(self) -> None:
        """Cancel the future (not the task): waiters, ``as_completed`` and callbacks see it."""
        with self._condition:  # a reentrant lock: the reader and a cancelling thread may both come here
            if self.done():
                return
            cf.Future.cancel(self)
            self.set_running_or_notify_cancel()

    def resolve(self, task: Task) -> None:
        """Settle the future with the finished record of its task (from the reader thread)."""
        self.task = task
        try:
            if task.state == schema.DONE:
                self.set_result(task.returnvalue)
            elif isinstance(task.errorvalue, Cancelled):
                self.mark_cancelled()
            else:
                self.set_exception(task_exception(task))
        except cf.InvalidStateError:  # cancelled here meanwhile
            pass
        except Exception as exc:  # noqa: BLE001 - e.g. a result whose class is not importable here
            self.fail(exc)

    def fail(self, exc: BaseException) -> None:
        try:
            self.set_exception(exc)
        except cf.InvalidStateError:
            pass

    def __await__(self) -> Generator[Any, None, Any]:
        return asyncio.wrap_future(self).__await__()


class QueueExecutor(cf.Executor):
    """An Executor running its calls as tasks of one queue (see the module doc). ``schedule_options``
    are those of ``Queue.schedule`` (``timeout``, ``resources``, ``priority``...), for every task;
    ``worker_options`` those of ``Queue.workers`` for ``procs=N``."""

    def __init__(self, core: QueueCore, procs: int | None = None, worker_options: dict[str, Any] | None = None,
                 **schedule_options: Any) -> None:
        unknown = sorted(set(schedule_options) - set(SCHEDULE_OPTIONS))
        if unknown:
            raise ConfigError(f"unknown executor option {shown(unknown[0])}; the options are those of "
                              f"Queue.schedule: {', '.join(SCHEDULE_OPTIONS)}")
        if procs is not None:
            local.check_procs(procs)
        self.core = core
        self.options = schedule_options
        self.inline = procs == 0 or core.local
        self._lock = threading.Condition()
        self._pending: dict[str, TaskFuture] = {}
        self._shutdown = False
        self._stack = ExitStack()
        self._closed = False
        self._reader: _Reader | None = None
        if not self.inline:
            self._reader = _Reader(self, last_finished(core))
        if procs and (worker_options or local.warm_for(core.url, core.name) is None):
            self._stack.enter_context(local.warm(core.url, core.name, procs, worker_options))

    # --- submitting ---------------------------------------------------------------------------
    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> TaskFuture:
        """Schedule ``fn(*args, **kwargs)`` as one task; its future."""
        if not callable(fn):
            raise TypeError(f"submit needs a callable first, not {type(fn).__name__}")
        return self.submit_many([_call(fn, *args, **kwargs)])[0]

    def submit_many(self, calls: list[Call]) -> list[TaskFuture]:
        """Schedule deferred calls in one round trip; their futures, in order."""
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
        if self.inline:
            return [self._run_here(call) for call in calls]
        futures = [TaskFuture(self, call._id) for call in calls]
        with self._lock:  # known before the tasks exist: the reader cannot miss one that ends at once
            self._pending.update((f.task_id, f) for f in futures)
        try:
            producer.schedule_many(self.core, calls, **self.options)
        except BaseException:
            with self._lock:
                for f in futures:
                    self._pending.pop(f.task_id, None)
            raise
        assert self._reader is not None
        self._reader.wake()
        return futures

    def _run_here(self, call: Call) -> TaskFuture:
        fut = TaskFuture(self, call._id)
        try:
            fut.set_result(evaluate(call))
        except Exception as exc:  # noqa: BLE001 - the call's failure is its outcome (live traceback)
            fut.set_exception(exc)
        return fut

    def map(self, fn: Callable[..., Any], *iterables: Iterable[Any], timeout: float | None = None,
            chunksize: int = 1) -> Iterator[Any]:
        """``fn(*args)`` for the items of ``iterables`` taken together (as ``map``), every call
        scheduled now in one round trip, ``chunksize`` calls per task; yields the results in order.
        ``timeout``: seconds from this call after which the next result not there raises
        TimeoutError. Leaving the loop early cancels the calls not finished."""
        check_timeout(timeout)
        if isinstance(chunksize, bool) or not isinstance(chunksize, int) or chunksize < 1:
            raise ConfigError(f"chunksize must be a positive integer, not {shown(chunksize)}")
        end = None if timeout is None else time.monotonic() + timeout
        argsets = list(zip(*iterables))
        if chunksize == 1:
            futures = self.submit_many([_call(fn, *args) for args in argsets])
        else:
            codec.check_task_fn(fn)
            futures = self.submit_many([_call(_run_chunk, fn, argsets[i:i + chunksize])
                                        for i in range(0, len(argsets), chunksize)])
        return self._map_results(futures, end, chunksize > 1)

    def _map_results(self, submitted: list[TaskFuture], end: float | None, chunked: bool) -> Iterator[Any]:
        futures: list[TaskFuture | None] = list(submitted)
        del submitted
        try:
            for i, fut in enumerate(futures):
                assert fut is not None
                value = fut.result(None if end is None else max(0.0, end - time.monotonic()))
                if chunked:
                    host = fut.task.host if fut.task is not None else "here"
                    yield from _chunk_values(fut.task_id, host, value)
                else:
                    yield value
                futures[i] = None  # let results go as they are consumed
        finally:
            self.cancel_tasks([f for f in futures if f is not None and not f.done()])

    # --- cancelling and shutting down ---------------------------------------------------------
    def cancel_tasks(self, futures: list[TaskFuture]) -> set[str]:
        """Cancel the tasks of these futures that have not finished (``Queue.cancel``) and their
        futures; the ids cancelled."""
        ids = [f.task_id for f in futures if not f.done()]
        if not ids or self.inline:
            return set()
        cancelled = set(producer.cancel(self.core, ids))
        with self._lock:
            for tid in cancelled:
                self._pending.pop(tid, None)
        for f in futures:
            if f.task_id in cancelled:
                f.mark_cancelled()
        return cancelled

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No new calls. ``cancel_futures``: cancel every unfinished task (running ones are killed).
        ``wait``: return once every future is done and the local workers (``procs=``) stopped."""
        with self._lock:
            self._shutdown = True
            pending = list(self._pending.values())
            self._lock.notify_all()
        if cancel_futures and pending:
            self.cancel_tasks(pending)
        if not wait:
            if not pending or self._reader is None:
                self.close()
            return
        if pending:
            cf.wait(pending)
        if self._reader is not None:
            self._reader.join()
        self.close()

    def close(self) -> None:
        """Stop the local workers (``procs=``), once."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._stack.close()

    def __exit__(self, kind: Any, value: Any, tb: Any) -> None:
        self.shutdown(wait=True, cancel_futures=isinstance(value, KeyboardInterrupt))

    # --- what the reader thread uses ----------------------------------------------------------
    def waiting(self, block: bool) -> list[str] | None:
        """The ids of the unfinished futures; with ``block``, wait for one while there is none;
        None once shut down with none left (the reader stops)."""
        with self._lock:
            while not self._pending:
                if self._shutdown:
                    return None
                if not block:
                    return []
                self._lock.wait()
            return list(self._pending)

    def wants(self, tid: str) -> bool:
        return tid in self._pending

    def take(self, tid: str) -> TaskFuture | None:
        with self._lock:
            return self._pending.pop(tid, None)

    def fail_all(self, exc: BaseException) -> None:
        with self._lock:
            futures = list(self._pending.values())
            self._pending.clear()
        for f in futures:
            f.fail(exc)


class _Reader:
    """The one thread that follows the finished stream for an executor's futures (module doc)."""

    def __init__(self, executor: QueueExecutor, since: str) -> None:
        self.executor = executor
        self.since = since
        self.thread: threading.Thread | None = None
        self.started = threading.Lock()
        self.next_sweep = time.monotonic() + SWEEP_EVERY
        self.core: QueueCore | None = None  # its own client (blocking reads; a cluster client is not shared)

    def wake(self) -> None:
        with self.started:
            if self.thread is None:
                self.thread = threading.Thread(target=self.run, name=f"forrestq-executor-{self.executor.core.name}",
                                               daemon=True)
                self.thread.start()
        with self.executor._lock:
            self.executor._lock.notify_all()

    def join(self) -> None:
        with self.started:
            thread = self.thread
        if thread is not None:
            thread.join()

    def run(self) -> None:
        ex = self.executor
        outage_since: float | None = None
        try:
            while ex.waiting(block=True) is not None:
                try:
                    self.round()
                    outage_since = None
                except (redis.ConnectionError, redis.TimeoutError) as e:
                    outage_since = outage_since or time.monotonic()
                    if time.monotonic() - outage_since >= OUTAGE:
                        ex.fail_all(e)
                        outage_since = None
                    time.sleep(0.5)
                except Exception as e:  # noqa: BLE001 - no future may wait for ever on a broken reader
                    ex.fail_all(e)
        finally:
            if self.core is not None:
                self.core.r.close()
            if ex._shutdown:
                ex.close()

    def round(self) -> None:
        """One blocking read of the stream (or a sweep), and the futures it settles."""
        if self.core is None:
            base = self.executor.core
            self.core = QueueCore(base.name, base.url, connect(base.url))
        q, ex = self.core, self.executor
        entries = q.r.xread({q.keys.finished: self.since}, count=1000, block=BLOCK_MS)
        wanted: dict[str, int] = {}
        if entries:
            batch = entries[0][1]
            self.since = batch[-1][0].decode()
            for _, f in batch:
                tid = f[_ENTRY_TASK].decode()
                if ex.wants(tid):
                    wanted[tid] = int(f.get(_ENTRY_GEN, b"0"))
        elif time.monotonic() >= self.next_sweep:
            wanted = {tid: -1 for tid in self.sweep(ex.waiting(block=False) or [])}
        if not wanted:
            return
        self.next_sweep = time.monotonic() + SWEEP_EVERY
        for task in fetch_records(q.r, q.keys, list(wanted)):
            if task.state in schema.FINISHED_STATES and wanted[task.id] in (-1, task.generation):
                fut = ex.take(task.id)
                if fut is not None:
                    fut.resolve(task)

    def sweep(self, ids: list[str]) -> list[str]:
        """The ids among ``ids`` whose task has finished, read directly (the stream may be trimmed)."""
        self.next_sweep = time.monotonic() + SWEEP_EVERY
        assert self.core is not None
        pipe = self.core.r.pipeline(transaction=False)
        for tid in ids:
            pipe.hget(self.core.keys.task(tid), schema.TASK_STATE)
        return [tid for tid, st in zip(ids, pipe.execute()) if st in _FINISHED]
