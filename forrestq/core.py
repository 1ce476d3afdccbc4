"""What every layer above the scripts needs of one queue: its name, client, keys and scripts.

:class:`~forrestq.queue.Queue` (the facade users hold) owns one :class:`QueueCore` and hands it to
the layers it delegates to (reading, producer, the habits), so that none of them imports the
facade and each parameter is typed.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import redis

from . import codec, ops
from .cluster import pinned
from .schema import QueueKeys


@dataclass
class QueueCore:
    """One queue on one Redis client. ``local``: debug mode (results() runs tasks in this process)."""

    name: str
    url: str
    r: redis.Redis
    max_attempts: int = 3
    local: bool = False
    replicas: int = 0  # durability: replicas a schedule waits for (forrestq.durability)
    keys: QueueKeys = field(init=False)
    scripts: ops.Scripts = field(init=False)
    group_ready: bool = field(default=False, init=False)  # stream and consumer group exist
    # the events cap this process set (Queue(events=...)), written again with every schedule; None: unset
    events_cap: str | None = field(default=None, init=False)
    # the default result TTL this process set (Queue(result_ttl=...), producer.ttl_text), likewise; None: unset
    result_ttl: str | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.keys = QueueKeys(self.name)
        self.r = pinned(self.r, self.keys.prefix)  # on a cluster: TIME, WAIT and the like go to its slot
        self.scripts = ops.Scripts(self.r)


codec.never_send(QueueCore, "a queue's QueueCore",
                 "pass the queue's name (and url) and open Queue(name) inside the task")
