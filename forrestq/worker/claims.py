"""What a child says to Redis between tasks: claims, completions, hand-backs (forrestq.worker.child).

At most one round trip per task, and fewer while tasks end fast: the ends of the tasks that ran ride
with the next claim, and a claim takes several tasks at once (``ops.claim_many``) once each task of
the claim before ran under FAST seconds, twice as many each time, up to the child's lanes. A task
claimed ahead of its turn holds a lane (a :class:`~forrestq.worker.slots.Slot`) from its claim on,
``parked``: the worker renews its lease like a running task's, and hands it back, its attempt not
counted, if the child dies (forrestq.worker.bookkeeping); so is a task that ended while the next one
runs before its end is recorded: a crash of the next one makes it run again, it does not fail it.
Nothing waits behind a slow task: once a task has run HOSTAGE seconds, a watcher thread records the
ends before it and hands the tasks claimed after it back, so that idle children here or elsewhere
take them; and no end waits for its record more than about ENDS_WAIT seconds while others run. With
durability (each end waits for a replica) a claim takes one task, as before.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import redis

from .. import durability, ops
from ..errors import is_transient
from ..runner import unrecordable
from ..schema import CONTINUED, DONE, QueueKeys
from .peers import what_became_of
from .slots import Slot

logger = logging.getLogger("forrestq.worker")

FAST = 0.02  # s: tasks that each ran less than this let the next claim take twice as many
HOSTAGE = 0.1  # s a task runs before the ends recorded before it and the tasks claimed after it are settled
ENDS_WAIT = 0.05  # s an end waits for its record while later tasks run before the watcher records it
LANES = 8  # lanes of a child that runs one task at a time: at most this many tasks held at once

End = tuple[int, ops.Completion, Slot]  # queue index, the completion to record, the lane that holds it
Held = tuple[int, ops.Claimed, Slot]  # queue index, a claimed task, the lane that holds it


class Claims:
    """The tasks one child holds between its runs: claimed ahead of their turn (``queued``) and ended
    but not recorded yet (``ends``), each in a lane of its own; the lock orders the child's loop and
    the timer thread that settles them while a slow task runs."""

    def __init__(self, r: redis.Redis, scripts: ops.Scripts, keys: list[QueueKeys], args: ops.ClaimArgs,
                 lanes: list[Slot], replicas: int, wake: Callable[[], None], max_tasks: int = 0) -> None:
        self.r, self.scripts, self.keys, self.args = r, scripts, keys, args
        self.replicas, self.wake, self.max_tasks = replicas, wake, max_tasks
        self.free = list(reversed(lanes))  # lanes that hold nothing
        self.most = 1 if replicas else len(lanes)
        self.want = 1  # tasks the next claim asks for
        self.queued: deque[Held] = deque()
        self.ends: list[End] = []
        self.ends_at = 0.0  # monotonic time the oldest of ``ends`` was added
        self.lock = threading.Lock()
        self.since = 0.0  # monotonic time the running task started (0: none runs)
        self.watcher: threading.Thread | None = None  # started with the first claim of several
        self.armed = threading.Event()  # set while a task runs with something held: the watcher looks
        self.rescuer: ops.Scripts | None = None  # the watcher's own connection

    # --- what the next claim asks for -----------------------------------------------------------
    def count(self, ran: int) -> int:
        """How many tasks the next claim may take (``ran``: tasks the child ran so far)."""
        n = min(self.want, len(self.free) + len(self.ends))
        if self.max_tasks:
            n = min(n, self.max_tasks - ran)
        return max(n, 1)

    def ended(self, qi: int, c: ops.Completion, lane: Slot, runtime: float) -> None:
        """A task ended: its completion waits for the next round trip; a fast one doubles the next claim."""
        with self.lock:
            if not self.ends:
                self.ends_at = time.monotonic()
            self.ends.append((qi, c, lane))
        self.want = min(self.want * 2, self.most) if runtime < FAST else 1

    def take(self) -> Held | None:
        """The next task claimed ahead (no round trip), or None. The ends not recorded yet are parked:
        the task taken runs before they are recorded."""
        with self.lock:
            if not self.queued:
                return None
            for _, _, lane in self.ends:
                lane.park()
            return self.queued.popleft()

    def lane(self) -> Slot:
        return self.free.pop()

    def release_lane(self, lane: Slot) -> None:
        self.free.append(lane)

    # --- the round trip -------------------------------------------------------------------------
    def exchange(self, k: QueueKeys, token: str, count: int, sid: str = "") -> list[ops.Claimed] | ops.Skip:
        """Record the ends and claim up to ``count`` tasks of ``k`` in one round trip. A transient
        error on an end keeps it for the next try and hands back what was claimed, then raises."""
        ends, pipe = self._take_ends(self.scripts)
        a = self.args
        a.token, a.sid, a.now, a.count = token, sid, time.time(), count
        (ops.claim_many if count > 1 else ops.claim).queue(self.scripts, pipe, k, a)
        replies = self._send(ends, pipe, self.scripts)
        raw = replies[-1]
        if count > 1:
            got: list[ops.Claimed] | ops.Skip = [] if isinstance(raw, Exception) else ops.claim_many.reply(raw)
        else:
            one = None if isinstance(raw, Exception) else ops.claim.reply(raw)
            got = one if isinstance(one, ops.Skip) else [one] if one is not None else []
        if isinstance(got, list):
            for i, task in enumerate(got):
                task.token = ops.claim_token(token, i)
        try:
            self.settle(ends, replies, self.scripts)
        except redis.RedisError:
            for task in got if isinstance(got, list) else ():  # hold nothing new while an end is unrecorded
                ops.release(self.scripts, k, ops.ReleaseArgs(task.id, task.token))
            raise
        if isinstance(raw, Exception):
            ops.claim.reply(raw)  # raises it
        return got

    def _take_ends(self, scripts: ops.Scripts) -> tuple[list[End], Any]:
        """The ends not recorded yet (taken: another thread cannot send them too), and a pipeline
        holding their completions (each followed by its WAIT, with durability)."""
        with self.lock:
            ends, self.ends = self.ends, []
        pipe = self.r.pipeline(transaction=False)
        for qi, c, _ in ends:
            durability.queue_complete(scripts, pipe, self.keys[qi], c, self.replicas)
        return ends, pipe

    def _send(self, ends: list[End], pipe: Any, scripts: ops.Scripts) -> list[Any]:
        """Execute ``pipe`` (the completions of ``ends`` first); if it cannot be sent, the ends are kept."""
        try:
            return scripts.execute(pipe, raise_on_error=False)
        except BaseException:
            with self.lock:
                self.ends[:0] = ends
            raise

    def hold(self, qi: int, got: list[ops.Claimed]) -> Held:
        """The first task claimed, in a free lane; the others queued in lanes of their own."""
        first = (qi, got[0], self.lane())
        if len(got) > 1 and self.watcher is None:
            self.watcher = threading.Thread(target=self.watch, name="forrestq-claims", daemon=True)
            self.watcher.start()
        with self.lock:
            for c in got[1:]:
                lane = self.lane()
                lane.begin(qi, c.id, c.token, c.attempts, c.max_attempts, parked=True)
                self.queued.append((qi, c, lane))
        return first

    def settle(self, ends: list[End], replies: list[Any], scripts: ops.Scripts) -> None:
        """The server's answers to ``ends`` (each followed by its WAIT's, with durability); lanes of
        the recorded (or refused) ones are free again. An end whose answer is a transient error is
        kept for the next round trip (the first such error is raised once all were looked at)."""
        step = 2 if self.replicas else 1
        trouble: Exception | None = None
        for i, end in enumerate(ends):
            try:
                self._settle_one(end, replies[i * step], replies[i * step + 1] if self.replicas else None, scripts)
            except redis.RedisError as e:
                with self.lock:
                    self.ends.append(end)
                trouble = trouble or e
        if trouble is not None:
            raise trouble

    def _settle_one(self, end: End, raw: Any, waited: Any, scripts: ops.Scripts) -> None:
        """Raises a transient error (the end is kept). Any other error means the server will never take
        this record (too big, a broken blob): it is replaced by a failure record that says so, sent at once."""
        qi, c, lane = end
        try:
            kept = ops.complete.reply(raw)
        except Exception as e:  # noqa: BLE001 - an error reply of the server
            if is_transient(e):
                raise
            logger.warning("the server refused the result of task %s (%s); recording a failure instead",
                           c.task_id, e)
            c = unrecordable(c, e)
            kept, waited = durability.complete(scripts, self.keys[qi], c, self.replicas), None
        if waited is not None:
            durability.settle_wait(waited, self.replicas, f"the end of task {c.task_id}")
        if not kept:
            logger.warning("result of task %s refused: this attempt no longer holds it: %s", c.task_id,
                           what_became_of(self.r, self.keys[qi], c.task_id, c.token))
        lane.end(c.outcome in (DONE, CONTINUED))
        self.free.append(lane)
        self.wake()

    # --- leaving, and slow tasks ----------------------------------------------------------------
    def hand_back(self, scripts: ops.Scripts) -> None:
        """Give the tasks claimed ahead back to their queue (none of their code ran: not counted). Each
        leaves ``queued`` before its release is sent, so the child's loop cannot take it meanwhile."""
        while True:
            with self.lock:
                if not self.queued:
                    return
                qi, c, lane = held = self.queued.popleft()
            try:
                ops.release(scripts, self.keys[qi], ops.ReleaseArgs(c.id, c.token))
            except redis.RedisError:
                with self.lock:
                    self.queued.appendleft(held)
                raise
            lane.end(None)
            self.free.append(lane)

    def record(self, scripts: ops.Scripts) -> None:
        """Record the ends now, in one round trip."""
        ends, pipe = self._take_ends(scripts)
        if ends:
            self.settle(ends, self._send(ends, pipe, scripts), scripts)

    def flush(self) -> None:
        """Hand back what was claimed ahead and record the ends (the child is leaving); raises while
        Redis is away (call again)."""
        self.hand_back(self.scripts)
        self.record(self.scripts)

    def holding(self) -> bool:
        return bool(self.queued or self.ends)

    def started(self) -> None:
        self.since = time.monotonic()
        if self.holding():
            self.armed.set()  # the watcher looks while this task runs

    def stopped(self) -> None:
        self.since = 0.0

    def watch(self) -> None:
        """(The watcher thread.) While a task has run HOSTAGE s, hand back the tasks claimed after it and
        record the ends before it; record ends that waited ENDS_WAIT s. On a connection of its own;
        what fails waits for the child's next round trip (the leases keep it)."""
        while True:
            if not (self.since and self.holding()):  # nothing to look after: sleep until a task starts with some
                self.armed.clear()
                if not (self.since and self.holding()):  # (looked again: it may have been set meanwhile)
                    self.armed.wait()
                continue
            time.sleep(ENDS_WAIT / 2)
            since, now = self.since, time.monotonic()
            slow = since and now - since >= HOSTAGE and self.queued
            stale = since and self.ends and now - self.ends_at >= ENDS_WAIT
            if not slow and not stale:
                continue
            if self.rescuer is None:
                self.rescuer = ops.Scripts(self.r)
            try:
                if slow:
                    self.want = 1
                    self.hand_back(self.rescuer)
                self.record(self.rescuer)
            except redis.RedisError as e:
                logger.warning("cannot settle the tasks held behind a running one yet (%s); retrying", e)
