"""Periodic tasks (issue 16): ``Queue.every`` and ``Queue.cron`` keep a schedule in Redis that the workers
serve, so no scheduler process has to be started by hand.

A schedule is one hash per name (``fq:{q}:p:<name>``): its timing (an interval, or a cron expression read
in an IANA zone), the next due time on the Redis server's clock, a paused flag, and its task planned once,
at registration, exactly as :func:`forrestq.producer.schedule_many` plans one (same serialisation and
signing: the TASK_* fields of one node). The queue's zset ``fq:{q}:periodic`` holds every name scored by
its next due time (a paused one: +inf), so a worker finds the due ones in one read.

Exactly one task per tick: a worker's time keeping (:mod:`forrestq.worker.timekeeper`, about once a
second) reads a due schedule, computes the due time after this tick here (:func:`next_due`), and calls
``periodic_tick.lua``, which writes the tick's task and moves the next due time on only if the
schedule still holds the due time and registration token the worker read (compare-and-set). Of many
workers on many hosts trying one tick, one succeeds; the task's id is derived from the name and the
tick (:func:`tick_node`), so even a repeated call cannot make a second task.

A tick missed while no worker ran (or while its worker was stopped) runs once when a worker comes back,
as the tick it was due at; the schedule then resumes its cadence from the first due time after now
(an interval keeps its original grid; a cron expression its next time). Ticks missed in between are
skipped, not caught up. A paused schedule makes no task; resuming it starts from the next due time after
the resume.
"""
from __future__ import annotations

import datetime
import math
import re
import zoneinfo
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import ops, schema, signing
from .errors import ConfigError, UnknownSchedule, shown
from .lease import new_token
from .schema import QueueKeys

if TYPE_CHECKING:  # registering imports the producer inside: reading the schedules (forrestq status) does not
    from .core import QueueCore

_NAME = re.compile(r"[A-Za-z0-9_.:@+=-]{1,64}")
_ALIASES = {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}
MIN_INTERVAL = 1.0  # seconds: the workers look at schedules about once a second
# the node fields a schedule keeps of its task (the rest are per tick: id, root, key)
_TASK = (schema.TASK_FN, schema.TASK_ARGS, schema.TASK_NAME, schema.TASK_META, schema.TASK_TIMEOUT,
         schema.TASK_MAX_ATTEMPTS, schema.TASK_RETRY_POLICY, schema.TASK_IO_BOUND, schema.TASK_SOFT_TIMEOUT,
         schema.TASK_RESOURCES)


@dataclass(frozen=True)
class Periodic:
    """One periodic schedule as ``Queue.periodic()`` lists it."""

    name: str
    every: float | None  # seconds, for an interval
    cron: str  # the cron expression ("" for an interval)
    tz: str  # the zone the cron expression is read in ("" = UTC)
    next_due: float | None  # the next tick (s, server clock); None while paused
    paused: bool
    function: str  # the task's qualified function name
    runs: int  # ticks that made a task
    last: float | None  # due time of the last tick that made a task
    last_task: str  # its task id ("" = none yet)


# ------------------------------------------------------------------------------------ validation


def check_schedule_name(name: object) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigError(f"bad periodic key {shown(name)}: use 1 to 64 letters, digits or _ . : @ + = -")
    return name


def check_interval(seconds: object) -> float:
    if isinstance(seconds, datetime.timedelta):
        seconds = seconds.total_seconds()
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds) \
            or seconds < MIN_INTERVAL:
        raise ConfigError(f"every() takes an interval of at least {MIN_INTERVAL:g} s (seconds or a timedelta), "
                          f"not {shown(seconds)}")
    return float(seconds)


def check_cron(expr: object, tz: object) -> tuple[str, str]:
    """The cron expression (five fields: minute hour day-of-month month day-of-week, or an alias like
    ``@daily``) and the zone name ("" = UTC), checked by croniter and zoneinfo; ConfigError otherwise."""
    from croniter import croniter  # here: `forrestq status` and a worker without cron schedules skip its import

    if not isinstance(expr, str) or not (len(expr.split()) == 5 or expr.strip() in _ALIASES) \
            or not croniter.is_valid(expr):
        raise ConfigError(f"bad cron expression {shown(expr)}: use five fields (minute hour day-of-month month "
                          "day-of-week, e.g. '0 3 * * *') or @hourly/@daily/@weekly/@monthly/@yearly")
    if tz is None:
        return expr.strip(), ""
    if not isinstance(tz, str):
        raise ConfigError(f"tz must be an IANA zone name such as 'Europe/Paris', not {shown(tz)}")
    try:
        zoneinfo.ZoneInfo(tz)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"unknown time zone {shown(tz)}: use an IANA zone name such as 'Europe/Paris'")
    return expr.strip(), tz


# ------------------------------------------------------------------------------------ the clock


def next_due(every: float | None, cron: str, tz: str, tick: float, now: float) -> float:
    """The first due time after both ``tick`` (the one being made) and ``now`` (server clock): the
    interval's grid continued from ``tick``, or the cron expression's next time after ``now``."""
    if every:
        return tick + every * (math.floor(max(0.0, now - tick) / every) + 1)
    from croniter import croniter

    zone = zoneinfo.ZoneInfo(tz) if tz else datetime.timezone.utc
    start = datetime.datetime.fromtimestamp(max(now, tick), zone)
    return float(croniter(cron, start).get_next(float))


def spec_timing(f: dict[str, bytes]) -> tuple[float | None, str, str]:
    """(interval, cron expression, zone) of a schedule's hash as read by HGETALL (str keys)."""
    every = f.get(schema.PERIODIC_EVERY, b"").decode()
    return (float(every) if every else None, f.get(schema.PERIODIC_CRON, b"").decode(),
            f.get(schema.PERIODIC_TZ, b"").decode())


def tick_node(name: str, tick: float, f: dict[str, bytes]) -> ops.Node:
    """The task of one tick of schedule ``name``, from the task fields the schedule keeps: a root whose
    id (and key) is the name and the tick in ms, so a tick can make one task only."""
    key = f"{name}@{round(tick * 1000)}"
    g = {field: f.get(field, b"") for field in _TASK}
    return ops.Node("p-" + key, g[schema.TASK_FN].decode(), g[schema.TASK_ARGS], "", g[schema.TASK_NAME].decode(),
                    True, g[schema.TASK_META], g[schema.TASK_TIMEOUT].decode(),
                    g[schema.TASK_MAX_ATTEMPTS].decode() or schema.DEFAULT_MAX_ATTEMPTS, key,
                    g[schema.TASK_RETRY_POLICY],
                    g[schema.TASK_IO_BOUND] == b"1", g[schema.TASK_SOFT_TIMEOUT].decode(),
                    g[schema.TASK_RESOURCES].decode())


def server_time(q: QueueCore) -> float:
    sec, usec = q.r.time()
    return float(sec) + usec / 1e6


# ------------------------------------------------------------------------------------ registering


def plan_one(q: QueueCore, task: Any, metadata: Any = None, timeout: float | None = None,
             max_attempts: int | None = None, retries: int = 0, retry_backoff: float = 1.0,
             retry_on: Any = (Exception,), soft_timeout: float | None = None, resources: Any = None
             ) -> tuple[ops.Node, dict[str, bytes]]:
    """The task of a schedule planned once, as ``schedule`` plans one (the same options), and its
    function blobs; ConfigError unless it is one call whose arguments hold no other deferred call."""
    from . import producer

    options = producer._Options(q, timeout, max_attempts, retries, retry_backoff, retry_on, soft_timeout, resources)
    refs, nodes, fns = producer.plan([task], [metadata], None, options)
    if len(nodes) != 1 or nodes[0].inputs or nodes[0].id != refs[0].id:
        raise ConfigError("a periodic task is one call whose arguments hold no other deferred call: to run a "
                          "tree each time, schedule a function that returns it (its continuation)")
    return nodes[0], fns


def register(q: QueueCore, name: str, task: Any, every: float | None, cron: str, tz: str,
             **options: Any) -> Periodic:
    """Plan ``task`` once (:func:`plan_one`, ``options`` as ``schedule`` takes them) and keep the
    schedule; registering a name again replaces its task and keeps its next due time when its timing
    is unchanged (a producer that runs ``every(...)`` at each start does not push it back)."""
    node, fns = plan_one(q, task, **options)
    k = q.keys
    old = q.r.hmget(k.schedule(name), schema.PERIODIC_EVERY, schema.PERIODIC_CRON, schema.PERIODIC_TZ,
                    schema.PERIODIC_NEXT, schema.PERIODIC_PAUSED)
    timing = (repr(every) if every else "", cron, tz)
    now = server_time(q)
    same = old[3] is not None and tuple((v or b"").decode() for v in old[:3]) == timing
    due = old[3].decode() if same else repr(next_due(every, cron, tz, now, now))
    paused = same and old[4] == b"1"
    fields = {schema.PERIODIC_EVERY: timing[0], schema.PERIODIC_CRON: cron, schema.PERIODIC_TZ: tz,
              schema.PERIODIC_NEXT: due, schema.PERIODIC_SPEC: new_token(),
              schema.TASK_FN: node.fn_sha, schema.TASK_ARGS: node.args, schema.TASK_NAME: node.name,
              schema.TASK_META: node.metadata, schema.TASK_TIMEOUT: node.timeout,
              schema.TASK_MAX_ATTEMPTS: node.max_attempts, schema.TASK_RETRY_POLICY: node.retry_policy,
              schema.TASK_IO_BOUND: "1" if node.io_bound else "", schema.TASK_SOFT_TIMEOUT: node.soft_timeout,
              schema.TASK_RESOURCES: node.resources}
    from .producer import ensure_group

    pipe = q.r.pipeline(transaction=True)
    ensure_group(q, pipe)
    pipe.set(k.signer, signing.fingerprint())
    for sha, blob in fns.items():
        pipe.set(k.fn(sha), blob, nx=True)
    if not same:
        pipe.hdel(k.schedule(name), schema.PERIODIC_PAUSED)
    pipe.hset(k.schedule(name), mapping=fields)
    pipe.hsetnx(k.schedule(name), schema.PERIODIC_CREATED, repr(now))
    pipe.zadd(k.periodic, {name: "+inf" if paused else due})
    for reply in pipe.execute(raise_on_error=False):
        if isinstance(reply, Exception) and "BUSYGROUP" not in str(reply):
            raise reply
    q.group_ready = True
    return get(q, name)


def every(q: QueueCore, seconds: Any, task: Any, key: Any, **options: Any) -> Periodic:
    """``Queue.every``: checked before anything is written."""
    return register(q, check_schedule_name(key), task, check_interval(seconds), "", "", **options)


def cron(q: QueueCore, expr: Any, task: Any, key: Any, tz: Any = None, **options: Any) -> Periodic:
    """``Queue.cron``: checked before anything is written."""
    name = check_schedule_name(key)
    expr_text, zone = check_cron(expr, tz)
    return register(q, name, task, None, expr_text, zone, **options)


# ------------------------------------------------------------------------------------ managing


def _periodic(name: str, f: dict[bytes, bytes]) -> Periodic:
    g = {key.decode(): value for key, value in f.items()}
    every_s, cron_expr, tz = spec_timing(g)
    paused = g.get(schema.PERIODIC_PAUSED) == b"1"
    last = g.get(schema.PERIODIC_LAST)
    return Periodic(name, every_s, cron_expr, tz, None if paused else float(g[schema.PERIODIC_NEXT]), paused,
                    g.get(schema.TASK_NAME, b"").decode(), int(g.get(schema.PERIODIC_RUNS) or 0),
                    float(last) if last else None, g.get(schema.PERIODIC_LAST_TASK, b"").decode())


def names(r: Any, k: QueueKeys) -> list[str]:
    """The queue's schedule names, the next due first (paused ones last)."""
    return [n.decode() for n in r.zrange(k.periodic, 0, -1)]


def listing(r: Any, k: QueueKeys) -> list[Periodic]:
    """Every schedule of the queue (``forrestq periodic list``, ``status``), the next due first."""
    found = names(r, k)
    pipe = r.pipeline(transaction=False)
    for name in found:
        pipe.hgetall(k.schedule(name))
    return [_periodic(n, f) for n, f in zip(found, pipe.execute()) if f]


def get(q: QueueCore, name: str) -> Periodic:
    f = q.r.hgetall(q.keys.schedule(check_schedule_name(name)))
    if not f:
        known = names(q.r, q.keys)
        raise UnknownSchedule(f"no periodic schedule {name!r} in queue {q.name!r}"
                              + (f"; known: {', '.join(known[:10])}" if known else ""))
    return _periodic(name, f)


def pause(q: QueueCore, name: str) -> Periodic:
    """No more ticks until :func:`resume` (a tick being made right now is refused: the flag is checked
    by periodic_tick.lua)."""
    get(q, name)
    pipe = q.r.pipeline(transaction=True)
    pipe.hset(q.keys.schedule(name), schema.PERIODIC_PAUSED, "1")
    pipe.zadd(q.keys.periodic, {name: "+inf"})
    pipe.execute()
    return get(q, name)


def resume(q: QueueCore, name: str) -> Periodic:
    """Ticks again, from the first due time after now (ticks missed while paused are skipped)."""
    f = q.r.hgetall(q.keys.schedule(name)) if get(q, name).paused else {}
    if f:
        g = {key.decode(): value for key, value in f.items()}
        every_s, cron_expr, tz = spec_timing(g)
        now = server_time(q)
        due = repr(next_due(every_s, cron_expr, tz, float(g[schema.PERIODIC_NEXT]), now))
        pipe = q.r.pipeline(transaction=True)
        pipe.hdel(q.keys.schedule(name), schema.PERIODIC_PAUSED)
        pipe.hset(q.keys.schedule(name), schema.PERIODIC_NEXT, due)
        pipe.zadd(q.keys.periodic, {name: due})
        pipe.execute()
    return get(q, name)


def remove(q: QueueCore, name: str) -> None:
    """Delete a schedule (the tasks it made stay)."""
    get(q, name)
    pipe = q.r.pipeline(transaction=True)
    pipe.delete(q.keys.schedule(name))
    pipe.zrem(q.keys.periodic, name)
    pipe.execute()


__all__ = ["Periodic", "every", "cron", "pause", "resume", "remove", "listing", "get", "next_due", "tick_node",
           "spec_timing"]
