"""``map``/``starmap``/``submitting`` over a queue (the habits of ecogdata JobRunner users).

``map(q, fn, inputs)`` schedules one task per input (or one per ``chunksize`` inputs), follows only
its own tasks on the queue's ``finished`` stream (blocking XREAD, no polling; other users' tasks on
the same queue are ignored), and returns the results in input order whatever order they finish in.

Failures: by default every task runs, then the first failure *in input order* is raised: the
original exception (``Task.errorvalue``, its own type) with the remote traceback text attached as a
note (and as ``exc.remote_traceback``). ``fail_fast=True`` raises the first failure seen at once and
cancels the tasks not finished yet (``Queue.cancel``). ``return_exceptions=True`` raises nothing and
puts each exception object at its input's place. A task that died without a Python exception (killed,
lost) gives a :class:`~forrestq.errors.TaskFailed` carrying its reason.

Differences from JobRunner, on purpose: empty input returns ``[]`` at once (JobRunner waited forever);
results are a list (no NaN placeholders, no numpy stacking: ``np.asarray(results)`` if you want one);
tuples are passed as one argument by ``map`` and spread as ``*args`` by ``starmap``; ``submitting``
runs nothing when its body raised. Ctrl-C while waiting cancels this call's unfinished tasks.

``procs=N`` gives one call its own N local worker processes (:mod:`forrestq.local`), started before
its tasks are scheduled and stopped after the results are in (also on an error or Ctrl-C); inside
a ``with Queue.workers(N):`` block the block's warm workers serve it instead.

In debug mode (a queue with ``local=True``) the tasks run here, in order (``forrestq.debug``); a
failing task's exception keeps its live traceback, so ``pdb.pm()`` / ``%debug`` lands in the task.
"""
from __future__ import annotations

import dataclasses
import traceback
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from . import codec, producer
from .bars import MapProgress
from .core import QueueCore
from .debug import run_inline
from .deferred import defer, fn_name
from .errors import ConfigError, TaskFailed, shown
from .local import check_procs, serving
from .reading import Follower, RunningShares, WorkerWatch, check_timeout, last_finished, no_worker_hint
from .runner import invoke
from .task import Task

__all__ = ["map", "starmap", "submitting", "Submitter", "MapProgress"]

Calls = list[tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]]


# ------------------------------------------------------------------------------------ worker side


def _run_chunk(calls: Calls) -> list[tuple[Any, ...]]:
    """The task function of a chunk: run each call, keep each outcome apart.

    Returns per call ``(True, result blob)`` or ``(False, exception blob, traceback text)``, so one
    failing (or unserialisable) item does not fail its neighbours."""
    out: list[tuple[Any, ...]] = []
    for fn, args, kwargs in calls:
        try:
            out.append((True, codec.dumps(invoke(fn, args, kwargs))))
        except Exception as exc:  # noqa: BLE001 - the item's failure is its outcome
            out.append((False, codec.dump_exception(exc), traceback.format_exc()))
    return out


# ---------------------------------------------------------------------------------------- helpers


def _attach(exc: BaseException, text: str, where: str) -> BaseException:
    if text:
        note = f"remote traceback ({where}):\n{text.rstrip()}"
        if note not in getattr(exc, "__notes__", ()) and hasattr(exc, "add_note"):  # Python >= 3.11
            exc.add_note(note)
        try:
            exc.remote_traceback = text  # type: ignore[attr-defined]
        except Exception:  # noqa: BLE001 - exceptions with __slots__
            pass
    return exc


def task_exception(task: Task) -> BaseException:
    """The exception of a failed task as a user should see it: the original exception (a live one in
    debug mode), else TaskFailed with the reason; remote traceback text attached as a note."""
    try:
        exc = task.errorvalue
    except Exception as load_error:  # noqa: BLE001 - e.g. the exception's class is not importable here
        exc = TaskFailed(f"task {task.id} failed: {task.reason} (its exception could not be loaded "
                         f"here: {load_error})")
    if exc is None:
        exc = TaskFailed(f"task {task.id} failed: {task.reason or 'no reason recorded'}")
    return _attach(exc, task.traceback, f"task {task.id} on {task.host or '?'}")


# --------------------------------------------------------------------------------------- the core


class _Batch:
    """Calls to run as tasks and gather in order: one task per call, or per chunk of calls."""

    def __init__(self, calls: Calls, chunksize: int | None) -> None:
        self.calls = calls
        if chunksize is not None and (isinstance(chunksize, bool) or not isinstance(chunksize, int)
                                      or chunksize < 1):
            raise ConfigError(f"chunksize must be a positive integer or None, not {shown(chunksize)}")
        self.chunksize = chunksize
        if chunksize:  # the functions travel inside the chunks' arguments: check them here
            for fn in {id(fn): fn for fn, _, _ in calls}.values():
                codec.check_task_fn(fn)

    def tasks(self) -> tuple[list[Any], list[range], list[Any]]:
        """Deferred tasks, the input positions each covers, and their metadata."""
        if not self.chunksize:
            return ([defer(fn, *a, **kw) for fn, a, kw in self.calls],
                    [range(i, i + 1) for i in range(len(self.calls))], [None] * len(self.calls))
        tasks, spans, metas = [], [], []
        for start in range(0, len(self.calls), self.chunksize):
            part = self.calls[start:start + self.chunksize]
            span = range(start, start + len(part))
            tasks.append(defer(_run_chunk, part))
            spans.append(span)
            metas.append({"map": fn_name(part[0][0]), "items": (span.start, span.stop)})
        return tasks, spans, metas


def _gather(q: QueueCore, batch: _Batch, *, progress: Any, return_exceptions: bool, fail_fast: bool,
            timeout: float | None, transient: bool, description: str,
            schedule_options: dict[str, Any]) -> list[Any]:
    n = len(batch.calls)
    check_timeout(timeout)
    if n == 0:
        return []
    tasks, spans, metas = batch.tasks()
    chunked = bool(batch.chunksize)
    since = last_finished(q)
    refs = producer.schedule_many(q, tasks, metadata=metas if chunked else None, **schedule_options)
    span_of = {ref.id: span for ref, span in zip(refs, spans)}
    results: list[Any] = [None] * n
    errors: dict[int, BaseException] = {}
    unfinished = set(span_of)

    def take(task: Task) -> BaseException | None:
        """Record one finished task; returns its first failure (for fail_fast)."""
        unfinished.discard(task.id)
        span = span_of[task.id]
        first: BaseException | None = None
        if task.state == "done" and chunked:
            for i, outcome in zip(span, task.returnvalue):
                if outcome[0]:
                    results[i] = codec.loads(outcome[1])
                else:
                    exc = _attach(codec.loads(outcome[1]), outcome[2],
                                  f"task {task.id} item {i} on {task.host or '?'}")
                    errors[i] = exc
                    first = first or exc
        elif task.state == "done":
            results[span.start] = task.returnvalue
        else:
            exc = task_exception(task)
            for i in span:
                errors[i] = exc
            first = exc
        failed = sum(1 for i in span if i in errors)
        bar.advance(len(span) - failed, failed, task.id)
        return first

    bar = MapProgress(progress, n, description, transient)
    try:
        with bar:
            for task in _finished_tasks(q, [r.id for r in refs], since, timeout, bar):
                if task.id not in unfinished:
                    continue
                first = take(task)
                if first is not None and fail_fast and not return_exceptions:
                    _cancel(q, unfinished)
                    raise first
    except KeyboardInterrupt:
        _cancel(q, unfinished)
        raise
    if errors and not return_exceptions:
        raise errors[min(errors)]
    for i, exc in errors.items():
        results[i] = exc
    return results


def _finished_tasks(q: QueueCore, ids: list[str], since: str, timeout: float | None,
                    bar: MapProgress) -> Iterator[Task]:
    """Finished tasks of ``ids``: run here first in debug mode (a local queue), then followed on Redis
    (the bar says when no live worker serves the queue while none of them finishes)."""
    left = set(ids)
    if q.local:
        for task in run_inline(q, since=since):
            if task.id in left:
                left.discard(task.id)
                yield task
                if not left:
                    return
    follower = Follower(q.r, q.keys, since=since, only=left, timeout=timeout)
    watch = WorkerWatch(q.r, q.name, enabled=bar.progress is not None and not q.local)
    shares = RunningShares(q.r, q.keys, follower.only, enabled=bar.progress is not None and not q.local)
    while not follower.finished:
        bar.running(shares.read())
        follower.check_deadline(lambda: f"none of this map's tasks on queue {q.name!r} finished for {timeout} s "
                                        f"({len(follower.only or ())} still unfinished)"
                                        f"{'' if q.local else no_worker_hint(q.r, q.name)}")
        got = follower.poll(2000)
        if got:
            if watch.text:
                bar.note("")
            watch.progressed()
        else:
            bar.note(watch.note())
        yield from got


def _cancel(q: QueueCore, ids: set[str]) -> None:
    if not ids:
        return
    try:
        producer.cancel(q, sorted(ids))
    except Exception:  # noqa: BLE001 - best effort while an exception is already on its way
        pass


@contextmanager
def _served(q: QueueCore, procs: int | None, needed: bool) -> Iterator[QueueCore]:
    """The queue as one call sees it. ``procs=N``: N local workers serve the call (the warm ones of
    an open ``Queue.workers`` block instead, if any), stopped after it; ``procs=0``: the tasks run
    here, in order (debug mode); None: the queue's workers run elsewhere."""
    if procs is not None:
        check_procs(procs)
    if procs == 0 and not q.local:
        yield dataclasses.replace(q, local=True)
        return
    with serving(q.url, q.name, procs if needed and not q.local else None):
        yield q


def _describe(fn: Any) -> str:
    try:
        return fn_name(fn)
    except Exception:  # noqa: BLE001
        return "map"


# ---------------------------------------------------------------------------------------- the API


def map(q: QueueCore, fn: Callable[..., Any], inputs: Iterable[Any], *, progress: Any = True,
        return_exceptions: bool = False, fail_fast: bool = False, chunksize: int | None = None,
        timeout: float | None = None, transient: bool = False, description: str | None = None,
        procs: int | None = None, **schedule_options: Any) -> list[Any]:
    """``[fn(x) for x in inputs]`` run as tasks on the queue's workers; results in input order.

    ``progress``: True, False, or a rich ``Progress`` to add a row to; ``transient``: remove the bar
    at the end (nested loops). ``return_exceptions``: exceptions in place instead of raising.
    ``fail_fast``: raise the first failure at once and cancel the rest. ``chunksize``: inputs per
    task (cuts per-task overhead for short calls). ``timeout``: seconds without any of these tasks
    finishing before TimeoutError. Other keywords go to ``schedule_many`` (``timeout`` there is
    spelled ``task_timeout`` here: seconds before a task is killed; ``max_attempts``; ``resources``:
    what each task needs, e.g. ``{"mem": "6G", "gpu": 1}``). ``procs``:
    local workers for this call (see :func:`_served`)."""
    batch = _Batch([(fn, (x,), {}) for x in inputs], chunksize)
    with _served(q, procs, bool(batch.calls)) as served:
        return _gather(served, batch, progress=progress, return_exceptions=return_exceptions,
                       fail_fast=fail_fast, timeout=timeout, transient=transient,
                       description=description or _describe(fn),
                       schedule_options=_schedule_options(schedule_options))


def starmap(q: QueueCore, fn: Callable[..., Any], inputs: Iterable[Iterable[Any]], **options: Any) -> list[Any]:
    """Like :func:`map`, each input spread as ``fn(*x)`` (JobRunner's tuple inputs)."""
    progress = options.pop("progress", True)
    batch = _Batch([(fn, tuple(x), {}) for x in inputs], options.pop("chunksize", None))
    with _served(q, options.pop("procs", None), bool(batch.calls)) as served:
        return _gather(served, batch, progress=progress,
                       return_exceptions=options.pop("return_exceptions", False),
                       fail_fast=options.pop("fail_fast", False), timeout=options.pop("timeout", None),
                       transient=options.pop("transient", False),
                       description=options.pop("description", None) or _describe(fn),
                       schedule_options=_schedule_options(options))


def _schedule_options(options: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in options.items():
        if name == "task_timeout":
            out["timeout"] = value
        elif name in ("max_attempts", "resources"):
            out[name] = value
        else:
            raise TypeError(f"unexpected keyword argument {shown(name)}")
    return out


class Submitter:
    """Collects calls inside ``with submitting(q) as sub:``; they run when the block exits."""

    def __init__(self, q: QueueCore, options: dict[str, Any]) -> None:
        self.q = q
        self.options = dict(options)
        check_timeout(self.options.get("timeout"))
        if self.options.get("procs") is not None:
            check_procs(self.options["procs"])
        self.calls: Calls = []
        self._results: list[Any] | None = None

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> int:
        """Add ``fn(*args, **kwargs)``; returns its index in ``results``. Nothing runs yet."""
        if self._results is not None:
            raise RuntimeError("this submitting block has run already; open a new one")
        if not callable(fn):
            raise TypeError(f"submit needs a callable first, not {type(fn).__name__}")
        self.calls.append((fn, args, kwargs))
        return len(self.calls) - 1

    def __len__(self) -> int:
        return len(self.calls)

    @property
    def results(self) -> list[Any]:
        """The outputs in submission order (available once the block has exited)."""
        if self._results is None:
            raise RuntimeError("results are available after the submitting block exits")
        return self._results

    def run(self) -> list[Any]:
        o = dict(self.options)
        names = {_describe(fn) for fn, _, _ in self.calls}
        batch = _Batch(self.calls, o.pop("chunksize", None))
        with _served(self.q, o.pop("procs", None), bool(batch.calls)) as served:
            self._results = _gather(
                served, batch, progress=o.pop("progress", True),
                return_exceptions=o.pop("return_exceptions", False), fail_fast=o.pop("fail_fast", False),
                timeout=o.pop("timeout", None), transient=o.pop("transient", False),
                description=o.pop("description", None) or (names.pop() if len(names) == 1 else "submitted"),
                schedule_options=_schedule_options(o))
        return self._results


@contextmanager
def submitting(q: QueueCore, progress: Any = True, **options: Any) -> Iterator[Submitter]:
    """Collect ``sub.submit(fn, *args)`` calls and run them as tasks when the block exits; then
    ``sub.results`` holds the outputs in submission order. If the block raises, nothing is scheduled
    and the exception propagates unchanged (JobRunner ran the batch anyway and could mask it).
    Options are those of :func:`map`."""
    sub = Submitter(q, {"progress": progress, **options})
    yield sub  # an exception of the body propagates from here: nothing runs
    sub.run()

