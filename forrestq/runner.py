"""Running one task: load its function and arguments, call it, and say what happened.

This is the one place that turns a claimed task into an :class:`Outcome`. A worker child runs every
task through a :class:`Runner`, and so does debug mode (:mod:`forrestq.debug`), with one step
swapped. ``Queue.run_here`` and map chunks use :func:`invoke` (call, and await a coroutine).

A runner's steps, each a method::

    loaded = runner.load(k, claimed)        # the function (cached, stale-code check) and arguments,
                                            # or the Outcome of failing to load them
    outcome = runner.call(claimed, loaded)  # invoke; then returned() or raised() make the Outcome
    completion(claimed, outcome, output, host)   # what complete.lua records

What an outcome can be:

* ``done``: the task returned a value that could be serialised and stored;
* ``failed``: it raised (no retry policy matched), its payload could not be loaded, or its return
  value could not be serialised or is too big for Redis;
* ``retry``: it raised an exception its retry policy names, with retries left (``delay`` seconds);
* ``continued`` (:data:`~forrestq.schema.CONTINUED`): it returned a deferred tree (``defer(...)``, or a
  part of one): the task is not done but continues as that tree, whose result becomes its own
  (``tree`` holds it; a worker child plans and records it, :mod:`forrestq.worker.continuation`);
* ``release`` (:data:`RELEASE`): not run, because the module of its function changed on disk since
  this process imported it; the task is handed back for a fresh process;
* ``refused`` (:data:`REFUSED`): not run, because this host cannot load it while another host might
  (a worker child's decision, see :mod:`forrestq.worker.refusals`): handed back, nothing recorded.

A failure to load that may be this host's fault rather than the task's is marked on the outcome
(``refusal``: :data:`MISSING_IMPORT` for a module or name missing here, :data:`BAD_SIGNATURE` for a
payload that fails this process's signature check); a worker child hands such a task to another host,
debug mode and ``run_here`` record the failure as it is.

The runner never talks to Redis except to fetch a function blob (through the ``fetch`` callable it
is given) and what the task itself asks for through :mod:`forrestq.context` (its metadata, its
progress), and imports nothing of the worker, the queue or the producer. Around every call it makes
the task the current one of its context (:func:`forrestq.current_task`; see :mod:`forrestq.context`).
"""
from __future__ import annotations

import asyncio
import inspect
import os
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

import redis

from . import codec, ops
from .context import Current, Where, enter, leave
from .deferred import Deferred
from .errors import SignatureMismatch, StaleCode, WorkerImportError
from .schema import CONTINUED, DONE, FAILED, RETRY, QueueKeys

__all__ = ["BAD_SIGNATURE", "MISSING_IMPORT", "REFUSED", "RELEASE", "RESULT_LIMIT", "Loaded", "Outcome", "Runner",
           "completion", "discard", "invoke", "one_line", "unrecordable"]

RELEASE = "release"  # an outcome that is not recorded: the task is handed back (stale code)
REFUSED = "refused"  # an outcome that is not recorded: this host could not load it, another may
MISSING_IMPORT = "import"  # Outcome.refusal: a module or name the task needs is missing on this host
BAD_SIGNATURE = "signature"  # Outcome.refusal: a payload failed this process's signature check
RESULT_LIMIT = 500 << 20  # bytes: Redis refuses a bulk string past proto-max-bulk-len (512 MB)


def invoke(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Call ``fn``, and run the coroutine to its end if it returned one (``async def`` tasks)."""
    value = fn(*args, **kwargs)
    if inspect.iscoroutine(value):
        value = asyncio.run(value)
    return value


@dataclass
class Outcome:
    """What became of one run of a task (see the module doc for the states)."""

    state: str  # DONE | FAILED | RETRY | CONTINUED | RELEASE | REFUSED
    result: bytes = b""
    error: bytes = b""
    traceback: str = ""
    reason: str = ""
    runtime: float = 0.0
    delay: float = 0.0  # with RETRY: seconds before the task may run again
    exc: BaseException | None = None  # what the task's code raised, live (for debug mode)
    refusal: str = ""  # FAILED to load for a reason of this host: MISSING_IMPORT | BAD_SIGNATURE
    cpu_time: float = 0.0  # s, measured by a worker child (forrestq.worker.forensics)
    peak_rss: int = 0  # bytes, likewise
    tree: Any = None  # with CONTINUED: the deferred tree the task returned
    continuation: tuple[str, list[ops.Node]] | None = None  # ... planned: its root id and nodes


class Loaded(NamedTuple):
    """A task's function and arguments, ready to call."""

    fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    queue: str = ""  # the queue's name (what current_task() says)


async def _within(current: Current, coro: Any) -> Any:
    """Await ``coro`` as the task ``current``: set in this asyncio task's own copy of the context."""
    enter(current)
    try:
        return await coro
    finally:
        current.finish()


def discard(coro: Any) -> None:
    """Close a coroutine :meth:`Runner.start` returned that will never run (none of its code ran),
    and the task's coroutine inside it, so that neither warns that it was never awaited."""
    frame = getattr(coro, "cr_frame", None)
    inner = frame.f_locals.get("coro") if frame is not None else None
    coro.close()
    if inspect.iscoroutine(inner):
        inner.close()


def one_line(exc: BaseException) -> str:
    """``Type: first line of the message``: a failure reason a person can read in a listing."""
    try:
        msg = str(exc).strip().splitlines()
    except Exception:  # noqa: BLE001 - a broken __str__ must not lose the failure
        msg = ["<str() of the exception failed>"]
    return f"{type(exc).__name__}: {msg[0]}" if msg else type(exc).__name__


def failure(exc: BaseException, reason: str, runtime: float = 0.0) -> Outcome:
    """A failed outcome for ``exc``, with its traceback (also outside the ``except`` block: a
    coroutine task's exception comes back from its future)."""
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return Outcome(FAILED, error=codec.dump_exception(exc), traceback=text, reason=reason, runtime=runtime)


def completion(claimed: ops.Claimed, outcome: Outcome, output: bytes = b"", host: str = "",
               pid: int = 0) -> ops.Completion:
    """What complete.lua records for ``outcome`` of the attempt ``claimed`` (fenced by its token)."""
    # positional, in the field order of ops.Completion (once per task: keywords cost 3x here);
    # tests/test_runner.py checks every field lands where it belongs
    c = ops.Completion(claimed.id, claimed.token, outcome.state, outcome.result, outcome.error,
                       outcome.traceback, outcome.reason, outcome.runtime, output, host, outcome.delay,
                       False, outcome.cpu_time, outcome.peak_rss, pid)
    if outcome.continuation is not None:
        c.continuation = outcome.continuation
    return c


def unrecordable(c: ops.Completion, refusal: BaseException) -> ops.Completion:
    """The failure record that replaces a completion the server refused for good (a result too big
    for the server's limits, a broken blob): same attempt, same timings, no payload."""
    reason = f"could not record the result: {one_line(refusal)}"
    return replace(c, outcome=FAILED, result=b"", error=codec.dump_exception(RuntimeError(reason)),
                   traceback="", reason=reason, output=b"", delay=0.0, continuation=None)


def _mtime(fn: Any) -> int | None:
    """Modification time of the source file of the module that defines ``fn`` (None if it has none).
    One stat per task: cheap, and a re-run right after an edit must see the edit."""
    module = sys.modules.get(getattr(fn, "__module__", None) or "")
    path = getattr(module, "__file__", None)
    if not path:
        return None
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


class Runner:
    """Loads, calls and judges tasks in this process (see the module doc).

    ``fetch(key)`` reads a function blob from Redis (a worker child passes one that waits out an
    outage). ``stale_check``: hand a task back (:data:`RELEASE`) when the module of its function
    changed on disk since this process imported it — right for a worker child, which a fresh one
    replaces; wrong for debug mode, which runs in the user's own process. ``where``: what the tasks'
    :class:`~forrestq.context.TaskContext` says of where they run (its URL, the worker's limits, debug
    mode); without it, progress is kept in memory only."""

    def __init__(self, fetch: Callable[[str], bytes | None], host: str, *, stale_check: bool = True,
                 where: Where | None = None) -> None:
        self.fetch = fetch
        self.host = host
        self.stale_check = stale_check
        self.where = where or Where("", host, record=False)
        self.fns: dict[bytes, Callable[..., Any]] = {}  # function blob sha -> the loaded function
        self.modules: dict[str, int | None] = {}  # module name -> source mtime when first used

    # --- step 1: load -------------------------------------------------------------------------
    def load_fn(self, k: QueueKeys, sha: bytes) -> Callable[..., Any]:
        """The function of blob ``sha`` (cached); raises StaleCode if its module changed on disk."""
        fn = self.fns.get(sha)
        if fn is None:
            blob = self.fetch(k.fn(sha.decode()))
            if blob is None:
                raise LookupError(f"function blob {sha.decode()} is missing from the queue")
            fn = self.fns[sha] = codec.load_fn(blob, host=self.host)
            if self.stale_check:
                self.modules.setdefault(getattr(fn, "__module__", None) or "", _mtime(fn))
        elif self.stale_check and self.modules.get(getattr(fn, "__module__", None) or "") != _mtime(fn):
            raise StaleCode(f"the source of {getattr(fn, '__module__', '?')} changed since this process "
                            "imported it")
        return fn

    def load(self, k: QueueKeys, claimed: ops.Claimed) -> Loaded | Outcome:
        """The task's function and arguments, or the failure to load them (or RELEASE: stale code).
        A lost connection to Redis propagates: it is not the task's fault."""
        try:
            fn = self.load_fn(k, claimed.fn_sha)
            inputs = [codec.load_input(b) for b in claimed.inputs]  # Failed for an allow-failed one's failed input
            args, kwargs = codec.load_args(claimed.args, inputs)
            return Loaded(fn, args, kwargs, k.name)
        except StaleCode as e:
            return Outcome(RELEASE, reason=str(e))
        except (redis.ConnectionError, redis.TimeoutError):
            raise
        except Exception as e:  # noqa: BLE001 - any failure to load is the task's failure
            outcome = failure(e, f"could not load task payload: {one_line(e)}")
            if isinstance(e, SignatureMismatch):
                outcome.refusal = BAD_SIGNATURE
            elif isinstance(e, WorkerImportError):
                outcome.refusal = MISSING_IMPORT
            return outcome

    # --- step 2: call -------------------------------------------------------------------------
    def call(self, claimed: ops.Claimed, loaded: Loaded) -> Outcome:
        """Run the user's code (awaited if it is a coroutine), the task current in its context, and
        judge what it returned or raised."""
        t0 = time.perf_counter()
        current = Current(self.where, loaded.queue, claimed, t0)
        token = enter(current)
        try:
            value = invoke(loaded.fn, loaded.args, loaded.kwargs)
        except BaseException as e:  # noqa: BLE001 - SystemExit and KeyboardInterrupt in user code too
            return self.raised(claimed, e, t0)
        finally:
            leave(token)
            current.finish()
        return self.returned(value, t0)

    def start(self, claimed: ops.Claimed, loaded: Loaded, t0: float) -> Any:
        """Call the task's function, the task current in its context, without awaiting what it returns
        (a worker child's coroutine lanes do): a coroutine comes back wrapped so that wherever it runs
        it is the current task of its own asyncio task (and flushes its progress when it ends); close
        one that never runs with :func:`discard`. Raises what the function raised."""
        current = Current(self.where, loaded.queue, claimed, t0)
        token = enter(current)
        try:
            value = loaded.fn(*loaded.args, **loaded.kwargs)
        except BaseException:
            current.finish()
            raise
        finally:
            leave(token)
        if inspect.iscoroutine(value):
            return _within(current, value)
        current.finish()
        return value

    def run(self, k: QueueKeys, claimed: ops.Claimed) -> Outcome:
        """Load and call: the outcome of one attempt."""
        loaded = self.load(k, claimed)
        return loaded if isinstance(loaded, Outcome) else self.call(claimed, loaded)

    # --- step 3: judge ------------------------------------------------------------------------
    def raised(self, claimed: ops.Claimed, e: BaseException, t0: float) -> Outcome:
        """The outcome of a task that raised ``e`` (call it inside the ``except`` block): failed, or
        retry when its policy says so. ``t0``: ``time.perf_counter()`` when the code started."""
        outcome = failure(e, one_line(e), time.perf_counter() - t0)
        outcome.exc = e
        if claimed.retry_policy:  # (retries, backoff, exception types)
            try:
                retries, backoff, retry_on = codec.loads(claimed.retry_policy)
            except Exception as bad:  # noqa: BLE001 - a bad policy (e.g. a bad signature): no retry
                outcome.reason += f" (retry policy not loaded: {one_line(bad)})"
                return outcome
            used = claimed.retries_used
            if used < retries and isinstance(e, retry_on):
                outcome.state, outcome.delay = RETRY, backoff * 2 ** used
        return outcome

    def returned(self, value: Any, t0: float) -> Outcome:
        """The outcome of a task that returned ``value``: done, unless the value cannot be stored;
        CONTINUED when it is a deferred tree (only the value itself is looked at, not what it holds:
        a list of deferred values is a value; ``defer(list_of, *ts)`` makes one tree of them)."""
        runtime = time.perf_counter() - t0
        if isinstance(value, Deferred):
            return Outcome(CONTINUED, runtime=runtime, tree=value)
        try:
            result = codec.dumps(value)
        except Exception as e:  # noqa: BLE001
            return failure(e, f"could not serialise the return value: {one_line(e)}", runtime)
        if len(result) > RESULT_LIMIT:
            big = ValueError(f"the return value takes {len(result) >> 20} MiB serialised; "
                             f"Redis takes at most {RESULT_LIMIT >> 20} MiB")
            return failure(big, f"could not store the return value: {one_line(big)}", runtime)
        return Outcome(DONE, result=result, runtime=runtime)
