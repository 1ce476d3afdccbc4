"""What the ``forrestq`` CLI shows: queue and worker status, task listings, one task's details.

Everything here is read from counters and sorted sets, never from a scan of a queue's tasks, so
``forrestq status`` answers in a few round trips whatever the size of the queue:

* counts per state come from ``fq:{q}:counts`` (what :meth:`forrestq.Queue.counts` reads): they
  count DAG nodes (one per deferred call); the same hash counts the roots, the tasks users scheduled
  (:func:`forrestq.reading.roots_of`), shown apart,
* rates (tasks per minute over the last minute) are ``ZCOUNT`` on ``fq:{q}:done`` / ``fq:{q}:failed``,
  which are scored by finish time (O(log n)),
* workers are the ``fq:workers`` zset (id -> last heartbeat) plus one ``fq:w:<id>`` hash each; the
  hash has a TTL of three heartbeats, so a worker whose hash is gone stopped beating: it is shown
  as ``lost``, and dropped from the zset once its last heartbeat is :data:`DROP_AFTER` seconds old.
  A live worker serves its queues unless it stops or refuses tasks (the rule of
  :func:`forrestq.reading.worker_serves`); a queue with unfinished tasks and no worker serving it is
  listed as ``unserved``.

Listing unfinished tasks in one state (waiting, scheduled, ready, running) reads the indexes of
:mod:`forrestq.unfinished` with their states in pipelined batches, and stops once the counters say
every task in that state was found (or ``limit`` were), or after :data:`SCAN_SECONDS` (the listing is
then marked partial).

All functions take a plain ``redis.Redis`` (bytes responses) and return plain data (dicts, lists,
:class:`~forrestq.task.Task`), so the same data feeds the rich tables and ``--json``.
"""
from __future__ import annotations

import math
import re
import time
from collections.abc import Iterable, Sequence
from typing import Any, cast

import redis

from . import limits, schema, unfinished
from . import resources as requests
from .environment import differences
from .errors import UnknownQueue, UnknownTask
from .periodic import Periodic, listing
from .reading import fetch_records, roots_of, running_progress
from .schema import QueueKeys, check_name
from .task import Task

__all__ = ["RATE_WINDOW", "DROP_AFTER", "queue_names", "resolve_queues", "queue_status", "worker_status", "gather",
           "running_tasks",
           "serves", "find_task", "queues_of", "records", "list_tasks", "list_tasks_of", "why_not_cancelled",
           "why_not_requeued", "summarize_call", "task_history", "short_repr", "short_error", "json_value",
           "human_bytes", "human_age", "human_duration"]

RATE_WINDOW = 60.0  # seconds: rates are tasks finished in the last minute
DROP_AFTER = 300.0  # seconds since the last heartbeat after which a lost worker is removed
SCAN_BATCH = 2_000  # unfinished tasks whose state is read per round trip when filtering by state
SCAN_SECONDS = 30.0  # longest time spent filtering unfinished tasks by state
LISTED_STATES = ("waiting", "scheduled", "ready", "running", "done", "failed")
UNFINISHED = (schema.WAITING, schema.SCHEDULED, schema.READY, schema.RUNNING)


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
    """Per queue: the counts of :meth:`Queue.counts` (waiting, scheduled, ready, running, done, failed:
    DAG nodes) plus ``done_per_min`` and ``failed_per_min`` over the last :data:`RATE_WINDOW` seconds,
    ``next_due``: when the first ``scheduled`` one is due (server clock; None: none; a delay, ``at``
    or a retry backoff: ``fq:{q}:delayed``), ``expiring`` and ``next_expiry``: how many finished roots
    wait for their result TTL and when the first goes (server clock; None: none), ``levels``: the
    priority levels above 0 the queue has used (highest first), ``periodic``: the
    schedules of ``Queue.every``/``cron``
    (:func:`forrestq.periodic.listing`, the next due first), and ``roots``: the tasks users
    scheduled, ``{"unfinished", "done", "failed"}``. Two round trips."""
    now = time.time() if now is None else now
    pipe = r.pipeline(transaction=False)
    for name in names:
        k = QueueKeys(name)
        pipe.hgetall(k.counts)
        pipe.zcount(k.done, now - RATE_WINDOW, "+inf")
        pipe.zcount(k.failed, now - RATE_WINDOW, "+inf")
        pipe.zrange(k.delayed, 0, 0, withscores=True)
        pipe.zrange(k.expiry, 0, 0, withscores=True)
        pipe.zcard(k.expiry)
        pipe.zrange(k.levels, 0, -1)
    replies = pipe.execute()
    out: dict[str, dict[str, Any]] = {}
    for i, name in enumerate(names):
        raw, done_n, failed_n, first_due, first_expiry, expiring, levels = replies[7 * i: 7 * i + 7]
        got = {_s(k): int(v) for k, v in raw.items()}
        row: dict[str, Any] = {s: got.get(s, 0) for s in schema.STATES}
        scale = 60.0 / RATE_WINDOW
        row["done_per_min"] = round(done_n * scale, 1)
        row["failed_per_min"] = round(failed_n * scale, 1)
        row["next_due"] = float(first_due[0][1]) if first_due else None
        row["expiring"] = int(expiring)  # finished roots with a result TTL, not deleted yet
        row["next_expiry"] = float(first_expiry[0][1]) if first_expiry else None
        row["levels"] = sorted((int(v) for v in levels), reverse=True)  # priority levels above 0 used
        row["periodic"] = [periodic_row(p) for p in listing(r, QueueKeys(name))]
        row["roots"] = roots_of(raw)
        out[name] = row
    return out


def periodic_row(p: Periodic) -> dict[str, Any]:
    """One periodic schedule as ``status --json`` and ``periodic list --json`` show it."""
    return {"name": p.name, "every": p.every, "cron": p.cron or None, "tz": p.tz or None, "next_due": p.next_due,
            "paused": p.paused, "function": p.function, "runs": p.runs, "last": p.last,
            "last_task": p.last_task or None}


# ----------------------------------------------------------------------------------------- workers

# the worker hash fields read as integers (each one a key of worker_status's dicts, as named)
_INT_FIELDS = (schema.WORKER_PID, schema.WORKER_PROCS, schema.WORKER_BUSY, schema.WORKER_DONE,
               schema.WORKER_FAILED, schema.WORKER_RSS, schema.WORKER_STOPPING)


def worker_status(r: redis.Redis, now: float | None = None, drop_after: float = DROP_AFTER,
                  prune: bool = True) -> list[dict[str, Any]]:
    """Every worker in ``fq:workers``, sorted by host then pid, as dicts with the fields of its hash
    (host, pid, procs, busy, done, failed, rss, queues, started, beat, stopping, fingerprint of its
    secret, refusing: why it stopped claiming, "" while it claims; env: the id of its environment
    fingerprint, "" until known) plus ``id``, ``age`` (seconds since
    the last heartbeat) and ``state``: ``running``, ``stopping``, ``refusing`` or ``lost`` (its hash
    expired: no heartbeat for three heartbeat intervals).

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
        info["fingerprint"] = _s(f.get(schema.WORKER_FINGERPRINT))
        info["refusing"] = _s(f.get(schema.WORKER_REFUSING))
        info["env"] = _s(f.get(schema.WORKER_ENV))  # its environment fingerprint's id ("" not known yet)
        info["resources"] = _s(f.get(schema.WORKER_RESOURCES))  # what it has ("": an older worker)
        info["state"] = "stopping" if info["stopping"] else "refusing" if info["refusing"] else "running"
    else:  # the hash expired: only the id (host:pid:nonce) and the last beat are left
        parts = wid.rsplit(":", 2)  # worker ids are host:pid:nonce
        host = parts[0] if len(parts) == 3 else wid
        pid_text = parts[1] if len(parts) == 3 else ""
        info.update(host=host or wid, pid=int(pid_text) if pid_text.isdigit() else None,
                    procs=None, busy=None, done=None, failed=None, rss=None, queues=[],
                    started=None, stopping=0, fingerprint="", refusing="", env="", resources="", state="lost")
    info["beat"] = _num(f.get(schema.WORKER_BEAT), float, score)
    return info


def _drop_worker(r: redis.Redis, wid: bytes, score: float) -> None:
    """Remove a lost worker from ``fq:workers``. Harmless if it was only cut off for a while: a
    worker re-adds itself (ZADD) at every heartbeat."""
    r.zrem(schema.WORKERS, wid)


# ------------------------------------------------------------------------------------------ gather

UNFIT_SCAN = 1000  # tasks of a queue's unfit hash status looks at (HSCAN: a bounded read)
RUNNING_SHOWN = 20  # running tasks with progress status shows per queue (the oldest reports first)


def running_tasks(r: redis.Redis, name: str, limit: int = RUNNING_SHOWN) -> list[dict[str, Any]]:
    """The running tasks of queue ``name`` that reported progress (:func:`forrestq.progress`), at most
    ``limit``: ``[{"id", "function", "host", "progress": {"done", "total", "message", "at"}}]``. Read
    from the queue's progress index (a bounded read: a few times ``limit`` entries looked at), never
    from a scan of the tasks; nothing is written."""
    found = list(running_progress(r, QueueKeys(name), limit=limit * 5).items())[:limit]
    if not found:
        return []
    tasks = {t.id: t for t in records(r, name, [tid for tid, _ in found])}
    return [{"id": tid, "function": tasks[tid].name, "host": tasks[tid].host, "progress": p}
            for tid, p in found if tid in tasks]


def unfit_tasks(r: redis.Redis, name: str, live: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ready tasks of queue ``name`` that need more than any of the ``live`` workers serving it
    has (issue 14): ``[{"tasks": 3, "need": "gpu=4", "request": "cpus=1,gpu=4"}]``, from the queue's
    unfit hash (tasks a worker handed back as too big for it; at most :data:`UNFIT_SCAN` looked at)
    compared with the workers' published resources. A worker that publishes none (an older one) may
    run anything: then nothing is said."""
    if any(not w.get("resources") for w in live):
        return []
    k = QueueKeys(name)
    _, found = r.hscan(k.unfit, 0, count=UNFIT_SCAN)
    if not found:
        return []
    ids = list(found)[:UNFIT_SCAN]
    pipe = r.pipeline(transaction=False)
    for tid in ids:
        pipe.hget(k.task(_s(tid)), schema.TASK_STATE)
    have = [requests.from_text(w["resources"]) for w in live]
    most = {n: max(h.get(n, 0.0) for h in have) for n in {n for h in have for n in h}}
    groups: dict[str, int] = {}
    for tid, state in zip(ids, pipe.execute()):
        text = _s(found[tid])
        if _s(state) == schema.READY and not any(requests.fits(requests.from_text(text), h) for h in have):
            groups[text] = groups.get(text, 0) + 1
    return [{"tasks": n, "need": requests.exceeding(requests.from_text(text), most), "request": text}
            for text, n in sorted(groups.items(), key=lambda kv: -kv[1])]


def serves(worker: dict[str, Any], queue: str) -> bool:
    """Whether a worker of :func:`worker_status` is live and serves ``queue``: the rule of
    :func:`forrestq.reading.worker_serves` (not lost, not stopping, not refusing tasks)."""
    return worker["state"] == "running" and queue in worker["queues"]


def gather(r: redis.Redis, queue: str | None = None, now: float | None = None,
           prune: bool = True) -> dict[str, Any]:
    """Everything ``forrestq status`` shows: ``{"time", "queues": {name: counts + rates + roots +
    workers + running_tasks}, "workers": [...], "unserved": [...], "environments": [...]}``.
    ``running_tasks``: up to :data:`RUNNING_SHOWN` running tasks with their progress
    (:func:`running_tasks`). Each queue's ``workers`` is
    the number of live workers serving it (:func:`serves`); ``unserved`` names the queues with
    unfinished tasks or unpaused periodic schedules and no such worker (nothing will run them, no
    tick will be made); ``environments`` says how the
    environments of the live workers shown differ (:func:`forrestq.environment.differences`; [] when
    they are one). With ``queue``, only that queue (UnknownQueue if there is none) and the workers
    serving it (and the lost ones)."""
    now = time.time() if now is None else now
    names = resolve_queues(r, queue)
    workers = worker_status(r, now, prune=prune)
    queues = queue_status(r, names, now)
    for name, row in queues.items():
        row["workers"] = sum(1 for w in workers if serves(w, name))
        row["unfit"] = unfit_tasks(r, name, [w for w in workers if serves(w, name)])
        row["running_tasks"] = running_tasks(r, name) if row[schema.RUNNING] else []
        row["limits"] = [limits.as_json(lim) for lim in limits.listing(r, QueueKeys(name))]
    unserved = [name for name, row in queues.items() if not row["workers"] and (
        sum(row[s] for s in UNFINISHED) or any(not p["paused"] for p in row["periodic"]))]  # no tick without one
    if queue is not None:
        workers = [w for w in workers if queue in w["queues"] or w["state"] == "lost"]
    return {"time": now, "queues": queues, "workers": workers, "unserved": unserved,
            "environments": differences(r, workers)}


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


def records(r: redis.Redis, name: str, ids: Iterable[bytes | str]) -> list[Task]:
    """The records of ``ids`` in queue ``name`` (without their argument payloads), in order;
    missing ones left out."""
    return fetch_records(r, QueueKeys(name), [_s(i) for i in ids])



def list_tasks(r: redis.Redis, name: str, state: str | None = None, limit: int = 20,
               seconds: float = SCAN_SECONDS) -> tuple[list[Task], bool]:
    """Up to ``limit`` tasks of queue ``name``, and whether the listing may be incomplete.

    ``state`` done/failed: the most recent first (from the finish-time zsets). waiting/ready/running:
    unfinished tasks oldest first, filtered by state (see :func:`_scan_todo`; incomplete only if it
    ran out of ``seconds``). None: unfinished, then failed, then done."""
    k = QueueKeys(name)
    if limit <= 0:
        return [], False
    if state in schema.FINISHED_STATES:
        ids = _members(r.zrevrange(k.done if state == schema.DONE else k.failed, 0, limit - 1))
        return records(r, name, ids), False
    if state is None:
        out = records(r, name, unfinished.ids(r, k, limit))
        for key in (k.failed, k.done):
            if len(out) < limit:
                out += records(r, name, _members(r.zrevrange(key, 0, limit - len(out) - 1)))
        return out[:limit], False
    return _scan_todo(r, name, state, limit, seconds)


def _scan_todo(r: redis.Redis, name: str, state: str, limit: int, seconds: float) -> tuple[list[Task], bool]:
    """Unfinished tasks in ``state``, in :mod:`forrestq.unfinished`'s order, read page by page (their
    states come with each page) until ``limit`` are found, or as many as the counters say there are (a
    task may change state meanwhile, so the counters only tell when to stop), or the indexes end; and
    whether the search ran out of ``seconds`` first."""
    k = QueueKeys(name)
    expected = int(_s(cast("bytes | None", r.hget(k.counts, state)), "0") or 0)
    wanted = min(limit, expected)
    found: list[str] = []
    deadline = time.monotonic() + seconds
    if wanted > 0:
        for page in unfinished.scan(r, k, count=SCAN_BATCH, state=state):
            found += [tid for tid, st in zip(page.ids, page.states) if st == state]
            if len(found) >= wanted:
                break
            if time.monotonic() > deadline:
                return records(r, name, found), True
    return records(r, name, found[:limit]), False


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


# ------------------------------------------------------------------------- why nothing happened


def why_not_cancelled(task: Task) -> str:
    """Why ``cancel`` left ``task`` alone (it had finished already), for a person."""
    if task.state == schema.DONE:
        return f"task {task.id} is done already: nothing to cancel"
    if task.state == schema.FAILED:
        if task.reason == "cancelled":
            return f"task {task.id} was cancelled already: nothing to cancel"
        return f"task {task.id} failed already ({short_error(task.reason, 80)}): nothing to cancel"
    return f"task {task.id} was not cancelled (state {task.state}): it may have just finished; try again"


def why_not_requeued(task: Task, error_type: str | None, type_of: str) -> str:
    """Why ``requeue --failed`` left ``task`` alone, for a person; ``type_of``: the name of its
    exception type (the ``--error-type`` it would match)."""
    if task.state != schema.FAILED:
        return f"task {task.id} is not failed (state {task.state}): nothing to requeue"
    if task.upstream:
        return (f"task {task.id} failed because its input {task.upstream} failed: requeue that one "
                f"(forrestq requeue --failed --id {task.upstream}), its dependents follow")
    if error_type is not None and type_of != error_type:
        return f"task {task.id} failed with {type_of}, not {error_type}: not requeued"
    return f"task {task.id} was not requeued: it may have been requeued meanwhile"


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


# the exception type that opens a failure reason ("ValueError: ...", "could not load task
# payload: WorkerImportError: ...", "input task X failed: KeyError: ...")
_ERROR_TYPE = re.compile(r"(?<![\w.])((?:[A-Za-z_]\w*\.)*[A-Z]\w*(?:Error|Exception|Warning|Exit|Interrupt|"
                         r"Failed|Mismatch|Killed|Lost|Cancelled|Timeout)): ")
_ADVICE = re.compile(r" \([^()]*\)$")


def short_error(reason: str, width: int = 120) -> str:
    """A failure reason on one line in at most ``width`` characters, keeping what a listing needs:
    the text up to the exception type (which says what failed) and the *end* of the message (which
    usually names the missing thing, the value or the host); the middle gives way, marked ``…``."""
    text = " ".join(reason.split())
    if len(text) <= width:
        return text
    advice = _ADVICE.search(text)  # a closing "(install it on the worker ...)": `show` has it
    body, end = (text[: advice.start()], " (…)") if advice else (text, "")
    if len(body) + len(end) <= width:
        return body + end
    m = _ERROR_TYPE.search(body)
    head = ""
    if m:  # what precedes the type too, if there is room for it
        head = body[: m.end()] if m.end() <= width // 2 else m.group(0) if len(m.group(0)) <= width // 2 else ""
    room = max(1, width - len(head) - len(end) - 1)
    tail = body[-room:]
    first, space, rest = tail.partition(" ")
    if space and len(first) < 20 and body[-room - 1] != " ":  # start the tail at a word
        tail = rest
    return f"{head}…{tail}{end}"


def json_value(value: Any) -> bool:
    """Whether ``value`` is JSON as it is: None, bool, int, finite float, str, and lists, tuples
    and dicts with string keys of such (a tuple becomes a list; anything else is shown as its repr)."""
    if value is None or isinstance(value, (bool, int, str)):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, (list, tuple)):
        return all(json_value(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and json_value(v) for k, v in value.items())
    return False


def summarize_call(r: redis.Redis, task: Task, width: int = 60) -> str:
    """``name(arg, key=value)`` of a task, the inputs shown as ``<task ID>``. The arguments are
    loaded here (lazily, only for this); if they cannot be (a class not importable in this
    process), ``name(<could not load: ...>)``."""
    blob = cast("bytes | None", r.hget(QueueKeys(task.queue).task(task.id), schema.TASK_ARGS))
    name = task.name or "?"
    if not blob:
        return f"{name}()"
    from .codec import load_args  # the unpickler, for this view only

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
