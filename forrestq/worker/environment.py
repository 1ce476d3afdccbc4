"""The worker's environment fingerprint (:mod:`forrestq.environment`), computed off its start path.

Describing the environment reads the import path's directories (about a millisecond; more where an
entry must be opened), so the worker does it at the first heartbeat after its children were forked
(its start-up, "ready", is over by then), not before: :meth:`EnvironmentNote.due` asks for that
heartbeat. The description is stored once, and again every :data:`REFRESH` seconds so that it and
the worker's env id outlive the worker by :data:`~forrestq.schema.ENV_TTL`.
"""
from __future__ import annotations

import time

import redis

from .. import environment, log
from ..environment import Environment

logger = log.get("worker")

REFRESH = 3600.0  # seconds between two writes of the description (its TTL is far longer)


class EnvironmentNote:
    """What a worker says about its environment: ``publish`` at each heartbeat returns the env id
    for its hash ("" until its children run)."""

    def __init__(self, worker_id: str) -> None:
        self.worker_id = worker_id
        self.env: Environment | None = None
        self.stored_at = 0.0  # monotonic time of the last store, 0 = never

    def due(self, forked: bool) -> bool:
        """Whether a heartbeat should come now to publish the environment (children run, not done yet)."""
        return forked and not self.stored_at

    def publish(self, r: redis.Redis, forked: bool) -> str:
        """Describe the environment once the children run (``forked``), store it when due; its id."""
        if self.env is None and forked:
            started = time.perf_counter()
            self.env = environment.describe()
            logger.debug("environment %s described in %.1f ms", self.env.summary(),
                         (time.perf_counter() - started) * 1000)
        if self.env is None:
            return ""
        now = time.monotonic()
        if not self.stored_at or now - self.stored_at >= REFRESH:
            environment.store(r, self.env, self.worker_id)  # a RedisError: the heartbeat tries again
            self.stored_at = now
        return self.env.id
