"""Requests to a worker from elsewhere (issue 19): the dashboard's "stop" for a worker on any host.

A request is a short-lived key, ``fq:wctl:<worker id>`` (:func:`forrestq.schema.worker_control`),
holding :data:`forrestq.schema.CONTROL_STOP`. The worker reads it with its heartbeat (a GET and a DEL in the
pipeline that publishes its state, :meth:`forrestq.worker.bookkeeping.Bookkeeper.publish`) and answers
a stop as it answers SIGTERM, by sending itself one: it claims nothing more, lets its running tasks
finish (for its ``--grace``; past it they are handed back), and exits 0. So a remote stop takes
the one stopping path a signal takes, and the supervisor holds no code of its own for it.

The key expires after :data:`forrestq.schema.CONTROL_TTL` seconds: a request to a worker that is
gone is never read, and leaves nothing behind. Worker ids carry a nonce (``host:pid:nonce``), so a
request never reaches a later worker with the same pid.
"""
from __future__ import annotations

import os
import signal
from typing import Any

import redis

from .. import log, schema

__all__ = ["request_stop", "read_request", "answer_request"]

logger = log.get("worker")


def request_stop(r: redis.Redis, worker_id: str) -> None:
    """Ask worker ``worker_id`` to finish its running tasks and exit (at its next heartbeat)."""
    r.set(schema.worker_control(worker_id), schema.CONTROL_STOP, ex=schema.CONTROL_TTL)


def read_request(pipe: Any, worker_id: str) -> None:
    """Queue the read of this worker's request on ``pipe`` (two commands: the reply of the first, one
    before the last of the pipeline, goes to :func:`answer_request`)."""
    pipe.get(schema.worker_control(worker_id))
    pipe.delete(schema.worker_control(worker_id))  # read once: one stop, one log line (GET+DEL: the worker's ACL)


def answer_request(request: bytes | None) -> None:
    """Act on the request read (None: there is none). A stop: SIGTERM to this process, which the
    worker's handler turns into its ordinary stop (a second one while stopping changes nothing)."""
    if request is None or request.decode(errors="replace") != schema.CONTROL_STOP:
        return
    logger.info("stop requested from elsewhere (the dashboard): finishing the running tasks, then exiting")
    os.kill(os.getpid(), signal.SIGTERM)
