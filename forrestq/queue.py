"""``Queue``: schedule deferred task trees onto Redis and read finished tasks back, from any script."""
from __future__ import annotations

import inspect
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any

import redis

from . import codec, schema
from .connection import connect, resolve_url
from .errors import Cancelled, ConfigError, UnknownTask
from .schema import GROUP, QueueKeys, check_name
from .scripts import Scripts
from .task import Task, TaskRef

CHUNK_NODES = 2000  # nodes per schedule script call: bounds how long one call blocks the server
CHUNK_BYTES = 8 << 20
OUTAGE = 300.0  # seconds results() keeps retrying while Redis is unreachable (with no timeout)


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

    def __init__(self, name: str, url: str | None = None, *, max_attempts: int = 3,
                 exist_ok: bool = True, pre_clean: bool = False, local: bool = False) -> None:
        self.name = check_name(name)
        if not isinstance(max_attempts, int) or max_attempts < 1:
            raise ConfigError(f"max_attempts must be a positive integer, not {max_attempts!r}")
        self.max_attempts = max_attempts
        self.local = local  # debug mode: results() runs the tasks in this process
        self.url = resolve_url(url)
        self.r: redis.Redis = connect(self.url)
        self.keys = QueueKeys(name)
        self.scripts = Scripts(self.r)
        self._group_ready = False
        if pre_clean:
            self.clean(all=True)
        if not exist_ok:
            held = sum(self.counts().values())
            if held:
                raise ConfigError(f"queue {name!r} already holds {held} tasks (exist_ok=False); "
                                  "use pre_clean=True to empty it, or another name")

    def __repr__(self) -> str:
        return f"Queue({self.name!r})"

    # --- scheduling -------------------------------------------------------------------------
    def _ensure_group(self, pipe: Any) -> None:
        if not self._group_ready:
            pipe.sadd(schema.QUEUES, self.name)
            pipe.execute_command("XGROUP", "CREATE", self.keys.stream, GROUP, "0", "MKSTREAM")

    def schedule(self, task: Any, metadata: Any = None, timeout: float | None = None,
                 max_attempts: int | None = None, key: str | None = None, retries: int = 0,
                 retry_backoff: float = 1.0, retry_on: Any = (Exception,)) -> TaskRef:
        """Schedule a deferred task tree; returns at once. ``timeout`` (seconds) kills the task's
        process group when exceeded; ``metadata`` travels with the task and comes back on results.
        ``key``: scheduling a key that exists already does nothing and returns the existing task,
        so a producer that crashed halfway can simply run again. ``retries``: run a task again up to
        this many times when it raises one of ``retry_on``, after ``retry_backoff * 2**n`` seconds.
        ``timeout``, ``max_attempts`` and the retry policy apply to every node of the tree."""
        return self.schedule_many([task], metadata=[metadata], timeout=timeout,
                                  max_attempts=max_attempts, keys=None if key is None else [key],
                                  retries=retries, retry_backoff=retry_backoff, retry_on=retry_on)[0]

    def schedule_many(self, tasks: Iterable[Any], metadata: Iterable[Any] | None = None,
                      timeout: float | None = None, max_attempts: int | None = None,
                      keys: Iterable[str] | None = None, retries: int = 0, retry_backoff: float = 1.0,
                      retry_on: Any = (Exception,)) -> list[TaskRef]:
        """Schedule many task trees in one round trip. ``metadata`` and ``keys``, if given, run parallel
        to ``tasks`` (see ``schedule``).

        Everything is serialised before anything is written, so an argument that cannot be serialised
        raises ``SerializationError`` and leaves Redis as it was."""
        to = _float_or_empty(timeout, "timeout")
        ma = str(max_attempts or self.max_attempts)
        if max_attempts is not None and (not isinstance(max_attempts, int) or max_attempts < 1):
            raise ConfigError(f"max_attempts must be a positive integer, not {max_attempts!r}")
        policy = _retry_policy(retries, retry_backoff, retry_on)
        planner = codec.Planner()
        metas = iter(metadata) if metadata is not None else None
        user_keys = iter(keys) if keys is not None else None
        fns: dict[str, bytes] = {}
        rows: list[list[Any]] = []
        refs: list[TaskRef] = []
        for task in tasks:
            md = next(metas, None) if metas is not None else None
            user_key = next(user_keys, None) if user_keys is not None else None
            if user_key is not None:
                task = keyed(task, user_key)
            root_id, specs = planner.add(task)
            new_root = False
            for spec in specs:
                fns.setdefault(spec.fn_sha, spec.fn_blob)
                is_root = spec.id == root_id
                new_root |= is_root
                rows.append([spec.id, spec.fn_sha, spec.args, ",".join(spec.inputs), spec.name,
                             "1" if is_root else "", codec.dumps(md) if is_root and md is not None else "",
                             to, ma, user_key if is_root and user_key else "", policy])
            if not new_root:  # the root was planned before (shared): mark it as a root as well
                rows.append([root_id, "", "", "", "", "1", codec.dumps(md) if md is not None else "",
                             "", ma, "", ""])
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
        replies = self.scripts.execute(pipe, raise_on_error=False)
        for reply in replies:
            if isinstance(reply, Exception) and "BUSYGROUP" not in str(reply):
                raise reply
        self._group_ready = True
        since = next((r[-1] for r in replies if isinstance(r, list) and r), b"")  # the first chunk's
        since = since.decode() if isinstance(since, bytes) else since
        return [TaskRef(ref.id, ref.queue, since) for ref in refs]

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
        return fetch_records(self, ids)

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
        return {s: got.get(s, 0) for s in schema.STATES}

    def results(self, progress: bool = False, timeout: float | None = None) -> Iterator[Task]:
        """Yield each root task of the queue once it has finished, on whichever machine; return when no
        root task is left unfinished. Blocks on Redis (no polling). ``timeout``: seconds without
        progress before ``TimeoutError``."""
        if self.local:
            from .inline import run_inline

            yield from run_inline(self, progress=progress, timeout=timeout)
            return
        from .progress import ResultsProgress

        bar = ResultsProgress(self, enabled=progress)
        seen: dict[str, int] = {}
        last = "0"
        deadline = None if timeout is None else time.monotonic() + timeout
        k = self.keys
        with bar:
            while True:
                entries, open_roots = self._patiently(lambda: self.r.pipeline(transaction=True).xread(
                    {k.finished: last}, count=1000).hget(k.counts, "open").execute(), deadline)
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
                    entries = self._patiently(lambda: self.r.xread({k.finished: last}, count=1000,
                                                                   block=block), deadline)
                    if not entries:
                        continue
                batch = entries[0][1]
                last = batch[-1][0]
                wanted: dict[str, int] = {}
                for _, f in batch:
                    tid, gen = f[b"t"].decode(), int(f.get(b"g", b"0"))
                    if seen.get(tid, -1) < gen:
                        wanted[tid] = gen
                for task in self._patiently(lambda: self._fetch(list(wanted)), deadline):
                    if task.state in ("done", "failed") and task.generation == wanted[task.id] \
                            and seen.get(task.id, -1) < task.generation:
                        seen[task.id] = task.generation
                        bar.advance(task)
                        if deadline is not None:
                            deadline = time.monotonic() + timeout
                        yield task

    @staticmethod
    def _patiently(call: Any, deadline: float | None) -> Any:
        """call(), retried while Redis is unreachable (a server restart must not end a results()
        loop), until deadline, or for OUTAGE seconds."""
        give_up = time.monotonic() + OUTAGE if deadline is None else deadline
        while True:
            try:
                return call()
            except (redis.ConnectionError, redis.TimeoutError):
                if time.monotonic() >= give_up:
                    raise
                time.sleep(0.5)

    def wait(self, ref: TaskRef | str, timeout: float | None = None) -> Task:
        """Block until one root task has finished and return its record."""
        task_id = self._task_id(ref)
        k = self.keys
        deadline = None if timeout is None else time.monotonic() + timeout
        since = ref.since if isinstance(ref, TaskRef) else ""
        if since:  # just scheduled here: nothing to look at before blocking
            self.r.xread({k.finished: since}, count=1, block=2000 if timeout is None else
                         max(1, min(2000, int(timeout * 1000))))
        while True:
            pipe = self.r.pipeline(transaction=True)
            pipe.xrevrange(k.finished, count=1)
            pipe.hmget(k.task(task_id), RECORD_FIELDS)
            last, values = pipe.execute()
            fields = {n.encode(): v for n, v in zip(RECORD_FIELDS, values) if v is not None}
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

    # --- graphs, re-running, cancelling, cleaning ---------------------------------------------
    def schedule_graph(self, funcs: dict[str, Any], dependencies: dict[str, Iterable[str]],
                       done: Iterable[str] | None = None, results: dict[str, Any] | None = None,
                       io_bound: Iterable[str] | None = None, **options: Any) -> dict[str, TaskRef]:
        """Schedule a named graph (taskmap's ``create_graph``): ``dependencies[name]`` lists the names
        whose results are passed to ``funcs[name]``, in that order; ``None`` results are not passed.
        Names in ``done`` are not run; their ``results`` are passed instead. Every other name is a
        scheduled task. ``io_bound`` names that are ready at once go on the queue first. A cycle or a
        missing name raises ``GraphError`` and writes nothing."""
        from .graph import build

        nodes = build(funcs, dependencies, done=done, results=results)
        first = [n for n in io_bound or () if n in nodes]
        names = first + [n for n in nodes if n not in first]
        refs = self.schedule_many([nodes[n] for n in names], metadata=[{"name": n} for n in names],
                                  **options)
        return dict(zip(names, refs))

    def _requeue(self, mode: str, ids: list[str]) -> list[str]:
        k = self.keys
        out: list[str] = []
        for i in range(0, len(ids), 1000):
            got = self.scripts.requeue(keys=[k.stream, k.counts, k.todo, k.done, k.failed],
                                       args=[k.prefix, GROUP, time.time(), mode, *ids[i:i + 1000]])
            out += [x.decode() for x in got]
        return out

    def requeue_failed(self, ids: Iterable[TaskRef | str] | None = None, error_type: str | None = None,
                       dry_run: bool = False) -> list[str]:
        """Run failed tasks again, with the dependents that failed because of them; tasks that
        succeeded are not run again. ``ids``: only these; ``error_type``: only failures whose exception
        type has this name. Returns the ids requeued (with ``dry_run``: that would be)."""
        if ids is None:
            candidates = self.fail_tasks()
        else:
            candidates = [self.get(i) for i in ids]
        chosen = []
        for task in candidates:
            if task.state != "failed" or task.upstream:
                continue  # upstream failures follow their failed input
            if error_type is not None and _error_type(task) != error_type:
                continue
            chosen.append(task.id)
        if dry_run:
            return chosen + [d for d in self._downstream(chosen, only_failed=True) if d not in chosen]
        return self._requeue("failed", chosen)

    def _downstream(self, ids: list[str], only_failed: bool) -> list[str]:
        found: list[str] = []
        seen = set(ids)
        todo = list(ids)
        while todo:
            for dep in self.r.smembers(self.keys.dependents(todo.pop())):
                dep = dep.decode()
                if dep in seen:
                    continue
                if only_failed:
                    st, up = self.r.hmget(self.keys.task(dep), "st", "up")
                    if st != b"failed" or not up:
                        continue
                seen.add(dep)
                found.append(dep)
                todo.append(dep)
        return found

    def rerun(self, ref: TaskRef | str, fn: Any = None) -> list[str]:
        """Run one task again and everything downstream of it (taskmap's ``reset_tasks``), e.g. after
        fixing its function; ``fn`` replaces the task's function first. Returns the ids re-run."""
        task = self.get(ref)
        if fn is not None:
            from .graph import DropNone

            old_sha = self.r.hget(self.keys.task(task.id), "fn")
            old = codec.load_fn(self.r.get(self.keys.fn(old_sha.decode()))) if old_sha else None
            if isinstance(old, DropNone):  # a named-graph node: keep taskmap's None rule
                fn = DropNone(fn)
            sha, blob, name = codec.dump_fn(fn)
            pipe = self.r.pipeline(transaction=False)
            pipe.set(self.keys.fn(sha), blob, nx=True)
            pipe.hset(self.keys.task(task.id), mapping={"fn": sha, "name": name})
            pipe.execute()
        return self._requeue("all", [task.id])

    def _take_over(self, pipe: Any, ids: list[str], token: str, finished_too: bool) -> None:
        k = self.keys
        self.scripts.takeover(keys=[k.stream, k.counts, k.todo, k.done, k.failed],
                              args=[k.prefix, GROUP, time.time(), token, "1" if finished_too else "", *ids],
                              client=pipe)

    def cancel(self, ids: Iterable[TaskRef | str] | None = None, all: bool = False) -> list[str]:
        """End unfinished tasks as ``failed`` with reason "cancelled" (their dependents fail too).
        Queued tasks never start; a running task's worker loses its lease and kills it at its next
        heartbeat. Returns the ids cancelled."""
        if all:
            chosen = [i.decode() for i in self.r.zrange(self.keys.todo, 0, -1)]
        elif ids is None:
            raise ConfigError("cancel needs task ids, or all=True")
        else:
            chosen = [self._task_id(i) for i in ids]
        token = "cancel-" + os.urandom(6).hex()
        out = []
        for i in range(0, len(chosen), 500):
            part = chosen[i:i + 500]
            pipe = self.r.pipeline(transaction=True)
            self._take_over(pipe, part, token, finished_too=False)
            for tid in part:
                self._complete(pipe, tid, token, "failed", error=codec.dump_exception(Cancelled("cancelled")),
                               reason="cancelled")
            got = self.scripts.execute(pipe)
            out += [tid for tid, ok in zip(part, got[1:]) if ok]
        return out

    def _complete(self, pipe: Any, task_id: str, token: str, outcome: str, result: bytes = b"",
                  error: bytes = b"", traceback: str = "", reason: str = "", runtime: float = 0.0,
                  output: bytes = b"", host: str = "") -> None:
        k = self.keys
        self.scripts.complete(keys=k.complete_keys(),
                              args=[k.prefix, GROUP, task_id, token, outcome, result, error, traceback,
                                    reason, f"{runtime:.6f}", time.time(), output, host, 0], client=pipe)

    def clean(self, done: bool = False, failed: bool = False, all: bool = False) -> int:
        """Delete task records: done ones, failed ones, or all (also unstarted ones). Never deletes a
        running task, nor a finished one whose result an unfinished task still needs. Returns how many
        were deleted."""
        k = self.keys
        sources = [k.done] * (done or all) + [k.failed] * (failed or all) + [k.todo] * all
        deleted = 0
        for source in sources:
            start = 0
            while True:
                ids = [i.decode() for i in self.r.zrange(source, start, start + 999)]
                if not ids:
                    break
                n = self.scripts.clean(keys=[k.stream, k.counts, k.todo, k.done, k.failed, k.finished],
                                       args=[k.prefix, GROUP, *ids])
                deleted += n
                start += len(ids) - n  # the kept ones stay in front
        if all and not sum(self.counts().values()):
            stale = list(self.r.scan_iter(match=k.pattern(), count=1000))
            if stale:
                self.r.delete(*stale)
            self._group_ready = False
        return deleted

    def run_here(self, ref: TaskRef | str, record: bool = False) -> Task:
        """Run one task in this process, with its real inputs from Redis, for debugging by hand
        (``forrestq run``). Raises nothing itself: the outcome comes back as a Task whose
        ``errorvalue`` carries the exception (with ``__traceback__``, for pdb). The recorded state
        changes only with ``record=True``."""
        import traceback as tb_mod

        task = self.get(ref)
        fields = self.r.hgetall(self.keys.task(task.id))
        inputs = []
        for dep in task.inputs:
            st, rv = self.r.hmget(self.keys.task(dep), "st", "rv")
            if st != b"done":
                raise ConfigError(f"input task {dep} of {task.id} is not done ({(st or b'missing').decode()})")
            inputs.append(codec.loads(rv))
        fn = codec.load_fn(self.r.get(self.keys.fn(fields[b"fn"].decode())))
        args, kwargs = codec.load_args(fields[b"a"], inputs)
        t0 = time.perf_counter()
        out: dict[bytes, bytes] = {}
        try:
            value = fn(*args, **kwargs)
            if inspect.iscoroutine(value):
                import asyncio

                value = asyncio.run(value)
            state, exc = "done", None
            out[b"rv"] = codec.dumps(value)
        except Exception as e:  # noqa: BLE001 - the task's own failure is the outcome
            state, exc = "failed", e
            out[b"tb"] = tb_mod.format_exc().encode()
            out[b"why"] = f"{type(e).__name__}: {e}".encode()
        runtime = time.perf_counter() - t0
        if record:
            token = "run-" + os.urandom(6).hex()
            pipe = self.r.pipeline(transaction=True)
            self._take_over(pipe, [task.id], token, finished_too=True)
            self._complete(pipe, task.id, token, state, result=out.get(b"rv", b""),
                           error=codec.dump_exception(exc) if exc else b"",
                           traceback=out.get(b"tb", b"").decode(), reason=out.get(b"why", b"").decode(),
                           runtime=runtime, host="(by hand)")
            self.scripts.execute(pipe)
        result = Task(self.name, task.id, {**fields, b"st": state.encode(), b"rt": repr(runtime).encode(),
                                           **out})
        if exc is not None:
            result.__dict__["errorvalue"] = exc  # the live exception, traceback included
        else:
            result.__dict__["returnvalue"] = value
        return result

    # --- one machine ------------------------------------------------------------------------
    def run(self, procs: int = os.cpu_count() or 1, progress: bool = False,
            timeout: float | None = None, **worker_options: Any) -> Iterator[Task]:
        """Start ``procs`` local worker processes for this queue, yield finished tasks like
        ``results()``, and stop the workers afterwards (also when the loop is left early).
        ``procs=0`` is debug mode: tasks run in this process, in order, so pdb works."""
        if not isinstance(procs, int) or procs < 0:
            raise ConfigError(f"procs must be a non-negative integer, not {procs!r}")
        if procs == 0:
            from .inline import run_inline

            yield from run_inline(self, progress=progress, timeout=timeout)
            return
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

    # --- seed-tool habits (map, once, put, debug mode) ---
    # Thin delegates; the code and its documentation live in forrestq/mapping.py, once.py, shared.py
    # and inline.py (debug mode: ``local=True`` / ``run(procs=0)`` run tasks in this process).
    def map(self, fn: Any, inputs: Iterable[Any], *, progress: Any = True, return_exceptions: bool = False,
            fail_fast: bool = False, chunksize: int | None = None, timeout: float | None = None,
            transient: bool = False, **options: Any) -> list[Any]:
        """``[fn(x) for x in inputs]`` as tasks, results in input order (JobRunner's ``run_jobs``).
        The first failure in input order is raised (its original type, remote traceback attached as a
        note) once all have run; ``fail_fast`` raises at once and cancels the rest;
        ``return_exceptions`` puts exceptions in place. ``chunksize``: inputs per task. ``progress``:
        True/False or a rich Progress to add a row to; ``transient`` removes the bar at the end.
        ``timeout``: seconds without progress. See :func:`forrestq.mapping.map`."""
        from . import mapping

        return mapping.map(self, fn, inputs, progress=progress, return_exceptions=return_exceptions,
                           fail_fast=fail_fast, chunksize=chunksize, timeout=timeout, transient=transient,
                           **options)

    def starmap(self, fn: Any, inputs: Iterable[Iterable[Any]], **options: Any) -> list[Any]:
        """Like :meth:`map`, each input spread as ``fn(*x)``."""
        from . import mapping

        return mapping.starmap(self, fn, inputs, **options)

    def submitting(self, progress: Any = True, **options: Any) -> Any:
        """``with q.submitting() as sub: sub.submit(fn, *args)``: the calls run when the block exits
        (not if it raised); then ``sub.results`` holds their outputs in order. Options of :meth:`map`."""
        from . import mapping

        return mapping.submitting(self, progress=progress, **options)

    def put(self, obj: Any) -> Any:
        """Store a big input once (content-addressed) and return a small reference to pass to tasks
        instead; each worker child loads it once and caches it. See :mod:`forrestq.shared`."""
        from . import shared

        return shared.put(self, obj)

    def iterate(self, keys: Iterable[Any], lease: float = 60, version: int = 0, **options: Any) -> Iterator[Any]:
        """``for key in q.iterate(keys):`` from many processes and machines: each key's body runs in
        one process; completed keys are skipped for good; a dead process's key is taken again after
        ``lease`` seconds. The body finishing confirms its key, raising (or ``break``) releases it.
        ``version``: bump to recompute. See :func:`forrestq.once.iterate`."""
        from . import once

        return once.iterate(self, keys, lease, version, **options)

    def once(self, key: Any, lease: float = 60, version: int = 0, **options: Any) -> Any:
        """Decorator: the call runs only if ``key`` is neither done nor running elsewhere and returns
        ``(Status, value)`` (``forrestq.once.Status``: COMPUTE_OK, COMPUTE_ERROR, SKIP_OK,
        SKIP_IN_PROGRESS)."""
        from . import once

        return once.once(self, key, lease, version, **options)

    def notify_success(self, key: Any, version: int = 0) -> None:
        """Mark a key this process holds (``iterate``) as done now."""
        from . import once

        once.notify_success(self, key, version)

    def notify_failure(self, key: Any, version: int = 0) -> bool:
        """Give a key this process holds back at once; returns whether it held it."""
        from . import once

        return once.notify_failure(self, key, version)


# every field of a task record but its argument payload, which can be large and is never shown
RECORD_FIELDS = sorted({v for k, v in vars(schema).items()
                        if k.startswith("TASK_") and isinstance(v, str)} - {schema.TASK_ARGS})
FETCH_BATCH = 500  # task records per pipelined read


def fetch_records(q: Queue, ids: list[str]) -> list[Task]:
    """Task records without their argument payloads, pipelined; missing ids are left out."""
    out: list[Task] = []
    names = [f.encode() for f in RECORD_FIELDS]
    for i in range(0, len(ids), FETCH_BATCH):
        part = ids[i:i + FETCH_BATCH]
        pipe = q.r.pipeline(transaction=False)
        for tid in part:
            pipe.hmget(q.keys.task(tid), RECORD_FIELDS)
        for tid, values in zip(part, pipe.execute()):
            fields = {n: v for n, v in zip(names, values) if v is not None}
            if fields:
                out.append(Task(q.name, tid, fields))
    return out


def _retry_policy(retries: int, backoff: float, retry_on: Any) -> bytes | str:
    if not isinstance(retries, int) or retries < 0:
        raise ConfigError(f"retries must be a non-negative integer, not {retries!r}")
    if not isinstance(backoff, (int, float)) or backoff < 0:
        raise ConfigError(f"retry_backoff must be a non-negative number of seconds, not {backoff!r}")
    types = retry_on if isinstance(retry_on, tuple) else (retry_on,)
    if not all(isinstance(t, type) and issubclass(t, BaseException) for t in types):
        raise ConfigError(f"retry_on must be an exception class or a tuple of them, not {retry_on!r}")
    return codec.dumps((retries, float(backoff), types)) if retries else ""


def _error_type(task: Task) -> str:
    try:
        return type(task.errorvalue).__name__
    except Exception:  # noqa: BLE001 - an error class not importable here: fall back to the reason
        return task.reason.split(":", 1)[0]


def keyed(task: Any, key: str) -> Any:
    """The task with its root node's id derived from a user key (same key -> same node)."""
    import hashlib

    from .deferred import Call, _identity

    if not isinstance(key, str) or not key:
        raise ConfigError(f"key must be a non-empty string, not {key!r}")
    safe = re.fullmatch(r"[A-Za-z0-9_.:@+=-]{1,48}", key)
    node_id = "k-" + (key if safe else hashlib.sha1(key.encode()).hexdigest())
    root = task if isinstance(task, Call) else Call(_identity, (task,))
    root._id = node_id
    return root


def stop_worker(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGTERM a worker process (running tasks are handed back after its grace), SIGKILL its group if it hangs."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
