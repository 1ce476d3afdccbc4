"""``forrestq worker --idle-exit T``: a worker that leaves by itself after T seconds with nothing to do
(issue 21: a batch job's worker gives its allocation back once the queue is drained).

"Nothing to do" is: none of the worker's slots holds a task (running, or claimed ahead and parked),
without a break, for T seconds; the clock starts when the worker starts. The worker is then stopped the
way SIGTERM stops it (the answer to a remote stop, :mod:`forrestq.worker.remote`, is the same): it
claims nothing more, its children leave, it exits 0. So an idle exit takes the one stopping path a
signal takes, and the supervisor only calls :meth:`IdleWatch.step` once per round.
"""
from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterable
from typing import Protocol

from .. import log

__all__ = ["IdleWatch"]

logger = log.get("worker")


class _Slot(Protocol):
    busy: int


class IdleWatch:
    """Counts the seconds the worker holds no task; past ``seconds`` (0: never) it stops the worker."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.since = time.monotonic()  # when the worker last held a task (or started)
        self.fired = False

    def step(self, slots: Iterable[_Slot], now: float | None = None) -> bool:
        """One supervision round: whether the worker was asked to stop for being idle (once)."""
        if not self.seconds or self.fired:
            return False
        now = time.monotonic() if now is None else now
        if any(s.busy for s in slots):
            self.since = now
            return False
        if now - self.since < self.seconds:
            return False
        self.fired = True
        logger.info("idle for %g s (--idle-exit): stopping", now - self.since)
        os.kill(os.getpid(), signal.SIGTERM)  # the worker's own stop path, as a remote stop takes it
        return True
