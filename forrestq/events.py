"""A task's history as events (issue 13): what RunForrest's ``logfile`` and taskmap's logs record.

Every script that changes a task's state also appends one entry to the queue's event stream
``fq:{q}:events`` (``scripts/include/events.lua``), in the same atomic call, so an event can never be
missing, nor out of order with the change it reports. Kinds (``schema.EVENT_*``):

=============  =====================================================  =====================
kind           when                                                   written by
=============  =====================================================  =====================
scheduled      a new node (``name``)                                  schedule.lua
started        a worker child claimed it (``host``, ``attempt``)      claim.lua
done           it returned (``host``, ``attempt``, ``runtime``)       complete.lua
failed         it raised, was killed, lost too often, or an input     complete.lua,
               failed (``reason``; ``host``, ``attempt`` if it ran)   schedule.lua
retried        it raised an error its retry policy matches            complete.lua
               (``reason``, ``delay``): ready again after the delay
lost           its worker vanished (lease expired; ``host`` it was    reclaim.lua,
               lost on): ready again, or ``failed`` follows           complete.lua
released       handed back (worker stopping, child killed from        release.lua,
               outside, host cannot load it): ready again             refuse.lua
requeued       ``requeue_failed`` / ``rerun``: to run again           requeue.lua
cancelled      ``Queue.cancel`` (``host``, ``attempt`` if running)    complete.lua
continued      it returned a deferred tree and waits for it (its own  complete.lua
               ``done``/``failed`` follows when the tree finishes)
=============  =====================================================  =====================

An event's ``id`` is its stream entry id, its ``time`` the server's clock when it was written.
Events are opt-in per queue: ``Queue(name, events=True)`` keeps about
:data:`forrestq.schema.EVENTS_CAP` (100,000) of them, ``events=N`` about N, ``events=False`` none
again. The cap is stored in Redis (``fq:{q}:events:cap``), so every worker and producer honours it;
the stream is trimmed with XADD MAXLEN ~ (approximate: whole stream nodes go, so a little more is
kept). Why opt-in: two or three XADDs per task cost the no-op drain about 4 to 15 % on a 2-core
machine (bench/RESULTS.md, "Events (issue 13)"); a queue without events pays one GET per script call.

:func:`read` yields the kept events after ``since``, then, with ``follow``, blocks on the stream
(XREAD BLOCK, no polling) for new ones, surviving a Redis outage the way the results follower does
(:func:`forrestq.reading.patiently`).
"""
from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import datetime
from functools import partial
from typing import Any

import redis

from . import schema
from .core import QueueCore
from .errors import ConfigError, shown
from .reading import BLOCK_MS, OUTAGE, check_timeout, patiently
from .schema import QueueKeys

BATCH = 1000  # events per read
_MAX_SEQ = 2 ** 64 - 1
_FIELDS = {schema.EVENT_KIND: "kind", schema.ENTRY_TASK: "task", schema.EVENT_HOST: "host",
           schema.EVENT_ATTEMPT: "attempt", schema.EVENT_REASON: "reason", schema.EVENT_NAME: "name",
           schema.EVENT_RUNTIME: "runtime", schema.EVENT_DELAY: "delay"}
_NUMBERS = {"attempt": int, "runtime": float, "delay": float}


def _text(v: Any) -> str:
    return v.decode(errors="replace") if isinstance(v, bytes) else str(v)


@dataclass(frozen=True)
class Event:
    """One state change of one task. ``attempt``, ``runtime``, ``delay`` are None where the kind
    carries none; ``host``, ``reason``, ``name`` are "" then. Pass ``since=event`` to resume after it."""

    queue: str
    id: str  # the stream entry id ("<ms>-<seq>")
    time: float  # seconds since the epoch (server clock)
    kind: str  # one of schema.EVENT_KINDS
    task: str
    host: str = ""
    attempt: int | None = None
    reason: str = ""
    name: str = ""
    runtime: float | None = None
    delay: float | None = None

    def as_json(self) -> dict[str, Any]:
        """The event as a JSON object (every field; ``forrestq events --json`` prints one per line)."""
        return asdict(self)


def parse(queue: str, entry_id: Any, fields: dict[Any, Any]) -> Event:
    """The Event of one stream entry as XREAD/XRANGE return it; unknown fields are ignored."""
    sid = _text(entry_id)
    values: dict[str, Any] = {}
    for raw_key, raw_value in fields.items():
        name = _FIELDS.get(_text(raw_key))
        if name is not None:
            value = _text(raw_value)
            convert = _NUMBERS.get(name)
            try:
                values[name] = convert(value) if convert else value
            except ValueError:
                values[name] = None
    return Event(queue=queue, id=sid, time=int(sid.split("-", 1)[0]) / 1000, **{
        "kind": "", "task": "", **values})


# ---------------------------------------------------------------------------------------- the cap


def cap_value(events: bool | int) -> str:
    """The stored cap for ``Queue(events=...)``: True the default cap, False none, N about N."""
    if events is True:
        return schema.EVENTS_CAP
    if events is False:
        return schema.EVENTS_OFF
    if isinstance(events, int) and events > 0:
        return str(events)
    raise ConfigError(f"events must be True, False or a positive number of events to keep, not {shown(events)}")


def set_cap(r: redis.Redis, k: QueueKeys, value: str) -> None:
    """Store a queue's cap (:func:`cap_value`); the scripts read it at their next event."""
    r.set(k.events_cap, value)


def cap(r: redis.Redis, k: QueueKeys) -> int:
    """How many events the queue keeps (approximately); 0: none."""
    return int(_text(r.get(k.events_cap) or schema.EVENTS_OFF))


# ------------------------------------------------------------------------------------------ reading


def start_id(r: redis.Redis, k: QueueKeys, since: Any) -> str:
    """The stream id to read after: ``since`` None (every kept event), "now" (only new ones), an
    Event or an entry id (after it), or a time (seconds since the epoch or a datetime: events
    written at or after it)."""
    if since is None:
        return "0-0"
    if isinstance(since, Event):
        return since.id
    if isinstance(since, datetime):
        since = since.timestamp()
    if isinstance(since, (int, float)) and not isinstance(since, bool):
        ms = int(since * 1000)
        return f"{ms - 1}-{_MAX_SEQ}" if ms > 0 else "0-0"
    if since == "now":
        last = r.xrevrange(k.events, count=1)
        return _text(last[0][0]) if last else "0-0"
    if isinstance(since, str) and _is_id(since):
        return since if "-" in since else f"{since}-{_MAX_SEQ}"
    raise ConfigError(f"since must be None, 'now', an Event, an event id or a time, not {shown(since)}")


def _is_id(text: str) -> bool:
    ms, sep, seq = text.partition("-")
    return ms.isdigit() and (seq.isdigit() or not sep)


def read(q: QueueCore, since: Any = None, follow: bool = False, timeout: float | None = None,
         outage: float = OUTAGE) -> Iterator[Event]:
    """The queue's events after ``since`` (see :func:`start_id`), oldest first. Without ``follow``,
    up to the newest one there was at the call; with ``follow``, then every new one as it is
    written, until ``timeout`` seconds pass without one (None: forever). While Redis is unreachable,
    reads are retried for ``outage`` seconds (each time it goes away). Bad arguments raise here, at
    the call, not at the first event."""
    timeout = check_timeout(timeout)
    r, k = q.r, q.keys
    last = patiently(partial(start_id, r, k, since), time.monotonic() + outage)
    if follow:
        return _follow(q, last, timeout, outage)
    newest = patiently(partial(r.xrevrange, k.events, count=1), time.monotonic() + outage)
    return _history(q, last, _text(newest[0][0]) if newest else "", outage)


def _follow(q: QueueCore, last: str, timeout: float | None, outage: float) -> Iterator[Event]:
    """Every event after ``last``, blocking (XREAD BLOCK) for new ones, until ``timeout`` s pass
    without one."""
    r, k = q.r, q.keys
    quiet_until = None if timeout is None else time.monotonic() + timeout
    while True:
        block = BLOCK_MS if quiet_until is None else int((quiet_until - time.monotonic()) * 1000)
        if block <= 0:
            return
        got = patiently(partial(r.xread, {k.events: last}, count=BATCH, block=max(1, min(block, BLOCK_MS))),
                        time.monotonic() + outage)
        for entry_id, fields in got[0][1] if got else ():
            last = _text(entry_id)
            yield parse(q.name, entry_id, fields)
        if got and timeout is not None:
            quiet_until = time.monotonic() + timeout


def _history(q: QueueCore, last: str, end: str, outage: float) -> Iterator[Event]:
    """The kept events after ``last`` up to ``end`` (an entry id; "": none), in batches."""
    r, k = q.r, q.keys
    while end:
        batch = patiently(partial(r.xrange, k.events, min=f"({last}", max=end, count=BATCH),
                          time.monotonic() + outage)
        for entry_id, fields in batch:
            yield parse(q.name, entry_id, fields)
        if len(batch) < BATCH:
            return
        last = _text(batch[-1][0])
