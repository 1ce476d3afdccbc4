"""Batches: the roots one producer scheduled, read apart from the rest of the queue's history.

``Queue.results()`` reads the whole queue: every root that finishes, whoever scheduled it, from
the start of the queue's finished stream (a reader process, a notebook opened later). A producer
wants the results of *its* tasks, and a second ``run()`` in one script must not yield the first
one's again. So:

* ``q.schedule_many(...)`` returns a :class:`Batch`: a sequence of the TaskRefs it scheduled
  (parallel to the tasks) that also reads their results (``results``, ``wait``, ``counts``,
  ``tasks``); ``q.batch(refs)`` makes one of any roots of the queue (ids saved by a producer).
* a Queue object remembers the roots scheduled through it (:class:`Scheduled`); ``q.scheduled()``
  is the batch of those no ``q.run()`` has yielded yet, and ``q.run()`` follows that batch by
  default, snapshot when it is called. Each root scheduled through a Queue comes back from exactly
  one ``run()``: a run left early (``break``, an exception) leaves the rest to the next one.

A batch's roots that had finished before it is read (a ``key=`` matched to a task that finished in
an earlier, crashed run of the producer) come first, then the others as they finish, each once,
through the one follower of :mod:`forrestq.reading` (blocking reads, a Redis outage survived, the
``timeout`` without progress). In debug mode (a ``local`` queue, ``run(procs=0)``) the queue's tasks
run here (:func:`forrestq.debug.run_inline`) and the batch's are picked from what it yields.
"""
from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, overload

from . import schema
from .core import QueueCore
from .debug import run_inline
from .deferred import Call
from .errors import ConfigError, UnknownTask, shown
from .reading import ROOT_STATES, check_timeout, fetch_records, follow_ids, results, root_counts
from .task import Task, TaskRef

__all__ = ["Batch", "Scheduled", "follow", "for_run"]

CHECK_BATCH = 1000  # ids per pipelined read when a batch is made of given ids or counted
_COUNTED = {schema.DONE.encode(): "done", schema.FAILED.encode(): "failed"}


class Batch(Sequence[TaskRef]):
    """Roots of one queue, read together: ``len``, indexing (a slice is a Batch), iteration over the
    TaskRefs, ``ref in batch`` (a TaskRef, a Task, the deferred that was scheduled, or an id).

    ``len`` counts the refs as scheduled (parallel to the tasks given); a root given twice (one
    deferred scheduled twice, a key repeated) is one task: it is yielded and counted once."""

    def __init__(self, q: QueueCore, refs: Iterable[TaskRef]) -> None:
        self.core = q
        self.refs: tuple[TaskRef, ...] = tuple(refs)
        self.ids: list[str] = list(dict.fromkeys(ref.id for ref in self.refs))  # each root once, in order
        self._ids = set(self.ids)

    @classmethod
    def of(cls, q: QueueCore, items: Iterable[TaskRef | Task | str]) -> Batch:
        """A batch of roots of ``q`` given as TaskRefs, Tasks or ids; checked in pipelined reads:
        UnknownTask for an id the queue does not hold, ConfigError for another queue's task or an
        inner node (only roots are followed; their inner nodes come back through them)."""
        refs = [_ref_of(q, item) for item in items]
        ids = list(dict.fromkeys(ref.id for ref in refs))
        for i in range(0, len(ids), CHECK_BATCH):
            part = ids[i:i + CHECK_BATCH]
            pipe = q.r.pipeline(transaction=False)
            for tid in part:
                pipe.hmget(q.keys.task(tid), schema.TASK_STATE, schema.TASK_ROOT)
            for tid, (state, flag) in zip(part, pipe.execute()):
                if state is None:
                    raise UnknownTask(f"no task {shown(tid)} in queue {q.name!r}")
                if flag != b"1":
                    raise ConfigError(f"task {tid} is an inner node of a tree, not a scheduled root; "
                                      "a batch follows roots only")
        return cls(q, refs)

    @property
    def queue(self) -> str:
        """The name of the queue the batch's roots are in."""
        return self.core.name

    def __len__(self) -> int:
        return len(self.refs)

    @overload
    def __getitem__(self, index: int) -> TaskRef: ...

    @overload
    def __getitem__(self, index: slice) -> Batch: ...

    def __getitem__(self, index: int | slice) -> TaskRef | Batch:
        if isinstance(index, slice):
            return Batch(self.core, self.refs[index])
        return self.refs[index]

    def __iter__(self) -> Iterator[TaskRef]:
        return iter(self.refs)

    def __contains__(self, item: object) -> bool:
        if isinstance(item, (TaskRef, Task)):
            return item.queue == self.queue and item.id in self._ids
        if isinstance(item, Call):
            return item._id in self._ids
        return isinstance(item, str) and item in self._ids

    def __repr__(self) -> str:
        return f"<Batch of {len(self.ids)} tasks on queue {self.queue!r}>"

    def results(self, progress: bool = False, timeout: float | None = None) -> Iterator[Task]:
        """Yield each root of the batch once it has finished, on whichever machine, each once: those
        finished already first, then the others in finishing order; return when all have finished.
        Blocks on Redis (no polling) and rides out a Redis outage like ``Queue.results``.
        ``timeout``: seconds without progress before ``TimeoutError``. Can be read again (a batch is
        a set of roots, not a cursor). In debug mode the queue's tasks run here."""
        check_timeout(timeout)
        return follow(self.core, self.ids, progress, timeout, inline=self.core.local)

    def wait(self, timeout: float | None = None) -> list[Task]:
        """Block until every root of the batch has finished; their records in batch order (parallel
        to the refs). ``timeout``: seconds without progress before ``TimeoutError``."""
        got = {task.id: task for task in self.results(timeout=timeout)}
        missing = [tid for tid in self.ids if tid not in got]
        if missing:  # only when records vanish meanwhile (q.clean) or in debug mode
            raise UnknownTask(f"tasks {', '.join(missing[:5])} of this batch are no longer in queue {self.queue!r}")
        return [got[ref.id] for ref in self.refs]

    def counts(self) -> dict[str, int]:
        """How many of the batch's roots are ``unfinished`` (waiting, ready or running), ``done`` and
        ``failed`` now (the keys of ``Queue.root_counts``); one pipelined read of their states, so it
        takes time in proportion to the batch. A root whose record was deleted is not counted."""
        out = dict.fromkeys(ROOT_STATES, 0)
        r, k = self.core.r, self.core.keys
        for i in range(0, len(self.ids), CHECK_BATCH):
            pipe = r.pipeline(transaction=False)
            for tid in self.ids[i:i + CHECK_BATCH]:
                pipe.hget(k.task(tid), schema.TASK_STATE)
            for state in pipe.execute():
                if state is not None:
                    out[_COUNTED.get(state, "unfinished")] += 1
        return out

    def tasks(self) -> list[Task]:
        """The current records of the batch's roots (any state), each once, in batch order."""
        return fetch_records(self.core.r, self.core.keys, self.ids)


def _ref_of(q: QueueCore, item: Any) -> TaskRef:
    if isinstance(item, (TaskRef, Task)):
        if item.queue != q.name:
            raise ConfigError(f"task {item.id} is in queue {item.queue!r}, not {q.name!r}")
        return TaskRef(item.id, q.name)
    if isinstance(item, str) and item:
        return TaskRef(item, q.name)
    raise ConfigError(f"a batch takes TaskRefs, Tasks or task ids, not {shown(item)}")


def follow(q: QueueCore, ids: Sequence[str], progress: bool = False, timeout: float | None = None,
           inline: bool = False) -> Iterator[Task]:
    """The roots ``ids`` as they finish (see :meth:`Batch.results`); ``inline``: run the queue's
    tasks in this process meanwhile (debug mode)."""
    if not inline:
        return results(q, progress=progress, timeout=timeout, only=ids)
    return _inline(q, ids, progress, timeout)


def _inline(q: QueueCore, ids: Sequence[str], progress: bool, timeout: float | None) -> Iterator[Task]:
    follower, finished = follow_ids(q, ids, timeout)
    yield from finished
    left = set(follower.only or ())
    if not left:
        return
    for task in run_inline(q, progress=progress, timeout=timeout, since=follower.since):
        if task.id in left:
            left.discard(task.id)
            yield task
            if not left:
                return


class Scheduled:
    """The roots scheduled through one Queue object that no ``run()`` has yielded yet: their ids
    (about 100 bytes each) in scheduling order. A root scheduled again after a run yielded it (a
    ``key=`` resumed twice) is added again."""

    def __init__(self) -> None:
        self.ids: dict[str, None] = {}  # an ordered set

    def add(self, refs: Iterable[TaskRef]) -> None:
        for ref in refs:
            self.ids.setdefault(ref.id, None)

    def batch(self, q: QueueCore) -> Batch:
        """A snapshot: roots scheduled later are not in it."""
        return Batch(q, [TaskRef(tid, q.name) for tid in self.ids])

    def taking(self, tasks: Iterator[Task]) -> Iterator[Task]:
        """``tasks``, each taken off the roots left to run before it is handed on (a loop that breaks
        after a task has had it)."""
        for task in tasks:
            self.ids.pop(task.id, None)
            yield task


def for_run(q: QueueCore, scheduled: Scheduled, batch: Batch | None) -> Batch:
    """What ``Queue.run`` follows: ``batch`` (checked to be one of this queue), else every root
    scheduled through the Queue that no run yielded yet. Warns when that is nothing while the queue
    holds unfinished roots (another process's: ``run()`` in a fresh process follows none of them)."""
    if batch is None:
        if not scheduled.ids:
            open_n = root_counts(q.r, q.keys)["unfinished"]
            if open_n:
                warnings.warn(f"run(): nothing was scheduled through this Queue object, so it follows none of "
                              f"the {open_n} unfinished tasks of queue {q.name!r}; to run and follow them: "
                              "q.run(batch=q.batch(q.todo_tasks()))", stacklevel=3)
        return scheduled.batch(q)
    if not isinstance(batch, Batch):
        raise ConfigError(f"run(batch=...) takes a Batch (from schedule_many, q.batch or q.scheduled), "
                          f"not {shown(batch)}")
    if batch.queue != q.name:
        raise ConfigError(f"this batch is of queue {batch.queue!r}, not {q.name!r}")
    return batch
