"""Acknowledged means durable: with durability ``replica``, a write forrestq acknowledges has reached
at least one replica before the call returns.

Why: Redis replicates asynchronously, so a primary that dies right after answering can take its last
writes with it, and a replica promoted in its place never heard of them. ``WAIT 1 T`` sent on the
same connection right after the writes returns once a replica has them all; forrestq sends it after
``schedule`` writes its tasks (a producer whose ``schedule`` returned may forget them) and after a
worker records a task's end (the task does not run again, its dependents are released once).

The setting: ``Queue(name, durability="replica")``, else ``$FORRESTQ_DURABILITY`` (workers read only
the variable), default ``none``. A write no replica confirmed within :data:`WAIT_MS` raises
:class:`~forrestq.errors.NotDurable` at the producer (the tasks are on the primary; they run unless it
fails over now) and is logged by a worker (the record stands; a lost one means the task runs again).
"""
from __future__ import annotations

import logging
import os
from typing import Any

from . import ops
from .errors import ConfigError, NotDurable
from .schema import QueueKeys

__all__ = ["CHOICES", "replicas", "wait_args", "confirm", "settle_wait", "complete_commands", "complete"]

logger = logging.getLogger("forrestq.worker")

CHOICES = {"none": 0, "replica": 1}
WAIT_MS = 5000  # how long a write waits for a replica's acknowledgement


def replicas(value: str | None = None) -> int:
    """How many replicas a write waits for: 0 or 1, from ``value`` (a Queue option), else from
    ``$FORRESTQ_DURABILITY``. ConfigError for anything else."""
    text = os.environ.get("FORRESTQ_DURABILITY", "") if value is None else value
    where = "durability=" if value is not None else "FORRESTQ_DURABILITY="
    choice = (text or "none").strip().lower()
    if choice not in CHOICES:
        raise ConfigError(f"{where}{text!r} is not one of {', '.join(CHOICES)}")
    return CHOICES[choice]


def wait_args(n: int) -> tuple[Any, ...]:
    """The WAIT command that follows the writes it covers, on their connection."""
    return ("WAIT", n, WAIT_MS)


def confirm(reply: Any, n: int, what: str) -> None:
    """Raise NotDurable unless WAIT's ``reply`` says ``n`` replicas have the writes of ``what``."""
    if isinstance(reply, Exception):
        raise reply
    if int(reply) < n:
        raise NotDurable(f"{what}: no replica confirmed the write within {WAIT_MS / 1000:g} s "
                         "(durability=replica); it is on the primary and stands unless the primary fails now")


def settle_wait(reply: Any, n: int, what: str) -> None:
    """A worker's side of :func:`confirm`: a write no replica confirmed (or a WAIT the server refused)
    is a warning line, never an error: the record stands on the primary either way."""
    try:
        confirm(reply, n, what)
    except (NotDurable, Exception) as e:  # noqa: BLE001 - an error reply of WAIT included
        logger.warning("%s", e if isinstance(e, NotDurable) else f"{what}: WAIT failed ({e}); the record stands")


def complete_commands(scripts: ops.Scripts, k: QueueKeys, c: ops.Completion, n: int) -> list[tuple[Any, ...]]:
    """``ops.complete`` as a command and, with ``n`` replicas, the WAIT that must follow it (for
    :meth:`ops.Scripts.send_all`: one round trip, one connection)."""
    command = ops.complete.command(scripts, k, c)
    return [command, wait_args(n)] if n else [command]


def complete(scripts: ops.Scripts, k: QueueKeys, c: ops.Completion, n: int) -> bool:
    """``ops.complete``, and with ``n`` replicas the WAIT right after it on the same connection (one
    round trip); returns whether the record was kept."""
    if not n:
        return ops.complete(scripts, k, c)
    raw, waited = scripts.send_all(complete_commands(scripts, k, c, n), raise_on_error=False)
    kept = ops.complete.reply(raw)
    settle_wait(waited, n, f"the end of task {c.task_id}")
    return kept
