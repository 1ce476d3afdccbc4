"""Reading a queue: task records, counters, and the one loop that follows finished tasks.

Every root task that finishes is announced on the queue's ``finished`` stream (entry fields: task
id, generation) by the same script that records it. :class:`Follower` reads that stream with
blocking XREAD (no polling) and turns entries into :class:`~forrestq.task.Task` records: each root
*generation* once (a requeued task finishes again under a new generation), optionally only the ids
a caller waits for (``only``: a map's tasks, one ``wait``, a :class:`~forrestq.batch.Batch`). It is
the only code that follows the stream; ``results``, ``wait``, ``map``, batches and debug mode all use
it, and so all of them:

* survive a Redis outage: reads are retried while the server is unreachable, until the caller's
  deadline or for :data:`OUTAGE` seconds (a restarting server does not end an overnight loop);
* keep one deadline: ``timeout`` seconds *without progress* (reset whenever a task arrives);
* with ``only``, fall back every :data:`SWEEP_EVERY` seconds without news to reading the waited-for
  records directly (the stream may have been trimmed, or an entry missed);
* say when no live worker serves the queue (:func:`live_workers`): in the progress bar while nothing
  finishes, and in the TimeoutError message.

Counters (constant time): :func:`counts` counts DAG nodes by state; :func:`root_counts` counts the
roots (the tasks users scheduled, what ``results()`` yields): unfinished, done, failed. Listings
(:func:`listing`) show roots unless asked for every node.

Progress (:func:`running_progress`): the running tasks that reported progress are the queue's
progress index (written by progress.lua, only by tasks that call :func:`forrestq.progress`); a read
looks at :data:`PROGRESS_SCAN` of them at most, and the bars read it at most every
:data:`PROGRESS_EVERY` s (:class:`RunningShares`), so a run without progress reports pays one empty
read a second, and only with a bar.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar, cast

import redis

from . import schema, unfinished
from .bars import ResultsProgress
from .errors import ConfigError, UnknownTask, shown
from .schema import QueueKeys
from .task import Task, TaskRef, fraction, parse_progress

if TYPE_CHECKING:
    from .core import QueueCore

OUTAGE = 300.0  # seconds a follower keeps retrying while Redis is unreachable (with no timeout)
SWEEP_EVERY = 10.0  # seconds without news before the records of ``only`` are read directly
BLOCK_MS = 2000  # longest single blocking read: deadlines and outages are looked at in between
FETCH_BATCH = 500  # task records per pipelined read
QUIET_BEFORE_CHECK = 2.0  # seconds without a finished task before the workers are looked at
CHECK_WORKERS_EVERY = 3.0  # seconds between two looks at the workers while nothing finishes
ROOT_STATES = ("unfinished", "done", "failed")  # the keys of root_counts()
PROGRESS_SCAN = 1000  # running tasks with progress one read looks at, at most (the oldest reports first)
PROGRESS_EVERY = 1.0  # s between two reads of the running tasks' progress by a bar
_RECORD = [f.encode() for f in schema.RECORD_FIELDS]
_FINISHED = {s.encode() for s in schema.FINISHED_STATES}
_RUNNING = schema.RUNNING.encode()
_ENTRY_TASK, _ENTRY_GEN = schema.ENTRY_TASK.encode(), schema.ENTRY_GEN.encode()

T = TypeVar("T")


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def fetch_records(r: redis.Redis, k: QueueKeys, ids: Sequence[str]) -> list[Task]:
    """Task records without their argument payloads (which can be large and are never shown),
    pipelined; missing ids are left out."""
    out: list[Task] = []
    for i in range(0, len(ids), FETCH_BATCH):
        part = ids[i:i + FETCH_BATCH]
        pipe = r.pipeline(transaction=False)
        for tid in part:
            pipe.hmget(k.task(tid), schema.RECORD_FIELDS)
        for tid, values in zip(part, pipe.execute()):
            fields = {n: v for n, v in zip(_RECORD, values) if v is not None}
            if fields:
                out.append(Task(k.name, tid, fields))
    return out


def running_progress(r: redis.Redis, k: QueueKeys, limit: int = PROGRESS_SCAN, roots: bool = False,
                     prune: bool = False) -> dict[str, dict[str, Any]]:
    """The progress of running tasks that reported some (:func:`forrestq.progress`), by task id, in
    the order of their last report, oldest first: at most ``limit`` of them looked at, ``roots``: of
    roots only. Two round trips. ``prune``: ids of the index whose task no longer runs (its process
    died before it could say so) are removed from it."""
    ids = [_text(i) for i in cast("list[bytes]", r.zrange(k.progress, 0, max(0, limit) - 1))]
    if not ids:
        return {}
    pipe = r.pipeline(transaction=False)
    for tid in ids:
        pipe.hmget(k.task(tid), schema.TASK_STATE, schema.TASK_PROGRESS, schema.TASK_TOKEN, schema.TASK_ROOT)
    out: dict[str, dict[str, Any]] = {}
    gone = []
    for tid, (state, raw, token, root) in zip(ids, pipe.execute()):
        if state != _RUNNING:
            gone.append(tid)
            continue
        got = parse_progress(raw, token)
        if got is not None and (root == b"1" or not roots):
            out[tid] = got
    if prune and gone:
        r.zrem(k.progress, *gone)
    return out


class RunningShares:
    """What a bar adds for running tasks: the fraction done of each (``only``: of these ids; else of
    the queue's running roots), read at most every :data:`PROGRESS_EVERY` s; nothing when disabled."""

    def __init__(self, r: redis.Redis, k: QueueKeys, only: set[str] | None = None, enabled: bool = True) -> None:
        self.r, self.k, self.only, self.enabled = r, k, only, enabled
        self.next_read = time.monotonic()

    def read(self) -> dict[str, float] | None:
        """Task id -> fraction done (0..1), or None when it is not time to look again."""
        if not self.enabled or time.monotonic() < self.next_read:
            return None
        self.next_read = time.monotonic() + PROGRESS_EVERY
        try:
            got = running_progress(self.r, self.k, roots=self.only is None, prune=True)
        except redis.RedisError:
            return None
        return {tid: fraction(p) for tid, p in got.items() if self.only is None or tid in self.only}


def task_id(ref: TaskRef | Task | str) -> str:
    """The id of a task given as a TaskRef (from schedule), a Task (from results, wait, get) or an id."""
    return ref.id if isinstance(ref, (TaskRef, Task)) else str(ref)


def get(q: QueueCore, ref: TaskRef | str) -> Task:
    """The current record of one task (any state), payload included."""
    tid = task_id(ref)
    fields = q.r.hgetall(q.keys.task(tid))
    if not fields:
        raise UnknownTask(f"no task {shown(tid)} in queue {q.name!r}")
    return Task(q.name, tid, fields)


def check_limit(limit: Any) -> int | None:
    """A listing's ``limit`` as given (None: no limit) if it is a non-negative integer; ConfigError
    otherwise (a negative limit would read as "all but the last" to ZRANGE)."""
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise ConfigError(f"limit must be None or a non-negative integer, not {shown(limit)}")
    return limit


def listing(q: QueueCore, key: str | None, limit: int | None, nodes: bool = False) -> list[Task]:
    """The records of the ids in sorted set ``key`` (done, failed), in score order, or with ``key``
    None of the unfinished tasks (:mod:`forrestq.unfinished`'s order): the roots (what users
    scheduled) only, or with ``nodes`` every DAG node (the inner calls of trees too).

    Without a limit the ids are read at once (a snapshot); with one, roots are looked for page by
    page (the root flag first, then the records of the roots), so a queue of big trees does not send
    every inner node's record to find ten roots."""
    limit = check_limit(limit)
    if limit == 0:
        return []
    if nodes or limit is None:
        if key is None:
            ids = unfinished.ids(q.r, q.keys, limit)
        else:
            ids = [_text(i) for i in q.r.zrange(key, 0, -1 if limit is None else limit - 1)]
        return fetch_records(q.r, q.keys, ids if nodes else _roots(q, ids))
    out: list[Task] = []
    seen: set[str] = set()
    for page in _pages(q, key):
        fresh = [i for i in _roots(q, page) if i not in seen]  # an id may shift into the next page
        seen.update(fresh)
        out += fetch_records(q.r, q.keys, fresh)
        if len(out) >= limit:
            break
    return out[:limit]


def _pages(q: QueueCore, key: str | None) -> Iterator[list[str]]:
    """Ids of sorted set ``key`` (None: of the unfinished tasks), :data:`FETCH_BATCH` at a time."""
    if key is None:
        yield from (page.ids for page in unfinished.scan(q.r, q.keys, count=FETCH_BATCH))
        return
    start = 0
    while True:
        page = [_text(i) for i in q.r.zrange(key, start, start + FETCH_BATCH - 1)]
        if not page:
            return
        start += len(page)
        yield page


def _roots(q: QueueCore, ids: Sequence[str]) -> list[str]:
    """The ids among ``ids`` that are roots (scheduled by a user), in order; pipelined by batches."""
    out: list[str] = []
    for i in range(0, len(ids), FETCH_BATCH):
        part = ids[i:i + FETCH_BATCH]
        pipe = q.r.pipeline(transaction=False)
        for tid in part:
            pipe.hget(q.keys.task(tid), schema.TASK_ROOT)
        out += [tid for tid, flag in zip(part, pipe.execute()) if flag == b"1"]
    return out


def counts(q: QueueCore) -> dict[str, int]:
    """Number of tasks (DAG nodes) in each state, read from counters (constant time)."""
    got = {_text(k): int(v) for k, v in q.r.hgetall(q.keys.counts).items()}
    return {s: got.get(s, 0) for s in schema.STATES}


def roots_of(raw: Mapping[Any, Any]) -> dict[str, int]:
    """The root counts in a counts hash as read by HGETALL (for callers that pipeline the read):
    ``{"unfinished": n, "done": n, "failed": n}``."""
    got = {_text(k): int(v) for k, v in raw.items()}
    return {state: max(0, got.get(field, 0)) for state, field in zip(ROOT_STATES, schema.ROOT_COUNTS)}


def root_counts(r: redis.Redis, k: QueueKeys) -> dict[str, int]:
    """Number of roots (the tasks users scheduled) unfinished (waiting, ready or running), done and
    failed: ``{"unfinished": n, "done": n, "failed": n}``, read from counters (constant time).
    A task tree counts once, whatever its number of nodes."""
    return roots_of(r.hgetall(k.counts))


def check_timeout(value: Any, what: str = "timeout") -> float | None:
    """A wait's timeout as given (None: no limit) if it is a non-negative number of seconds;
    ConfigError otherwise (``nan`` is no limit nowhere, ``True`` is no second)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ConfigError(f"{what} must be None or a non-negative number of seconds, not {shown(value)}")
    return float(value)


# ------------------------------------------------------------------------------------------ workers


def worker_serves(queues: bytes | str | None, stopping: bytes | str | None, refusing: bytes | str | None,
                  queue: str) -> bool:
    """Whether a worker whose hash ``fq:w:<id>`` holds these ``queues``, ``stopping`` and ``refusing``
    fields is live and serves ``queue``. The rule of ``forrestq status``: the hash has a TTL of three
    heartbeats, so a worker whose hash is gone (``queues`` None) stopped beating (lost); a stopping
    worker, or one that stopped claiming (``refusing``: its secret differs), claims nothing new."""
    if queues is None or _text(stopping or b"0") not in ("", "0") or _text(refusing or b""):
        return False
    return queue in _text(queues).split(",")


def live_workers(r: redis.Redis, queue: str) -> int:
    """How many live workers serve ``queue`` (see :func:`worker_serves`): one read of ``fq:workers``
    and one pipelined read of the workers' hashes."""
    ids = r.zrange(schema.WORKERS, 0, -1)
    if not ids:
        return 0
    pipe = r.pipeline(transaction=False)
    for wid in ids:
        pipe.hmget(schema.worker(_text(wid)), schema.WORKER_QUEUES, schema.WORKER_STOPPING, schema.WORKER_REFUSING)
    return sum(1 for queues, stopping, refusing in pipe.execute() if worker_serves(queues, stopping, refusing, queue))


def no_worker_text(queue: str) -> str:
    return f"no live worker serves queue {queue!r}"


def no_worker_hint(r: redis.Redis, queue: str) -> str:
    """For a timeout message: "" while a live worker serves ``queue``, else what to do about it."""
    try:
        if live_workers(r, queue):
            return ""
    except redis.RedisError:
        return ""
    return f" and {no_worker_text(queue)}; start one with: forrestq worker --queue {queue}"


class WorkerWatch:
    """Says, while nothing finishes, whether any live worker serves the queue: the workers are looked
    at once nothing finished for :data:`QUIET_BEFORE_CHECK` s, then every :data:`CHECK_WORKERS_EVERY` s."""

    def __init__(self, r: redis.Redis, queue: str, enabled: bool = True) -> None:
        self.r, self.queue, self.enabled = r, queue, enabled
        self.next_check = time.monotonic() + QUIET_BEFORE_CHECK
        self.text = ""

    def progressed(self) -> None:
        """A task finished: something serves the queue."""
        self.next_check = time.monotonic() + QUIET_BEFORE_CHECK
        self.text = ""

    def note(self) -> str:
        """"no live worker serves queue 'x'" or "" (the last answer between two looks)."""
        if self.enabled and time.monotonic() >= self.next_check:
            self.next_check = time.monotonic() + CHECK_WORKERS_EVERY
            try:
                self.text = "" if live_workers(self.r, self.queue) else no_worker_text(self.queue)
            except redis.RedisError:
                self.text = ""
        return self.text


def last_finished(q: QueueCore) -> str:
    """The id of the newest entry of the finished stream ("0-0" when empty): follow from here to
    see only what finishes from now on."""
    return _last_id(q.r, q.keys)


def _last_id(r: redis.Redis, k: QueueKeys) -> str:
    last = r.xrevrange(k.finished, count=1)
    return _text(last[0][0]) if last else "0-0"


def patiently(call: Callable[[], T], give_up: float) -> T:
    """call(), retried every 0.5 s while Redis is unreachable, until ``time.monotonic()`` reaches
    ``give_up`` (then its error is raised): the followers of the finished and the event streams."""
    while True:
        try:
            return call()
        except (redis.ConnectionError, redis.TimeoutError):
            if time.monotonic() >= give_up:
                raise
            time.sleep(0.5)


class Follower:
    """Follows one queue's finished stream from ``since``; see the module doc."""

    def __init__(self, r: redis.Redis, k: QueueKeys, *, since: str = "0", only: Iterable[str] | None = None,
                 timeout: float | None = None, outage: float = OUTAGE) -> None:
        self.r, self.k = r, k
        self.since = since
        self.only: set[str] | None = None if only is None else set(only)
        self.timeout = timeout
        self.outage = outage
        self.seen: dict[str, int] = {}  # task id -> generation yielded
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.next_sweep = time.monotonic() + SWEEP_EVERY

    @property
    def finished(self) -> bool:
        """With ``only``: every waited-for task has been returned."""
        return self.only is not None and not self.only

    def poll(self, block_ms: int = 0) -> list[Task]:
        """Newly finished tasks in finishing order; blocks up to ``block_ms`` (capped by the
        deadline) when none is there yet."""
        block = self._block(block_ms)
        entries = self.patiently(lambda: self.r.xread({self.k.finished: self.since}, count=1000,
                                                      block=block or None))
        return self._take(entries)

    def poll_one(self, tid: str, block_ms: int) -> list[Task]:
        """:meth:`poll` for one task, its record read in the same round trip, pipelined right after
        the blocking read: when the read wakes for that task's end, the record is already there."""
        block = self._block(block_ms)
        pipe = self.r.pipeline(transaction=False)
        pipe.xread({self.k.finished: self.since}, count=1000, block=block or None)
        pipe.hmget(self.k.task(tid), schema.RECORD_FIELDS)
        entries, values = self.patiently(pipe.execute)
        fields = {n: v for n, v in zip(_RECORD, values) if v is not None}
        return self._take(entries, {tid: Task(self.k.name, tid, fields)} if fields else {})

    def poll_open(self) -> tuple[list[Task], int]:
        """Newly finished tasks and the number of roots still unfinished, read together (a task
        finishing between two separate reads could otherwise be missed). With ``only``: of those
        roots, the ones not returned yet."""
        if self.only is not None:
            tasks = self.poll()
            return tasks, len(self.only)
        k = self.k
        entries, open_n = self.patiently(lambda: self.r.pipeline(transaction=True).xread(
            {k.finished: self.since}, count=1000).hget(k.counts, schema.COUNT_OPEN).execute())
        return self._take(entries), max(0, int(open_n or 0))

    def start_here(self) -> None:
        """Follow from the newest entry of the finished stream: what finishes from now on. With
        :meth:`sweep` called after it, nothing finished before is missed either."""
        self.since = self.patiently(lambda: _last_id(self.r, self.k))

    def open_roots(self) -> int:
        return max(0, int(self.patiently(lambda: self.r.hget(self.k.counts, schema.COUNT_OPEN)) or 0))

    def check_deadline(self, message: str | Callable[[], str]) -> float | None:
        """Seconds left before the timeout (None: no timeout); TimeoutError(message) when past
        (``message`` may be a function, called only then)."""
        if self.deadline is None:
            return None
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(message if isinstance(message, str) else message())
        return left

    def patiently(self, call: Callable[[], T]) -> T:
        """call(), retried while Redis is unreachable, until the deadline or for ``outage`` s."""
        return patiently(call, time.monotonic() + self.outage if self.deadline is None else self.deadline)

    def _block(self, block_ms: int) -> int:
        if block_ms <= 0 or self.deadline is None:
            return max(0, block_ms)
        return max(1, min(block_ms, int((self.deadline - time.monotonic()) * 1000)))

    def _take(self, entries: Any, known: Mapping[str, Task] | None = None) -> list[Task]:
        """The tasks the finished-stream ``entries`` announce that this follower wants, in order;
        ``known``: records read with the entries (one read after them is saved where they match)."""
        wanted: dict[str, int] = {}
        if entries:
            batch = entries[0][1]
            self.since = _text(batch[-1][0])
            for _, f in batch:
                tid, gen = _text(f[_ENTRY_TASK]), int(f.get(_ENTRY_GEN, b"0"))
                if (self.only is None or tid in self.only) and self.seen.get(tid, -1) < gen:
                    wanted[tid] = gen
        elif self.only and time.monotonic() >= self.next_sweep:
            return self.sweep()
        if not wanted:
            return []
        have = {tid: t for tid, t in (known or {}).items() if tid in wanted and t.generation == wanted[tid]}
        rest = [tid for tid in wanted if tid not in have]
        records = self.patiently(lambda: fetch_records(self.r, self.k, rest)) if rest else []
        found = {t.id: t for t in [*have.values(), *records]}
        return self._accept([found[tid] for tid in wanted if tid in found and found[tid].generation == wanted[tid]])

    def sweep(self) -> list[Task]:
        """Read the states of the waited-for tasks directly: the fallback to the stream, and, right
        after :meth:`start_here`, the ones that had finished before (a ``key=`` matched to a task
        that finished in an earlier run)."""
        self.next_sweep = time.monotonic() + SWEEP_EVERY
        assert self.only is not None
        ids = sorted(self.only)
        pipe = self.r.pipeline(transaction=False)
        for tid in ids:
            pipe.hget(self.k.task(tid), schema.TASK_STATE)
        done = [tid for tid, st in zip(ids, self.patiently(pipe.execute)) if st in _FINISHED]
        return self._accept(self.patiently(lambda: fetch_records(self.r, self.k, done)))

    def _accept(self, records: list[Task]) -> list[Task]:
        out = []
        for task in records:
            if task.state in schema.FINISHED_STATES and self.seen.get(task.id, -1) < task.generation:
                self.seen[task.id] = task.generation
                if self.only is not None:
                    self.only.discard(task.id)
                out.append(task)
        if out:
            self.next_sweep = time.monotonic() + SWEEP_EVERY
            if self.timeout is not None:
                self.deadline = time.monotonic() + self.timeout
        return out


def _quiet(q: QueueCore, timeout: float | None, open_n: int) -> str:
    """The TimeoutError message of results()."""
    return (f"no task of queue {q.name!r} finished for {timeout} s ({open_n} still unfinished)"
            f"{no_worker_hint(q.r, q.name)}")


def follow_ids(q: QueueCore, ids: Iterable[str], timeout: float | None = None) -> tuple[Follower, list[Task]]:
    """A follower of the roots ``ids`` from now on, and those of them that had finished already
    (by finishing time)."""
    follower = Follower(q.r, q.keys, only=ids, timeout=timeout)
    follower.start_here()
    return follower, sorted(follower.sweep(), key=lambda t: t.finished or 0.0)


def results(q: QueueCore, progress: bool = False, timeout: float | None = None,
            only: Iterable[str] | None = None) -> Iterator[Task]:
    """Each root task of the queue once it has finished, on whichever machine, in finishing order;
    returns when no root is left unfinished. ``only``: just these roots, each once, those finished
    already first (a batch's). ``timeout``: seconds without progress before ``TimeoutError``."""
    tasks: list[Task] = []
    if only is None:
        follower = Follower(q.r, q.keys, timeout=timeout)
    else:
        follower, tasks = follow_ids(q, only, timeout)
    watch = WorkerWatch(q.r, q.name, enabled=progress)
    shares = RunningShares(q.r, q.keys, follower.only, enabled=progress)
    with ResultsProgress(q.name, enabled=progress) as bar:
        while True:
            more, open_n = follower.poll_open()
            tasks += more
            bar.running(shares.read())
            if not tasks:
                bar.update(len(follower.seen), open_n)
                if open_n <= 0:
                    return
                bar.note(watch.note())
                follower.check_deadline(partial(_quiet, q, timeout, open_n))
                tasks = follower.poll(BLOCK_MS)
            if tasks:
                if watch.text:
                    bar.note("")
                watch.progressed()
            for task in tasks:
                bar.advance(task)
                yield task
            tasks = []


def wait(q: QueueCore, ref: TaskRef | str, timeout: float | None = None) -> Task:
    """Block until one root task has finished and return its record."""
    tid = task_id(ref)
    since = ref.since if isinstance(ref, TaskRef) else ""
    follower = Follower(q.r, q.keys, since=since or "0", only=[tid], timeout=timeout)
    if since:  # just scheduled here: nothing to look at before blocking
        got = follower.poll_one(tid, BLOCK_MS)
        if got:
            return got[0]
    while True:
        pipe = q.r.pipeline(transaction=True)
        pipe.xrevrange(q.keys.finished, count=1)
        pipe.hmget(q.keys.task(tid), schema.RECORD_FIELDS)
        last, values = follower.patiently(pipe.execute)
        fields = {n: v for n, v in zip(_RECORD, values) if v is not None}
        if not fields:
            raise UnknownTask(f"no task {shown(tid)} in queue {q.name!r}")
        task = Task(q.name, tid, fields)
        if task.state in schema.FINISHED_STATES:
            return task
        if not task.root:
            raise ConfigError(f"task {tid} is not a scheduled root; wait() follows roots only")
        follower.since = _text(last[0][0]) if last else "0"
        follower.check_deadline(lambda: f"task {tid} did not finish within {timeout} s"
                                        f"{'' if q.local else no_worker_hint(q.r, q.name)}")
        got = follower.poll_one(tid, BLOCK_MS)
        if got:
            return got[0]
