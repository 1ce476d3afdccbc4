"""The child process: claims tasks from Redis, runs user code, records results.

A child is forked by the worker (``forrestq.worker``), sits in its own process group, and is reused for
many tasks. It talks to Redis itself (claim and completion are one Lua script each, pipelined together),
so a task costs no round trip through the parent. It tells its parent what it holds through a shared
memory ``Slot``; the parent renews leases from there, kills the process group on timeout, and records
the failure when the child dies (segfault, ``os._exit``, OOM kill) — the child never has to survive.

A task is held from its claim until its completion is recorded (or refused): while Redis is away the
child keeps the completion and retries it, and its lease keeps being renewed, so a computed result is
never dropped while its fencing token is current. The slot's time limit covers the user's code only.
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
from typing import Any, NamedTuple

import redis
from redis import exceptions as rx

from . import codec, shared
from .schema import GROUP, QueueKeys
from .scripts import Scripts

OUTPUT_TAIL = 64 * 1024
WAKE_EVERY = 0.2  # seconds between wake-ups of the worker while tasks keep ending
RESULT_LIMIT = 500 << 20  # bytes: Redis refuses a bulk string past proto-max-bulk-len (512 MB)
RETRY_CAP = 2.0  # seconds: longest pause between two tries while Redis is away
# Errors a server gives while it is restarting, failing over or full: try the same command again later.
TRANSIENT = (rx.ConnectionError, rx.TimeoutError, rx.OutOfMemoryError, rx.NoScriptError, rx.ReadOnlyError,
             rx.TryAgainError, rx.ClusterDownError, rx.MasterDownError)


def transient(e: BaseException) -> bool:
    return isinstance(e, TRANSIENT) or str(e).startswith(("BUSY ", "NOREPLICAS", "LOADING"))


class SlotView(NamedTuple):
    busy: bool
    queue: int
    task: str
    token: str
    attempts: int
    max_attempts: int
    started: float  # time.monotonic() when the user's code started (the clock is system-wide)
    timeout: float  # seconds allowed from ``started``, 0 = no limit (loading, recording, none set)


class Slot(ctypes.Structure):
    """What one child holds, in memory shared with its parent (a seqlock: odd ``seq`` = being written)."""

    _fields_ = [
        ("seq", ctypes.c_uint64),
        ("busy", ctypes.c_uint8),
        ("stop", ctypes.c_uint8),  # set by the parent: finish the current task, then exit
        ("queue", ctypes.c_uint16),
        ("attempts", ctypes.c_uint16),
        ("max_attempts", ctypes.c_uint16),
        ("started", ctypes.c_double),
        ("timeout", ctypes.c_double),
        ("done", ctypes.c_uint64),
        ("failed", ctypes.c_uint64),
        ("task", ctypes.c_char * 64),
        ("token", ctypes.c_char * 24),
    ]

    def begin(self, queue: int, task: str, token: str, attempts: int, max_attempts: int) -> None:
        """The child holds a task (claimed; no time limit yet)."""
        self.seq += 1
        self.queue, self.task, self.token = queue, task.encode(), token.encode()
        self.attempts, self.max_attempts = min(attempts, 65535), min(max_attempts, 65535)
        self.timeout, self.started, self.busy = 0.0, time.monotonic(), 1
        self.seq += 1

    def arm(self, timeout: float) -> None:
        """The user's code starts now, with this time limit (0 = none)."""
        self.seq += 1
        self.started, self.timeout = time.monotonic(), timeout
        self.seq += 1

    def disarm(self) -> None:
        """The user's code has ended; what is left (recording the result) has no time limit."""
        self.seq += 1
        self.timeout = 0.0
        self.seq += 1

    def end(self, ok: bool | None) -> None:
        """The child holds nothing any more: the task's completion was recorded (or refused), done
        (True) or failed (False), or the task was handed back (None)."""
        self.seq += 1
        self.busy = 0
        if ok:
            self.done += 1
        elif ok is not None:
            self.failed += 1
        self.seq += 1

    def read(self) -> SlotView:
        """A consistent copy of the slot."""
        while True:
            s1 = self.seq
            if s1 % 2 == 0:
                got = SlotView(bool(self.busy), self.queue, self.task.decode(), self.token.decode(),
                               self.attempts, self.max_attempts, self.started, self.timeout)
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
    socket_timeout: float = 30.0  # seconds without an answer before Redis counts as unreachable
    log_fd: int = 2  # the worker's stderr, for task-end lines
    parent_pid: int = 0  # the worker; 0 = do not check
    wake_fd: int = -1  # a non-blocking pipe to the worker, written when a task ends
    async_concurrency: int = 1  # coroutine tasks run at once (one slot "lane" each)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Outcome:
    state: str  # done | failed | retry | release (not run: hand it back)
    result: bytes = b""
    error: bytes = b""
    traceback: str = ""
    reason: str = ""
    runtime: float = 0.0
    delay: float = 0.0  # with state "retry": seconds before the task may run again


def prctl(option: int, arg: int) -> None:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(option, arg, 0, 0, 0)
    except (OSError, AttributeError):
        pass


PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36


def one_line(exc: BaseException) -> str:
    try:
        msg = str(exc).strip().splitlines()
    except Exception:  # noqa: BLE001 - a broken __str__ must not lose the failure
        msg = ["<str() of the exception failed>"]
    return f"{type(exc).__name__}: {msg[0]}" if msg else type(exc).__name__


def _failure(exc: BaseException, reason: str, runtime: float = 0.0) -> Outcome:
    return Outcome("failed", error=codec.dump_exception(exc), traceback=traceback.format_exc(),
                   reason=reason, runtime=runtime)


def live_children() -> list[int]:
    """Pids of this process's children still running; reaps the ones that have exited."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return []
        if pid == 0:
            break
    return own_children() or [-1]  # some child lives, but /proc does not say which


def own_children() -> list[int]:
    """Pids of this process's children (from /proc; empty where /proc does not say)."""
    found: list[int] = []
    try:
        for tid in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{tid}/children") as f:
                found += [int(p) for p in f.read().split()]
    except OSError:
        pass
    return found


def kill_tree(pids: list[int]) -> None:
    """SIGKILL these processes, and the process group of any that leads one (not ours)."""
    own = os.getpgid(0)
    for pid in pids:
        if pid <= 0:
            continue
        try:
            if os.getpgid(pid) == pid != own:
                os.killpg(pid, signal.SIGKILL)
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


class Capture:
    """Sends fds 1 and 2 (and so every grandchild's output) to a scratch file, emptied before each
    task. The child's fds stay redirected between tasks (a child runs nothing else); its own log lines
    go to ``stderr``, a copy of the worker's stderr taken before."""

    def __init__(self) -> None:
        self.file = tempfile.TemporaryFile(prefix="forrestq-out-")  # unlinked: nothing left behind
        self.fd = self.file.fileno()
        self.stderr = os.dup(2)
        self.redirected = False

    def start(self) -> None:
        if not self.redirected:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(self.fd, 1)
            os.dup2(self.fd, 2)
            self.redirected = True
        os.ftruncate(self.fd, 0)
        os.lseek(self.fd, 0, os.SEEK_SET)

    def stop(self) -> int:
        """The task ended: the size of what it wrote."""
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        return os.fstat(self.fd).st_size

    def tail(self, size: int) -> bytes:
        start = max(0, size - OUTPUT_TAIL)
        return os.pread(self.fd, size - start, start)

    def copy_to(self, path: str, task_id: str, size: int, chunk: int = 1 << 20) -> None:
        """Append the whole output to the worker's log file, each line tagged with the task id
        (read in chunks: a task may print gigabytes)."""
        if not size:
            return
        tag = f"[{task_id}] ".encode()
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            rest = b""
            for offset in range(0, size, chunk):
                lines = (rest + os.pread(self.fd, min(chunk, size - offset), offset)).split(b"\n")
                rest = lines.pop()
                if lines:
                    os.write(fd, b"".join(tag + line + b"\n" for line in lines))
            if rest:
                os.write(fd, tag + rest + b"\n")
        finally:
            os.close(fd)


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


class Backoff:
    """Pauses between tries while Redis is away: 0.05 s doubling up to RETRY_CAP."""

    def __init__(self) -> None:
        self.failures = 0

    def reset(self) -> None:
        self.failures = 0

    def pause(self) -> None:
        time.sleep(min(RETRY_CAP, 0.05 * 2 ** self.failures))
        self.failures += 1


class Child:
    """The claim/run/complete loop of one child process."""

    def __init__(self, cfg: ChildConfig, slot: Slot, lanes: list[Slot] | None = None) -> None:
        self.cfg = cfg
        self.slot = slot
        self.lanes = lanes or [slot]
        self.pid = os.getpid()
        from .connection import connect

        self.r: redis.Redis = connect(cfg.url, check=False, socket_timeout=cfg.socket_timeout)
        shared.set_client(self.r)  # shared inputs (Queue.put) load through this child's connection
        self.scripts = Scripts(self.r)
        self.keys = [QueueKeys(q) for q in cfg.queues]
        self.fns: dict[bytes, Any] = {}
        self.modules: dict[str, int | None] = {}  # module name -> source mtime when first used
        self.capture = Capture()
        self.log_fd = self.capture.stderr if cfg.log_fd == 2 else cfg.log_fd
        self.woke = 0.0
        self.tasks_run = 0
        # the completion of the task the slot holds, not recorded yet: (queue index, ARGV, state)
        self.pending: tuple[int, list[Any], str] | None = None
        self.token = ""
        self.backoff = Backoff()

    # --- Redis side -------------------------------------------------------------------------
    def _claim_args(self, k: QueueKeys, token: str, sid: str) -> list[Any]:
        c = self.cfg
        return [k.prefix, GROUP, c.consumer, token, c.lease_ms, c.host, c.worker_id, time.time(), sid]

    def _complete_args(self, k: QueueKeys, task_id: str, token: str, o: Outcome, out: bytes) -> list[Any]:
        return [k.prefix, GROUP, task_id, token, o.state, o.result, o.error, o.traceback, o.reason,
                f"{o.runtime:.6f}", time.time(), out, self.cfg.host, o.delay]

    def _add_completion(self, pipe: Any) -> None:
        if self.pending:
            qi, args, _ = self.pending
            self.scripts.complete(keys=self.keys[qi].complete_keys(), args=args, client=pipe)

    def _settle(self, reply: Any) -> None:
        """The server's answer to the pending completion. Raises a transient error (kept pending).
        Any other error means the server will never take this record (too big, a broken blob): it
        is replaced by a failure record that says so, sent at once."""
        assert self.pending is not None
        qi, args, state = self.pending
        if isinstance(reply, Exception):
            if transient(reply):
                raise reply
            self.log(f"child {self.pid}: the server refused the result of task {args[2]} ({reply}); "
                     "recording a failure instead")
            reason = f"could not record the result: {one_line(reply)}"
            args = [*args[:4], "failed", b"", codec.dump_exception(RuntimeError(reason)), "", reason,
                    *args[9:11], b"", args[12], 0]
            self.pending = (qi, args, "failed")
            reply = self.scripts.complete(keys=self.keys[qi].complete_keys(), args=args)
            state = "failed"
        if not reply:
            self.log(f"child {self.pid}: result of task {args[2]} refused: this attempt no longer holds "
                     "the task (its lease was lost and another attempt took it over)")
        self.pending = None
        self.slot.end(state == "done")
        self.wake()

    def next_task(self, block: bool = True) -> tuple[int, str, list[Any]] | None:
        """Record the pending completion and claim the next task in one round trip; block if idle
        (and ``block``). Returns (queue index, fencing token, what claim.lua returned), or None."""
        self.token = token = os.urandom(8).hex()  # the fencing token of whatever this call claims
        # queues in the order given: the first has priority; one claim per call, never one per queue
        for qi, k in enumerate(self.keys):
            pipe = self.r.pipeline(transaction=False)
            completing = self.pending is not None
            self._add_completion(pipe)
            self.scripts.claim(keys=k.claim_keys(), args=self._claim_args(k, token, ""), client=pipe)
            replies = self.scripts.execute(pipe, raise_on_error=False)
            got = replies[-1]
            if completing:
                try:
                    self._settle(replies[0])
                except redis.RedisError:
                    if got and not isinstance(got, Exception):  # hold one task at a time
                        self._release(k, got[0].decode(), token)
                    raise
            if isinstance(got, Exception):
                raise got
            if got:
                return qi, token, got
        if self.slot.stop or not block:
            return None
        streams = {k.stream: ">" for k in self.keys}
        read = self.r.xreadgroup(GROUP, self.cfg.consumer, streams, count=1, block=self.cfg.block_ms)
        for stream, entries in read or ():
            name = stream.decode() if isinstance(stream, bytes) else stream
            qi = [k.stream for k in self.keys].index(name)
            sid = entries[0][0]
            sid = sid.decode() if isinstance(sid, bytes) else sid
            k = self.keys[qi]
            got = self.scripts.claim(keys=k.claim_keys(), args=self._claim_args(k, token, sid))
            if got and got[0] != b"skip":
                if self.slot.stop:  # the worker is stopping: hand the task straight back
                    self._release(k, got[0].decode(), token)
                    return None
                return qi, token, got
        return None

    def recreate_groups(self, error: Exception) -> None:
        """After NOGROUP (the stream was deleted, e.g. by a clean or FLUSHALL): create the groups again."""
        if "NOGROUP" not in str(error):
            return
        for k in self.keys:
            try:
                self.r.xgroup_create(k.stream, GROUP, id="0", mkstream=True)
            except redis.RedisError:
                pass  # BUSYGROUP, or Redis away: the next round tries again

    def _release(self, k: QueueKeys, task_id: str, token: str) -> None:
        """Hand a task claimed by this call back at once (its attempt is not counted)."""
        self.scripts.release(keys=[k.stream, k.counts], args=[k.prefix, GROUP, task_id, token])

    def flush(self) -> None:
        """Record a completion still pending (the child is leaving). Retries while Redis is away:
        the worker ends the wait if it has to (its grace), and then hands the task back."""
        while self.pending:
            try:
                pipe = self.r.pipeline(transaction=False)
                self._add_completion(pipe)
                self._settle(self.scripts.execute(pipe, raise_on_error=False)[0])
            except redis.RedisError as e:
                self.log(f"child {self.pid}: cannot record a result yet ({one_line(e)}); retrying")
                self.backoff.pause()

    def _patiently(self, call: Any) -> Any:
        """call(), retried while Redis is away (for reads that are safe to repeat)."""
        while True:
            try:
                return call()
            except (redis.ConnectionError, redis.TimeoutError) as e:
                self.log(f"child {self.pid}: Redis unreachable ({one_line(e)}); retrying")
                self.backoff.pause()

    # --- running ----------------------------------------------------------------------------
    def load_fn(self, k: QueueKeys, sha: bytes) -> Any:
        fn = self.fns.get(sha)
        if fn is None:
            blob = self._patiently(lambda: self.r.get(k.fn(sha.decode())))
            if blob is None:
                raise LookupError(f"function blob {sha.decode()} is missing from the queue")
            fn = self.fns[sha] = codec.load_fn(blob, host=self.cfg.host)
            self.modules.setdefault(getattr(fn, "__module__", None) or "", _mtime(fn))
        elif self.modules.get(getattr(fn, "__module__", None) or "") != _mtime(fn):
            raise StaleCode(f"the source of {getattr(fn, '__module__', '?')} changed since this process "
                            "imported it")
        return fn

    def load(self, k: QueueKeys, got: list[Any]) -> tuple[Any, tuple, dict] | Outcome:
        """The task's function and arguments, or the failure to load them (or "release": stale code)."""
        try:
            fn = self.load_fn(k, got[2])
            inputs = [codec.loads(b) for b in got[9:]]
            args, kwargs = codec.load_args(got[3], inputs)
            return fn, args, kwargs
        except StaleCode as e:
            return Outcome("release", reason=str(e))
        except (redis.ConnectionError, redis.TimeoutError):
            raise  # not the task's fault
        except Exception as e:  # noqa: BLE001 - any failure to load is the task's failure
            return _failure(e, f"could not load task payload: {one_line(e)}")

    def call(self, got: list[Any], fn: Any, args: tuple, kwargs: dict) -> Outcome:
        """Run the user's code and serialise what it returned or raised."""
        t0 = time.perf_counter()
        try:
            value = fn(*args, **kwargs)
            if inspect.iscoroutine(value):
                value = asyncio.run(value)
        except BaseException as e:  # noqa: BLE001 - SystemExit and KeyboardInterrupt in user code too
            return self.raised(got, e, t0)
        return self.returned(value, t0)

    def raised(self, got: list[Any], e: BaseException, t0: float) -> Outcome:
        """The outcome of a task that raised ``e``: failed, or retry when its policy says so."""
        outcome = _failure(e, one_line(e), time.perf_counter() - t0)
        if got[7]:  # a retry policy: (retries, backoff, exception types)
            try:
                retries, backoff, retry_on = codec.loads(got[7])
            except Exception as bad:  # noqa: BLE001 - a bad policy (e.g. a bad signature): no retry
                outcome.reason += f" (retry policy not loaded: {one_line(bad)})"
                return outcome
            used = int(got[8])
            if used < retries and isinstance(e, retry_on):
                outcome.state, outcome.delay = "retry", backoff * 2 ** used
        return outcome

    def returned(self, value: Any, t0: float) -> Outcome:
        """The outcome of a task that returned ``value``: done, unless the value cannot be stored."""
        runtime = time.perf_counter() - t0
        try:
            result = codec.dumps(value)
        except Exception as e:  # noqa: BLE001
            return _failure(e, f"could not serialise the return value: {one_line(e)}", runtime)
        if len(result) > RESULT_LIMIT:
            e = ValueError(f"the return value takes {len(result) >> 20} MiB serialised; "
                           f"Redis takes at most {RESULT_LIMIT >> 20} MiB")
            return _failure(e, f"could not store the return value: {one_line(e)}", runtime)
        return Outcome("done", result=result, runtime=runtime)

    def run(self, k: QueueKeys, got: list[Any]) -> Outcome:
        loaded = self.load(k, got)
        return loaded if isinstance(loaded, Outcome) else self.call(got, *loaded)

    def wake(self) -> None:
        """Tell the worker a task ended (it publishes its counts, and may stop waiting for us). At
        most a few times a second while busy: waking the worker per task costs it a task's CPU."""
        now = time.monotonic()
        if self.cfg.wake_fd >= 0 and (now - self.woke > WAKE_EVERY or self.slot.stop):
            self.woke = now
            try:
                os.write(self.cfg.wake_fd, b"\0")
            except OSError:  # full (the worker is behind anyway) or gone
                pass

    def log(self, line: str) -> None:
        try:
            os.write(self.log_fd, (line + "\n").encode())
        except OSError:
            pass

    def execute(self, qi: int, token: str, got: list[Any]) -> Outcome:
        """Run one claimed task; its completion is left pending (sent with the next claim)."""
        cfg = self.cfg
        k = self.keys[qi]
        task_id = got[0].decode()
        self.slot.begin(qi, task_id, token, int(got[5]), int(got[6] or 3))
        self.capture.start()
        try:
            outcome = self.load(k, got)
            if not isinstance(outcome, Outcome):
                self.slot.arm(float(got[4]) if got[4] else cfg.autokill)
                outcome = self.call(got, *outcome)
        finally:
            if os.getpid() != self.pid:  # a fork made by the task returned here: it must not go on
                os._exit(0)
            self.slot.disarm()
            size = self.capture.stop()
        if outcome.state == "release":  # stale code: a fresh child runs it with the code as it is now
            self._patiently(lambda: self._release(k, task_id, token))
            self.slot.end(None)
            self.wake()
            self.log(f"handed back {k.name} {task_id}: {outcome.reason}; starting a fresh process")
            return outcome
        out = self.capture.tail(size)
        if cfg.logfile:
            self.capture.copy_to(cfg.logfile, task_id, size)
        self.pending = (qi, self._complete_args(k, task_id, token, outcome, out), outcome.state)
        if cfg.verbose >= 0:
            what = f"{outcome.runtime:.3f}s" if outcome.state == "done" else outcome.reason
            self.log(f"{outcome.state:6} {k.name} {task_id} {what}")
        self.tasks_run += 1
        return outcome

    def loop(self) -> None:
        if len(self.lanes) > 1:
            return self.loop_async()
        while not self.slot.stop:
            try:
                claimed = self.next_task()
                self.backoff.reset()
            except redis.RedisError as e:
                self.log(f"child {self.pid}: Redis unreachable or refusing ({one_line(e)}); retrying")
                self.recreate_groups(e)
                self.backoff.pause()
                continue
            if claimed is not None:
                why = self.retire_reason(self.execute(*claimed))
                if why:
                    if self.cfg.verbose > 0:
                        self.log(f"child {self.pid}: replaced: {why}")
                    break
        self.flush()

    # --- several coroutine tasks at once (--async-concurrency) -------------------------------
    def loop_async(self) -> None:
        """Claim tasks while a lane is free and run coroutine tasks concurrently on one event loop
        (taskmap's io_bound idea). A plain function runs to its end when called, as usual. Each task
        holds its own lane, so the worker renews its lease and enforces its time limit (a limit kills
        the whole child: the other tasks it held are handed back). Output is not captured per task
        here (the tasks share the process's stdout); it goes to the worker's log."""
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        running: dict[asyncio.Task, tuple[int, str, list[Any], Slot, float]] = {}
        free = list(reversed(self.lanes))
        try:
            while running or not self.slot.stop:
                while free and not self.slot.stop:
                    try:
                        claimed = self.next_task(block=not running)
                        self.backoff.reset()
                    except redis.RedisError as e:
                        self.log(f"child {self.pid}: Redis unreachable or refusing ({one_line(e)}); retrying")
                        self.recreate_groups(e)
                        self.backoff.pause()
                        break
                    if claimed is None:
                        break
                    qi, token, got = claimed
                    lane = free.pop()
                    lane.begin(qi, got[0].decode(), token, int(got[5]), int(got[6] or 3))
                    loaded = self.load(self.keys[qi], got)
                    if isinstance(loaded, Outcome):
                        free.append(self.record(lane, qi, token, got, loaded))
                        continue
                    fn, args, kwargs = loaded
                    lane.arm(float(got[4]) if got[4] else self.cfg.autokill)
                    t0 = time.perf_counter()
                    try:
                        value = fn(*args, **kwargs)
                    except BaseException as e:  # noqa: BLE001
                        free.append(self.record(lane, qi, token, got, self.raised(got, e, t0)))
                        continue
                    if inspect.iscoroutine(value):
                        running[loop.create_task(value)] = (qi, token, got, lane, t0)
                    else:
                        free.append(self.record(lane, qi, token, got, self.returned(value, t0)))
                if not running:
                    continue
                wait = 0.05 if free and not self.slot.stop else 0.5  # look for more work meanwhile
                done, _ = loop.run_until_complete(
                    asyncio.wait(list(running), timeout=wait, return_when=asyncio.FIRST_COMPLETED))
                for fut in done:
                    qi, token, got, lane, t0 = running.pop(fut)
                    exc = fut.exception()
                    outcome = self.raised(got, exc, t0) if exc else self.returned(fut.result(), t0)
                    free.append(self.record(lane, qi, token, got, outcome))
        finally:
            loop.close()

    def record(self, lane: Slot, qi: int, token: str, got: list[Any], outcome: Outcome) -> Slot:
        """Record one task's outcome now (fenced by its token); returns its lane, free again."""
        lane.disarm()
        k = self.keys[qi]
        task_id = got[0].decode()
        args = self._complete_args(k, task_id, token, outcome, b"")
        if outcome.state == "release":
            self._patiently(lambda: self._release(k, task_id, token))
        elif not self._patiently(lambda: self.scripts.complete(keys=k.complete_keys(), args=args)):
            self.log(f"child {self.pid}: result of task {task_id} refused: this attempt no longer holds it")
        lane.end(None if outcome.state == "release" else outcome.state == "done")
        self.wake()
        if self.cfg.verbose >= 0:
            what = f"{outcome.runtime:.3f}s" if outcome.state == "done" else outcome.reason
            self.log(f"{outcome.state:6} {k.name} {task_id} {what}")
        self.tasks_run += 1
        return lane

    def retire_reason(self, outcome: Outcome) -> str:
        """Why this child should be replaced after the task it just ran, or ""."""
        cfg = self.cfg
        if outcome.state == "release":
            return "the code it serves changed"
        if cfg.max_tasks and self.tasks_run >= cfg.max_tasks:
            return f"ran {self.tasks_run} tasks"
        if outcome.reason.startswith("MemoryError"):
            return "its task ran out of memory"  # the heap may be in a bad state
        if live_children():
            return "its task left processes behind"  # the worker kills them with our process group
        if cfg.max_rss:
            with open("/proc/self/statm") as f:
                rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
            if rss > cfg.max_rss:
                return f"its memory grew to {rss >> 20} MiB"
        return ""


def _ignore(signum: int, frame: Any) -> None:
    """SIGINT/SIGTERM: the worker decides when its children stop (through the slot). A handler, not
    SIG_IGN: an ignored signal would stay ignored in every program a task runs."""


def child_main(cfg: ChildConfig, slot: Slot, lanes: list[Slot] | None = None) -> None:
    """Entry point of a forked child; never returns."""
    code = 0
    try:
        os.setpgid(0, 0)
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # no orphan keeps a claimed task when the worker dies
        if cfg.parent_pid and os.getppid() != cfg.parent_pid:
            os._exit(0)  # the worker died before the line above
        prctl(PR_SET_CHILD_SUBREAPER, 1)  # orphaned grandchildren come to us, and so get killed
        signal.signal(signal.SIGINT, _ignore)
        signal.signal(signal.SIGTERM, _ignore)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.set_wakeup_fd(-1)
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        if cfg.max_memory:
            resource.setrlimit(resource.RLIMIT_AS, (cfg.max_memory, cfg.max_memory))
        Child(cfg, slot, lanes).loop()
    except BaseException:  # noqa: BLE001
        traceback.print_exc()
        code = 70
    finally:
        kill_tree([p for p in live_children() if p > 0])
        os._exit(code)
