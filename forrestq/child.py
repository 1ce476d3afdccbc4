"""The child process: claims tasks from Redis, runs user code, records results.

A child is forked by the worker (``forrestq.worker``), sits in its own process group, and is reused for
many tasks. It talks to Redis itself (claim and completion are one Lua script each, pipelined together),
so a task costs no round trip through the parent. It tells its parent what it runs through a shared
memory ``Slot``; the parent renews leases from there, kills the process group on timeout, and records
the failure when the child dies (segfault, ``os._exit``, OOM kill) — the child never has to survive.
"""
from __future__ import annotations

import asyncio
import ctypes
import inspect
import os
import resource
import signal
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

import redis

from . import codec
from .keys import GROUP, QueueKeys
from .scripts import Scripts

OUTPUT_TAIL = 64 * 1024


class Slot(ctypes.Structure):
    """What one child is doing, in memory shared with its parent (a seqlock: odd ``seq`` = being written)."""

    _fields_ = [
        ("seq", ctypes.c_uint64),
        ("busy", ctypes.c_uint8),
        ("stop", ctypes.c_uint8),  # set by the parent: finish the current task, then exit
        ("queue", ctypes.c_uint16),
        ("started", ctypes.c_double),
        ("timeout", ctypes.c_double),
        ("done", ctypes.c_uint64),
        ("failed", ctypes.c_uint64),
        ("task", ctypes.c_char * 64),
        ("token", ctypes.c_char * 24),
    ]

    def begin(self, queue: int, task: str, token: str, timeout: float) -> None:
        self.seq += 1
        self.queue, self.task, self.token = queue, task.encode(), token.encode()
        self.timeout, self.started, self.busy = timeout, time.time(), 1
        self.seq += 1

    def end(self, ok: bool | None) -> None:
        """The task ended: done (True), failed (False), or handed back (None)."""
        self.seq += 1
        self.busy = 0
        if ok:
            self.done += 1
        elif ok is not None:
            self.failed += 1
        self.seq += 1

    def read(self) -> tuple[bool, int, str, str, float, float]:
        """A consistent copy of (busy, queue, task, token, started, timeout)."""
        while True:
            s1 = self.seq
            if s1 % 2 == 0:
                got = (bool(self.busy), self.queue, self.task.decode(), self.token.decode(),
                       self.started, self.timeout)
                if self.seq == s1:
                    return got


@dataclass
class ChildConfig:
    url: str
    queues: list[str]
    worker_id: str
    consumer: str
    host: str
    lease_ms: int
    autokill: float = 0.0  # 0 = none
    max_memory: int = 0  # bytes of address space, 0 = unlimited
    max_tasks: int = 0  # tasks before the child is replaced, 0 = unlimited
    max_rss: int = 0  # bytes: a child that grew past this after a task is replaced, 0 = unlimited
    logfile: str | None = None
    verbose: int = 0
    block_ms: int = 500
    log_fd: int = 2  # the worker's stderr, for task-end lines
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Outcome:
    state: str  # done | failed | retry
    result: bytes = b""
    error: bytes = b""
    traceback: str = ""
    reason: str = ""
    runtime: float = 0.0
    delay: float = 0.0  # with state "retry": seconds before the task may run again


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this child when the worker dies, so no orphan keeps a claimed task."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def one_line(exc: BaseException) -> str:
    msg = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {msg[0]}" if msg else type(exc).__name__


class Capture:
    """Sends fds 1 and 2 (and so every grandchild's output) to a scratch file during a task."""

    def __init__(self) -> None:
        self.file = tempfile.TemporaryFile(prefix="forrestq-out-")  # unlinked: nothing left behind
        self.fd = self.file.fileno()
        self.saved = (os.dup(1), os.dup(2))

    def start(self) -> None:
        os.ftruncate(self.fd, 0)
        os.lseek(self.fd, 0, os.SEEK_SET)
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(self.fd, 1)
        os.dup2(self.fd, 2)

    def stop(self) -> int:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os.dup2(self.saved[0], 1)
        os.dup2(self.saved[1], 2)
        return os.fstat(self.fd).st_size

    def tail(self, size: int) -> bytes:
        start = max(0, size - OUTPUT_TAIL)
        return os.pread(self.fd, size - start, start)

    def copy_to(self, path: str, task_id: str, size: int) -> None:
        """Append the whole output to the worker's log file, each line tagged with the task id."""
        if not size:
            return
        data = os.pread(self.fd, size, 0)
        tag = f"[{task_id}] ".encode()
        lines = b"".join(tag + line + b"\n" for line in data.splitlines())
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, lines)
        finally:
            os.close(fd)


class StaleCode(Exception):
    """A module this process imported has changed on disk: its functions must not be served any more."""


def _mtime(fn: Any) -> int | None:
    """Modification time of the source file of the module that defines ``fn`` (None if it has none)."""
    module = sys.modules.get(getattr(fn, "__module__", None) or "")
    path = getattr(module, "__file__", None)
    if not path:
        return None
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


class Child:
    """The claim/run/complete loop of one child process."""

    def __init__(self, cfg: ChildConfig, slot: Slot) -> None:
        self.cfg = cfg
        self.slot = slot
        from .connection import connect

        self.r: redis.Redis = connect(cfg.url, check=False)
        self.scripts = Scripts(self.r)
        self.keys = [QueueKeys(q) for q in cfg.queues]
        self.fns: dict[bytes, Any] = {}
        self.capture = Capture()
        self.tasks_run = 0
        self.pending: tuple[int, list[Any]] | None = None  # a completion not yet sent
        self.modules: dict[str, int | None] = {}  # module name -> source mtime when first used
        self.token = ""

    # --- Redis side -------------------------------------------------------------------------
    def _claim_args(self, k: QueueKeys, token: str, sid: str) -> list[Any]:
        c = self.cfg
        return [k.prefix, GROUP, c.consumer, token, c.lease_ms, c.host, c.worker_id, time.time(), sid]

    def _complete_args(self, k: QueueKeys, task_id: str, token: str, o: Outcome, out: bytes) -> list[Any]:
        return [k.prefix, GROUP, task_id, token, o.state, o.result, o.error, o.traceback, o.reason,
                f"{o.runtime:.6f}", time.time(), out, self.cfg.host, o.delay]

    @staticmethod
    def _complete_keys(k: QueueKeys) -> list[str]:
        return k.complete_keys()

    def next_task(self) -> tuple[int, list[Any]] | None:
        """Send the pending completion and claim the next task in one round trip; block if idle."""
        self.token = token = os.urandom(8).hex()  # the fencing token of whatever this call claims
        pipe = self.r.pipeline(transaction=False)
        if self.pending:
            qi, args = self.pending
            self.scripts.complete(keys=self._complete_keys(self.keys[qi]), args=args, client=pipe)
        # queues in the order given: the first has priority; one claim per call, never one per queue
        for qi, k in enumerate(self.keys):
            self.scripts.claim(keys=k.claim_keys(), args=self._claim_args(k, token, ""), client=pipe)
            got = pipe.execute()[-1]
            self.pending = None
            if got:
                return qi, got
            pipe = self.r.pipeline(transaction=False)
        streams = {k.stream: ">" for k in self.keys}
        read = self.r.xreadgroup(GROUP, self.cfg.consumer, streams, count=1, block=self.cfg.block_ms)
        for stream, entries in read or ():
            qi = [k.stream for k in self.keys].index(stream.decode() if isinstance(stream, bytes) else stream)
            sid = entries[0][0]
            sid = sid.decode() if isinstance(sid, bytes) else sid
            k = self.keys[qi]
            got = self.scripts.claim(keys=k.claim_keys(), args=self._claim_args(k, token, sid))
            if got and got[0] != b"skip":
                return qi, got
        return None

    # --- running ----------------------------------------------------------------------------
    def load_fn(self, k: QueueKeys, sha: bytes) -> Any:
        fn = self.fns.get(sha)
        if fn is None:
            blob = self.r.get(k.fn(sha.decode()))
            if blob is None:
                raise LookupError(f"function blob {sha.decode()} is missing from the queue")
            fn = self.fns[sha] = codec.load_fn(blob, host=self.cfg.host)
            self.modules.setdefault(getattr(fn, "__module__", None) or "", _mtime(fn))
        elif self.modules.get(getattr(fn, "__module__", None) or "") != _mtime(fn):
            raise StaleCode(f"the source of {getattr(fn, '__module__', '?')} changed since this process "
                            "imported it")
        return fn

    def run(self, k: QueueKeys, got: list[Any]) -> Outcome:
        sha, args_blob = got[2], got[3]
        t0 = time.perf_counter()
        try:
            fn = self.load_fn(k, sha)
        except StaleCode as e:
            return Outcome("release", reason=str(e))
        except Exception as e:  # noqa: BLE001 - any failure to load is the task's failure
            return Outcome("failed", error=codec.dump_exception(e), traceback=traceback.format_exc(),
                           reason=f"could not load task payload: {one_line(e)}")
        try:
            inputs = [codec.loads(b) for b in got[9:]]
            args, kwargs = codec.load_args(args_blob, inputs)
        except Exception as e:  # noqa: BLE001 - any failure to load is the task's failure
            return Outcome("failed", error=codec.dump_exception(e), traceback=traceback.format_exc(),
                           reason=f"could not load task payload: {one_line(e)}")
        try:
            value = fn(*args, **kwargs)
            if inspect.iscoroutine(value):
                value = asyncio.run(value)
        except BaseException as e:  # noqa: BLE001 - SystemExit and KeyboardInterrupt in user code too
            runtime = time.perf_counter() - t0
            state, delay = "failed", 0.0
            if got[7]:  # a retry policy: (retries, backoff, exception types)
                retries, backoff, retry_on = codec.loads(got[7])
                used = int(got[8])
                if used < retries and isinstance(e, retry_on):
                    state, delay = "retry", backoff * 2 ** used
            return Outcome(state, error=codec.dump_exception(e), traceback=traceback.format_exc(),
                           reason=one_line(e), runtime=runtime, delay=delay)
        runtime = time.perf_counter() - t0
        try:
            return Outcome("done", result=codec.dumps(value), runtime=runtime)
        except Exception as e:  # noqa: BLE001
            return Outcome("failed", error=codec.dump_exception(e), traceback=traceback.format_exc(),
                           reason=f"could not serialise the return value: {one_line(e)}", runtime=runtime)

    def log(self, line: str) -> None:
        try:
            os.write(self.cfg.log_fd, (line + "\n").encode())
        except OSError:
            pass

    def loop(self) -> None:
        cfg = self.cfg
        while not self.slot.stop:
            try:
                claimed = self.next_task()
            except (redis.ConnectionError, redis.TimeoutError) as e:
                self.log(f"child {os.getpid()}: Redis unreachable ({e}); retrying")
                time.sleep(0.5)  # the client already backed off; this bounds the retry rate
                continue
            if claimed is None:
                continue
            qi, got = claimed
            k = self.keys[qi]
            task_id, token = got[0].decode(), self.token
            timeout = float(got[4]) if got[4] else cfg.autokill
            self.slot.begin(qi, task_id, token, timeout)
            self.capture.start()
            try:
                outcome = self.run(k, got)
            finally:
                size = self.capture.stop()
            if outcome.state == "release":  # stale code: a fresh child runs it with the code as it is now
                self.scripts.release(keys=[k.stream, k.counts], args=[k.prefix, GROUP, task_id, token])
                self.slot.end(None)
                self.log(f"handed back {k.name} {task_id}: {outcome.reason}; starting a fresh process")
                break
            out = self.capture.tail(size)
            if cfg.logfile:
                self.capture.copy_to(cfg.logfile, task_id, size)
            self.pending = (qi, self._complete_args(k, task_id, token, outcome, out))
            self.slot.end(outcome.state == "done")
            if cfg.verbose >= 0:
                what = f"{outcome.runtime:.3f}s" if outcome.state == "done" else outcome.reason
                self.log(f"{outcome.state:6} {k.name} {task_id} {what}")
            self.tasks_run += 1
            if self._should_retire(outcome):
                break
        self.flush()

    def flush(self) -> None:
        """Send a completion still pending (the child is leaving)."""
        deadline = time.monotonic() + max(5.0, self.cfg.lease_ms / 1000)
        while self.pending and time.monotonic() < deadline:
            qi, args = self.pending
            try:
                self.scripts.complete(keys=self._complete_keys(self.keys[qi]), args=args)
                self.pending = None
            except (redis.ConnectionError, redis.TimeoutError):
                time.sleep(0.2)

    def _should_retire(self, outcome: Outcome) -> bool:
        cfg = self.cfg
        if cfg.max_tasks and self.tasks_run >= cfg.max_tasks:
            return True
        if outcome.reason.startswith("MemoryError"):
            return True  # the heap may be in a bad state after hitting the limit
        if cfg.max_rss:
            rss = int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
            return rss > cfg.max_rss
        return False


def child_main(cfg: ChildConfig, slot: Slot) -> None:
    """Entry point of a forked child; never returns."""
    code = 0
    try:
        os.setpgid(0, 0)
        _die_with_parent()
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the worker decides; it stops us through the slot
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.set_wakeup_fd(-1)
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        if cfg.max_memory:
            resource.setrlimit(resource.RLIMIT_AS, (cfg.max_memory, cfg.max_memory))
        Child(cfg, slot).loop()
    except BaseException:  # noqa: BLE001
        traceback.print_exc()
        code = 70
    finally:
        os._exit(code)
