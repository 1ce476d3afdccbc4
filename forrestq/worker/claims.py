"""What a child says to Redis between tasks: claims, completions, hand-backs (forrestq.worker.child).

At most one round trip per task, and fewer while tasks end fast: the ends of the tasks that ran ride
with the next claim, and a claim takes several tasks at once (``ops.claim_many``) once each task of
the claim before ran under FAST seconds, twice as many each time, up to the child's lanes. A task
claimed ahead of its turn holds a lane (a :class:`~forrestq.worker.slots.Slot`) from its claim on,
``parked``: the worker renews its lease like a running task's, and hands it back, its attempt not
counted, if the child dies (forrestq.worker.bookkeeping); so is a task that ended while the next one
runs before its end is recorded: a crash of the next one makes it run again, it does not fail it.
While tasks run between AHEAD_MIN and AHEAD seconds, the round trip leaves the child's turn too: a watcher thread
records the ends so far and claims the next task while the current one runs (``ClaimArgs.ahead``: not
while the queue has priority levels in use), so that it starts as soon as the current one returns.
Nothing waits behind a slow task: once a task has run HOSTAGE seconds, the watcher records the
ends before it and hands the tasks claimed after it back, so that idle children here or elsewhere
take them; and no end waits for its record more than about ENDS_WAIT seconds while others run. With
durability (each end waits for a replica) a claim takes one task, as before.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import redis

from .. import durability, ops
from ..errors import is_transient
from ..lease import new_token
from ..runner import unrecordable
from ..schema import CLAIM_DELIVERED, CONTINUED, DONE, GROUP, QueueKeys
from .peers import what_became_of
from .slots import Slot

logger = logging.getLogger("forrestq.worker")

FAST = 0.02  # s: tasks that each ran less than this let the next claim take twice as many
HOSTAGE = 0.1  # s a task runs before the ends recorded before it and the tasks claimed after it are settled
ENDS_WAIT = 0.05  # s an end waits for its record while later tasks run before the watcher records it
AHEAD = HOSTAGE / 4  # s: after a task that ran less than this, the next one is claimed while the next runs
AHEAD_MIN = 0.001  # s ... and at least this: a claim cannot hide behind a shorter one (claims of several do)
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
        self.armed = threading.Event()  # set while something is held: the watcher looks (not woken per task)
        self.rescuer: ops.Scripts | None = None  # the watcher's own connection
        self.fetching = threading.Lock()  # one claim at a time: the child's loop's, or the watcher's ahead
        self.fetch = False  # set when a task starts: the watcher claims the next one while it runs
        self.nudge = threading.Event()  # set with it: the watcher stops waiting and claims
        self.last_runtime = math.inf  # of the task that ended last
        self.ahead_args = dataclasses.replace(args, ahead=True)
        self.stopping: Callable[[], bool] = lambda: False  # the child's: it claims nothing more

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
        self.last_runtime = runtime

    def take(self) -> Held | None:
        """The next task claimed ahead (no round trip), or None. The ends not recorded yet are parked:
        the task taken runs before they are recorded."""
        with self.fetching:  # a claim ahead under way lands in ``queued`` first
            pass
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
    def exchange(self, k: QueueKeys, token: str, count: int, sid: str = "",
                 ahead: bool = False) -> list[ops.Claimed] | ops.Skip:
        """Record the ends and claim up to ``count`` tasks of ``k`` in one round trip (``ahead``: the
        watcher's claim of one task while the child's runs; nothing once that task ended). A transient
        error on an end keeps it for the next try and hands back what was claimed, then raises."""
        with self.fetching:
            if ahead and not self._may_fetch():
                return []
            return self._exchange(k, token, count, sid, ahead)

    def _exchange(self, k: QueueKeys, token: str, count: int, sid: str, ahead: bool) -> list[ops.Claimed] | ops.Skip:
        scripts = self.rescuer if ahead and self.rescuer else self.scripts
        a = self.ahead_args if ahead else self.args
        ends, commands = self._take_ends(scripts)
        a.token, a.sid, a.now, a.count = token, sid, time.time(), count
        commands.append((ops.claim_many if count > 1 else ops.claim).command(scripts, k, a))
        replies = self._send(ends, commands, scripts)
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
            self.settle(ends, replies, scripts)
        except redis.RedisError:
            for task in got if isinstance(got, list) else ():  # hold nothing new while an end is unrecorded
                ops.release(scripts, k, ops.ReleaseArgs(task.id, task.token))
            raise
        if ahead and isinstance(got, list) and got:
            with self.lock:
                self._queue(self.keys.index(k), got[0])
        if isinstance(raw, Exception):
            ops.claim.reply(raw)  # raises it
        return got

    def wait(self, block_ms: int) -> list[tuple[int, ops.Claimed]]:
        """Block up to ``block_ms`` for a ready entry of any of the queues' streams and claim what the read
        delivered in the same round trip (pipelined after it: claim.lua's CLAIM_DELIVERED, one claim per
        queue): (queue index, task) of each claimed. No end may wait unrecorded behind this (the
        caller recorded them with its last claim)."""
        a = self.args
        with self.fetching:
            # sent raw (its reply is only looked at for an error): no pipeline object, no reply parsing
            commands: list[tuple[Any, ...]] = [("XREADGROUP", "GROUP", GROUP, a.consumer, "COUNT", 1, "BLOCK", block_ms,
                                                "STREAMS", *(k.stream for k in self.keys), *(">" for _ in self.keys))]
            tokens = [new_token() for _ in self.keys]
            for k, token in zip(self.keys, tokens):
                a.token, a.sid, a.now, a.count = token, CLAIM_DELIVERED, None, 1
                commands.append(ops.claim.command(self.scripts, k, a))
            replies = self.scripts.send_all(commands, raise_on_error=False)
        got = [(qi, raw if isinstance(raw, Exception) else ops.claim.reply(raw)) for qi, raw in enumerate(replies[1:])]
        out = [(qi, dataclasses.replace(c, token=tokens[qi])) for qi, c in got if isinstance(c, ops.Claimed)]
        trouble = next((e for e in (replies[0], *(c for _, c in got)) if isinstance(e, Exception)), None)
        if trouble is not None:
            for qi, c in out:  # hold nothing while the read or another claim failed: the caller sees the error
                ops.release(self.scripts, self.keys[qi], ops.ReleaseArgs(c.id, c.token))
            raise trouble
        return out

    def _take_ends(self, scripts: ops.Scripts) -> tuple[list[End], list[tuple[Any, ...]]]:
        """The ends not recorded yet (taken: another thread cannot send them too), and the commands
        that record them (:func:`_end_commands`)."""
        with self.lock:
            ends, self.ends = self.ends, []
        return ends, _end_commands(scripts, self.keys, ends, self.replicas)

    def _send(self, ends: list[End], commands: list[tuple[Any, ...]], scripts: ops.Scripts) -> list[Any]:
        """Send ``commands`` (the completions of ``ends`` first) in one round trip; if they cannot be
        sent, the ends are kept."""
        try:
            return scripts.send_all(commands, raise_on_error=False)
        except BaseException:
            with self.lock:
                self.ends[:0] = ends
            raise

    def hold(self, qi: int, got: list[ops.Claimed]) -> Held:
        """The first task claimed, in a free lane; the others queued in lanes of their own."""
        first = (qi, got[0], self.lane())
        if len(got) > 1:
            self._watch()
        with self.lock:
            for c in got[1:]:
                self._queue(qi, c)
        return first

    def _queue(self, qi: int, c: ops.Claimed) -> None:
        lane = self.lane()
        lane.begin(qi, c.id, c.token, c.attempts, c.max_attempts, parked=True)
        self.queued.append((qi, c, lane))

    def _watch(self) -> None:
        if self.watcher is None:
            self.watcher = threading.Thread(target=self.watch, name="forrestq-claims", daemon=True)
            self.watcher.start()

    def settle(self, ends: list[End], replies: list[Any], scripts: ops.Scripts) -> None:
        """The server's answers to ``ends`` (each followed by its WAIT's, with durability); lanes of
        the recorded (or refused) ones are free again. An end whose answer is a transient error is
        kept for the next round trip (the first such error is raised once all were looked at)."""
        trouble: Exception | None = None
        for end, (raw, waited) in zip(ends, _answers(ends, replies, scripts, self.keys, self.replicas)):
            try:
                self._settle_one(end, raw, waited, scripts)
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
            kept = raw if isinstance(raw, bool) else ops.complete.reply(raw)  # raises an error reply
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
        ends, commands = self._take_ends(scripts)
        if ends:
            self.settle(ends, self._send(ends, commands, scripts), scripts)

    def flush(self) -> None:
        """Hand back what was claimed ahead and record the ends (the child is leaving); raises while
        Redis is away (call again)."""
        self.hand_back(self.scripts)
        self.record(self.scripts)

    def holding(self) -> bool:
        return bool(self.queued or self.ends)

    def started(self, ran: int) -> None:
        """A task starts (``ran``: tasks the child ran before it): the watcher looks after what is held
        while it runs, and after a short task claims the next one."""
        self.since = time.monotonic()
        self.fetch = (AHEAD_MIN <= self.last_runtime < AHEAD and self.most > 1 and not self.queued
                      and (not self.max_tasks or ran + 1 < self.max_tasks))
        if self.fetch:
            self._watch()
            self.nudge.set()
        if (self.fetch or self.holding()) and not self.armed.is_set():  # (a set wakes its condition)
            self.armed.set()  # the watcher looks while anything is held (it clears it, then reads holding, fetch)

    def _may_fetch(self) -> bool:
        """Whether a claim ahead may go now: the task still runs, nothing is queued, a lane is left
        for the child's own claim, and the child is not stopping."""
        return bool(self.since) and not self.queued and len(self.free) > 1 and not self.stopping()

    def fetch_ahead(self) -> None:
        """(The watcher.) Claim the next task of the first queue that has one while the child's runs,
        with the ends so far; what fails is left for the child's own round trip."""
        if self.rescuer is None:
            self.rescuer = ops.Scripts(self.r)
        for k in self.keys:
            try:
                got = self.exchange(k, new_token(), 1, ahead=True)
            except redis.RedisError as e:
                logger.debug("no claim ahead (%s): the child claims at its turn", e)
                return
            if got or not self._may_fetch():
                return

    def stopped(self) -> None:
        self.since = 0.0

    def watch(self) -> None:
        """(The watcher thread.) When a short task's successor starts, claim the next one ahead. While a
        task has run HOSTAGE s, hand back the tasks claimed after it and record the ends before it;
        record ends that waited ENDS_WAIT s. On a connection of its own;
        what fails waits for the child's next round trip (the leases keep it)."""
        while True:
            if self.fetch:
                self.fetch = False
                self.fetch_ahead()
            if not self.holding():  # nothing to look after: sleep until a task starts with something held
                self.armed.clear()
                if not (self.fetch or self.holding()):  # (looked again: it may be set meanwhile)
                    self.armed.wait()
                continue
            if self.nudge.wait(ENDS_WAIT / 2):  # a task started that wants the next one claimed
                self.nudge.clear()
                continue
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


def _runs(ends: list[End]) -> list[tuple[int, list[End]]]:
    """The ends cut into runs of one queue each, in order: one completion call per run."""
    out: list[tuple[int, list[End]]] = []
    for end in ends:
        if out and out[-1][0] == end[0]:
            out[-1][1].append(end)
        else:
            out.append((end[0], [end]))
    return out


def _alone(scripts: ops.Scripts, k: QueueKeys, c: ops.Completion) -> Any:
    """Whether the server kept this one end, sent on its own; its error instead of raising it."""
    try:
        return ops.complete(scripts, k, c)
    except Exception as e:  # noqa: BLE001 - an error reply of the server, settled as the others are
        return e


def _end_commands(scripts: ops.Scripts, keys: list[QueueKeys], ends: list[End], replicas: int) -> list[tuple[Any, ...]]:
    """The completions of ``ends``: one call per run of ends of one queue, or with durability one
    call per end, each followed by its WAIT."""
    if replicas:
        return [cmd for qi, c, _ in ends for cmd in durability.complete_commands(scripts, keys[qi], c, replicas)]
    return [ops.complete_many.command(scripts, keys[qi], [c for _, c, _ in run]) for qi, run in _runs(ends)]


def _answers(ends: list[End], replies: list[Any], scripts: ops.Scripts, keys: list[QueueKeys],
             replicas: int) -> list[tuple[Any, Any]]:
    """Per end of :func:`_end_commands`, in order: the server's answer (kept or not, an error, or with
    durability the call's raw reply) and its WAIT's reply (None without durability). A call of several
    ends the server refused for a reason other than a transient one is sent again end by end, so that
    only a bad one fails (an end recorded before the bad one then reads as refused: its warning says
    what became of it)."""
    if replicas:
        return [(replies[2 * i], replies[2 * i + 1]) for i in range(len(ends))]
    out: list[tuple[Any, Any]] = []
    for (qi, run), raw in zip(_runs(ends), replies):
        if not isinstance(raw, Exception):
            out += [(kept, None) for kept in ops.complete_many.reply(raw)]
        elif len(run) == 1 or is_transient(raw):
            out += [(raw, None)] * len(run)
        else:
            out += [(_alone(scripts, keys[qi], c), None) for _, c, _ in run]
    return out
