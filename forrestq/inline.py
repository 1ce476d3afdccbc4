"""Debug mode: run a queue's tasks in the calling process, one at a time, in order.

``run_inline(q)`` is what ``q.run(procs=0)`` and a ``Queue(name, local=True)`` use. It claims the
queue's ready tasks with the same Lua scripts as a worker child (``claim.lua``, ``complete.lua``:
same fencing token, same counters, same records), but calls each task's function right here: no
child process, no output capture, no timeout, so ``breakpoint()`` and ``pdb`` work, and a failed
task's ``errorvalue`` is the *live* exception, ``__traceback__`` included, for
``pdb.post_mortem(task.errorvalue.__traceback__)``.

It yields every root task that finishes, like ``Queue.results()``: the ones it ran (right after
running each, so the loop body runs between tasks) and any that fail because an input failed or that
finish elsewhere. It returns once no root task of the queue is left unfinished; while none is ready
here but some still run on a worker elsewhere it waits for them (``timeout``: seconds without progress
before ``TimeoutError``).

Ctrl-C (or quitting pdb) inside a task hands the task back to the queue (``release.lua``) and
propagates. The task's lease is renewed in a background thread while its function runs, so a long
pause at a breakpoint does not let a worker elsewhere take the task over.
"""
from __future__ import annotations

import asyncio
import bdb
import inspect
import os
import socket
import functools
import threading
import time
from collections.abc import Iterator
from typing import Any

from . import codec
from .child import Child, ChildConfig
from .schema import GROUP
from .mapping import fetch_records
from .task import Task

__all__ = ["run_inline"]

LEASE_MS = 30_000


class _Renewer:
    """Renews one task's lease every lease/3 while its function runs here."""

    def __init__(self, q: Any, task_id: str, token: str) -> None:
        self.q, self.key, self.token = q, q.keys.lease(task_id), token
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="forrestq-inline-renew", daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(LEASE_MS / 3000):
            try:
                self.q.scripts.renew(keys=[self.key], args=[LEASE_MS, self.token])
            except Exception:  # noqa: BLE001 - Redis away for a moment: try at the next beat
                pass

    def __enter__(self) -> "_Renewer":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        self.thread.join()


def _ensure_group(q: Any) -> None:
    try:
        q.r.execute_command("XGROUP", "CREATE", q.keys.stream, GROUP, "0", "MKSTREAM")
    except Exception as exc:  # noqa: BLE001
        if "BUSYGROUP" not in str(exc):
            raise


def run_inline(q: Any, progress: bool = False, timeout: float | None = None,
               since: str = "0") -> Iterator[Task]:
    """Run ``q``'s ready tasks here and yield its finished root tasks (see the module doc).
    ``since``: read the queue's finished stream after this entry id ("0": every root finished so far,
    as ``results()`` does)."""
    from .progress import ResultsProgress
    from . import shared

    shared.register_queue(q)  # shared inputs load through this queue's client
    _ensure_group(q)
    host = socket.gethostname()
    consumer = f"inline:{host}:{os.getpid()}"
    k = q.keys
    live: dict[str, BaseException] = {}  # task id -> the exception raised here
    seen: dict[str, int] = {}
    last = since
    deadline = None if timeout is None else time.monotonic() + timeout

    def drain() -> Iterator[Task]:
        nonlocal last, deadline
        while True:
            entries = q.r.xread({k.finished: last}, count=1000)
            if not entries:
                return
            batch = entries[0][1]
            sid = batch[-1][0]
            last = sid.decode() if isinstance(sid, bytes) else sid
            wanted: dict[str, int] = {}
            for _, f in batch:
                tid, gen = f[b"t"].decode(), int(f.get(b"g", b"0"))
                if seen.get(tid, -1) < gen:
                    wanted[tid] = gen
            for task in fetch_records(q, list(wanted)):
                tid = task.id
                if task.state not in ("done", "failed") or task.generation != wanted[tid] \
                        or seen.get(tid, -1) >= task.generation:
                    continue
                seen[tid] = task.generation
                if task.state == "failed":
                    _attach_live(task, live)
                bar.advance(task)
                if deadline is not None:
                    deadline = time.monotonic() + timeout
                yield task

    runner = _InlineChild(q, host, consumer)

    def claim(sid: str) -> list[Any] | None:
        token = os.urandom(8).hex()
        got = q.scripts.claim(keys=k.claim_keys(), args=runner._claim_args(k, token, sid))
        if not got or got[0] == b"skip":
            return None
        return [token, *got]

    def run(token: str, got: list[Any]) -> None:
        task_id = got[0].decode()
        runner.live = runner.interrupt = None
        with _Renewer(q, task_id, token):
            outcome = runner.run(k, got)
        if runner.interrupt is not None:
            q.scripts.release(keys=[k.stream, k.counts], args=[k.prefix, GROUP, task_id, token])
            raise runner.interrupt
        if runner.live is not None:
            live[task_id] = runner.live
        q.scripts.complete(keys=k.complete_keys(),
                           args=runner._complete_args(k, task_id, token, outcome, b""))

    bar = ResultsProgress(q, enabled=progress)
    with bar:
        while True:
            yield from drain()
            got = claim("")
            if got is not None:
                run(got[0], got[1:])
                continue
            open_n = int(q.r.hget(k.counts, "open") or 0)
            bar.update(len(seen), max(open_n, 0))
            if open_n <= 0:
                yield from drain()
                return
            # roots unfinished but nothing ready here: they wait on tasks running elsewhere
            block = 500
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no task of queue {q.name!r} finished for {timeout} s "
                                       f"({open_n} still unfinished, none ready here)")
                block = max(1, min(block, int(left * 1000)))
            read = q.r.xreadgroup(GROUP, consumer, {k.stream: ">"}, count=1, block=block)
            for _, entries in read or ():
                sid = entries[0][0]
                got = claim(sid.decode() if isinstance(sid, bytes) else sid)
                if got is not None:
                    run(got[0], got[1:])


class _InlineChild(Child):
    """A worker child's claim/run/complete logic (same ARGV, same outcomes, retries included), used
    in this process: no fork, no output capture; the task's function is wrapped to keep its live
    exception, and Ctrl-C or quitting pdb propagates instead of failing the task."""

    def __init__(self, q: Any, host: str, consumer: str) -> None:  # no super(): no connect, no capture
        self.cfg = ChildConfig(url=q.url, queues=[q.name], worker_id=consumer, consumer=consumer,
                               host=host, lease_ms=LEASE_MS)
        self.r = q.r
        self.scripts = q.scripts
        self.keys = [q.keys]
        self.fns: dict[bytes, Any] = {}
        self.modules: dict[str, Any] = {}
        self.pending = None
        self.token = ""
        self.tasks_run = 0
        self.live: BaseException | None = None
        self.interrupt: BaseException | None = None

    def load_fn(self, k: Any, sha: bytes) -> Any:
        fn = self.fns.get(sha)
        if fn is None:
            blob = self.r.get(k.fn(sha.decode()))
            if blob is None:
                raise LookupError(f"function blob {sha.decode()} is missing from the queue")
            fn = self.fns[sha] = codec.load_fn(blob, host=self.cfg.host)
        return functools.partial(_call_here, self, fn)


def _call_here(runner: _InlineChild, fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        value = fn(*args, **kwargs)
        if inspect.iscoroutine(value):
            value = asyncio.run(value)
        return value
    except (KeyboardInterrupt, bdb.BdbQuit) as exc:
        runner.interrupt = exc
        raise
    except BaseException as exc:
        runner.live = exc
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
