"""Concurrency and rate limits by key (issue 16): the child's side (see :mod:`forrestq.limits`).

A claimed task with limit keys (``Claimed.limits``) starts only if limit_acquire.lua gives it a slot of
every one of them at once (all or nothing, in one script: no partial hold, no deadlock between two tasks
that each hold one key the other needs). Otherwise it is handed back unrun (``RELEASE_WAIT``: not
counted as an attempt) at the end of the stream, and the child pauses with the gate's back-off (for a
rate: until its window has room, as the script says), so a
queue full of limited tasks does not spin and the other tasks of the queue (behind them on the stream)
keep being claimed and run. A slot is held under the attempt's lease: it frees when the completion
deletes the lease, or when the lease of a dead worker expires; the worker renews nothing more than it
did. A task without limit keys costs nothing here (no Redis call).
"""
from __future__ import annotations

from .. import ops
from ..schema import QueueKeys

__all__ = ["acquire"]


def acquire(scripts: ops.Scripts, k: QueueKeys, c: ops.Claimed) -> tuple[str, float]:
    """Take a slot of each of ``c``'s limit keys for its attempt: ("", 0) when taken (it may start),
    else (the key that had no room, the seconds until a rate-limited key has room, or 0: unknown)."""
    return ops.limit_acquire(scripts, k, ops.LimitArgs(c.id, c.token, c.limits))
