"""A joblib parallel backend named ``forrestq``: joblib's ``Parallel`` (and so scikit-learn's ``n_jobs``)
running its batches as tasks of a forrestq queue, on every worker of every host.

::

    import joblib
    import forrestq.joblib_backend  # registers the backend "forrestq"

    with joblib.parallel_config(backend="forrestq", queue="fits"):
        results = joblib.Parallel(n_jobs=-1)(joblib.delayed(fit)(x) for x in xs)
        GridSearchCV(model, grid, n_jobs=-1).fit(X, y)

Why this name and not ``forrestq.joblib``: a module called ``joblib.py`` inside the package is the
real joblib for anything that runs with ``forrestq/`` on its import path (a script started from that
directory, a tool handed the file), and ``import joblib`` in it would import itself there. Importing
it imports joblib, an optional dependency: ``import forrestq`` does not import this module.

The backend's options (``parallel_config(backend="forrestq", ...)``): ``queue`` (a name or a
:class:`~forrestq.queue.Queue`; default ``"default"``), ``url`` (default ``$FORRESTQ_URL``, else
the embedded server), ``procs`` (N local warm workers for each ``Parallel`` call, or the warm ones of
an open ``with q.workers():`` block; default none: the workers serving the queue), ``worker_options``
and the options of ``Queue.schedule`` (``timeout``, ``resources``, ``max_attempts``...) for every task.

How it runs: each batch of calls joblib makes is one task, submitted through a
:class:`~forrestq.executor.QueueExecutor` (one per ``Parallel`` call; its one reader thread settles
the futures and runs joblib's callbacks, which dispatch the next batches); joblib's automatic batch
sizing (:class:`~joblib._parallel_backends.AutoBatchingMixin`) makes batches that take about
:attr:`MIN_IDEAL_BATCH_DURATION` s or more, so that a loop of tiny calls does not pay the queue's
per-task cost per call. ``n_jobs=-1`` means every process of the live workers serving the queue
(their ``procs`` summed; ``-2`` one fewer, as joblib counts), never fewer than 2 for a negative
``n_jobs``: joblib runs a loop of one job in the caller, and the point of this backend is that the
work runs on the workers. With no live worker yet: ``procs``, else this machine's CPU count; the
tasks wait in the queue for a worker. ``n_jobs=1`` runs in the caller, as with every joblib backend.
``return_as="generator"`` and ``Parallel(timeout=)`` work; an exception in a task is raised in the
caller, its own type, with the remote traceback attached as a note. When joblib aborts (a task
failed, a generator was dropped) the batches not finished are cancelled (running ones killed).

Nested loops: a ``Parallel`` inside a task runs sequentially in the task's process (joblib's
``SequentialBackend``), rather than flooding the queue with tasks that wait for each other, or
starting threads a worker did not budget for.
"""
from __future__ import annotations

import os
from typing import Any

# joblib ships no types (and is an optional dependency): taken as untyped, as redis and dill are
from joblib import register_parallel_backend  # type: ignore[import-untyped,import-not-found,unused-ignore]
from joblib._parallel_backends import (  # type: ignore[import-untyped,import-not-found,unused-ignore]
    # the base classes joblib's own backends (and dask's) build on
    AutoBatchingMixin,
    FallbackToBackend,
    ParallelBackendBase,
    SequentialBackend,
)

from . import schema
from .executor import QueueExecutor, TaskFuture
from .queue import Queue
from .reading import worker_serves

__all__ = ["ForrestqBackend", "NAME", "live_procs"]

NAME = "forrestq"


def _run_batch(batch: Any) -> Any:
    """The task function of one joblib batch (a ``joblib.parallel.BatchedCalls``, which sets the
    nested backend around its calls)."""
    return batch()


def live_procs(queue: Queue) -> int:
    """How many task processes the live workers serving ``queue`` have (their ``procs`` summed)."""
    r = queue.r
    ids = r.zrange(schema.WORKERS, 0, -1)
    if not ids:
        return 0
    pipe = r.pipeline(transaction=False)
    for wid in ids:
        pipe.hmget(schema.worker(wid.decode()), schema.WORKER_QUEUES, schema.WORKER_STOPPING,
                   schema.WORKER_REFUSING, schema.WORKER_PROCS)
    return sum(int(procs or 0) for queues, stopping, refusing, procs in pipe.execute()
               if worker_serves(queues, stopping, refusing, queue.name))


class ForrestqBackend(AutoBatchingMixin, ParallelBackendBase):  # type: ignore[misc]
    """The ``forrestq`` joblib backend (see the module doc)."""

    supports_retrieve_callback = True  # futures with callbacks: return_as="generator", timeouts
    uses_threads = False
    supports_sharedmem = False
    default_n_jobs = -1  # n_jobs=None (scikit-learn's default) inside parallel_config: every worker

    def __init__(self, queue: str | Queue = "default", url: str | None = None, procs: int | None = None,
                 worker_options: dict[str, Any] | None = None, nesting_level: int | None = None,
                 inner_max_num_threads: int | None = None, **schedule_options: Any) -> None:
        super().__init__(nesting_level=nesting_level, inner_max_num_threads=inner_max_num_threads)
        self.queue_spec = queue
        self.url = url
        self.procs = procs
        self.worker_options = worker_options
        self.schedule_options = schedule_options
        self._queue: Queue | None = queue if isinstance(queue, Queue) else None
        self.executor: QueueExecutor | None = None

    @property
    def queue(self) -> Queue:
        """The queue the batches go to (attached on first use)."""
        if self._queue is None:
            self._queue = Queue(str(self.queue_spec), self.url)
        return self._queue

    def effective_n_jobs(self, n_jobs: int | None) -> int:
        if n_jobs == 0:
            raise ValueError("n_jobs == 0 in Parallel has no meaning")
        if n_jobs is None:
            n_jobs = self.default_n_jobs
        if n_jobs > 0:
            return n_jobs
        slots = live_procs(self.queue) or self.procs or os.cpu_count() or 1
        return max(2, slots + 1 + n_jobs)

    def configure(self, n_jobs: int | None = 1, parallel: Any = None, prefer: Any = None, require: Any = None,
                  **backend_kwargs: Any) -> int:
        n = self.effective_n_jobs(n_jobs)
        if n == 1:
            raise FallbackToBackend(SequentialBackend(nesting_level=self.nesting_level))
        self.parallel = parallel
        if self.executor is None:
            self.executor = self.queue.executor(self.procs, self.worker_options, **self.schedule_options)
        return n

    def submit(self, func: Any, callback: Any = None) -> TaskFuture:
        assert self.executor is not None, "configure() comes first"
        future = self.executor.submit(_run_batch, func)
        if callback is not None:
            future.add_done_callback(callback)
        return future

    def retrieve_result_callback(self, out: TaskFuture) -> Any:
        return out.result()

    def get_nested_backend(self) -> tuple[ParallelBackendBase, int | None]:
        return SequentialBackend(nesting_level=(self.nesting_level or 0) + 1), None

    def abort_everything(self, ensure_ready: bool = True) -> None:
        """Cancel the batches not finished (running ones are killed); a fresh executor if joblib goes on."""
        self._stop()
        if ensure_ready and self.parallel is not None:
            self.configure(n_jobs=self.parallel.n_jobs, parallel=self.parallel, **self.parallel._backend_kwargs)

    def terminate(self) -> None:
        self._stop()
        self.reset_batch_stats()

    def _stop(self) -> None:
        executor, self.executor = self.executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)


register_parallel_backend(NAME, ForrestqBackend)
