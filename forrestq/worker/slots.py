"""What each child holds, in memory shared between the worker and its children.

The worker maps one anonymous shared region before it forks, with one :class:`Slot` per task a
child may hold at once (``--async-concurrency`` "lanes" per child; the first lane of a child also
carries its stop flag). A child writes its slot; the worker only reads it (:meth:`Slot.read`, a
seqlock: an odd ``seq`` means a write is under way), except for ``stop`` and the counters it resets
when it replaces a child. From the slots the worker renews leases, enforces time limits, and knows
which task a dead child held.
"""
from __future__ import annotations

import ctypes
import mmap
import time
from typing import NamedTuple


class SlotView(NamedTuple):
    """A consistent copy of a slot."""

    busy: bool
    queue: int  # index into the worker's queues
    task: str
    token: str
    attempts: int
    max_attempts: int
    started: float  # time.monotonic() when the user's code started (the clock is system-wide)
    timeout: float  # seconds allowed from ``started``, 0 = no limit (loading, recording, none set)
    own_limit: bool  # the limit is the task's own ``timeout`` (else the worker's --autokill)
    cpu0: float  # CPU seconds the child had used when it took the task (forrestq.worker.forensics)
    parked: bool  # not running: claimed ahead of its turn, or ended while another runs (worker.claims)
    output_at: int  # offset of the child's output file where this task's output begins (worker.procs.Capture)


class Slot(ctypes.Structure):
    """What one child holds, in memory shared with its parent (a seqlock: odd ``seq`` = being written)."""

    _fields_ = [
        ("seq", ctypes.c_uint64),
        ("busy", ctypes.c_uint8),
        ("stop", ctypes.c_uint8),  # set by the parent: finish the current task, then exit
        ("own_limit", ctypes.c_uint8),  # the time limit is the task's own timeout, not --autokill
        ("parked", ctypes.c_uint8),  # not running: claimed ahead, or ended and not recorded (``park``)
        ("queue", ctypes.c_uint16),
        ("attempts", ctypes.c_uint16),
        ("max_attempts", ctypes.c_uint16),
        ("started", ctypes.c_double),
        ("timeout", ctypes.c_double),
        ("cpu0", ctypes.c_double),
        ("output_at", ctypes.c_uint64),
        ("done", ctypes.c_uint64),
        ("failed", ctypes.c_uint64),
        # signature hand-backs in a row (forrestq.worker.refusals), written by the child only; outside
        # the seqlock: a lone counter, read on its own
        ("refused", ctypes.c_uint32),
        ("task", ctypes.c_char * 64),
        ("token", ctypes.c_char * 24),
    ]

    def begin(self, queue: int, task: str, token: str, attempts: int, max_attempts: int, cpu0: float = 0.0,
              parked: bool = False) -> None:
        """The child holds a task (claimed; no time limit yet); ``cpu0``: its CPU seconds so far;
        ``parked``: claimed ahead of its turn (see :meth:`park`)."""
        self.seq += 1
        self.cpu0, self.parked = cpu0, int(parked)
        self.queue, self.task, self.token = queue, task.encode(), token.encode()
        self.attempts, self.max_attempts = min(attempts, 65535), min(max_attempts, 65535)
        self.timeout, self.started, self.busy = 0.0, time.monotonic(), 1
        self.seq += 1

    def arm(self, timeout: float, own: bool = False) -> None:
        """The user's code starts now, with this time limit (0 = none); ``own``: the limit is the
        task's own timeout rather than the worker's --autokill."""
        self.seq += 1
        self.started, self.timeout, self.own_limit, self.parked = time.monotonic(), timeout, own, 0
        self.seq += 1

    def output_from(self, offset: int) -> None:
        """The task's output begins at ``offset`` of the child's output file (what the worker reads
        from should the child die)."""
        self.seq += 1
        self.output_at = offset
        self.seq += 1

    def park(self) -> None:
        """The task ended, its end is not recorded yet, and another task runs now: should the child die,
        it was not this task's doing (the worker hands it back, its attempt not counted, and it runs again)."""
        self.seq += 1
        self.parked = 1
        self.seq += 1

    def disarm(self) -> None:
        """The user's code has ended; what is left (recording the result) has no time limit."""
        self.seq += 1
        self.timeout = 0.0
        self.seq += 1

    def end(self, ok: bool | None) -> None:
        """The child holds nothing any more: the task's completion was recorded (or refused), done
        (True) or failed (False), or the task was handed back (None)."""
        self.seq += 1
        self.busy = 0
        if ok:
            self.done += 1
        elif ok is not None:
            self.failed += 1
        self.seq += 1

    def read(self) -> SlotView:
        """A consistent copy of the slot."""
        while True:
            s1 = self.seq
            if s1 % 2 == 0:
                got = SlotView(bool(self.busy), self.queue, self.task.decode(), self.token.decode(),
                               self.attempts, self.max_attempts, self.started, self.timeout, bool(self.own_limit),
                               self.cpu0, bool(self.parked), self.output_at)
                if self.seq == s1:
                    return got


class SlotTable:
    """``procs`` children times ``lanes`` slots each, in one shared anonymous mapping (made before
    the children are forked, so each child sees the same memory)."""

    def __init__(self, procs: int, lanes: int) -> None:
        size = ctypes.sizeof(Slot)
        self.nlanes = lanes
        self.mem = mmap.mmap(-1, size * procs * lanes)
        self.all = [Slot.from_buffer(self.mem, i * size) for i in range(procs * lanes)]

    def lanes(self, index: int) -> list[Slot]:
        """The slots of child ``index``: one per task it may hold at once; the first is its own."""
        return self.all[index * self.nlanes:(index + 1) * self.nlanes]

    def first(self, index: int) -> Slot:
        return self.all[index * self.nlanes]
