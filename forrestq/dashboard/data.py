"""What the dashboard's pages show, read from Redis with bounded work per page.

* the overview is :func:`forrestq.status.gather` (counters, the workers' hashes) plus the throughput
  of the last hour (60 ``ZCOUNT`` per queue and outcome on the finish-time zsets, O(log n) each) and
  the server's INFO;
* the task listing pages through one sorted set by rank (``ZRANGE`` by index: O(log n + page)); with
  filters it reads a few light fields of at most :data:`SCAN_LIMIT` tasks per page, from where the
  previous page stopped (``start``), never the whole queue;
* one task's page reads its record, its dependents and the DAG around it (at most :data:`DAG_NODES`
  nodes, :data:`DAG_DEPTH` steps each way);
* the failures page groups the last :data:`FAILURES_SCAN` failed tasks of a queue.
"""
from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import redis

from .. import environment, schema, status, unfinished
from ..producer import error_type
from ..schema import QueueKeys
from ..task import Task

PAGE = 50  # tasks per listing page
SCAN_LIMIT = 10_000  # tasks a filtered listing page looks at, at most
SCAN_BATCH = 500
DAG_DEPTH = 4
DAG_NODES = 60
DEPENDENTS_SHOWN = 200  # dependents listed on a task's page (about: SSCAN's count is a hint)
FAILURES_SCAN = 2_000
CHART_MINUTES = 60
OUTPUT_LINES = 200
TODO_STATES = ("unfinished", schema.WAITING, schema.SCHEDULED, schema.READY, schema.RUNNING)
LIST_STATES = (schema.FAILED, schema.DONE, *TODO_STATES)
# what a filtered listing reads of each task it looks at (never results, output or tracebacks)
_LIGHT = (schema.TASK_STATE, schema.TASK_NAME, schema.TASK_HOST, schema.TASK_REASON, schema.TASK_KEY,
          schema.TASK_META, schema.TASK_ROOT)


def _text(v: Any) -> str:
    return v.decode(errors="replace") if isinstance(v, bytes) else ("" if v is None else str(v))


# ----------------------------------------------------------------------------------------- overview


def throughput(r: redis.Redis, names: list[str], now: float, minutes: int = CHART_MINUTES) -> dict[str, Any]:
    """Per queue ``{"done": [n per minute], "failed": [...]}``, oldest minute first, over the last
    ``minutes`` (ZCOUNT on the finish-time zsets)."""
    pipe = r.pipeline(transaction=False)
    for name in names:
        k = QueueKeys(name)
        for key in (k.done, k.failed):
            for i in range(minutes, 0, -1):
                pipe.zcount(key, now - 60 * i, f"({now - 60 * (i - 1)}")
    replies = pipe.execute() if names else []
    out: dict[str, Any] = {}
    for q, name in enumerate(names):
        part = replies[2 * minutes * q: 2 * minutes * (q + 1)]
        out[name] = {"done": [int(n) for n in part[:minutes]], "failed": [int(n) for n in part[minutes:]]}
    return out


def server_info(r: redis.Redis) -> dict[str, str]:
    """The server's version and memory use (INFO)."""
    info = r.info()
    return {"version": _text(info.get("valkey_version") or info.get("redis_version")),
            "used_memory": status.human_bytes(int(info.get("used_memory", 0))),
            "peak_memory": status.human_bytes(int(info.get("used_memory_peak", 0)))}


def overview(r: redis.Redis) -> dict[str, Any]:
    """Everything the overview shows: :func:`forrestq.status.gather`, the throughput, the server."""
    now = time.time()
    got = status.gather(r, now=now)
    got["throughput"] = throughput(r, list(got["queues"]), now)
    got["server"] = server_info(r)
    return got


# ------------------------------------------------------------------------------------------- listing


@dataclass(frozen=True)
class Filter:
    """A listing's query. ``state``: one of :data:`LIST_STATES`; ``error``: a text the failure reason
    holds (an exception type, a word); ``text``: a text the metadata (its repr) or the key holds."""

    queue: str
    state: str = schema.FAILED
    function: str = ""
    host: str = ""
    error: str = ""
    text: str = ""
    roots: bool = False
    start: int = 0

    @property
    def filtered(self) -> bool:
        return bool(self.function or self.host or self.error or self.text or self.roots
                    or self.state not in (schema.DONE, schema.FAILED, "unfinished"))


@dataclass
class Listing:
    tasks: list[Task]
    next_start: int | None  # where the next page starts (None: the zset ended)
    looked_at: int  # tasks read for this page
    total: int  # members of the zset paged through


def _matches(f: Filter, queue: str, tid: str, light: list[Any]) -> bool:
    """Whether one task (its :data:`_LIGHT` fields) is one the filter asks for."""
    state, name, host, reason, key, _, root = (_text(v) for v in light)
    meta = light[5]  # a pickle: loaded only for a text search
    if f.state in TODO_STATES[1:] and state != f.state:
        return False
    if (f.roots and root != "1") or (f.function and f.function.lower() not in name.lower()):
        return False
    if (f.host and f.host.lower() != host.lower()) or (f.error and f.error.lower() not in reason.lower()):
        return False
    if f.text:
        shown = key + " " + metadata_text(Task(queue, tid, {schema.TASK_META.encode(): meta} if meta else {}))
        return f.text.lower() in shown.lower()
    return True


def list_page(r: redis.Redis, f: Filter, size: int = PAGE) -> Listing:
    """One page of the listing ``f``: without filters a slice of the zset (or of
    :mod:`forrestq.unfinished`'s sequence) by rank; with filters the matches among at most
    :data:`SCAN_LIMIT` tasks from ``f.start`` on."""
    k = QueueKeys(f.queue)
    count = SCAN_BATCH if f.filtered else size
    if f.state in TODO_STATES:
        state = None if f.state == TODO_STATES[0] else f.state  # "unfinished": every index
        total, pages = unfinished.size(r, k, state), unfinished.scan(r, k, f.start, count, state)
    else:
        key = k.done if f.state == schema.DONE else k.failed  # newest first
        total, pages = int(r.zcard(key)), _newest_first(r, key, f.start, count)
    limit = SCAN_LIMIT if f.filtered else size
    found: list[str] = []
    pos = f.start
    for page in pages:
        pipe = r.pipeline(transaction=False)
        for tid in page.ids if f.filtered else ():
            pipe.hmget(k.task(tid), _LIGHT)
        lights = pipe.execute() if f.filtered else [None] * len(page.ids)
        for tid, at, light in zip(page.ids, page.positions, lights):
            if at - f.start >= limit or len(found) >= size:
                break
            pos = at + 1
            if light is None or _matches(f, f.queue, tid, light):
                found.append(tid)
        else:
            pos = page.end
        if len(found) >= size or pos - f.start >= limit:
            break
    return Listing(status.records(r, f.queue, found), pos if pos < total else None, pos - f.start, total)


def _newest_first(r: redis.Redis, key: str, start: int, count: int) -> Iterator[unfinished.Page]:
    """The members of zset ``key`` from rank ``start`` on, newest first, ``count`` a page."""
    while True:
        ids = [_text(i) for i in cast("list[bytes]", r.zrevrange(key, start, start + count - 1))]
        if not ids:
            return
        yield unfinished.Page(ids, [], list(range(start, start + len(ids))), start + len(ids))
        start += len(ids)


def metadata_text(task: Task) -> str:
    """A task's metadata as text (its repr; JSON-like values as they are); never raises."""
    try:
        value = task.metadata
    except Exception as exc:  # a class not importable here, a bad signature: say so, never fail the page
        return f"<could not load: {type(exc).__name__}>"
    return "" if value is None else status.short_repr(value, 2000)


# ---------------------------------------------------------------------------------------- one task


@dataclass
class Node:
    id: str
    name: str
    state: str
    layer: int  # 0: the task; negative: its inputs' side; positive: its dependents' side
    inputs: list[str] = field(default_factory=list)


def _read_nodes(r: redis.Redis, k: QueueKeys, ids: list[str]) -> dict[str, tuple[str, str, list[str], list[str]]]:
    pipe = r.pipeline(transaction=False)
    for tid in ids:
        pipe.hmget(k.task(tid), schema.TASK_STATE, schema.TASK_NAME, schema.TASK_INPUTS)
        pipe.sscan(k.dependents(tid), 0, count=DAG_NODES)  # bounded: a fan-out of 100,000 is not read whole
    replies = pipe.execute() if ids else []
    out = {}
    for i, tid in enumerate(ids):
        (state, name, inputs), (_, deps) = replies[2 * i], replies[2 * i + 1]
        if state is None:
            continue
        out[tid] = (_text(state), _text(name), [x for x in _text(inputs).split(",") if x],
                    sorted(_text(d) for d in deps))
    return out


def dag(r: redis.Redis, queue: str, task_id: str) -> list[Node]:
    """The DAG around one task, breadth first: its inputs and theirs (negative layers), its dependents
    and theirs (positive), and the other inputs and dependents of those (so a dependent's whole tree
    shows), up to :data:`DAG_DEPTH` columns either side and :data:`DAG_NODES` nodes."""
    k = QueueKeys(queue)
    nodes: dict[str, Node] = {}
    frontier = [(task_id, 0)]
    while frontier and len(nodes) < DAG_NODES:
        fresh = [(t, layer) for t, layer in dict(frontier).items() if t not in nodes][:DAG_NODES - len(nodes)]
        got = _read_nodes(r, k, [t for t, _ in fresh])
        frontier = []
        for tid, layer in fresh:
            if tid not in got:
                continue
            state, name, inputs, deps = got[tid]
            nodes[tid] = Node(tid, name, state, layer, inputs)
            if -layer < DAG_DEPTH:  # also the other inputs of its dependents: the tree they belong to
                frontier += [(i, layer - 1) for i in inputs if i not in nodes]
            if layer < DAG_DEPTH:
                frontier += [(d, layer + 1) for d in deps if d not in nodes]
    return sorted(nodes.values(), key=lambda n: (n.layer, n.id))


def task_page(r: redis.Redis, queue: str, task_id: str) -> dict[str, Any] | None:
    """Everything one task's page shows; None if the queue holds no such task."""
    found = status.records(r, queue, [task_id])
    if not found:
        return None
    task = found[0]
    k = QueueKeys(queue)
    resources, due = r.hget(k.task(task_id), schema.TASK_RESOURCES), None
    if task.state == schema.SCHEDULED:
        due = r.zscore(k.delayed, task_id) or task.due
    output = task.output.splitlines()
    return {"task": task, "call": status.summarize_call(r, task, 200), "metadata": metadata_text(task),
            "history": status.task_history(task), "resources": _text(resources) or "cpus=1",
            "dependents": sorted(_text(d) for d in r.sscan(k.dependents(task_id), 0, count=DEPENDENTS_SHOWN)[1]),
            "dependents_total": int(r.scard(k.dependents(task_id))),
            "output": "\n".join(output[-OUTPUT_LINES:]), "output_cut": max(0, len(output) - OUTPUT_LINES),
            "env": environment.of_worker(r, task.worker), "due": due, "dag": dag(r, queue, task_id),
            "type": failure_type(task) if task.state == schema.FAILED else ""}


def failure_type(task: Task) -> str:
    """The name of a failed task's exception type, as ``requeue --error-type`` matches it."""
    try:
        kind = error_type(task)
    except Exception:  # noqa: BLE001 - a payload that does not load here: the reason says it
        kind = ""
    return kind if kind not in ("", "NoneType") else task.reason.split(":", 1)[0][:80]


# ---------------------------------------------------------------------------------------- failures

_NUMBERS = re.compile(r"\b0x[0-9a-f]+\b|\d+(\.\d+)?", re.I)


def reason_group(reason: str) -> str:
    """A failure reason with its numbers (and hex addresses) as ``N``: reasons that differ only in a
    value fall in one group."""
    return _NUMBERS.sub("N", " ".join(reason.split()))[:200]


@dataclass
class Group:
    type: str
    reason: str  # the reason of the group (numbers as N)
    example: str  # one member's own reason
    ids: list[str] = field(default_factory=list)
    roots: int = 0  # of them, roots


def failure_groups(r: redis.Redis, queue: str, limit: int = FAILURES_SCAN) -> tuple[list[Group], int]:
    """The failed tasks of ``queue`` that failed themselves (not because of an input: requeuing those
    runs their dependents again too), among its last ``limit`` failures, grouped by exception type
    and reason, the largest group first; and how many failures were looked at."""
    k = QueueKeys(queue)
    ids = [_text(i) for i in cast("list[bytes]", r.zrevrange(k.failed, 0, limit - 1))]
    pipe = r.pipeline(transaction=False)
    fields = (schema.TASK_STATE, schema.TASK_REASON, schema.TASK_UPSTREAM, schema.TASK_ROOT, schema.TASK_ERROR)
    for tid in ids:
        pipe.hmget(k.task(tid), fields)
    groups: dict[tuple[str, str], Group] = {}
    for tid, values in zip(ids, pipe.execute() if ids else []):
        got = {f.encode(): v for f, v in zip(fields, values) if v is not None}
        task = Task(queue, tid, got)
        if task.state != schema.FAILED or task.upstream:
            continue
        kind = failure_type(task)
        group = groups.setdefault((kind, reason_group(task.reason)),
                                  Group(kind, reason_group(task.reason), task.reason))
        group.ids.append(tid)
        group.roots += task.root
    return sorted(groups.values(), key=lambda g: (-len(g.ids), g.type, g.reason)), len(ids)


def group_ids(r: redis.Redis, queue: str, kind: str, reason: str) -> list[str]:
    """The ids of one group of :func:`failure_groups` (as it is now)."""
    groups, _ = failure_groups(r, queue)
    return next((g.ids for g in groups if g.type == kind and g.reason == reason), [])
