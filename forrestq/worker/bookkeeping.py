"""The worker's side of Redis: what it owes (failures and hand-backs of tasks whose child died, kept
in an outbox while Redis is away), the leases it renews for its children, its published state, and
the sweep that hands back tasks of lost workers.

Nothing here waits for Redis longer than one call: the worker's client has a short socket timeout
and no retries, and the supervision loop (:mod:`forrestq.worker.supervisor`) goes on while Redis is
away; each round tries again.
"""
from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Mapping
from typing import Any

import redis

from .. import codec, durability, lease, log, ops, schema
from ..errors import TaskKilled, TaskLost, is_transient
from ..schema import GROUP, QueueKeys
from .environment import EnvironmentNote
from .forensics import Evidence, Kill, outside_kill_hint
from .peers import loss_reason
from .procs import signal_reason
from .remote import answer_request, read_request
from .slots import SlotView
from .timekeeper import Timekeeper

logger = log.get("worker")


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


class Bookkeeper:
    """Redis reads and writes of one worker (id ``worker_id``) over ``keys`` (its queues)."""

    def __init__(self, r: redis.Redis, keys: list[QueueKeys], worker_id: str, host: str, lease_ms: int,
                 sweep_every: float) -> None:
        self.r = r
        self.scripts = ops.Scripts(r)
        self.replicas = durability.replicas()  # $FORRESTQ_DURABILITY: a failure recorded here waits for a replica too
        self.keys = keys
        self.id = worker_id
        self.host = host
        self.lease_ms = lease_ms
        self.sweep_every = sweep_every
        self.outbox: list[tuple[str, Callable[[], Any]]] = []  # Redis writes owed, oldest first
        self.env = EnvironmentNote(worker_id)  # its environment fingerprint, once its children run
        self.clock = Timekeeper(r, self.scripts, keys)  # delayed tasks due, periodic ticks (issue 16)
        self.redis_down = False

    # --- the outbox -------------------------------------------------------------------------
    def send(self, what: str, write: Callable[[], Any]) -> None:
        """A Redis write the worker owes: done now, or kept in the outbox while Redis is away."""
        self.outbox.append((what, write))
        self.flush_outbox()

    def flush_outbox(self) -> bool:
        """Send what the outbox holds, oldest first; False if Redis is away (the rest waits)."""
        while self.outbox:
            what, write = self.outbox[0]
            try:
                done = write()
            except redis.RedisError as e:
                if is_transient(e):
                    self.note_redis_error(e)
                    return False
                logger.warning("Redis refused to record this, giving up: %s (%s)", what, e)
                done = 0
            self.outbox.pop(0)
            if done:  # 0: the attempt no longer held the task (recorded elsewhere meanwhile)
                logger.info("%s", what)
        return True

    def settle(self, k: QueueKeys, view: SlotView, status: int, kill: Kill | None, ev: Evidence) -> None:
        """Record what becomes of the task a dead child held (see :mod:`forrestq.worker.supervisor`),
        with the evidence it left (``ev``: its figures, the output and stack it wrote up to its death);
        ``kill``: why this worker killed the child, if it did."""
        if kill is not None and kill.token != view.token:
            kill = Kill("stop", view.token)  # it had moved on to another task: not that task's fault
        if view.parked:  # claimed ahead, or ended while another task ran: whatever killed the child, not it
            self.hand_back(k, view, counted=False)
        elif kill is not None and kill.why == "stop":
            self.hand_back(k, view, counted=False)
        elif kill is not None and kill.why == "lost":
            pass  # the task is someone else's now
        elif kill is not None:
            self.fail(k, view.task, view.token, kill.reason(status), ev=ev)
        elif os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL:
            if view.attempts >= view.max_attempts:
                hint = outside_kill_hint(ev.peak_rss, self.host)
                self.fail(k, view.task, view.token, f"{signal_reason(status, hint=hint)}; attempt {view.attempts} "
                                                    f"of {view.max_attempts}", ev=ev)
            else:
                self.hand_back(k, view, counted=True)
        else:
            self.fail(k, view.task, view.token, signal_reason(status), ev=ev)

    def hand_back(self, k: QueueKeys, view: SlotView, counted: bool) -> None:
        """Give the task a dead child held back to its queue (``counted``: its attempt counts)."""
        args = ops.ReleaseArgs(view.task, view.token, counted)
        what = f"handed back {k.name} {view.task}" + (" (attempt counted)" if counted else "")
        self.send(what, lambda: ops.release(self.scripts, k, args))

    def fail(self, k: QueueKeys, task: str, token: str, reason: str, exc: BaseException | None = None,
             ev: Evidence | None = None) -> None:
        """Record the failure of a task whose attempt cannot report it (``token`` "": a lost one),
        with the evidence its dead child left (``ev``); ``exc``: default TaskKilled(reason)."""
        exc = exc or TaskKilled(reason)
        self.send(f"failed {k.name} {task} {reason}", lambda: self.record_failure(k, task, token, reason, exc, ev))

    def record_failure(self, k: QueueKeys, task: str, token: str, reason: str, exc: BaseException,
                       ev: Evidence | None = None) -> bool:
        ev = ev or Evidence()
        c = ops.Completion(task_id=task, token=token, outcome=schema.FAILED, error=codec.dump_exception(exc),
                           traceback=reason, reason=reason, host=self.host, runtime=ev.runtime,
                           output=ev.output, cpu_time=ev.cpu_time, peak_rss=ev.peak_rss, pid=ev.pid,
                           stack=ev.stack)
        return durability.complete(self.scripts, k, c, self.replicas)

    def note_redis_error(self, e: redis.RedisError) -> None:
        if not self.redis_down:
            logger.warning("Redis unreachable or refusing (%s); retrying", e)
        self.redis_down = True

    def note_redis_ok(self) -> None:
        if self.redis_down:
            logger.warning("Redis is back")
        self.redis_down = False

    # --- leases and state -------------------------------------------------------------------
    def renew(self, k: QueueKeys, held: list[SlotView]) -> list[SlotView]:
        """Renew the leases of these tasks of queue ``k`` in one call; the ones not renewed."""
        kept = lease.renew(self.scripts, k, self.lease_ms, [(k.lease(v.task), v.token) for v in held])
        return [v for v, ok in zip(held, kept) if not ok]

    def taken_over(self, k: QueueKeys, lost: list[SlotView]) -> list[SlotView]:
        """Of tasks whose lease could not be renewed, the ones that were taken over.

        While the task still carries our token it is ours: it either only saw its lease expire
        (Redis was away, or this worker was paused) and is still running, so the lease is set again,
        or our child has just recorded its end (the heartbeat came between the record and the slot's
        update), so nothing is to be done. A task carrying another token (or none: its record is gone)
        was taken over, cancelled, re-run or deleted: this attempt is pointless (its result would be
        refused); the log line says which."""
        pipe = self.r.pipeline(transaction=False)
        for v in lost:
            pipe.hmget(k.task(v.task), schema.TASK_STATE, schema.TASK_TOKEN, schema.TASK_REASON, schema.TASK_HOST)
        gone = []
        for v, fields in zip(lost, pipe.execute()):
            state, token, reason, host = (f.decode(errors="replace") if f else "" for f in fields)
            if token == v.token:
                if state == schema.RUNNING:
                    self.r.set(k.lease(v.task), v.token, nx=True, px=self.lease_ms)
                    logger.warning("lease of %s %s had expired; nobody took the task over: set again",
                                   k.name, v.task)
            else:
                logger.warning("lease lost %s %s: %s; killing this attempt", k.name, v.task,
                               loss_reason(state, token, reason, host, v.token))
                gone.append(v)
        return gone

    def publish(self, info: Mapping[str, Any], ttl: int, forked: bool = False) -> None:
        """This worker's state (``forrestq status``): its hash, kept ``ttl`` s, and its heartbeat; with
        its environment's id once its children run (``forked``: described then, off the start path)."""
        env = self.env.publish(self.r, forked)
        pipe = self.r.pipeline(transaction=False)
        pipe.hset(schema.worker(self.id), mapping={**info, schema.WORKER_ENV: env})
        pipe.expire(schema.worker(self.id), ttl)
        pipe.zadd(schema.WORKERS, {self.id: info[schema.WORKER_BEAT]})
        read_request(pipe, self.id)  # a stop asked for from elsewhere (the dashboard): answered as SIGTERM
        answer_request(pipe.execute()[-2])

    # --- the sweep --------------------------------------------------------------------------
    def sweep(self) -> None:
        """Hand back tasks whose holder vanished (one sweeper per queue per interval)."""
        for k in self.keys:
            if not self.r.set(k.sweep, self.id, nx=True, px=int(self.sweep_every * 1000)):
                continue
            try:
                pending = self.r.xpending_range(k.stream, GROUP, min="-", max="+", count=1000,
                                                idle=self.lease_ms)
            except redis.ResponseError as e:
                if "NOGROUP" not in str(e):
                    raise
                # its stream was deleted: `clean(all=True)`, or the server lost its data
                logger.debug("the consumer group of %s is gone; creating it again", k.name)
                self.ensure_groups()
                continue
            if pending:
                self.reclaim(k, [p["message_id"] for p in pending])
            self.sweep_levels(k)

    def sweep_levels(self, k: QueueKeys) -> None:
        """The sweep of the streams of the priority levels above 0 a queue uses (issue 16): their idle
        entries, named as TASK_STREAM_ID names them (level, LEVEL_SEP, entry id), go to reclaim.lua."""
        for raw in self.r.zrange(k.levels, 0, -1):
            level = raw.decode()
            try:
                pending = self.r.xpending_range(k.level_stream(level), GROUP, min="-", max="+", count=1000,
                                                idle=self.lease_ms)
            except redis.ResponseError as e:
                if "NOGROUP" not in str(e):
                    raise
                continue
            if pending:
                self.reclaim(k, [f"{level}{schema.LEVEL_SEP}{_text(p['message_id'])}" for p in pending])

    def reclaim(self, k: QueueKeys, ids: list[Any]) -> None:
        """Put these idle entries' tasks back; fail the ones that were lost too often."""
        got = ops.reclaim(self.scripts, k, ops.ReclaimArgs(ids))  # it counts the lost attempts (/metrics)
        for g in got.gave_up:
            reason = f"lost {g.attempts} times; last on host {g.host}"
            self.fail(k, g.task_id, "", reason, TaskLost(reason))
        if got.lost > len(got.gave_up):
            logger.info("reclaimed %d abandoned task(s) of %s", got.lost - len(got.gave_up), k.name)

    def ensure_groups(self) -> None:
        for k in self.keys:
            try:
                self.r.xgroup_create(k.stream, GROUP, id="0", mkstream=True)
            except redis.ResponseError as e:
                if "BUSYGROUP" not in str(e):
                    raise

    # --- the end ----------------------------------------------------------------------------
    def last_words(self, grace: float) -> None:
        """Every child is gone: send what the outbox still holds, for a few seconds at most
        (a task not handed back here comes back when its lease expires)."""
        deadline = time.monotonic() + min(5.0, max(1.0, grace))
        while not self.flush_outbox() and time.monotonic() < deadline:
            time.sleep(0.2)
        for what, _ in self.outbox:
            logger.warning("Redis unreachable, not done: %s (its lease will expire)", what)

    def leave(self) -> None:
        """Leave nothing behind: this worker's entry, its hash, the sweep guards it holds."""
        try:
            ours = [k.sweep for k in self.keys if self.r.get(k.sweep) == self.id.encode()]
            self.r.zrem(schema.WORKERS, self.id)
            self.r.delete(schema.worker(self.id), *ours)
        except redis.RedisError:
            pass
