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
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import redis

from . import codec, mapping, once, producer, reading, shared
from .connection import connect, resolve_url
from .core import QueueCore
from .debug import run_inline
from .errors import ConfigError, shown
from .mapping import Submitter
from .ops import Scripts
from .schema import QueueKeys, check_name
from .task import Task, TaskRef


class Queue:
    """A named queue of tasks on a Redis server shared by producers and workers.

    ``url``: a Redis URL; default ``$FORRESTQ_URL``, else the embedded local server (started on demand).
    ``max_attempts``: how often a task may be started before a lost worker counts as its failure.
    ``local=True``: debug mode (``results()`` runs the tasks in this process, one at a time).
    """

    def __init__(self, name: str, url: str | None = None, *, max_attempts: int = 3,
                 exist_ok: bool = True, pre_clean: bool = False, local: bool = False) -> None:
        check_name(name)
        url = resolve_url(url)
        self.core = QueueCore(name, url, connect(url), producer.check_attempts(max_attempts), local)
        if pre_clean:
            self.clean(all=True)
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
                 retry_backoff: float = 1.0, retry_on: Any = (Exception,)) -> TaskRef:
        """Schedule a deferred task tree; returns at once. ``timeout`` (seconds) kills the task's
        process group when exceeded; ``metadata`` travels with the task and comes back on results.
        ``key``: scheduling a key that exists already does nothing and returns the existing task,
        so a producer that crashed halfway can simply run again. ``retries``: run a task again up to
        this many times when it raises one of ``retry_on``, after ``retry_backoff * 2**n`` seconds.
        ``timeout``, ``max_attempts`` and the retry policy apply to every node of the tree."""
        return self.schedule_many([task], metadata=[metadata], timeout=timeout, max_attempts=max_attempts,
                                  keys=None if key is None else [key], retries=retries,
                                  retry_backoff=retry_backoff, retry_on=retry_on)[0]

    def schedule_many(self, tasks: Iterable[Any], metadata: Iterable[Any] | None = None,
                      timeout: float | None = None, max_attempts: int | None = None,
                      keys: Iterable[str] | None = None, retries: int = 0, retry_backoff: float = 1.0,
                      retry_on: Any = (Exception,)) -> list[TaskRef]:
        """Schedule many task trees in one round trip. ``metadata`` and ``keys``, if given, run parallel
        to ``tasks`` (see ``schedule``). Everything is serialised before anything is written, so an
        argument that cannot be serialised raises ``SerializationError`` and leaves Redis as it was."""
        return producer.schedule_many(self.core, tasks, metadata, timeout, max_attempts, keys, retries,
                                      retry_backoff, retry_on)

    def schedule_graph(self, funcs: dict[str, Any], dependencies: dict[str, Iterable[str]],
                       done: Iterable[str] | None = None, results: dict[str, Any] | None = None,
                       io_bound: Iterable[str] | None = None, **options: Any) -> dict[str, TaskRef]:
        """Schedule a named graph (taskmap's ``create_graph``): ``dependencies[name]`` lists the names
        whose results are passed to ``funcs[name]``, in that order; ``None`` results are not passed.
        Names in ``done`` are not run; their ``results`` are passed instead. Every other name is a
        scheduled task. ``io_bound`` names that are ready at once go on the queue first. A cycle or a
        missing name raises ``GraphError`` and writes nothing."""
        return producer.schedule_graph(self.core, funcs, dependencies, done, results, io_bound, **options)

    # --- reading ----------------------------------------------------------------------------
    def get(self, ref: TaskRef | str) -> Task:
        """The current record of one task (any state)."""
        return reading.get(self.core, ref)

    def todo_tasks(self, limit: int | None = None) -> list[Task]:
        """Tasks not finished yet (waiting, ready, running), oldest first."""
        return reading.listing(self.core, self.keys.todo, limit)

    def done_tasks(self, limit: int | None = None) -> list[Task]:
        return reading.listing(self.core, self.keys.done, limit)

    def fail_tasks(self, limit: int | None = None) -> list[Task]:
        return reading.listing(self.core, self.keys.failed, limit)

    def counts(self) -> dict[str, int]:
        """Number of tasks (DAG nodes: a tree of three calls is three) in each state: waiting, ready,
        running, done, failed; read from counters (constant time)."""
        return reading.counts(self.core)

    def root_counts(self) -> dict[str, int]:
        """Number of the tasks you scheduled (roots, what ``results()`` yields; a tree counts once)
        that are ``unfinished`` (waiting, ready or running), ``done`` and ``failed``; read from
        counters (constant time)."""
        return reading.root_counts(self.r, self.keys)

    def results(self, progress: bool = False, timeout: float | None = None) -> Iterator[Task]:
        """Yield each root task of the queue once it has finished, on whichever machine; return when no
        root task is left unfinished. Blocks on Redis (no polling). ``timeout``: seconds without
        progress before ``TimeoutError``. While nothing finishes, the bar (and the TimeoutError) says
        when no live worker serves the queue. In debug mode the tasks run here."""
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

    # --- re-running, cancelling, cleaning -------------------------------------------------------
    def requeue_failed(self, ids: Iterable[TaskRef | str] | None = None, error_type: str | None = None,
                       dry_run: bool = False) -> list[str]:
        """Run failed tasks again, with the dependents that failed because of them; tasks that
        succeeded are not run again. ``ids``: only these; ``error_type``: only failures whose exception
        type has this name. Returns the ids requeued (with ``dry_run``: that would be)."""
        candidates = self.fail_tasks() if ids is None else [self.get(i) for i in ids]
        return producer.requeue_failed(self.core, candidates, error_type, dry_run)

    def rerun(self, ref: TaskRef | str, fn: Any = None) -> list[str]:
        """Run one task again and everything downstream of it (taskmap's ``reset_tasks``), e.g. after
        fixing its function; ``fn`` replaces the task's function first. Returns the ids re-run."""
        return producer.rerun(self.core, ref, fn)

    def cancel(self, ids: Iterable[TaskRef | Task | str] | TaskRef | Task | str | None = None,
               all: bool = False) -> list[str]:
        """End unfinished tasks as ``failed`` with reason "cancelled" (their dependents fail too).
        Queued tasks never start; a running task's worker loses its lease and kills it at its next
        heartbeat. Returns the ids cancelled."""
        if all:
            chosen = [i.decode() for i in self.r.zrange(self.keys.todo, 0, -1)]
        elif ids is None:
            raise ConfigError("cancel needs task ids, or all=True")
        else:
            many: Iterable[TaskRef | Task | str] = [ids] if isinstance(ids, (str, TaskRef, Task)) else ids
            chosen = [reading.task_id(i) for i in many]  # one id given alone is not a string of letters
        return producer.cancel(self.core, chosen)

    def clean(self, done: bool = False, failed: bool = False, all: bool = False) -> int:
        """Delete task records: done ones, failed ones, or all (also unstarted ones). Never deletes a
        running task, nor a finished one whose result an unfinished task still needs. Returns how many
        were deleted."""
        return producer.clean(self.core, done, failed, all)

    def run_here(self, ref: TaskRef | str, record: bool = False) -> Task:
        """Run one task in this process, with its real inputs from Redis, for debugging by hand
        (``forrestq run``). Raises nothing itself: the outcome comes back as a Task whose
        ``errorvalue`` carries the exception (with ``__traceback__``, for pdb). The recorded state
        changes only with ``record=True``."""
        return producer.run_here(self.core, ref, record)

    # --- one machine ------------------------------------------------------------------------
    def run(self, procs: int = os.cpu_count() or 1, progress: bool = False,
            timeout: float | None = None, **worker_options: Any) -> Iterator[Task]:
        """Start ``procs`` local worker processes for this queue, yield finished tasks like
        ``results()``, and stop the workers afterwards (also when the loop is left early).
        ``procs=0`` is debug mode: tasks run in this process, in order, so pdb works."""
        if isinstance(procs, bool) or not isinstance(procs, int) or procs < 0:
            raise ConfigError(f"procs must be a non-negative integer, not {shown(procs)}")
        reading.check_timeout(timeout)
        if procs == 0:
            return run_inline(self.core, progress=progress, timeout=timeout)
        return self._run_workers(procs, progress, timeout, worker_options)

    def _run_workers(self, procs: int, progress: bool, timeout: float | None,
                     options: dict[str, Any]) -> Iterator[Task]:
        cmd = [sys.executable, "-m", "forrestq", "worker", "--procs", str(procs), "--queue", self.name,
               "--url", self.url, "--quiet", "--grace", "0"]
        for opt, value in options.items():
            cmd += [f"--{opt.replace('_', '-')}", str(value)]
        env = dict(os.environ)
        here = os.path.dirname(os.path.abspath(sys.argv[0])) if sys.argv and sys.argv[0] else os.getcwd()
        env["PYTHONPATH"] = os.pathsep.join(p for p in (here, os.getcwd(), env.get("PYTHONPATH")) if p)
        proc = subprocess.Popen(cmd, env=env, start_new_session=True)
        try:
            yield from self.results(progress=progress, timeout=timeout)
        finally:
            stop_worker(proc)

    # --- seed-tool habits (map, once, put); the code and its documentation live in their modules ---
    def map(self, fn: Callable[..., Any], inputs: Iterable[Any], *, progress: Any = True,
            return_exceptions: bool = False, fail_fast: bool = False, chunksize: int | None = None,
            timeout: float | None = None, transient: bool = False, **options: Any) -> list[Any]:
        """``[fn(x) for x in inputs]`` as tasks, results in input order (JobRunner's ``run_jobs``).
        The first failure in input order is raised (its original type, remote traceback attached as a
        note) once all have run; ``fail_fast`` raises at once and cancels the rest;
        ``return_exceptions`` puts exceptions in place. ``chunksize``: inputs per task. ``progress``:
        True/False or a rich Progress to add a row to; ``transient`` removes the bar at the end.
        ``timeout``: seconds without progress. See :func:`forrestq.mapping.map`."""
        return mapping.map(self.core, fn, inputs, progress=progress, return_exceptions=return_exceptions,
                           fail_fast=fail_fast, chunksize=chunksize, timeout=timeout, transient=transient,
                           **options)

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

    def iterate(self, keys: Iterable[Any], lease: float = 60, version: int = 0, **options: Any) -> Iterator[Any]:
        """``for key in q.iterate(keys):`` from many processes and machines: each key's body runs in
        one process; completed keys are skipped for good; a dead process's key is taken again after
        ``lease`` seconds. The body finishing confirms its key, raising (or ``break``) releases it.
        ``version``: bump to recompute. See :func:`forrestq.once.iterate`."""
        return once.iterate(self.core, keys, lease, version, **options)

    def once(self, key: Any, lease: float = 60, version: int = 0, **options: Any) -> Any:
        """Decorator: the call runs only if ``key`` is neither done nor running elsewhere and returns
        ``(Status, value)`` (``forrestq.once.Status``: COMPUTE_OK, COMPUTE_ERROR, SKIP_OK,
        SKIP_IN_PROGRESS)."""
        return once.once(self.core, key, lease, version, **options)

    def notify_success(self, key: Any, version: int = 0) -> None:
        """Mark a key this process holds (``iterate``) as done now."""
        once.notify_success(self.core, key, version)

    def notify_failure(self, key: Any, version: int = 0) -> bool:
        """Give a key this process holds back at once; returns whether it held it."""
        return once.notify_failure(self.core, key, version)


codec.never_send(Queue, "a Queue", "pass the queue's name (and url) and open Queue(name) inside the task")


def stop_worker(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM a worker process (running tasks are handed back after its grace), SIGKILL its group if it hangs."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
