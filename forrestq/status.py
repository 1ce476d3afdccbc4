"""What the ``forrestq`` CLI shows: queue and worker status, task listings, one task's details.

Everything here is read from counters and sorted sets, never from a scan of a queue's tasks, so
``forrestq status`` answers in a few round trips whatever the size of the queue:

* counts per state come from ``fq:{q}:counts`` (what :meth:`forrestq.Queue.counts` reads),
* rates (tasks per minute over the last minute) are ``ZCOUNT`` on ``fq:{q}:done`` / ``fq:{q}:failed``,
  which are scored by finish time (O(log n)),
* workers are the ``fq:workers`` zset (id -> last heartbeat) plus one ``fq:w:<id>`` hash each; the
  hash has a TTL of three heartbeats, so a worker whose hash is gone stopped beating: it is shown
  as ``lost``, and dropped from the zset once its last heartbeat is :data:`DROP_AFTER` seconds old.

All functions take a plain ``redis.Redis`` (bytes responses) and return plain data (dicts, lists,
:class:`~forrestq.task.Task`), so the same data feeds the rich tables and ``--json``.
"""
from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any, cast

import redis

from . import schema
from .codec import load_args
from .errors import UnknownQueue, UnknownTask
from .schema import QueueKeys, check_name
from .task import Task

__all__ = ["RATE_WINDOW", "DROP_AFTER", "queue_names", "resolve_queues", "queue_status", "worker_status", "gather",
           "find_task", "queues_of", "list_tasks", "list_tasks_of", "summarize_call", "task_history", "short_repr",
           "human_bytes", "human_age", "human_duration"]

RATE_WINDOW = 60.0  # seconds: rates are tasks finished in the last minute
DROP_AFTER = 300.0  # seconds since the last heartbeat after which a lost worker is removed
TODO_SCAN_LIMIT = 20_000  # unfinished tasks examined at most when filtering them by state
LISTED_STATES = ("waiting", "ready", "running", "done", "failed")


def _s(value: bytes | str | None, default: str = "") -> str:
    if value is None:
        return default
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _num(value: bytes | str | None, kind: type = float, default: Any = None) -> Any:
    try:
        return kind(float(_s(value))) if value not in (None, b"", "") else default
    except ValueError:
        return default


def _members(reply: Any) -> list[bytes]:
    """A ZRANGE reply without scores (redis-py types every reply as a broad union)."""
    return cast("list[bytes]", reply)


# ------------------------------------------------------------------------------------------ queues


def queue_names(r: redis.Redis) -> list[str]:
    """Names of every queue ever scheduled on this server (``SMEMBERS fq:queues``), sorted."""
    return sorted(_s(n) for n in r.smembers(schema.QUEUES))


def resolve_queues(r: redis.Redis, queue: str | None) -> list[str]:
    """``[queue]`` if it exists, every queue if ``queue`` is None; UnknownQueue otherwise."""
    if queue is None:
        return queue_names(r)
    check_name(queue)
    if not r.sismember(schema.QUEUES, queue):
        known = queue_names(r)
        hint = f"; known: {', '.join(known[:10])}{' ...' if len(known) > 10 else ''}" if known \
            else "; no queue was scheduled on this server yet"
        raise UnknownQueue(f"no queue {queue!r}{hint}")
    return [queue]


def queue_status(r: redis.Redis, names: Sequence[str], now: float | None = None) -> dict[str, dict[str, Any]]:
    """Per queue: the counts of :meth:`Queue.counts` (waiting, ready, running, done, failed) plus
    ``done_per_min`` and ``failed_per_min`` over the last :data:`RATE_WINDOW` seconds, and ``retrying``:
    how many of the ``ready`` ones wait out a retry backoff (``fq:{q}:delayed``). One round trip."""
    now = time.time() if now is None else now
    pipe = r.pipeline(transaction=False)
    for name in names:
        k = QueueKeys(name)
        pipe.hgetall(k.counts)
        pipe.zcount(k.done, now - RATE_WINDOW, "+inf")
        pipe.zcount(k.failed, now - RATE_WINDOW, "+inf")
        pipe.zcard(k.delayed)
    replies = pipe.execute()
    out: dict[str, dict[str, Any]] = {}
    for i, name in enumerate(names):
        raw, done_n, failed_n, delayed_n = replies[4 * i: 4 * i + 4]
        got = {_s(k): int(v) for k, v in raw.items()}
        row: dict[str, Any] = {s: got.get(s, 0) for s in schema.STATES}
        scale = 60.0 / RATE_WINDOW
        row["done_per_min"] = round(done_n * scale, 1)
        row["failed_per_min"] = round(failed_n * scale, 1)
        row["retrying"] = delayed_n  # of ``ready``: waiting out a retry backoff
        out[name] = row
    return out


# ----------------------------------------------------------------------------------------- workers

# the worker hash fields read as integers (each one a key of worker_status's dicts, as named)
_INT_FIELDS = (schema.WORKER_PID, schema.WORKER_PROCS, schema.WORKER_BUSY, schema.WORKER_DONE,
               schema.WORKER_FAILED, schema.WORKER_RSS, schema.WORKER_STOPPING)


def worker_status(r: redis.Redis, now: float | None = None, drop_after: float = DROP_AFTER,
                  prune: bool = True) -> list[dict[str, Any]]:
    """Every worker in ``fq:workers``, sorted by host then pid, as dicts with the fields of its hash
    (host, pid, procs, busy, done, failed, rss, queues, started, beat, stopping) plus ``id``,
    ``age`` (seconds since the last heartbeat) and ``state``: ``running``, ``stopping`` or ``lost``
    (its hash expired: no heartbeat for three heartbeat intervals).

    With ``prune``, lost workers whose last heartbeat is older than ``drop_after`` are removed from
    ``fq:workers`` (ZREM only if the score did not change meanwhile) and not returned."""
    now = time.time() if now is None else now
    members = cast("list[tuple[bytes, float]]", r.zrange(schema.WORKERS, 0, -1, withscores=True))
    if not members:
        return []
    pipe = r.pipeline(transaction=False)
    for wid, _ in members:
        pipe.hgetall(schema.worker(_s(wid)))
    hashes = pipe.execute()
    out: list[dict[str, Any]] = []
    stale: list[tuple[bytes, float]] = []
    for (wid, score), fields in zip(members, hashes):
        info = _worker_info(_s(wid), {_s(k): v for k, v in fields.items()}, score)
        info["age"] = max(0.0, now - info["beat"])
        if info["state"] == "lost" and prune and now - score > drop_after:
            stale.append((wid, score))
            continue
        out.append(info)
    for wid, score in stale:
        _drop_worker(r, wid, score)
    out.sort(key=lambda w: (w["host"] or "", w["pid"] or 0, w["id"]))
    return out


def _worker_info(wid: str, f: dict[str, bytes], score: float) -> dict[str, Any]:
    """One worker from its hash ``f`` (empty once it expired) and its last heartbeat ``score``."""
    info: dict[str, Any] = {"id": wid}
    if f:
        info["host"] = _s(f.get(schema.WORKER_HOST))
        for name in _INT_FIELDS:
            info[name] = _num(f.get(name), int, 0)
        info["started"] = _num(f.get(schema.WORKER_STARTED), float)
        info["queues"] = [q for q in _s(f.get(schema.WORKER_QUEUES)).split(",") if q]
        info["state"] = "stopping" if info["stopping"] else "running"
    else:  # the hash expired: only the id (host:pid:nonce) and the last beat are left
        parts = wid.rsplit(":", 2)  # worker ids are host:pid:nonce
        host = parts[0] if len(parts) == 3 else wid
        pid_text = parts[1] if len(parts) == 3 else ""
        info.update(host=host or wid, pid=int(pid_text) if pid_text.isdigit() else None,
                    procs=None, busy=None, done=None, failed=None, rss=None, queues=[],
                    started=None, stopping=0, state="lost")
    info["beat"] = _num(f.get(schema.WORKER_BEAT), float, score)
    return info


def _drop_worker(r: redis.Redis, wid: bytes, score: float) -> None:
    """Remove a lost worker from ``fq:workers``. Harmless if it was only cut off for a while: a
    worker re-adds itself (ZADD) at every heartbeat."""
    r.zrem(schema.WORKERS, wid)


# ------------------------------------------------------------------------------------------ gather


def gather(r: redis.Redis, queue: str | None = None, now: float | None = None,
           prune: bool = True) -> dict[str, Any]:
    """Everything ``forrestq status`` shows: ``{"time", "queues": {name: counts + rates},
    "workers": [...]}``. With ``queue``, only that queue (UnknownQueue if there is none) and the
    workers serving it."""
    now = time.time() if now is None else now
    names = resolve_queues(r, queue)
    workers = worker_status(r, now, prune=prune)
    if queue is not None:
        workers = [w for w in workers if queue in w["queues"] or w["state"] == "lost"]
    return {"time": now, "queues": queue_status(r, names, now), "workers": workers}


# ------------------------------------------------------------------------------------------- tasks


def find_task(r: redis.Redis, task_id: str, queue: str | None = None) -> str:
    """The name of the queue holding task ``task_id`` (only ``queue`` if given); UnknownTask if none."""
    names = resolve_queues(r, queue)
    pipe = r.pipeline(transaction=False)
    for name in names:
        pipe.exists(QueueKeys(name).task(task_id))
    found = [n for n, hit in zip(names, pipe.execute()) if hit]
    if not found:
        where = f"queue {queue!r}" if queue else (f"any of {len(names)} queue(s)" if names else "any queue")
        raise UnknownTask(f"no task {task_id!r} in {where}")
    return found[0]


def queues_of(r: redis.Redis, ids: Iterable[str], queue: str | None = None) -> dict[str, list[str]]:
    """Task ids grouped by the queue holding them (only ``queue`` if given); UnknownTask for the
    first id not found, so a caller that changes tasks checks every id before changing any."""
    out: dict[str, list[str]] = {}
    for task_id in ids:
        out.setdefault(find_task(r, task_id, queue), []).append(task_id)
    return out


def _fetch(r: redis.Redis, name: str, ids: Iterable[bytes | str]) -> list[Task]:
    k = QueueKeys(name)
    task_ids = [_s(i) for i in ids]
    pipe = r.pipeline(transaction=False)
    for i in task_ids:
        pipe.hgetall(k.task(i))
    return [Task(name, i, f) for i, f in zip(task_ids, pipe.execute()) if f]


def list_tasks(r: redis.Redis, name: str, state: str | None = None, limit: int = 20,
               scan_limit: int = TODO_SCAN_LIMIT) -> tuple[list[Task], bool]:
    """Up to ``limit`` tasks of queue ``name``, and whether the listing may be incomplete.

    ``state`` done/failed: the most recent first (from the finish-time zsets). waiting/ready/running:
    unfinished tasks oldest first, filtered by state from at most ``scan_limit`` of them (the todo
    zset is ordered by creation, not by state). None: unfinished, then failed, then done."""
    k = QueueKeys(name)
    if limit <= 0:
        return [], False
    if state in ("done", "failed"):
        ids = _members(r.zrevrange(k.done if state == "done" else k.failed, 0, limit - 1))
        return _fetch(r, name, ids), False
    if state is None:
        out = _fetch(r, name, _members(r.zrange(k.todo, 0, limit - 1)))
        for key in (k.failed, k.done):
            if len(out) < limit:
                out += _fetch(r, name, _members(r.zrevrange(key, 0, limit - len(out) - 1)))
        return out[:limit], False
    return _scan_todo(r, name, state, limit, scan_limit)


def _scan_todo(r: redis.Redis, name: str, state: str, limit: int, scan_limit: int) -> tuple[list[Task], bool]:
    """Unfinished tasks in ``state``, oldest first, from at most ``scan_limit`` of the todo zset."""
    todo = QueueKeys(name).todo
    out: list[Task] = []
    start, page = 0, 500
    while len(out) < limit and start < scan_limit:
        ids = _members(r.zrange(todo, start, start + page - 1))
        if not ids:
            return out, False
        out += [t for t in _fetch(r, name, ids) if t.state == state]
        start += page
    return out[:limit], len(out) < limit and start >= scan_limit


def list_tasks_of(r: redis.Redis, names: Iterable[str], state: str | None = None,
                  limit: int = 20) -> tuple[list[Task], bool]:
    """:func:`list_tasks` over several queues, in order, until ``limit`` tasks are found; and
    whether the listing of any of them may be incomplete."""
    found: list[Task] = []
    partial = False
    for name in names:
        got, more = list_tasks(r, name, state, limit - len(found))
        found += got
        partial |= more
        if len(found) >= limit:
            break
    return found, partial


# ---------------------------------------------------------------------------------- one task's call


class _Input:
    """Stands in for the value of an input task when showing a call's arguments."""

    def __init__(self, text: str) -> None:
        self._text = text

    def __getitem__(self, key: Any) -> _Input:
        return _Input(f"{self._text}[{short_repr(key, 20)}]")

    def __getattr__(self, name: str) -> _Input:
        if name.startswith("__"):
            raise AttributeError(name)
        return _Input(f"{self._text}.{name}")

    def __repr__(self) -> str:
        return self._text


def short_repr(obj: Any, width: int = 60) -> str:
    """``repr(obj)`` on one line, cut to ``width``; never raises."""
    try:
        text = repr(obj)
    except Exception as exc:  # a repr may raise anything; never fail the caller
        text = f"<{type(obj).__name__} (repr failed: {type(exc).__name__})>"
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def summarize_call(r: redis.Redis, task: Task, width: int = 60) -> str:
    """``name(arg, key=value)`` of a task, the inputs shown as ``<task ID>``. The arguments are
    loaded here (lazily, only for this); if they cannot be (a class not importable in this
    process), ``name(<could not load: ...>)``."""
    blob = cast("bytes | None", r.hget(QueueKeys(task.queue).task(task.id), schema.TASK_ARGS))
    name = task.name or "?"
    if not blob:
        return f"{name}()"
    try:
        args, kwargs = load_args(blob, [_Input(f"<task {i}>") for i in task.inputs])
    except Exception as exc:  # any unpickling failure: show it, never fail the command
        return f"{name}(<could not load: {type(exc).__name__}: {short_repr(str(exc), 120)[1:-1]}>)"
    parts = [short_repr(a, width) for a in args] + [f"{k}={short_repr(v, width)}" for k, v in kwargs.items()]
    return f"{name}({', '.join(parts)})"


def task_history(task: Task) -> list[tuple[float, str, str]]:
    """``(time, event, host)`` of what the record's timestamps say: created, last started, finished.
    (The task hash keeps the latest attempt only; earlier attempts show as the attempt count and
    ``lost_on``.)"""
    out: list[tuple[float, str, str]] = []
    if task.created is not None:
        out.append((task.created, "created", ""))
    if task.started is not None:
        out.append((task.started, f"started (attempt {task.attempts})" if task.attempts else "started",
                    task.host))
    if task.finished is not None:
        out.append((task.finished, task.state, task.host))
    return out


# ------------------------------------------------------------------------------------- formatting


def human_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def human_age(seconds: float | None) -> str:
    """``3s ago``, ``4m ago``, ``2h ago``."""
    if seconds is None:
        return "-"
    s = max(0.0, seconds)
    if s < 60:
        return f"{s:.0f}s ago"
    if s < 3600:
        return f"{s / 60:.0f}m ago"
    if s < 86400:
        return f"{s / 3600:.1f}h ago"
    return f"{s / 86400:.1f}d ago"


def human_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 0.01:
        return f"{seconds * 1000:.1f} ms"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.2f} s"
    m, s = divmod(seconds, 60)
    if m < 60:
        return f"{m:.0f}m{s:02.0f}s"
    h, m = divmod(m, 60)
    return f"{h:.0f}h{m:02.0f}m"
