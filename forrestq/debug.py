"""Debug mode: run a queue's tasks in the calling process, one at a time, in order.

``run_inline(q)`` is what ``q.run(procs=0)`` and a ``Queue(name, local=True)`` use. It claims the
queue's ready tasks with the same Lua scripts as a worker child (claim, complete: same fencing token,
same counters, same records) and runs each through the same :class:`~forrestq.runner.Runner`, with
one step swapped (:class:`DebugRunner`), right here: no child process, no output capture, no
timeout, so ``breakpoint()`` and ``pdb`` work, and a failed task's ``errorvalue`` is the *live*
exception, ``__traceback__`` included, for ``pdb.post_mortem(task.errorvalue.__traceback__)``.

It yields every root task that finishes, like ``Queue.results()``: the ones it ran (right after
running each, so the loop body runs between tasks) and any that fail because an input failed or that
finish elsewhere (followed with :class:`forrestq.reading.Follower`). It returns once no root task of
the queue is left unfinished; while none is ready here but some still run on a worker elsewhere it
waits for them (``timeout``: seconds without progress before ``TimeoutError``).

Ctrl-C (or quitting pdb) inside a task hands the task back to the queue (release) and propagates.
The task's lease is renewed by a :class:`forrestq.lease.Renewer` thread while its function runs, so a
long pause at a breakpoint does not let a worker elsewhere take the task over.
"""
from __future__ import annotations

import bdb
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager

import redis

from . import lease, ops, producer, reading, shared
from .bars import ResultsProgress
from .context import Where
from .core import QueueCore
from .runner import Outcome, Runner, completion
from .schema import FAILED, GROUP
from .task import Task

__all__ = ["DebugRunner", "run_inline"]

LEASE_MS = 30_000
WAIT_MS = 500  # longest wait for a task to become ready here while roots are unfinished elsewhere
INTERRUPTS = (KeyboardInterrupt, bdb.BdbQuit)  # the user stopping, not the task failing

# one renewer thread for the process, started at the first task run here
_renewer = lease.Renewer("forrestq-debug-renew")
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_renewer.after_fork)


class DebugRunner(Runner):
    """The worker's runner with one step swapped: in :meth:`raised`, Ctrl-C or quitting pdb is the
    user stopping, not the task's failure: it propagates (the task is handed back). Everything else
    (the live exception on the outcome, retry policies, serialisation failures) is the worker's."""

    def raised(self, claimed: ops.Claimed, e: BaseException, t0: float) -> Outcome:
        if isinstance(e, INTERRUPTS):
            raise e
        return super().raised(claimed, e, t0)


def run_inline(q: QueueCore, progress: bool = False, timeout: float | None = None,
               since: str = "0") -> Iterator[Task]:
    """Run ``q``'s ready tasks here and yield its finished root tasks (see the module doc).
    ``since``: read the queue's finished stream after this entry id ("0": every root finished so far,
    as ``results()`` does)."""
    shared.register_queue(q)  # shared inputs load through this queue's client
    session = _Session(q, timeout, since)
    with ResultsProgress(q.name, enabled=progress) as bar:
        while True:
            yield from session.finished(bar)
            claimed = session.claim()
            if claimed is not None:
                session.run(claimed)
                continue
            open_n = session.follower.open_roots()
            bar.update(len(session.follower.seen), open_n)
            if open_n <= 0:
                yield from session.finished(bar)
                return
            session.wait_for_ready(open_n)  # roots unfinished but nothing ready here: they wait on
            # tasks running elsewhere


class _Session:
    """One ``run_inline`` call: the runner, the follower of the finished stream, the live exceptions."""

    def __init__(self, q: QueueCore, timeout: float | None, since: str) -> None:
        self.q, self.k = q, q.keys
        self.timeout = timeout
        self.host = socket.gethostname()
        self.consumer = f"inline:{self.host}:{os.getpid()}"
        self.runner = DebugRunner(self._get, self.host, stale_check=False,  # the user's own process
                                  where=Where(q.url, self.host, local=True))
        self.follower = reading.Follower(q.r, q.keys, since=since, timeout=timeout)
        self.live: dict[str, BaseException] = {}  # task id -> the exception raised here
        _ensure_group(q)

    def _get(self, key: str) -> bytes | None:
        blob: bytes | None = self.q.r.get(key)
        return blob

    def finished(self, bar: ResultsProgress) -> Iterator[Task]:
        """Every root finished so far that was not yielded yet (the live exception attached)."""
        while True:
            before = self.follower.since
            tasks = self.follower.poll()
            for task in tasks:
                if task.state == FAILED:
                    _attach_live(task, self.live)
                bar.advance(task)
                yield task
            if not tasks and self.follower.since == before:
                return

    def claim(self, sid: str = "") -> ops.Claimed | None:
        """Claim the next ready task (or the one of stream entry ``sid``) for this process."""
        token = lease.new_token()
        got = ops.claim(self.q.scripts, self.k,
                        ops.ClaimArgs(self.consumer, token, LEASE_MS, self.host, self.consumer, sid))
        if not isinstance(got, ops.Claimed):
            return None
        got.token = token
        return got

    def run(self, c: ops.Claimed) -> None:
        """Run one claimed task here, its lease renewed meanwhile, and record its outcome."""
        scripts, k = self.q.scripts, self.k
        try:
            with _renewed(lease.Lease(scripts, k, k.lease(c.id), c.token, LEASE_MS)):
                outcome = self.runner.run(k, c)
        except INTERRUPTS:
            ops.release(scripts, k, ops.ReleaseArgs(c.id, c.token))
            raise
        if outcome.exc is not None:
            self.live[c.id] = outcome.exc
        outcome = producer.continuation(self.q.r, k, outcome, c.max_attempts) if outcome.tree is not None else outcome
        ops.complete(scripts, k, completion(c, outcome, b"", self.host))

    def wait_for_ready(self, open_n: int) -> None:
        """Wait (up to WAIT_MS, within the deadline) for a task to become ready here, and run it."""
        left = self.follower.check_deadline(f"no task of queue {self.q.name!r} finished for {self.timeout} s "
                                            f"({open_n} still unfinished, none ready here)")
        block = WAIT_MS if left is None else max(1, min(WAIT_MS, int(left * 1000)))
        read = self.q.r.xreadgroup(GROUP, self.consumer, {self.k.stream: ">"}, count=1, block=block)
        for _, entries in read or ():
            sid = entries[0][0]
            claimed = self.claim(sid.decode() if isinstance(sid, bytes) else sid)
            if claimed is not None:
                self.run(claimed)


@contextmanager
def _renewed(held: lease.Lease) -> Iterator[None]:
    """``held`` is renewed by the process's renewer thread while the block runs."""
    _renewer.add(held)
    try:
        yield
    finally:
        _renewer.remove(held)


def _ensure_group(q: QueueCore) -> None:
    try:
        q.r.xgroup_create(q.keys.stream, GROUP, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def _attach_live(task: Task, live: dict[str, BaseException]) -> None:
    """Give a failed task the live exception raised here (its own, or its failed input's as cause)."""
    exc = live.get(task.id)
    if exc is not None:
        task.__dict__["errorvalue"] = exc  # cached_property slot: the live object, traceback included
        return
    if task.upstream and task.upstream in live:
        try:
            err = task.errorvalue
        except Exception:  # noqa: BLE001
            return
        if err is not None and err.__cause__ is None:
            err.__cause__ = live[task.upstream]
