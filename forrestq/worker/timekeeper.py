"""The worker's time keeping (issue 16): about once a second, for each of its queues, one small script
(``promote.lua``) moves the SCHEDULED tasks that are due by the Redis server's clock onto the stream and
names the periodic schedules that are due; for each of those, one ``periodic_tick.lua`` call makes the
tick's task, compare-and-set on the schedule's next due time (:mod:`forrestq.periodic`), so many workers
on many hosts doing this at once make one task per tick.

Why the supervisor and not only the children: a child's claim moves due tasks too, but a child only
claims when it is free, and an idle one sits in XREADGROUP between claims; the supervisor never runs
user code, so a worker whose children are all busy still promotes (``status`` counts stay true, an idle
worker elsewhere gets the task) and still makes the periodic ticks. The next look comes earlier when
the script says something is due sooner than a second, so a delay ends within about one tick of the
supervision loop (50 ms) of its time once the worker has seen it. Unused, this costs one pipelined
script call per second per worker.

The same look deletes the finished roots whose result TTL ran out (``expire.lua``, at most EXPIRE_LIMIT per
queue per look: more follow SOONEST later), with the inner nodes nobody needs any more; one more script
call per queue per look, nothing per task.
"""
from __future__ import annotations

import time
from typing import Any

import redis

from .. import log, ops, periodic
from ..schema import EXPIRE_LIMIT, PERIODIC_NEXT, PERIODIC_SPEC, QueueKeys

logger = log.get("worker")

EVERY = 1.0  # seconds between looks when nothing is due sooner
SOONEST = 0.05  # seconds: the shortest wait between looks (one supervision tick)
PROMOTE_LIMIT = 1000  # tasks moved per queue per look (more follow at the next, SOONEST later)


class Timekeeper:
    """Promotion and periodic ticks for one worker's queues (``step`` each supervision round)."""

    def __init__(self, r: redis.Redis, scripts: ops.Scripts, keys: list[QueueKeys]) -> None:
        self.r = r
        self.scripts = scripts
        self.keys = keys
        self.next_look = time.monotonic() + EVERY  # the first a second after start: off the start path
        self.broken: set[str] = set()  # schedules whose tick failed (said once)

    def step(self, stopping: bool) -> None:
        """Look now if it is time (never while stopping: the worker hands work back then)."""
        now = time.monotonic()
        if stopping or now < self.next_look:
            return
        self.next_look = now + EVERY  # also when Redis is away: the next round of the loop does not retry at once
        pipe = self.r.pipeline(transaction=False)
        for k in self.keys:
            ops.promote.queue(self.scripts, pipe, k, PROMOTE_LIMIT)
            ops.expire.queue(self.scripts, pipe, k, EXPIRE_LIMIT)
        replies = self.scripts.execute(pipe)
        wait = EVERY
        for k, raw, expired in zip(self.keys, replies[0::2], replies[1::2]):
            gone = ops.expire.reply(expired)
            if gone.deleted:
                logger.debug("result TTL of %s: %d records deleted", k.name, gone.deleted)
            got = ops.promote.reply(raw)
            # the next look at the next due time (anchored on it: no drift from tick to tick); after ticks
            # that due time is the one they set, not the one read before them
            ticked = [self.tick(k, name, got.now) for name in got.due]
            for due in (got.next_task, *ticked, None if got.due else got.next_tick, gone.next_expiry):
                if due is not None:
                    wait = min(wait, max(SOONEST, due - got.now))
        self.next_look = now + wait

    def tick(self, k: QueueKeys, name: str, now: float) -> float | None:
        """Make the task of the due tick of schedule ``name`` unless another worker did; the schedule's
        next due time after it (None: it could not be read, or was removed)."""
        raw: dict[Any, bytes] = self.r.hgetall(k.schedule(name))
        f = {key.decode(): value for key, value in raw.items()}
        if PERIODIC_NEXT not in f:
            return None  # removed meanwhile
        try:
            tick_text = f[PERIODIC_NEXT].decode()
            tick = float(tick_text)
            every, cron, tz = periodic.spec_timing(f)
            args = ops.TickArgs(name, tick_text, f.get(PERIODIC_SPEC, b"").decode(),
                                periodic.next_due(every, cron, tz, tick, now), periodic.tick_node(name, tick, f))
        except (ValueError, KeyError, ArithmeticError) as e:  # a schedule written by hand, or by a newer forrestq
            if name not in self.broken:
                self.broken.add(name)
                logger.warning("periodic schedule %s of %s cannot be read (%s): no task made", name, k.name, e)
            return None
        if ops.tick(self.scripts, k, args):
            logger.info("periodic %s of %s: tick %s made %s", name, k.name, tick_text, args.node.id)
        return args.next_due  # made here or by another worker: either way the schedule moved on (or changed)
