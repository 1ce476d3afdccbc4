"""Concurrency and rate limits by key (issue 16): the producer's and reader's side.

``schedule(t, limits=["nfs"])`` stores the task's limit keys on its hash (``TASK_LIMITS``); the queue's
limits (``fq:{q}:limits``: key -> how many such tasks may run at once) and rates (``fq:{q}:rates``: key
-> at most N starts per window) are set here and read by limit_acquire.lua, which the child that claimed
a task with limit keys runs before starting it (:mod:`forrestq.worker.limits`): all its keys or none. A
key with neither a limit nor a rate does not constrain (set one later and it applies from the next start).
Holders are counted only while their attempt's token holds the task's lease, so a finished, handed-back
or lost holder (its lease deleted or expired) frees its slot without anyone renewing or releasing it.
"""
from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import redis

from . import schema
from .errors import ConfigError, UnknownLimit, shown
from .schema import QueueKeys

__all__ = ["Limit", "check_key", "keys_text", "listing", "remove", "set_limit", "set_rate"]

_KEY = re.compile(r"^[A-Za-z0-9_.:@/+=-]{1,128}$")  # no comma: TASK_LIMITS is a comma-separated list


@dataclass(frozen=True)
class Limit:
    """One limit key of a queue: its concurrency limit and rate (None: not set) and how it is used."""

    key: str
    limit: int | None  # tasks holding it that may run at once
    rate: tuple[int, float] | None  # at most rate[0] starts per rate[1] seconds
    in_use: int  # holders running now
    starts: int  # starts in the last rate window (0 without a rate)
    waiting: int  # tasks handed back for it in the last schema.LIMIT_WAITING_FOR seconds


def check_key(key: object) -> str:
    """``key`` if it is a valid limit key (letters, digits, _ . : @ / + = -; 1 to 128); else ConfigError."""
    if not isinstance(key, str) or not _KEY.match(key):
        raise ConfigError(f"bad limit key {shown(key)}: use 1 to 128 letters, digits or _ . : @ / + = -")
    return key


def keys_text(limits: Any) -> str:
    """``schedule(limits=...)``: None, one key or an iterable of keys, as TASK_LIMITS text ("a,b")."""
    if limits is None:
        return ""
    if isinstance(limits, str):
        limits = [limits]
    if not isinstance(limits, Iterable):
        raise ConfigError(f"bad limits={shown(limits)}: give a limit key or a list of them")
    return ",".join(sorted({check_key(k) for k in limits}))


def set_limit(r: redis.Redis, k: QueueKeys, key: str, most: Any) -> None:
    """At most ``most`` (an int >= 1) tasks holding ``key`` run at once on queue ``k``."""
    check_key(key)
    if isinstance(most, bool) or not isinstance(most, int) or most < 1:
        raise ConfigError(f"bad limit {shown(most)} for {key}: give a whole number of tasks, at least 1")
    r.hset(k.limits, key, most)


def set_rate(r: redis.Redis, k: QueueKeys, key: str, starts: Any, per: Any = 1.0) -> None:
    """At most ``starts`` (an int >= 1) starts of tasks holding ``key`` per ``per`` seconds (> 0)."""
    check_key(key)
    if isinstance(starts, bool) or not isinstance(starts, int) or starts < 1:
        raise ConfigError(f"bad rate {shown(starts)} for {key}: give a whole number of starts, at least 1")
    if isinstance(per, bool) or not isinstance(per, (int, float)) or not math.isfinite(per) or per <= 0:
        raise ConfigError(f"bad per={shown(per)} for {key}: give a number of seconds above 0")
    r.hset(k.rates, key, f"{starts}{schema.LIMIT_SEP}{float(per)!r}")


def remove(r: redis.Redis, k: QueueKeys, key: str, limit: bool = True, rate: bool = True) -> None:
    """Drop ``key``'s limit and/or rate (its tasks then start unconstrained); UnknownLimit if none was set."""
    check_key(key)
    pipe = r.pipeline(transaction=True)
    pipe.hdel(k.limits, key) if limit else pipe.hexists(k.limits, key)
    pipe.hdel(k.rates, key) if rate else pipe.hexists(k.rates, key)
    got = pipe.execute()
    if not ((limit and got[0]) or (rate and got[1])):
        what = "limit or rate" if limit and rate else "limit" if limit else "rate"
        raise UnknownLimit(f"queue {k.name} has no {what} {shown(key)}")


def listing(r: redis.Redis, k: QueueKeys) -> list[Limit]:
    """Every limit key of the queue with a limit or a rate, by name, with how it is used now (read only)."""
    limits = {n.decode(): int(v) for n, v in r.hgetall(k.limits).items()}
    rates: dict[str, tuple[int, float]] = {}
    for n, v in r.hgetall(k.rates).items():
        starts, per = v.decode().split(schema.LIMIT_SEP)
        rates[n.decode()] = (int(starts), float(per))
    names = sorted({*limits, *rates})
    if not names:
        return []
    secs, micros = r.time()
    now = secs + micros / 1e6
    pipe = r.pipeline(transaction=False)
    for n in names:
        pipe.hgetall(k.limit_holders(n))
        pipe.zcount(k.limit_starts(n), f"({now - rates[n][1]}" if n in rates else "+inf", "+inf")
        pipe.zcount(k.limit_waiting(n), now - schema.LIMIT_WAITING_FOR, "+inf")
    got = pipe.execute()
    holders = [got[3 * i] for i in range(len(names))]
    pipe = r.pipeline(transaction=False)
    for held in holders:
        for tid in held:
            pipe.get(k.lease(tid.decode()))
    leases = iter(pipe.execute() if any(holders) else [])
    out = []
    for i, n in enumerate(names):
        in_use = sum(1 for tok in holders[i].values() if next(leases) == tok)
        out.append(Limit(n, limits.get(n), rates.get(n), in_use, int(got[3 * i + 1]), int(got[3 * i + 2])))
    return out


def as_json(lim: Limit) -> dict[str, Any]:
    """One limit key as ``forrestq status --json`` shows it (rate: [starts, per seconds] or None)."""
    return {"key": lim.key, "limit": lim.limit, "rate": list(lim.rate) if lim.rate else None,
            "in_use": lim.in_use, "starts": lim.starts, "waiting": lim.waiting}
