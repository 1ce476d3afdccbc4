"""``Queue``: the facade users hold. Schedule deferred task trees onto Redis and read finished tasks
back, from any script.

Every method is a short delegate: reading (:mod:`forrestq.reading`), writing
(:mod:`forrestq.producer`), the seed tools' habits (:mod:`forrestq.mapping`, :mod:`forrestq.once`,
:mod:`forrestq.shared`) and debug mode (:mod:`forrestq.debug`). They all receive the queue's
:class:`~forrestq.core.QueueCore`, never the facade.
"""
from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager
from functools import partial
from typing import Any

import redis

from . import aio, codec, context, limits, local, mapping, once, periodic, producer, reading, shared, unfinished
from .batch import Batch, Scheduled, follow, for_run
from .connection import connect, resolve_url
from .core import QueueCore
from .debug import run_inline
from .durability import replicas as durability_replicas
from .errors import ConfigError
from .events import Event, cap_value, set_cap
from .events import read as read_events
from .executor import QueueExecutor
from .limits import Limit
from .local import LocalWorkers
from .mapping import Submitter
from .once import KeyClaim, KeyRecord
from .ops import Scripts
from .periodic import Periodic
from .schema import QueueKeys, check_name
from .stats import FunctionStats
from .stats import read as read_stats
from .task import Task, TaskRef


class Queue:
    """A named queue of tasks on a Redis server shared by producers and workers.

    ``url``: a Redis URL; default ``$FORRESTQ_URL``, else the embedded local server (started on demand).
    ``max_attempts``: how often a task may be started before a lost worker counts as its failure.
    ``local=True``: debug mode (``results()`` runs the tasks in this process, one at a time).
    ``events``: whether the queue keeps its tasks' history (:meth:`events`; opt-in, it costs the
    no-op drain a few %): True (about 100,000 events), about N events, or False; stored in Redis for
    every worker and producer of the queue (None: leave it as it is).
    ``result_ttl``: the queue's default for ``schedule(result_ttl=)`` (seconds or a timedelta; 0 or False:
    kept for ever), stored in Redis for every producer of the queue (None: leave it as it is).
    ``durability``: ``"replica"``: ``schedule`` returns once a replica has the tasks (WAIT), so a primary
    that dies right after cannot lose them; ``"none"``; default ``$FORRESTQ_DURABILITY``, else none.
    """

    def __init__(self, name: str, url: str | None = None, *, max_attempts: int = 3,
                 exist_ok: bool = True, pre_clean: bool = False, local: bool = False,
                 events: bool | int | None = None, result_ttl: Any = None, durability: str | None = None) -> None:
        check_name(name)
        replicas = durability_replicas(durability)
        url = resolve_url(url)
        self.core = QueueCore(name, url, connect(url), producer.check_attempts(max_attempts), local, replicas)
        self._scheduled = Scheduled()  # roots scheduled through this object that no run() yielded yet
        self.core.events_cap = None if events is None else cap_value(events)
        self.core.result_ttl = None if result_ttl is None else producer.ttl_text(result_ttl)
        if pre_clean:
            self.clean(all=True)
        if self.core.events_cap is not None:
            set_cap(self.r, self.keys, self.core.events_cap)
        if self.core.result_ttl is not None:
            producer.set_result_ttl(self.r, self.keys, self.core.result_ttl)
        if not exist_ok:
            held = sum(self.counts().values())
            if held:
                raise ConfigError(f"queue {name!r} already holds {held} tasks (exist_ok=False); "
                                  "use pre_clean=True to empty it, or another name")

    name = property(lambda self: self.core.name, doc="The queue's name.")
    url = property(lambda self: self.core.url, doc="The Redis URL the queue uses.")
    max_attempts = property(lambda self: self.core.max_attempts)
    local = property(lambda self: self.core.local, doc="Debug mode.")

    @property
    def r(self) -> redis.Redis:
        """The queue's Redis client."""
        return self.core.r

    @property
    def keys(self) -> QueueKeys:
        return self.core.keys

    @property
    def scripts(self) -> Scripts:
        return self.core.scripts

    def __repr__(self) -> str:
        return f"Queue({self.name!r})"

    # --- scheduling -------------------------------------------------------------------------
    def schedule(self, task: Any, metadata: Any = None, timeout: float | None = None,
                 max_attempts: int | None = None, key: str | None = None, retries: int = 0,
                 retry_backoff: float = 1.0, retry_on: Any = (Exception,),
                 soft_timeout: float | None = None, resources: Mapping[str, Any] | None = None,
                 delay: Any = None, at: Any = None, result_ttl: Any = None, limits: Any = None,
                 priority: int = 0) -> TaskRef:
        """Schedule a deferred task tree; returns at once. ``timeout`` (seconds) kills the task's
        process group when exceeded; ``soft_timeout`` (below it) raises ``forrestq.TimeLimitExceeded``
        in the task first, so its ``finally:`` blocks run and its traceback names the line.
        ``metadata`` travels with the task and comes back on results.
        ``key``: scheduling a key that exists already does nothing and returns the existing task,
        so a producer that crashed halfway can simply run again. ``retries``: run a task again up to
        this many times when it raises one of ``retry_on``, after ``retry_backoff * 2**n`` seconds.
        ``resources``: what the task needs, e.g. ``{"mem": "6G", "cpus": 2, "gpu": 1}`` (any names;
        memory with units): a worker starts it only while its free capacity covers that (default:
        cpus=1); a GPU task gets its own ``CUDA_VISIBLE_DEVICES``.
        ``delay`` (seconds or a timedelta, by the Redis server's clock) or ``at`` (an aware datetime;
        in the past: at once): no node of the tree starts before then; meanwhile it is ``scheduled``.
        ``result_ttl`` (seconds or a timedelta; 0: for ever; None: the queue's default, ``Queue(result_ttl=)``):
        the finished root's record, and the inner nodes nobody needs any more, are deleted that long
        after it finished (by a worker, about once a second; never a result an unfinished task needs).
        ``limits`` (a key or a list of keys): at most ``set_limit(key, n)`` tasks holding a key run at once,
        and at most ``set_rate(key, n, per)`` of them start per window, across every worker.
        ``priority`` (0..9, default 0): ready tasks of a higher level are claimed first, FIFO within a level;
        strict, so a constant load of higher ones starves the lower (give those their own queue and workers).
        ``timeout``, ``max_attempts``, ``resources``, ``limits``, ``priority`` and the retry policy apply to
        every node."""
        ref = producer.schedule_one(self.core, task, metadata, timeout, max_attempts, key, retries, retry_backoff,
                                    retry_on, soft_timeout, resources, delay, at, result_ttl, limits, priority)
        self._scheduled.add((ref,))  # as schedule_many does, without a Batch of one
        return ref

    def schedule_many(self, tasks: Iterable[Any], metadata: Iterable[Any] | None = None,
                      timeout: float | None = None, max_attempts: int | None = None,
                      keys: Iterable[str] | None = None, retries: int = 0, retry_backoff: float = 1.0,
                      retry_on: Any = (Exception,), soft_timeout: float | None = None,
                      resources: Mapping[str, Any] | None = None, delay: Any = None, at: Any = None,
                      result_ttl: Any = None, limits: Any = None, priority: int = 0) -> Batch:
        """Schedule many task trees in one round trip. ``metadata`` and ``keys``, if given, run parallel
        to ``tasks`` (see ``schedule``). Everything is serialised before anything is written, so an
        argument that cannot be serialised raises ``SerializationError`` and leaves Redis as it was.
        Returns a :class:`~forrestq.batch.Batch`: the TaskRefs, parallel to ``tasks``, whose
        ``results()`` yields these roots only (also those a ``key`` matched that had finished).
        ``delay``/``at``/``result_ttl``/``priority`` as for ``schedule``, for every task of the batch."""
        batch = Batch(self.core, producer.schedule_many(self.core, tasks, metadata, timeout, max_attempts, keys,
                                                        retries, retry_backoff, retry_on, soft_timeout,
                                                        resources, delay=delay, at=at, result_ttl=result_ttl,
                                                        limits=limits, priority=priority))
        self._scheduled.add(batch)
        return batch

    def schedule_graph(self, funcs: dict[str, Any], dependencies: dict[str, Iterable[str]],
                       done: Iterable[str] | None = None, results: dict[str, Any] | None = None,
                       io_bound: Iterable[str] | None = None, **options: Any) -> dict[str, TaskRef]:
        """Schedule a named graph (taskmap's ``create_graph``): ``dependencies[name]`` lists the names
        whose results are passed to ``funcs[name]``, in that order; ``None`` results are not passed.
        Names in ``done`` are not run; their ``results`` are passed instead. Every other name is a
        scheduled task, also a name of ``funcs`` without a ``dependencies`` entry (a task without
        inputs; taskmap ignores those). ``resources={name: {"gpu": 1}, ...}`` gives named nodes their
        own request (a plain request applies to every node); ``delay={name: seconds}`` gives named nodes
        their own delay (a number, or ``at=``, applies to every node). ``io_bound`` names are IO-bound
        coroutines: they go on the queue first when ready at once, and only they may share a worker child's event loop
        (``--async-concurrency``). A cycle or a missing name raises ``GraphError`` and writes nothing
        (``forrestq.check_graph`` checks a graph without scheduling it)."""
        refs = producer.schedule_graph(self.core, funcs, dependencies, done, results, io_bound, **options)
        self._scheduled.add(refs.values())
        return refs

    # --- periodic tasks (issue 16) ---------------------------------------------------------------
    def every(self, seconds: Any, task: Any, key: str, **options: Any) -> Periodic:
        """Run ``task`` (one deferred call) every ``seconds`` (at least 1; or a timedelta), the first
        time one interval from now, as a schedule named ``key`` kept in Redis and served by the
        workers: each tick makes exactly one task (a root, id ``p-<key>@<tick ms>``), whatever the
        number of workers and hosts. ``options``: ``metadata`` and those of ``schedule``. A tick missed
        while no worker ran runs once when one is back; then the cadence goes on. Registering ``key``
        again replaces its task (and keeps its next tick when the interval is the same)."""
        return periodic.every(self.core, seconds, task, key, **options)

    def cron(self, expr: str, task: Any, key: str, tz: str | None = None, **options: Any) -> Periodic:
        """Like :meth:`every`, at the times of a five-field cron expression (``"0 3 * * *"``: 03:00 each
        day; ``@daily`` and the like too) read in the IANA zone ``tz`` (default UTC)."""
        return periodic.cron(self.core, expr, task, key, tz, **options)

    def periodic(self) -> list[Periodic]:
        """The queue's periodic schedules, the next due first (paused ones last)."""
        return periodic.listing(self.r, self.keys)

    def pause_periodic(self, key: str) -> Periodic:
        """Stop making tasks for schedule ``key`` until :meth:`resume_periodic` (UnknownSchedule if none)."""
        return periodic.pause(self.core, key)

    def resume_periodic(self, key: str) -> Periodic:
        """Make tasks again for schedule ``key``, from its first due time after now."""
        return periodic.resume(self.core, key)

    def remove_periodic(self, key: str) -> None:
        """Delete schedule ``key`` (the tasks it made stay)."""
        periodic.remove(self.core, key)

    # --- concurrency and rate limits by key (issue 16) ------------------------------------------
    def set_limit(self, key: str, most: int) -> None:
        """At most ``most`` tasks scheduled with ``limits=[key]`` run at once, on every worker and host."""
        limits.set_limit(self.r, self.keys, key, most)

    def set_rate(self, key: str, starts: int, per: float = 1.0) -> None:
        """At most ``starts`` tasks scheduled with ``limits=[key]`` start per ``per`` seconds, everywhere."""
        limits.set_rate(self.r, self.keys, key, starts, per)

    def remove_limit(self, key: str, limit: bool = True, rate: bool = True) -> None:
        """Drop ``key``'s limit and rate (``limit=False``/``rate=False`` keeps one); UnknownLimit if none."""
        limits.remove(self.r, self.keys, key, limit, rate)

    def limits(self) -> list[Limit]:
        """The queue's limit keys with their limit, rate, holders running now, recent starts and waiting."""
        return limits.listing(self.r, self.keys)

    def scheduled(self) -> Batch:
        """The roots scheduled through this Queue object (``schedule``, ``schedule_many``,
        ``schedule_graph``; not ``map``'s, which it reads itself) that no ``run()`` has yielded yet,
        as a :class:`~forrestq.batch.Batch` (a snapshot: ``.results()``, ``.wait()``, ``.counts()``)."""
        return self._scheduled.batch(self.core)

    def batch(self, refs: Iterable[TaskRef | Task | str]) -> Batch:
        """A :class:`~forrestq.batch.Batch` of roots of this queue given as TaskRefs, Tasks or ids
        (e.g. ids a producer saved), to read their results apart from the rest of the queue.
        UnknownTask for an id the queue does not hold; ConfigError for an inner node."""
        return Batch.of(self.core, refs)

    # --- reading ----------------------------------------------------------------------------
    def get(self, ref: TaskRef | str) -> Task:
        """The current record of one task (any state)."""
        return reading.get(self.core, ref)

    def todo_tasks(self, limit: int | None = None, nodes: bool = False) -> list[Task]:
        """The roots (the tasks scheduled) not finished yet, in the order they will run: running and ready
        (stream order), then scheduled (by due time), then waiting. ``nodes=True``: every DAG node, the
        inner calls of trees too."""
        return reading.listing(self.core, None, limit, nodes)

    def done_tasks(self, limit: int | None = None, nodes: bool = False) -> list[Task]:
        """The roots that are done, by finishing time; ``nodes=True``: every DAG node."""
        return reading.listing(self.core, self.keys.done, limit, nodes)

    def fail_tasks(self, limit: int | None = None, nodes: bool = False) -> list[Task]:
        """The roots that failed, by finishing time; ``nodes=True``: every DAG node (an inner node
        holds the original error; a root it failed says ``input task X failed``)."""
        return reading.listing(self.core, self.keys.failed, limit, nodes)

    def counts(self) -> dict[str, int]:
        """Number of tasks (DAG nodes: a tree of three calls is three) in each state: waiting, scheduled, ready,
        running, done, failed; read from counters (constant time)."""
        return reading.counts(self.core)

    def root_counts(self) -> dict[str, int]:
        """Number of the tasks you scheduled (roots, what ``results()`` yields; a tree counts once)
        that are ``unfinished`` (waiting, scheduled, ready or running), ``done`` and ``failed``; read from
        counters (constant time)."""
        return reading.root_counts(self.r, self.keys)

    def stats(self) -> dict[str, FunctionStats]:
        """Per function name: runs, failed (``failed_pct``), p50/p95 runtime, p95 peak memory and hosts,
        kept by the completion script as tasks end (no scan of the tasks; they outlive ``clean(done=True)``).
        The percentiles and hosts are over the last 1,000 measured runs of each function (``samples``)."""
        return read_stats(self.r, self.keys)

    def results(self, progress: bool = False, timeout: float | None = None) -> Iterator[Task]:
        """Yield each root task of the queue once it has finished, on whichever machine; return when no
        root task is left unfinished. Blocks on Redis (no polling). ``timeout``: seconds without
        progress before ``TimeoutError``. While nothing finishes, the bar (and the TimeoutError) says
        when no live worker serves the queue. In debug mode the tasks run here. This reads the whole
        queue, whoever scheduled its tasks, since it began (a reader, a notebook opened later); the
        results of what you scheduled: ``batch.results()``, ``q.scheduled().results()``, ``q.run()``."""
        reading.check_timeout(timeout)
        if self.local:
            return run_inline(self.core, progress=progress, timeout=timeout)
        return reading.results(self.core, progress=progress, timeout=timeout)

    def wait(self, ref: TaskRef | str, timeout: float | None = None) -> Task:
        """Block until one root task has finished and return its record. In debug mode the queue's
        tasks run here until this one has finished."""
        reading.check_timeout(timeout)
        if self.local:
            tid = reading.task_id(ref)
            for task in run_inline(self.core, timeout=timeout):
                if task.id == tid:
                    return task
        return reading.wait(self.core, ref, timeout)

    def events(self, since: Any = None, follow: bool = False, timeout: float | None = None) -> Iterator[Event]:
        """The history of the queue's tasks, oldest first, as :class:`~forrestq.events.Event` (``time,
        kind, task, host, attempt, reason, name, runtime, delay``): scheduled, started, done, failed,
        retried, lost, released, requeued, cancelled. ``since``: None (every event kept), ``"now"``, an
        Event or its ``id`` (after it), or a time (epoch seconds or a datetime). ``follow``: go on
        with new events as they happen, until ``timeout`` seconds pass without one (None: forever);
        a Redis outage is waited out. See :mod:`forrestq.events`."""
        return read_events(self.core, since, follow, timeout)

    # --- re-running, cancelling, cleaning -------------------------------------------------------
    def requeue_failed(self, ids: Iterable[TaskRef | str] | None = None, error_type: str | None = None,
                       dry_run: bool = False) -> list[str]:
        """Run failed tasks again, with the dependents that failed because of them; tasks that
        succeeded are not run again. ``ids``: only these; ``error_type``: only failures whose exception
        type has this name. Returns the ids requeued (with ``dry_run``: that would be)."""
        candidates = self.fail_tasks(nodes=True) if ids is None else [self.get(i) for i in ids]
        return producer.requeue_failed(self.core, candidates, error_type, dry_run)

    def rerun(self, ref: TaskRef | str, fn: Any = None) -> list[str]:
        """Run one task again and everything downstream of it (taskmap's ``reset_tasks``), e.g. after
        fixing its function; ``fn`` replaces the task's function first. Returns the ids re-run."""
        return producer.rerun(self.core, ref, fn)

    def descendants(self, ref: TaskRef | Task | str) -> list[str]:
        """The ids of every task downstream of one (taskmap's ``get_all_children``): its dependents,
        theirs, and so on, each once, not the task itself; what ``rerun(ref)`` re-runs besides it."""
        return producer.descendants(self.core, ref)

    def cancel(self, ids: Iterable[TaskRef | Task | str] | TaskRef | Task | str | None = None,
               all: bool = False) -> list[str]:
        """End unfinished tasks as ``failed`` with reason "cancelled" (their dependents fail too).
        Queued tasks never start; a running task's worker loses its lease and kills it at its next
        heartbeat. Returns the ids cancelled."""
        if all:
            chosen = unfinished.ids(self.r, self.keys)
        elif ids is None:
            raise ConfigError("cancel needs task ids, or all=True")
        else:
            many: Iterable[TaskRef | Task | str] = [ids] if isinstance(ids, (str, TaskRef, Task)) else ids
            chosen = [reading.task_id(i) for i in many]  # one id given alone is not a string of letters
        return producer.cancel(self.core, chosen)

    def clean(self, done: bool = False, failed: bool = False, all: bool = False, older_than: Any = None) -> int:
        """Delete task records: done ones, failed ones, or all (also unstarted ones). Never deletes a
        running task, nor a finished one whose result an unfinished task still needs. ``older_than``
        (seconds or a timedelta): only finished records that finished longer ago (done and failed ones
        unless one is named). Returns how many were deleted."""
        return producer.clean(self.core, done, failed, all, older_than)

    def run_here(self, ref: TaskRef | str, record: bool = False) -> Task:
        """Run one task in this process, with its real inputs from Redis, for debugging by hand
        (``forrestq run``). Raises nothing itself: the outcome comes back as a Task whose
        ``errorvalue`` carries the exception (with ``__traceback__``, for pdb). The recorded state
        changes only with ``record=True``."""
        return producer.run_here(self.core, ref, record)

    # --- one machine ------------------------------------------------------------------------
    def run(self, procs: int = os.cpu_count() or 1, progress: bool = False,
            timeout: float | None = None, batch: Batch | None = None, **worker_options: Any) -> Iterator[Task]:
        """Start ``procs`` local worker processes for this queue, yield the roots of ``batch`` as they
        finish, each once, and stop the workers afterwards (also when the loop is left early).
        ``batch`` defaults to :meth:`scheduled`, taken when ``run`` is called: what this Queue object
        scheduled that no earlier ``run()`` yielded (a run left early leaves the rest to the next).
        Nothing to follow: returns at once and starts nothing (``batch=q.batch(q.todo_tasks())``
        follows every unfinished root of the queue, whoever scheduled it).
        ``procs=0`` is debug mode: tasks run in this process, in order, so pdb works. Inside a
        ``with q.workers(N):`` block (and without worker options) the block's workers serve instead.
        Worker options are ``forrestq worker``'s, as Python names (``autokill=600``, ``max_memory="2G"``,
        ``async_concurrency=20``, ...); a worker that cannot start raises ``WorkerStartError``."""
        local.check_procs(procs)
        reading.check_timeout(timeout)
        chosen = for_run(self.core, self._scheduled, batch)
        if procs == 0:
            return self._scheduled.taking(follow(self.core, chosen.ids, progress, timeout, inline=True))
        return self._run_workers(procs, progress, timeout, worker_options, chosen)

    def _run_workers(self, procs: int, progress: bool, timeout: float | None,
                     options: dict[str, Any], chosen: Batch) -> Iterator[Task]:
        if not chosen.ids:
            return
        with local.serving(self.url, self.name, procs, options):
            yield from self._scheduled.taking(chosen.results(progress=progress, timeout=timeout))

    def workers(self, procs: int = os.cpu_count() or 1,
                **worker_options: Any) -> AbstractContextManager[LocalWorkers]:
        """``with q.workers(4):`` keeps 4 local worker processes warm for the whole block: every
        ``map``/``starmap``/``submitting``/``run`` of this process on this queue that asks for
        ``procs=`` uses them instead of starting its own. Stopped when the block exits (also on an
        exception or Ctrl-C), their children with them. Worker options as in :meth:`run`; a worker
        that cannot start raises ``WorkerStartError`` at once. See :mod:`forrestq.local`."""
        local.check_procs(procs, allow_zero=False)
        return local.warm(self.url, self.name, procs, worker_options)

    # --- the standard interfaces: concurrent.futures and asyncio (issue 20) -----------------------
    def executor(self, procs: int | None = None, worker_options: dict[str, Any] | None = None,
                 **schedule_options: Any) -> QueueExecutor:
        """A ``concurrent.futures.Executor`` whose ``submit``/``map`` calls run as tasks of this queue:
        ``with q.executor() as ex: ex.submit(fn, x)``; its futures work with ``as_completed``, ``wait``,
        ``cancel`` (which cancels the task, killing it if it runs) and ``await``. ``procs=N``: N local warm
        workers for the executor's life (``worker_options`` as in :meth:`workers`); None: the workers
        serving the queue; 0: run each call here (debug). ``schedule_options``: those of
        :meth:`schedule` (``timeout``, ``resources``...), for every task. See :mod:`forrestq.executor`."""
        return QueueExecutor(self.core, procs, worker_options, **schedule_options)

    def wait_async(self, ref: TaskRef | str, timeout: float | None = None) -> Coroutine[Any, Any, Task]:
        """``await q.wait_async(ref)``: :meth:`wait` for a running event loop (a notebook), on redis-py's
        asyncio client; every wait of a loop shares one reader of the finished stream. Sentinel and
        Cluster URLs and debug mode run :meth:`wait` in a thread instead. See :mod:`forrestq.aio`."""
        return aio.wait(self.core, ref, timeout, partial(self.wait, ref, timeout))

    def results_async(self, timeout: float | None = None) -> AsyncIterator[Task]:
        """``async for task in q.results_async():`` :meth:`results` for a running event loop, on
        redis-py's asyncio client (in a thread for Sentinel and Cluster URLs and debug mode)."""
        return aio.results(self.core, timeout, partial(self.results, timeout=timeout))

    # --- seed-tool habits (map, once, put); the code and its documentation live in their modules ---
    def map(self, fn: Callable[..., Any], inputs: Iterable[Any], *, progress: Any = True,
            return_exceptions: bool = False, fail_fast: bool = False, chunksize: int | None = None,
            timeout: float | None = None, transient: bool = False, procs: int | None = None,
            **options: Any) -> list[Any]:
        """``[fn(x) for x in inputs]`` as tasks, results in input order (JobRunner's ``run_jobs``).
        The first failure in input order is raised (its original type, remote traceback attached as a
        note) once all have run; ``fail_fast`` raises at once and cancels the rest;
        ``return_exceptions`` puts exceptions in place. ``chunksize``: inputs per task. ``progress``:
        True/False or a rich Progress to add a row to; ``transient`` removes the bar at the end.
        ``timeout``: seconds without progress. ``procs=N``: N local workers for this call (the warm
        ones of an open ``with q.workers():`` block instead); 0: run here (debug mode). See
        :func:`forrestq.mapping.map`."""
        return mapping.map(self.core, fn, inputs, progress=progress, return_exceptions=return_exceptions,
                           fail_fast=fail_fast, chunksize=chunksize, timeout=timeout, transient=transient,
                           procs=procs, **options)

    def starmap(self, fn: Callable[..., Any], inputs: Iterable[Iterable[Any]], **options: Any) -> list[Any]:
        """Like :meth:`map`, each input spread as ``fn(*x)``."""
        return mapping.starmap(self.core, fn, inputs, **options)

    def submitting(self, progress: Any = True, **options: Any) -> AbstractContextManager[Submitter]:
        """``with q.submitting() as sub: sub.submit(fn, *args)``: the calls run when the block exits
        (not if it raised); then ``sub.results`` holds their outputs in order. Options of :meth:`map`."""
        return mapping.submitting(self.core, progress=progress, **options)

    def put(self, obj: Any) -> shared.Shared:
        """Store a big input once (content-addressed) and return a small reference to pass to tasks
        instead; each worker child loads it once and caches it. See :mod:`forrestq.shared`."""
        return shared.put(self.core, obj)

    def iterate(self, keys: Iterable[Any], lease: float | None = None, version: int = 0,
                **options: Any) -> Iterator[Any]:
        """``for key in q.iterate(keys):`` from many processes and machines: each key's body runs in
        one process; completed keys are skipped for good; a dead process's key is taken again after
        ``lease`` seconds (default 60, renewed while this process lives; ``timeout=S``: never renewed).
        The body finishing confirms its key (``confirm="explicit"``: only ``notify_success`` does);
        raising (or ``break``) records it failed. ``version``: bump to recompute; ``retries``,
        ``at_most_every``, ``wait``: see :func:`forrestq.once.iterate`."""
        return once.iterate(self.core, keys, lease, version, **options)

    def once(self, key: Any, lease: float | None = None, version: int = 0, **options: Any) -> Any:
        """Decorator: the call runs only if ``key`` is neither done nor running elsewhere and returns
        ``(Status, value)`` (``forrestq.once.Status``: COMPUTE_OK, COMPUTE_ERROR, SKIP_OK,
        SKIP_IN_PROGRESS). ``timeout``, ``at_most_every``: as in :meth:`iterate`."""
        return once.once(self.core, key, lease, version, **options)

    def try_claim(self, key: Any, lease: float | None = None, version: int = 0, **options: Any) -> KeyClaim:
        """Claim one key now if no process holds it and it is not done: ``with q.try_claim(k) as held:
        if held: ...`` confirms it when the block ends, records it failed if the block raises. See
        :func:`forrestq.once.try_claim`."""
        return once.try_claim(self.core, key, lease, version, **options)

    def notify_success(self, key: Any, version: int = 0) -> None:
        """Mark a key this process holds (``iterate``) as done now (``LeaseLost`` if its lease ended)."""
        once.notify_success(self.core, key, version)

    def notify_failure(self, key: Any, version: int = 0, reason: str = "notify_failure") -> bool:
        """Record a key this process holds as failed (claimable again at once); whether it held it."""
        return once.notify_failure(self.core, key, version, reason)

    def mark_done(self, key: Any, version: int = 0) -> bool:
        """Record ``key`` done without running it; False if it was done already (``KeyBusy`` if held)."""
        return once.mark_done(self.core, key, version)

    def once_keys(self, state: Any = None, prefix: str | None = None, version: int = 0,
                  limit: int | None = None) -> list[KeyRecord]:
        """Records (key, state, host, times, attempts, reason) of the exactly-once keys in ``state``
        (running, done, failed, expired; a list; None: all) starting with ``prefix``, sorted by key."""
        return once.once_keys(self.core, state, prefix, version, limit)

    def once_counts(self, version: int = 0) -> dict[str, int]:
        """Exactly-once keys per state: ``{"running", "done", "failed", "expired"}``."""
        return once.counts(self.core, version)

    def forget_keys(self, keys: Iterable[Any] | None = None, **options: Any) -> int:
        """Make keys free again (done ones run again): ``keys``, or ``state=``/``prefix=``; how many."""
        return once.forget_keys(self.core, keys, **options)


codec.never_send(Queue, "a Queue", "pass the queue's name (and url) and open Queue(name) inside the task")

_task_queues: dict[tuple[str, str, bool, int], Queue] = {}


def _queue_of_task(name: str, url: str, local: bool) -> Queue:
    """``current_task().queue``: one Queue per process and (queue, URL, debug mode), made on first use."""
    key = (name, url, local, os.getpid())
    q = _task_queues.get(key)
    if q is None:
        q = _task_queues[key] = Queue(name, url, local=local)
    return q


context.set_queue_factory(_queue_of_task)  # context sits below the facade: it may not import it


def stop_worker(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM a worker process (running tasks are handed back after its grace), SIGKILL its group if it hangs."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
