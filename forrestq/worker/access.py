"""What the worker's Redis user may do: checked before any child starts, and a refusal later ends the
worker instead of a retry loop.

A Redis ACL that lacks a command forrestq uses is not an outage: retrying never helps. So:

* :func:`check_access` (at start, before the startup line and before any child is forked) creates the
  consumer groups and runs, without side effects, what the children send first outside scripts
  (``CLIENT SETNAME`` of their connection, ``XREADGROUP`` on each stream, reading this consumer's own
  pending entries only, and a script: the renewal of a lease nobody holds, through ``EVALSHA`` and
  ``SCRIPT LOAD``): a user that lacks one gets one line and exit code 4 (``EXIT_AUTH``), as every CLI
  command does, instead of children that warn and retry for ever;
* it also tries what the supervisor's rounds send first (XPENDING of the sweep; HSET, PEXPIRE and DEL
  of a worker hash nobody lists) without registering anything: a worker registered before its signal
  handlers exist would stay listed if a signal ended it there;
* :func:`refusal` turns an ACL refusal in a later round, also one inside a script (a plain
  ResponseError), into the :class:`redis.exceptions.NoPermissionError` that ends the worker.

The minimal ACL of a worker and of a producer: README, Security.
"""
from __future__ import annotations

import os
import time
from typing import Any, Protocol

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from .. import lease, ops, schema
from ..connection import connect
from ..errors import as_permission_error, is_permission_error
from ..schema import GROUP, QueueKeys

__all__ = ["check_access", "refusal", "first_round", "on_redis_error", "settled"]


class Supervising(Protocol):
    """What these functions use of a :class:`~forrestq.worker.supervisor.Worker`."""

    r: redis.Redis
    url: str
    keys: list[QueueKeys]
    cfg: Any
    books: Any
    denied: redis.exceptions.NoPermissionError | None
    stopping: float
    hard_stop: bool

    def redis_round(self) -> None: ...


def check_access(r: redis.Redis, scripts: ops.Scripts, url: str, keys: list[QueueKeys], consumer: str,
                 timeout: float) -> None:
    """Raise NoPermissionError if the ACL refuses what a worker's children send first (see the module
    doc); ``consumer`` is the name the first child will read under (its pending entries: none yet)."""
    for k in keys:
        try:
            r.xgroup_create(k.stream, GROUP, id="0", mkstream=True)
        except redis.ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise
    lease.renew(scripts, keys[0], 1000, [(keys[0].lease(f"access-check-{consumer}"), "-")])  # held by nobody
    probe = connect(url, check=False, client_name=consumer, retry=Retry(NoBackoff(), 0), socket_timeout=timeout)
    try:
        probe.ping()  # the connection names itself first: CLIENT SETNAME, as a child's does
        for k in keys:  # id 0: this consumer's own pending entries, never a new task
            probe.xreadgroup(GROUP, consumer, {k.stream: "0"}, count=1)
            r.xpending(k.stream, GROUP)  # what the sweep reads first
        unlisted = schema.worker(f"access-check-{consumer}")  # a hash not in fq:workers: no one sees it
        r.hset(unlisted, schema.WORKER_HOST, "")
        r.pexpire(unlisted, 1000)
        r.delete(unlisted)
    finally:
        probe.close()


def refusal(error: BaseException) -> redis.exceptions.NoPermissionError | None:
    """``error`` as the NoPermissionError that ends the worker if it is an ACL refusal, else None
    (an outage: the worker retries)."""
    return as_permission_error(error) if is_permission_error(error) else None


def first_round(w: Supervising, timeout: float) -> None:
    """At the end of the worker's set-up: :func:`check_access` (what the ACL refuses raises
    NoPermissionError now, before the startup line)."""
    check_access(w.r, w.books.scripts, w.url, w.keys, f"{w.cfg.host}:{os.getpid()}:0", timeout)


def on_redis_error(w: Supervising, error: redis.RedisError) -> redis.exceptions.NoPermissionError | None:
    """A Redis round failed: an outage is noted (the next round retries); an ACL refusal stops the
    worker at once (children killed, their tasks handed back) and is returned, to end it with."""
    denied = w.denied or refusal(error)
    if denied is None:
        w.books.note_redis_error(error)
    elif not w.stopping:
        w.stopping, w.hard_stop = time.monotonic(), True
    return denied


def settled(denied: redis.exceptions.NoPermissionError | None) -> int:
    """0, the worker's exit code, unless the ACL refused something: then that is raised."""
    if denied is not None:
        raise denied
    return 0
