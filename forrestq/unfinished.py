"""The unfinished tasks of a queue, read from the three places that hold them.

A task that is ready or running is indexed by its entry on the ready stream (or on its priority level's
stream), a scheduled one by the delayed zset, a waiting one (or one taken over from a finished state) by
the todo zset. Keeping a queued task in one index instead of also in a zset of every unfinished task is
what a queue's memory is made of (about 85 bytes a task). Readers see one sequence: the levels'
streams, highest first, then the queue's stream (in the order the tasks became ready: the order
workers take them), then the delayed zset (by due time), then the todo zset (by the time they began
waiting). A position in it counts raw members, stale stream entries included, so that a page can start
where the last one ended.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

import redis

from . import schema
from .schema import QueueKeys

UNFINISHED = frozenset((schema.WAITING, schema.SCHEDULED, schema.READY, schema.RUNNING))


@dataclass
class Page:
    """Unfinished tasks read from one slice of the sequence: ids, their states, their positions, and the
    position after the slice."""

    ids: list[str]
    states: list[str]
    positions: list[int]
    end: int


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


# the indexes a task in each state can be in (a task taken over is RUNNING wherever it was)
_HOLDING = {schema.WAITING: ("todo",), schema.SCHEDULED: ("delayed",), schema.READY: ("stream", "todo"),
            schema.RUNNING: ("stream", "delayed", "todo")}


def _sources(r: redis.Redis, k: QueueKeys, state: str | None = None) -> list[tuple[str, str, int]]:
    """(kind, key, members) of every index (that can hold a task in ``state``), in reading order; kind
    "stream" (with the level's prefix of TASK_STREAM_ID) or "zset"."""
    wanted = _HOLDING.get(state or "", ("stream", "delayed", "todo"))
    keys: list[tuple[str, str]] = []
    if "stream" in wanted:
        levels = sorted((int(float(_text(v))) for v in cast("list[bytes]", r.zrange(k.levels, 0, -1))),
                        reverse=True)
        keys += [("stream", k.level_stream(n)) for n in levels if n > 0] + [("stream", k.stream)]
    keys += [("zset", key) for name, key in (("delayed", k.delayed), ("todo", k.todo)) if name in wanted]
    pipe = r.pipeline(transaction=False)
    for kind, key in keys:
        if kind == "stream":
            pipe.xlen(key)
        else:
            pipe.zcard(key)
    return [(kind, key, int(n)) for (kind, key), n in zip(keys, pipe.execute())]


def size(r: redis.Redis, k: QueueKeys, state: str | None = None) -> int:
    """Members of the sequence (of the indexes that can hold a task in ``state``): an upper bound of the
    unfinished tasks (in that state), stale entries count."""
    return sum(n for _, _, n in _sources(r, k, state))


def _level_of(k: QueueKeys, key: str) -> str:
    return "" if key == k.stream else key.rpartition(schema.STREAM_LEVEL)[2] + schema.LEVEL_SEP


def _raw(r: redis.Redis, k: QueueKeys, kind: str, key: str, skip: int, count: int,
         ) -> Iterator[list[tuple[str, str | None]]]:
    """(task id, the TASK_STREAM_ID it must have, None for a zset) of one index, from its member ``skip``
    on, ``count`` at a time."""
    if kind == "zset":
        start = skip
        while True:
            got = cast("list[bytes]", r.zrange(key, start, start + count - 1))
            if not got:
                return
            start += len(got)
            yield [(_text(m), None) for m in got]
    level, after = _level_of(k, key), "-"
    while True:
        entries = cast("list[tuple[bytes, dict[bytes, bytes]]]",
                       r.xrange(key, after, "+", count=count + skip))
        if not entries:
            return
        after = "(" + _text(entries[-1][0])
        entries, skip = entries[skip:], max(0, skip - len(entries))
        if entries:
            yield [(_text(fields.get(schema.ENTRY_TASK.encode(), b"")), level + _text(eid))
                   for eid, fields in entries]


def scan(r: redis.Redis, k: QueueKeys, start: int = 0, count: int = 500, state: str | None = None) -> Iterator[Page]:
    """The unfinished tasks from position ``start`` of the sequence on, about ``count`` members a page
    (one pipelined read of their states each); each task once, however many indexes name it. ``state``:
    only the indexes that can hold a task in that state are read (the caller filters the states)."""
    seen: set[str] = set()
    pos = 0
    for kind, key, n in _sources(r, k, state):
        if pos + n <= start:
            pos += n
            continue
        skip = max(0, start - pos)
        pos += skip
        for raw in _raw(r, k, kind, key, skip, count):
            pipe = r.pipeline(transaction=False)
            for tid, _ in raw:
                pipe.hmget(k.task(tid), schema.TASK_STATE, schema.TASK_STREAM_ID)
            page = Page([], [], [], pos + len(raw))
            for (tid, sid), (state, own) in zip(raw, pipe.execute()):
                st = _text(state) if state is not None else ""
                if st in UNFINISHED and tid not in seen and (sid is None or _text(own or b"") == sid):
                    seen.add(tid)
                    page.ids.append(tid)
                    page.states.append(st)
                    page.positions.append(pos)
                pos += 1
            yield page


def ids(r: redis.Redis, k: QueueKeys, limit: int | None = None) -> list[str]:
    """The ids of the unfinished tasks in reading order (the first ``limit`` of them)."""
    out: list[str] = []
    for page in scan(r, k, count=500 if limit is None else max(1, min(limit, 500))):
        out += page.ids
        if limit is not None and len(out) >= limit:
            return out[:limit]
    return out
