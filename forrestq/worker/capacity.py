"""Resources (issue 14): a worker starts a task only while its free capacity covers the task's request.

What a worker has (``--resources mem=32G,gpu=2``; defaults: ``mem`` the machine's memory, ``cpus``
the number of children, any other name 0) is published in its worker hash (``WORKER_RESOURCES``),
and its free part is kept in memory shared by the worker and its children (:class:`Capacity`: an
anonymous mapping made before the fork, guarded by a process-shared semaphore made before the fork
too: uncontended it costs no system call, about 0.3 us a pair. Its section is a few microseconds of
arithmetic; a child killed inside it (only SIGKILL can: the OOM killer, an operator) would leave it
taken, so a process that waits :data:`LOCK_WAIT` s for it takes it over, saying so.)
Each slot (one per task a child may hold) records what it reserved, so the supervisor gives back
the reservation of a child that died (:meth:`Capacity.release_child`, from its reap). GPUs are
granted by index (a bitmask): the task's child gets ``CUDA_VISIBLE_DEVICES`` set to its own
indices, and two tasks running at once never share one. CUDA reads that variable once per process,
so a child that ran a GPU task retires afterwards (the worker forks a fresh one); the other children
of a worker with GPUs see ``CUDA_VISIBLE_DEVICES=""`` (no GPU: they did not ask for one).

The rule, enforced by the child that claimed the task (:class:`Gate`; leases, fencing and hand-backs
are as for any task, and every hand-back below is release.lua's: the attempt is not counted):

* it fits the free capacity: reserve it (under the lock) and run; the reservation is given back when
  the task ends, or when its child dies;
* it fits what the worker has, not what is free now: hand it back at once (``RELEASE_WAIT``: the
  task's ``TASK_WAITS`` counts it), so that the child runs smaller tasks meanwhile (no head-of-line
  blocking), and pause briefly; once a task was handed back :data:`HOLD_AFTER` times, the child that
  claims it next *holds* it instead (its lease renewed as a running task's) as the worker's one
  holder, and its need is set aside: from then on no other child starts a task that would take any
  of what the holder still needs (a task that needs none of it still starts). So the free amount of
  each resource it needs only grows until it fits: its wait is bounded by the tasks running when it
  began to hold (each ends by itself, by its time limit, or by its child's death). It cannot be lost
  either: it is held under its lease, and a stopping worker's child hands it back at once;
* it needs more than this worker has: hand it back noting this host on it (``RELEASE_UNFIT``:
  ``TASK_UNFIT``, and the queue's ``unfit`` hash maps it to its request, so ``forrestq status`` can
  say "3 ready tasks need gpu=4; no live worker has it" by comparing requests with the live workers'
  published totals); the child pauses before it claims again, longer the more it keeps handing back
  (as for refusals, :mod:`forrestq.worker.refusals`), so a queue of tasks no worker here can run does
  not spin. Such a task stays ready, for ever if need be, until a worker that has it runs it.

``--admit-by-memory``: a task that does not declare ``mem`` is not started while the host's available
memory (``MemAvailable``) is below the recent p95 peak of its function (the per-function samples
complete.lua keeps, :mod:`forrestq.stats`, cached :data:`PEAK_TTL` s per function in the child); it
is handed back (``RELEASE_WAIT``) and the child pauses. It waits for memory the host does not have,
which no worker can foresee the end of: that wait is not bounded (the point is not to start it).

Limits by key (issue 16, :mod:`forrestq.worker.limits`) are checked first, for a task that has limit
keys only: one that finds a key full is handed back (``RELEASE_WAIT``) and the child pauses as above.
"""
from __future__ import annotations

import contextlib
import ctypes
import mmap
import multiprocessing
import os
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import redis

from .. import log, ops, schema
from .. import resources as requests
from ..errors import ConfigError, escape_controls
from ..schema import QueueKeys
from ..stats import SAMPLES, percentile
from .limits import acquire as acquire_limits
from .refusals import Refuser

__all__ = ["HOLD_AFTER", "MAX_GPUS", "Capacity", "Gate", "mem_available", "worker_totals"]

logger = log.get("child")

T = TypeVar("T")
N = requests.MAX_NAMES
MAX_GPUS = 64  # GPU indices one worker grants (a 64-bit mask)
HOLD_AFTER = 2  # "not now" hand-backs after which the next claimer holds the task (see the module doc)
HOLD_POLL = 0.02  # seconds between two looks at the free capacity while holding
WAIT_PAUSE = (0.05, 1.0)  # seconds a child pauses after a "not now" hand-back: first, doubling up to
UNFIT_PAUSE = (0.2, 2.0)  # the same after handing back a task that needs more than this worker has
PEAK_TTL = 10.0  # seconds a function's p95 peak is reused (--admit-by-memory)
_EPS = 1e-9
LOCK_WAIT = 2.0  # seconds after which the lock counts as left taken by a dead child
Need = tuple[tuple[int, float], ...]  # a request as (name index, amount) pairs, amounts > 0
IO_BOUND = "cpus=0"  # what an IO-bound coroutine without a request needs: it waits, it computes nothing


def _meminfo(field: str) -> int:
    """A field of /proc/meminfo in bytes (0 where it does not say)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith(field):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def mem_available() -> int:
    """Bytes of memory the host can give without swapping (``MemAvailable``); 0 if unknown."""
    return _meminfo("MemAvailable:")


def worker_totals(given: str | Mapping[str, Any] | None, procs: int) -> dict[str, float]:
    """What a worker has: ``--resources`` (text or a dict) over the defaults ``cpus`` = ``procs`` and
    ``mem`` = the machine's memory. ConfigError (one line) for a bad one."""
    if isinstance(given, str):
        have = requests.parse_text(given)
    else:
        have = requests.parse_mapping(given or {}, "--resources")
    if have.get(requests.GPU, 0) > MAX_GPUS:
        raise ConfigError(f"bad --resources: gpu={have[requests.GPU]:g}: at most {MAX_GPUS} GPUs per worker")
    totals = {requests.CPUS: float(procs), requests.MEM: float(_meminfo("MemTotal:")), **have}
    if len(totals) > N:
        raise ConfigError(f"bad --resources: {len(totals)} resource names with cpus and mem; at most {N}")
    return dict(sorted(totals.items()))


class _Pool(ctypes.Structure):
    """The worker's free capacity (per name, in :attr:`Capacity.names` order) and its holder."""

    _fields_ = [("free", ctypes.c_double * N), ("need", ctypes.c_double * N), ("gpus", ctypes.c_uint64),
                ("holder", ctypes.c_int32)]  # holder: slot index + 1 of the child holding a task; 0: none


class _Held(ctypes.Structure):
    """What one slot reserved."""

    _fields_ = [("amount", ctypes.c_double * N), ("gpus", ctypes.c_uint64), ("busy", ctypes.c_uint8)]


class Capacity:
    """A worker's capacity (``totals``) for ``procs`` children of ``lanes`` slots each, in memory
    shared with the children (made before they are forked). Every method takes the lock."""

    def __init__(self, totals: Mapping[str, float], procs: int, lanes: int = 1, by_memory: bool = False) -> None:
        self.names = sorted(totals)
        self.by_memory = by_memory  # --admit-by-memory
        self.index = {n: i for i, n in enumerate(self.names)}
        self.total = [float(totals[n]) for n in self.names]
        self.text = requests.to_text(totals)  # what the worker publishes
        self.lanes = lanes
        pool, held = ctypes.sizeof(_Pool), ctypes.sizeof(_Held)
        self.mem = mmap.mmap(-1, pool + held * procs * lanes)
        self.pool = _Pool.from_buffer(self.mem, 0)
        self.held = [_Held.from_buffer(self.mem, pool + i * held) for i in range(procs * lanes)]
        for i, amount in enumerate(self.total):
            self.pool.free[i] = amount
        self.gpu = self.index.get(requests.GPU, -1)
        self.pool.gpus = (1 << int(totals.get(requests.GPU, 0))) - 1
        self.visible = [d for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
        self._lock = multiprocessing.Lock()  # made before the fork: shared by the children
        self._needs: dict[str, Need | None] = {}

    def _acquire(self) -> None:
        if not self._lock.acquire(True, LOCK_WAIT):
            logger.warning("the resource lock was taken for %g s (a child killed while it held it?): taking it "
                           "over", LOCK_WAIT)

    def need(self, text: str) -> Need | None:
        """A request (stored text form) as (name index, amount) pairs; None when it needs more than
        this worker has (a name it lacks counts as 0)."""
        if text in self._needs:
            return self._needs[text]
        pairs: list[tuple[int, float]] = []
        for name, amount in requests.from_text(text).items():
            i = self.index.get(name)
            if amount and (i is None or amount > self.total[i] + _EPS):
                self._needs[text] = None
                return None
            if amount and i is not None:
                pairs.append((i, amount))
        self._needs[text] = got = tuple(pairs)
        return got

    def reserve(self, slot: int, need: Need) -> bool:
        """Take ``need`` for ``slot`` if it is free now, leaving what the holder (if another slot)
        still needs; True if taken."""
        self._acquire()
        try:
            p, h = self.pool, self.held[slot]
            free, holder = p.free, p.holder
            other = holder and holder != slot + 1
            for i, a in need:
                if a > free[i] + _EPS or (other and free[i] - a < p.need[i] - _EPS):
                    return False
            for i, a in need:
                free[i] -= a
                h.amount[i] = a
                if i == self.gpu:
                    bits = [b for b in range(MAX_GPUS) if p.gpus >> b & 1][:int(a)]
                    h.gpus = sum(1 << b for b in bits)
                    p.gpus &= ~h.gpus
            h.busy = 1
            if holder == slot + 1:
                self._unhold(p)
            return True
        finally:
            self._lock.release()

    def hold(self, slot: int, need: Need) -> bool:
        """Make ``slot`` the worker's holder, its ``need`` set aside from now on; False if another
        slot holds a task already."""
        self._acquire()
        try:
            p = self.pool
            if p.holder not in (0, slot + 1):
                return False
            p.holder = slot + 1
            for i, a in need:
                p.need[i] = a
            return True
        finally:
            self._lock.release()

    @staticmethod
    def _unhold(p: _Pool) -> None:
        p.holder = 0
        for i in range(N):
            p.need[i] = 0.0

    def release(self, slot: int, need: Need | None = None) -> None:
        """Give back what ``slot`` reserved (nothing if it holds nothing), and its holding; ``need``:
        what it reserved, if known (else every name is looked at)."""
        h = self.held[slot]
        if not h.busy and self.pool.holder != slot + 1:  # only this slot's child sets these
            return
        self._acquire()
        try:
            p = self.pool
            if h.busy:
                for i, _ in need if need is not None else ((i, 0.0) for i in range(len(self.names))):
                    p.free[i] += h.amount[i]
                    h.amount[i] = 0.0
                p.gpus |= h.gpus
                h.gpus, h.busy = 0, 0
            if p.holder == slot + 1:
                self._unhold(p)
        finally:
            self._lock.release()

    def release_child(self, index: int) -> None:
        """Give back what child ``index``'s slots reserved: it died (the supervisor's reap)."""
        for slot in range(index * self.lanes, (index + 1) * self.lanes):
            self.release(slot)

    def devices(self, slot: int) -> str:
        """``CUDA_VISIBLE_DEVICES`` for ``slot``'s GPUs: their indices, mapped through the worker's own
        ``CUDA_VISIBLE_DEVICES`` when it was started with one (index i = its i-th device)."""
        mask = self.held[slot].gpus
        ids = [b for b in range(MAX_GPUS) if mask >> b & 1]
        return ",".join(self.visible[b] if b < len(self.visible) else str(b) for b in ids)

    def free_now(self) -> dict[str, float]:
        """The free capacity (for tests and logs)."""
        return {n: self.pool.free[i] for i, n in enumerate(self.names)}


class Gate:
    """One child's side of the rule (see the module doc): :meth:`admit` after a claim, :meth:`done`
    when the task ends. Without a capacity (a child made by hand) it admits everything."""

    def __init__(self, capacity: Capacity | None, index: int, r: redis.Redis, scripts: ops.Scripts, host: str,
                 refuser: Refuser, patiently: Callable[[Callable[[], Any]], Any]) -> None:
        self.capacity = capacity
        self.base = index * capacity.lanes if capacity else 0  # child ``index``'s first slot in the capacity
        self.r, self.scripts, self.host = r, scripts, host
        self.refuser = refuser  # its ready_at is the child's one pause clock
        self.patiently = patiently
        self.by_memory = capacity is not None and capacity.by_memory
        self.in_row = 0  # hand-backs since this child last started a task
        self.used_gpu = False
        self.needs: dict[int, Need] = {}  # lane -> what its task reserved
        self._peaks: dict[tuple[str, bytes], tuple[float, int]] = {}
        if capacity is not None and capacity.gpu >= 0 and capacity.total[capacity.gpu]:
            os.environ["CUDA_VISIBLE_DEVICES"] = ""  # tasks that did not ask for a GPU get none

    def admit(self, k: QueueKeys, c: ops.Claimed, stop: Any, lane: int = 0, may_hold: bool = True) -> bool:
        """Reserve what claimed task ``c`` needs and say True (it may start), or hand it back unrun
        (False). ``stop``: the child's own slot (its ``stop`` ends a hold); ``may_hold``: whether this
        child may wait here for capacity (not while other tasks of its event loop run)."""
        if c.limits:  # limits by key (forrestq.worker.limits): all its keys or none; no keys, no Redis call
            full, wait = self.patiently(lambda: acquire_limits(self.scripts, k, c))
            if full:
                return self._hand_back(k, c, schema.RELEASE_WAIT, (wait, wait) if wait else WAIT_PAUSE,
                                       f"limit {full} is full now")
        cap = self.capacity
        if cap is None:
            return True
        slot = self.base + lane
        vec = cap.need(c.resources or (IO_BOUND if c.io_bound else ""))
        if vec is None:
            return self._hand_back(k, c, schema.RELEASE_UNFIT, UNFIT_PAUSE, f"it needs {c.resources}, more than "
                                   f"this worker has ({cap.text})")
        if self.by_memory and requests.MEM + "=" not in c.resources:
            peak, avail = self.peak(k, c), mem_available()
            if peak and avail and avail < peak:
                return self._hand_back(k, c, schema.RELEASE_WAIT, WAIT_PAUSE, f"its function's recent p95 peak "
                                       f"{peak >> 20} MiB is above the available memory {avail >> 20} MiB")
        if not vec or cap.reserve(slot, vec):  # (a task that needs nothing takes nothing)
            self.needs[lane] = vec
            return self._started(k, c, slot)
        if may_hold and c.waits >= HOLD_AFTER and cap.hold(slot, vec):
            logger.debug("holding %s %s until %s is free", k.name, c.id, c.resources)
            while not stop.stop:
                if cap.reserve(slot, vec):
                    self.needs[lane] = vec
                    return self._started(k, c, slot)
                time.sleep(HOLD_POLL)
            cap.release(slot)
            return self._hand_back(k, c, "", WAIT_PAUSE, "the worker is stopping")
        return self._hand_back(k, c, schema.RELEASE_WAIT, WAIT_PAUSE, f"{c.resources} is not free now")

    def _started(self, k: QueueKeys, c: ops.Claimed, slot: int) -> bool:
        assert self.capacity is not None
        self.in_row = 0
        if self.capacity.held[slot].gpus:
            os.environ["CUDA_VISIBLE_DEVICES"] = self.capacity.devices(slot)
            self.used_gpu = True
        if c.waits and c.resources:  # it may have been noted as too big for some host: not any more
            with contextlib.suppress(redis.RedisError):
                self.r.hdel(k.unfit, c.id)
        return True

    def _hand_back(self, k: QueueKeys, c: ops.Claimed, why: str, pause: tuple[float, float], because: str) -> bool:
        """Hand ``c`` back unrun (its attempt not counted), then pause this child; always False."""
        args = ops.ReleaseArgs(c.id, c.token, False, why, self.host)
        self.patiently(lambda: ops.release(self.scripts, k, args))
        self.in_row += 1
        first, cap = pause
        self.refuser.ready_at = max(self.refuser.ready_at,
                                    time.monotonic() + min(cap, first * 2 ** (self.in_row - 1)))
        logger.debug("handed back %s %s unrun: %s", k.name, c.id, escape_controls(because))
        return False

    def done(self, lane: int = 0) -> None:
        """The task of ``lane`` ended: give back what it reserved."""
        if self.capacity is not None:
            need = self.needs.pop(lane, None)
            if need:
                self.capacity.release(self.base + lane, need)

    def peak(self, k: QueueKeys, c: ops.Claimed) -> int:
        """The recent p95 peak RSS (bytes) of ``c``'s function on queue ``k`` (0: none measured yet),
        from the per-function samples of :mod:`forrestq.stats`, kept :data:`PEAK_TTL` s. (A small
        reader of one function's samples: ``stats.read`` reads every function of the queue.)"""
        key, now = (k.name, c.fn_sha), time.monotonic()
        got = self._peaks.get(key)
        if got is not None and got[0] > now:
            return got[1]
        try:
            name = self.r.hget(k.task(c.id), schema.TASK_NAME)
            raw = self.r.lrange(k.stats_samples(name.decode()), 0, SAMPLES - 1) if name else []
        except redis.RedisError:
            return got[1] if got else 0
        peaks = []
        for sample in raw:
            parts = sample.decode(errors="replace").split(schema.STATS_SEP, 2)
            with contextlib.suppress(ValueError, IndexError):
                peaks.append(float(parts[1]))
        value = int(percentile([p for p in peaks if p > 0], 95) or 0)
        self._peaks[key] = (now + PEAK_TTL, value)
        return value
