"""The records of exactly-once keys: validation, listing by state and prefix, counts, and the
changes made without a claim (marking done, forgetting). The claims themselves (iterate, the
decorator, ``try_claim``) live in :mod:`forrestq.once`.

A key of version ``v`` is free (no record), or in one of four states (``schema.ONCE_STATES``):
``running`` (a lease holds it), ``done`` (its body completed, or ``mark_done``), ``failed`` (its body
raised, or ``notify_failure``) or ``expired`` (its lease ended before its holder settled it: the
process died, was cut off, or ran past its ``timeout``). Each record is a hash
``fq:{q}:once:<v>:k:<key>``, and each state has an index, a zset of key names with score 0
(``fq:{q}:once:<v>:s:<state>``), so a listing by state and prefix is a lex range of one index
(``ZRANGEBYLEX``) and a count is ``ZCARD``: neither scans the keyspace. A lease expires in Redis
without telling anyone, so a running key whose lease is gone is moved to ``expired`` lazily: by the
next claim of that key, its holder's confirm, or the sweep (once_sweep.lua, over the running index
only) that every listing and count runs first. All times come from the server's clock.
"""
from __future__ import annotations

import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from . import ops
from .core import QueueCore
from .errors import ConfigError, KeyBusy, shown
from .schema import (
    DONE,
    EXPIRED,
    ONCE_ATTEMPTS,
    ONCE_CLAIMED_AT,
    ONCE_FREE,
    ONCE_HOST,
    ONCE_PID,
    ONCE_REASON,
    ONCE_RENEWED,
    ONCE_SETTLED_AT,
    ONCE_STATE,
    ONCE_STATES,
    ONCE_UNTIL,
    RUNNING,
)

FREE = "free"  # the state of a key without a record (never claimed, released, or forgotten)
HOST = socket.gethostname()
_BATCH = 500  # records read per pipeline, keys per once_mark call


# ------------------------------------------------------------------------------------- validation


def check_seconds(name: str, value: float, why: str = "") -> int:
    """``value`` seconds as milliseconds (at least 1), or ConfigError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or value != value:
        raise ConfigError(f"{name} must be a positive number of seconds, not {shown(value)}{why}")
    return max(1, int(value * 1000))


def check_version(version: int) -> int:
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise ConfigError(f"version must be a non-negative integer, not {shown(version)}")
    return version


def key_str(key: Any) -> str:
    """The stored form of a key: a ``str`` as it is (UTF-8, non-ASCII welcome), an ``int`` as ``str(k)``."""
    if isinstance(key, bool) or not isinstance(key, (str, int)):
        raise TypeError(f"a once key must be a str or an int, not {type(key).__name__}: {shown(key)}")
    s = key if isinstance(key, str) else str(key)
    if not s:
        raise ConfigError("a once key must not be empty")
    try:
        s.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ConfigError(f"once key {shown(key)} is not valid UTF-8 text: {exc}") from None
    return s


def _check_states(state: str | Iterable[str] | None) -> tuple[str, ...]:
    if state is None:
        return ONCE_STATES
    wanted = (state,) if isinstance(state, str) else tuple(state)
    bad = [s for s in wanted if s not in ONCE_STATES]
    if bad or not wanted:
        raise ConfigError(f"state must be one of {', '.join(ONCE_STATES)} (or a list of them), not {shown(state)}")
    return tuple(s for s in ONCE_STATES if s in wanted)


# ---------------------------------------------------------------------------------------- records


@dataclass(frozen=True)
class KeyRecord:
    """One exactly-once key as stored. Times are Unix seconds on the server's clock.

    ``state``: running, done, failed or expired. ``host``/``pid``: the latest claim's process (or
    the one that marked it done). ``attempts``: claims so far. ``claimed_at``: the latest claim.
    ``settled_at``: when it was done or failed, or (expired) when its lease ended; None while running.
    ``lease_until``: when the lease ends (ended) unless renewed. ``renewed``: the claim's lease is
    renewed by its live process (``lease=``), or not (``timeout=``). ``reason``: why it failed."""

    key: str
    state: str
    version: int
    host: str
    pid: int
    attempts: int
    claimed_at: float | None
    settled_at: float | None
    lease_until: float | None
    renewed: bool
    reason: str


def _seconds(raw: bytes | None) -> float | None:
    return int(raw) / 1000 if raw else None


def _record(key: str, version: int, h: dict[bytes, bytes]) -> KeyRecord:
    def text(field: str) -> str:
        return h.get(field.encode(), b"").decode("utf-8", "replace")

    return KeyRecord(key=key, state=text(ONCE_STATE), version=version, host=text(ONCE_HOST),
                     pid=int(text(ONCE_PID) or 0), attempts=int(text(ONCE_ATTEMPTS) or 0),
                     claimed_at=_seconds(h.get(ONCE_CLAIMED_AT.encode())),
                     settled_at=_seconds(h.get(ONCE_SETTLED_AT.encode())),
                     lease_until=_seconds(h.get(ONCE_UNTIL.encode())),
                     renewed=text(ONCE_RENEWED) == "1", reason=text(ONCE_REASON))


def _range(prefix: str | None) -> tuple[bytes, bytes]:
    """The ZRANGEBYLEX bounds of every key starting with ``prefix`` (UTF-8 never holds byte 0xff)."""
    if not prefix:
        return b"-", b"+"
    p = prefix.encode("utf-8")
    return b"[" + p, b"(" + p + b"\xff"


def sweep(q: QueueCore, version: int) -> int:
    """Record as expired the running keys whose lease is gone; how many."""
    return ops.once_sweep(q.scripts, q.keys, version)


def key_names(q: QueueCore, state: str | Iterable[str] | None = None, prefix: str | None = None,
              version: int = 0, limit: int | None = None) -> list[str]:
    """The keys in ``state`` (one, several, None: any) starting with ``prefix``, sorted (by bytes)."""
    version, states = check_version(version), _check_states(state)
    if prefix is not None and not isinstance(prefix, str):
        raise ConfigError(f"prefix must be a str, not {shown(prefix)}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ConfigError(f"limit must be a non-negative integer, not {shown(limit)}")
    sweep(q, version)
    lo, hi = _range(prefix)
    pipe = q.r.pipeline(transaction=False)
    for st in states:
        pipe.zrangebylex(q.keys.once_index(version, st), lo, hi, *((0, limit) if limit is not None else ()))
    names = sorted(n for got in pipe.execute() for n in got)
    return [n.decode("utf-8") for n in names[:limit]]


def once_keys(q: QueueCore, state: str | Iterable[str] | None = None, prefix: str | None = None,
              version: int = 0, limit: int | None = None) -> list[KeyRecord]:
    """The records of the keys in ``state`` (``"running"``, ``"done"``, ``"failed"``, ``"expired"``, a
    list of them, or None: all) whose name starts with ``prefix``, sorted by key (at most ``limit``).
    Reads only the matching keys of the asked states' indexes, after sweeping the expired ones."""
    names = key_names(q, state, prefix, version, limit)
    version = check_version(version)
    out = []
    for i in range(0, len(names), _BATCH):
        chunk = names[i:i + _BATCH]
        pipe = q.r.pipeline(transaction=False)
        for name in chunk:
            pipe.hgetall(q.keys.once_record(version, name))
        out += [_record(name, version, h) for name, h in zip(chunk, pipe.execute()) if h]
    return out


def status(q: QueueCore, key: Any, version: int = 0) -> str:
    """``"running"`` (a lease holds it), ``"done"``, ``"failed"``, ``"expired"`` or ``"free"``."""
    version, skey = check_version(version), key_str(key)
    pipe = q.r.pipeline(transaction=False)
    pipe.exists(q.keys.once_lease(version, skey))
    pipe.hget(q.keys.once_record(version, skey), ONCE_STATE)
    held, st = pipe.execute()
    if held:
        return RUNNING
    if st is None:
        return FREE
    return EXPIRED if st.decode() == RUNNING else st.decode()


def counts(q: QueueCore, version: int = 0) -> dict[str, int]:
    """Keys per state under ``version``: ``{"running", "done", "failed", "expired"}`` (from the
    indexes, after the sweep: constant time per state)."""
    version = check_version(version)
    sweep(q, version)
    pipe = q.r.pipeline(transaction=False)
    for index in q.keys.once_indexes(version):
        pipe.zcard(index)
    return dict(zip(ONCE_STATES, (int(n) for n in pipe.execute())))


def done_keys(q: QueueCore, version: int = 0) -> set[str]:
    """Every key done under ``version`` (str form)."""
    return {k.decode("utf-8") for k in q.r.zrange(q.keys.once_index(check_version(version), DONE), 0, -1)}


# ----------------------------------------------------------------------------- changes, no claim


def mark(q: QueueCore, keys: list[str], version: int, mode: str) -> list[int]:
    """once_mark over ``keys`` in batches: per key 1 changed, 0 unchanged, -1 held by a live lease."""
    out: list[int] = []
    for i in range(0, len(keys), _BATCH):
        out += ops.once_mark(q.scripts, q.keys, ops.OnceMarkArgs(version, mode, keys[i:i + _BATCH], HOST, os.getpid()))
    return out


def mark_done(q: QueueCore, key: Any, version: int = 0) -> bool:
    """Record ``key`` done without running it (a result you have from elsewhere): True if it was not
    done, False if it was. Raises :class:`KeyBusy` (changing nothing) if a live lease holds it."""
    version, skey = check_version(version), key_str(key)
    (got,) = mark(q, [skey], version, DONE)
    if got < 0:
        raise KeyBusy(f"once key {shown(key)} (version {version}) is held by a running process right now; "
                      "it was not marked done")
    return got == 1


def forget_keys(q: QueueCore, keys: Iterable[Any] | None = None, *, state: str | Iterable[str] | None = None,
                prefix: str | None = None, version: int = 0) -> int:
    """Make keys free again, whatever they were (done, failed, expired): their records are deleted and
    the next claim runs them (recompute some done keys without bumping the version). ``keys``, or
    every key in ``state`` starting with ``prefix``. Keys held by a live lease are left alone.
    Returns how many were forgotten."""
    version = check_version(version)
    if keys is not None:
        if state is not None or prefix is not None:
            raise ConfigError("give keys, or state/prefix, not both")
        names = [key_str(k) for k in keys]
    else:
        names = key_names(q, state, prefix, version)
    return sum(1 for got in mark(q, names, version, ONCE_FREE) if got == 1)
