"""``Queue``: schedule deferred task trees onto Redis and read finished tasks back, from any script."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any

import redis

from . import codec, keys
from .connection import connect, resolve_url
from .errors import ConfigError, UnknownTask
from .keys import GROUP, QueueKeys
from .scripts import Scripts
from .task import Task, TaskRef

_NAME = re.compile(r"^[A-Za-z0-9_.:@/+=-]{1,128}$")
CHUNK_NODES = 2000  # nodes per schedule script call: bounds how long one call blocks the server
CHUNK_BYTES = 8 << 20


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(
            f"bad queue name {name!r}: use 1 to 128 letters, digits or _ . : @ / + = -")
    return name


def _float_or_empty(value: float | None, what: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, (int, float)) or value <= 0:
        raise ConfigError(f"{what} must be a positive number of seconds, not {value!r}")
    return repr(float(value))


class Queue:
    """A named queue of tasks on a Redis server shared by producers and workers.

    ``url``: a Redis URL; default ``$FORRESTQ_URL``, else the embedded local server (started on demand).
    ``max_attempts``: how often a task may be started before a lost worker counts as its failure.
    """

    def __init__(self, name: str, url: str | None = None, *, max_attempts: int = 3) -> None:
        self.name = check_name(name)
        if not isinstance(max_attempts, int) or max_attempts < 1:
            raise ConfigError(f"max_attempts must be a positive integer, not {max_attempts!r}")
        self.max_attempts = max_attempts
        self.url = resolve_url(url)
        self.r: redis.Redis = connect(self.url)
        self.keys = QueueKeys(name)
        self.scripts = Scripts(self.r)
        self._group_ready = False

    def __repr__(self) -> str:
        return f"Queue({self.name!r})"

    # --- scheduling -------------------------------------------------------------------------
    def _ensure_group(self, pipe: Any) -> None:
        if not self._group_ready:
            pipe.sadd(keys.QUEUES, self.name)
            pipe.execute_command("XGROUP", "CREATE", self.keys.stream, GROUP, "0", "MKSTREAM")

    def schedule(self, task: Any, metadata: Any = None, timeout: float | None = None,
                 max_attempts: int | None = None) -> TaskRef:
        """Schedule a deferred task tree; returns at once. ``timeout`` (seconds) kills the task's
        process group when exceeded; ``metadata`` travels with the task and comes back on results."""
        return self.schedule_many([task], metadata=[metadata], timeout=timeout,
                                  max_attempts=max_attempts)[0]

    def schedule_many(self, tasks: Iterable[Any], metadata: Iterable[Any] | None = None,
                      timeout: float | None = None, max_attempts: int | None = None) -> list[TaskRef]:
        """Schedule many task trees in one round trip. ``metadata``, if given, runs parallel to ``tasks``.

        Everything is serialised before anything is written, so an argument that cannot be serialised
        raises ``SerializationError`` and leaves Redis as it was."""
        to = _float_or_empty(timeout, "timeout")
        ma = str(max_attempts or self.max_attempts)
        if max_attempts is not None and (not isinstance(max_attempts, int) or max_attempts < 1):
            raise ConfigError(f"max_attempts must be a positive integer, not {max_attempts!r}")
        planner = codec.Planner()
        metas = iter(metadata) if metadata is not None else None
        fns: dict[str, bytes] = {}
        rows: list[list[Any]] = []
        refs: list[TaskRef] = []
        for task in tasks:
            md = next(metas, None) if metas is not None else None
            root_id, specs = planner.add(task)
            new_root = False
            for spec in specs:
                fns.setdefault(spec.fn_sha, spec.fn_blob)
                is_root = spec.id == root_id
                new_root |= is_root
                rows.append([spec.id, spec.fn_sha, spec.args, ",".join(spec.inputs), spec.name,
                             "1" if is_root else "", codec.dumps(md) if is_root and md is not None else "",
                             to if is_root else "", ma, ""])
            if not new_root:  # the root was planned before (shared): mark it as a root as well
                rows.append([root_id, "", "", "", "", "1", "", "", ma, ""])
            refs.append(TaskRef(root_id, self.name))
        if not rows:
            return refs
        pipe = self.r.pipeline(transaction=False)
        self._ensure_group(pipe)
        for sha, blob in fns.items():
            pipe.set(self.keys.fn(sha), blob, nx=True)
        k = self.keys
        now = repr(time.time())
        chunk: list[Any] = []
        size = 0
        count = 0
        for row in rows:
            chunk.extend(row)
            count += 1
            size += len(row[2])
            if count >= CHUNK_NODES or size >= CHUNK_BYTES:
                self.scripts.schedule(keys=[k.stream, k.counts, k.todo, k.finished],
                                      args=[k.prefix, now, count, *chunk], client=pipe)
                chunk, size, count = [], 0, 0
        if count:
            self.scripts.schedule(keys=[k.stream, k.counts, k.todo, k.finished],
                                  args=[k.prefix, now, count, *chunk], client=pipe)
        replies = pipe.execute(raise_on_error=False)
        for reply in replies:
            if isinstance(reply, Exception) and "BUSYGROUP" not in str(reply):
                raise reply
        self._group_ready = True
        return refs

    # --- reading ----------------------------------------------------------------------------
    def _task_id(self, ref: TaskRef | str) -> str:
        return ref.id if isinstance(ref, TaskRef) else str(ref)

    def get(self, ref: TaskRef | str) -> Task:
        """The current record of one task (any state)."""
        task_id = self._task_id(ref)
        fields = self.r.hgetall(self.keys.task(task_id))
        if not fields:
            raise UnknownTask(f"no task {task_id!r} in queue {self.name!r}")
        return Task(self.name, task_id, fields)

    def _fetch(self, ids: list[str]) -> list[Task]:
        pipe = self.r.pipeline(transaction=False)
        for i in ids:
            pipe.hgetall(self.keys.task(i))
        return [Task(self.name, i, f) for i, f in zip(ids, pipe.execute()) if f]

    def _listing(self, key: str, limit: int | None) -> list[Task]:
        ids = [i.decode() for i in self.r.zrange(key, 0, -1 if limit is None else limit - 1)]
        return self._fetch(ids)

    def todo_tasks(self, limit: int | None = None) -> list[Task]:
        """Tasks not finished yet (waiting, ready, running), oldest first."""
        return self._listing(self.keys.todo, limit)

    def done_tasks(self, limit: int | None = None) -> list[Task]:
        return self._listing(self.keys.done, limit)

    def fail_tasks(self, limit: int | None = None) -> list[Task]:
        return self._listing(self.keys.failed, limit)

    def counts(self) -> dict[str, int]:
        """Number of tasks in each state, read from counters (constant time)."""
        raw = self.r.hgetall(self.keys.counts)
        got = {k.decode(): int(v) for k, v in raw.items()}
        return {s: got.get(s, 0) for s in keys.STATES}

    def results(self, progress: bool = False, timeout: float | None = None) -> Iterator[Task]:
        """Yield each root task of the queue once it has finished, on whichever machine; return when no
        root task is left unfinished. Blocks on Redis (no polling). ``timeout``: seconds without
        progress before ``TimeoutError``."""
        from .progress import ResultsProgress

        bar = ResultsProgress(self, enabled=progress)
        seen: dict[str, int] = {}
        last = "0"
        deadline = None if timeout is None else time.monotonic() + timeout
        k = self.keys
        with bar:
            while True:
                pipe = self.r.pipeline(transaction=True)
                pipe.xread({k.finished: last}, count=1000)
                pipe.hget(k.counts, "open")
                entries, open_roots = pipe.execute()
                if not entries:
                    open_n = int(open_roots or 0)
                    bar.update(len(seen), open_n)
                    if open_n <= 0:
                        return
                    block = 2000
                    if deadline is not None:
                        left = deadline - time.monotonic()
                        if left <= 0:
                            raise TimeoutError(f"no task of queue {self.name!r} finished for {timeout} s "
                                               f"({open_n} still unfinished)")
                        block = max(1, min(block, int(left * 1000)))
                    entries = self.r.xread({k.finished: last}, count=1000, block=block)
                    if not entries:
                        continue
                batch = entries[0][1]
                last = batch[-1][0]
                wanted: dict[str, int] = {}
                for _, f in batch:
                    tid, gen = f[b"t"].decode(), int(f.get(b"g", b"0"))
                    if seen.get(tid, -1) < gen:
                        wanted[tid] = gen
                for task in self._fetch(list(wanted)):
                    if task.state in ("done", "failed") and task.generation == wanted[task.id] \
                            and seen.get(task.id, -1) < task.generation:
                        seen[task.id] = task.generation
                        bar.advance(task)
                        if deadline is not None:
                            deadline = time.monotonic() + timeout
                        yield task

    def wait(self, ref: TaskRef | str, timeout: float | None = None) -> Task:
        """Block until one root task has finished and return its record."""
        task_id = self._task_id(ref)
        k = self.keys
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            pipe = self.r.pipeline(transaction=True)
            pipe.xrevrange(k.finished, count=1)
            pipe.hgetall(k.task(task_id))
            last, fields = pipe.execute()
            if not fields:
                raise UnknownTask(f"no task {task_id!r} in queue {self.name!r}")
            if fields.get(b"st") in (b"done", b"failed"):
                return Task(self.name, task_id, fields)
            if fields.get(b"root") != b"1":
                raise ConfigError(f"task {task_id} is not a scheduled root; wait() follows roots only")
            block = 2000
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"task {task_id} did not finish within {timeout} s")
                block = max(1, min(block, int(left * 1000)))
            self.r.xread({k.finished: last[0][0] if last else "0"}, count=1, block=block)

    # --- one machine ------------------------------------------------------------------------
    def run(self, procs: int = os.cpu_count() or 1, progress: bool = False,
            timeout: float | None = None, **worker_options: Any) -> Iterator[Task]:
        """Start ``procs`` local worker processes for this queue, yield finished tasks like
        ``results()``, and stop the workers afterwards (also when the loop is left early)."""
        if not isinstance(procs, int) or procs < 1:
            raise ConfigError(f"procs must be a positive integer, not {procs!r}")
        cmd = [sys.executable, "-m", "forrestq", "worker", "--procs", str(procs), "--queue", self.name,
               "--url", self.url, "--quiet", "--grace", "0"]
        for opt, value in worker_options.items():
            cmd += [f"--{opt.replace('_', '-')}", str(value)]
        env = dict(os.environ)
        here = os.path.dirname(os.path.abspath(sys.argv[0])) if sys.argv and sys.argv[0] else os.getcwd()
        env["PYTHONPATH"] = os.pathsep.join(p for p in (here, os.getcwd(), env.get("PYTHONPATH")) if p)
        proc = subprocess.Popen(cmd, env=env, start_new_session=True)
        try:
            yield from self.results(progress=progress, timeout=timeout)
        finally:
            stop_worker(proc)


def stop_worker(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGTERM a worker process (running tasks are handed back after its grace), SIGKILL its group if it hangs."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
