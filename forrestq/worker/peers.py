"""The other parties a worker meets in Redis: the live workers of its queues (who else might run a task
this host cannot load, and which secret they sign with), and whoever ended an attempt of ours (what
became of a task whose result was refused or whose lease was lost).

Both are read on rare paths only (a refusal, a lost lease); nothing here runs per task.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import redis

from .. import schema
from ..schema import QueueKeys

__all__ = ["Peer", "live_peers", "loss_reason", "what_became_of"]


class Peer(NamedTuple):
    """One live worker, as its hash says."""

    id: str
    host: str
    queues: tuple[str, ...]
    fingerprint: str  # of its secret; "" when it does not say
    claiming: bool  # False while it stops, or after it stopped claiming (its secret differs)


def _text(v: Any) -> str:
    return v.decode(errors="replace") if isinstance(v, bytes) else ("" if v is None else str(v))


_PEER_FIELDS = (schema.WORKER_HOST, schema.WORKER_QUEUES, schema.WORKER_FINGERPRINT, schema.WORKER_STOPPING,
                schema.WORKER_REFUSING)


def live_peers(r: redis.Redis) -> list[Peer]:
    """Every live worker (this one too, once it has published its state): the ones in ``fq:workers``
    whose hash has not expired (a worker's hash lives three heartbeats)."""
    ids = [_text(i) for i in r.zrange(schema.WORKERS, 0, -1)]
    if not ids:
        return []
    pipe = r.pipeline(transaction=False)
    for wid in ids:
        pipe.hmget(schema.worker(wid), *_PEER_FIELDS)
    peers = []
    for wid, (host, queues, fingerprint, stopping, refusing) in zip(ids, pipe.execute()):
        if host is None:
            continue  # expired: a lost worker
        claiming = _text(stopping) in ("", "0") and not _text(refusing)
        peers.append(Peer(wid, _text(host), tuple(q for q in _text(queues).split(",") if q), _text(fingerprint),
                          claiming))
    return peers


def loss_reason(state: str, token: str, reason: str, host: str, ours: str) -> str:
    """What became of a task that attempt ``ours`` held, from its record now: its ``state``,
    ``token``, ``reason`` and ``host`` ("" for a field that is missing; ``state`` "": no record)."""
    if not state:
        return "the task record is gone (deleted by a clean, or the server lost its data)"
    if state == schema.FAILED and reason.startswith("cancelled"):
        return "the task was cancelled"
    if token == ours:
        return f"the task is {state} and still carries this attempt's token"
    where = f" on host {host}" if host else ""
    if state == schema.RUNNING:
        return f"another attempt{where} took it over (this attempt's lease had expired, or the task was re-run)"
    if state in schema.FINISHED_STATES:
        return f"another attempt{where} recorded it as {state} (after this one's lease had expired), or it was " \
            "recorded by hand"
    return f"it was requeued or handed back meanwhile (it is {state} now)"


def what_became_of(r: redis.Redis, k: QueueKeys, task_id: str, ours: str) -> str:
    """:func:`loss_reason` for task ``task_id`` of queue ``k``, read now (never raises)."""
    try:
        fields = r.hmget(k.task(task_id), schema.TASK_STATE, schema.TASK_TOKEN, schema.TASK_REASON,
                         schema.TASK_HOST)
    except redis.RedisError as e:
        return f"cannot tell why: {type(e).__name__}: {e}"
    state, token, reason, host = (_text(f) for f in fields)
    return loss_reason(state, token, reason, host, ours)
