"""The evidence a task leaves, however it ended: CPU time, peak memory, output tail and the stack at
death (issue 14).

How each figure is measured, and why that way:

* **CPU time**: ``getrusage`` of the child (user + system) plus its waited-for descendants, taken at
  the task's start and at its end. A child that dies is measured by the worker from ``wait4``,
  which reports the same sums for the dead child, minus the figure the child wrote into its slot
  when the task started. Processes the task started and did not wait for are not counted.
* **Peak resident memory**: a child is reused for many tasks, so its lifetime peak (``ru_maxrss``)
  alone would be wrong. At each task's start the child resets the kernel's high-water mark
  (``/proc/self/clear_refs``, value 5), so at the end ``ru_maxrss`` is the task's own peak; ``wait4``
  reports it for a child that died, even one killed by SIGKILL. Descendants count with the largest
  one the task waited for. Where the reset is not allowed, the figure is the child's peak so far
  (an upper bound).
* **Output tail**: a child's output goes to a file the worker created before forking it (one per
  child slot), so the worker can read what a task printed up to the moment it died.
* **Stack at death**: ``faulthandler`` writes the Python stack of every thread to a second such
  file on SIGSEGV, SIGBUS, SIGFPE, SIGABRT and SIGILL, and on :data:`DUMP_SIGNAL`, which the worker
  sends before it kills a task for its time limit (then waits at most :data:`DUMP_WAIT` s).
"""
from __future__ import annotations

import faulthandler
import fcntl
import os
import resource
import signal
import tempfile
from dataclasses import dataclass
from resource import RUSAGE_CHILDREN, RUSAGE_SELF, getrusage
from time import process_time
from typing import NamedTuple

from .procs import OUTPUT_TAIL, signal_reason

DUMP_SIGNAL = signal.SIGUSR2  # "write your stack": sent to a child before a time-limit kill
DUMP_WAIT = 1.0  # seconds the worker waits for that stack before it kills
STACK_LIMIT = 64 * 1024  # bytes of stack text kept with a task's record
GIB = 1 << 30


def size_text(n: int) -> str:
    """Bytes as a person reads them: ``2.1 GiB``, ``300 MiB``."""
    if n >= GIB:
        return f"{n / GIB:.1f} GiB"
    return f"{n / (1 << 20):.0f} MiB"


@dataclass
class Evidence:
    """What a task left, for its record."""

    runtime: float = 0.0  # s of the user's code
    cpu_time: float = 0.0  # s, user + system, its waited-for processes included
    peak_rss: int = 0  # bytes
    output: bytes = b""  # the tail of what it printed
    stack: str = ""  # the Python stack at death ("" when it ended by itself)
    pid: int = 0  # of the process that ran it


class TaskFiles:
    """The output file and the stack file of one child slot, made by the worker before it forks the
    slot's children (unlinked at once: nothing is left behind), so it can read both after a death."""

    def __init__(self) -> None:
        self.out = tempfile.TemporaryFile(prefix="forrestq-out-")
        self.stack = tempfile.TemporaryFile(prefix="forrestq-stack-")
        self.out_fd, self.stack_fd = self.out.fileno(), self.stack.fileno()
        # appends: after the worker empties it, the next stack starts at 0 whatever the shared offset
        fcntl.fcntl(self.stack_fd, fcntl.F_SETFL, fcntl.fcntl(self.stack_fd, fcntl.F_GETFL) | os.O_APPEND)

    def clear_stack(self) -> None:
        """Empty the stack file: before a child of this slot starts, and before asking for a stack
        (the child never does it: a truncate per task would cost it ~6 us)."""
        os.ftruncate(self.stack_fd, 0)

    def output_tail(self, begin: int) -> bytes:
        """The last OUTPUT_TAIL bytes of the output file from ``begin`` (where the task's output began)."""
        size = os.fstat(self.out_fd).st_size
        start = max(begin, size - OUTPUT_TAIL)
        return os.pread(self.out_fd, size - start, start)

    def stack_text(self) -> str:
        size = os.fstat(self.stack_fd).st_size
        return os.pread(self.stack_fd, min(size, STACK_LIMIT), 0).decode(errors="replace")

    def stack_written(self) -> bool:
        return os.fstat(self.stack_fd).st_size > 0

    def close(self) -> None:
        self.out.close()
        self.stack.close()


def cpu_seconds(*usages: resource.struct_rusage) -> float:
    return sum(u.ru_utime + u.ru_stime for u in usages)


class Meter:
    """A child's per-task CPU and peak memory (see the module doc). Also arms faulthandler on the
    slot's stack file (which the worker empties)."""

    def __init__(self, stack_fd: int) -> None:
        self.stack_fd = stack_fd
        try:
            self.clear_fd = os.open("/proc/self/clear_refs", os.O_WRONLY)
        except OSError:
            self.clear_fd = -1
        self.cpu0 = 0.0
        # the waited-for processes' figures as the last task ended: nothing runs between two tasks,
        # so they are still current when the next one begins (one getrusage less per task)
        kids = getrusage(RUSAGE_CHILDREN)
        self.children_cpu, self.children_peak0 = kids.ru_utime + kids.ru_stime, kids.ru_maxrss
        if stack_fd >= 0:
            faulthandler.enable(file=stack_fd, all_threads=True)
            faulthandler.register(DUMP_SIGNAL, file=stack_fd, all_threads=True, chain=False)

    def begin(self) -> float:
        """A task starts: reset the high-water mark; returns the CPU seconds so far (the worker
        subtracts them if the child dies)."""
        if self.clear_fd >= 0:
            try:
                os.write(self.clear_fd, b"5")
            except OSError:
                self.clear_fd = -1
        # process_time is this process's user + system time, as getrusage's, at a third of its cost
        self.cpu0 = process_time() + self.children_cpu
        return self.cpu0

    def end(self) -> tuple[float, int]:
        """(CPU seconds, peak resident bytes) of the task that just ended."""
        own, kids = getrusage(RUSAGE_SELF), getrusage(RUSAGE_CHILDREN)
        peak = own.ru_maxrss
        if kids.ru_maxrss > self.children_peak0 and kids.ru_maxrss > peak:
            peak = kids.ru_maxrss
        self.children_cpu, self.children_peak0 = kids.ru_utime + kids.ru_stime, kids.ru_maxrss
        cpu = own.ru_utime + own.ru_stime + self.children_cpu - self.cpu0
        return (cpu if cpu > 0 else 0.0), peak * 1024


def of_dead_child(pid: int, usage: resource.struct_rusage | None, cpu0: float, runtime: float,
                  files: TaskFiles | None, output_at: int) -> Evidence:
    """The evidence of a task whose child ``pid`` died (``usage``: from ``wait4``; ``output_at``: where
    the task's output began in the output file)."""
    ev = Evidence(runtime=runtime, pid=pid)
    if usage is not None:
        ev.cpu_time, ev.peak_rss = max(0.0, cpu_seconds(usage) - cpu0), usage.ru_maxrss * 1024
    if files is not None:
        ev.output, ev.stack = files.output_tail(output_at), files.stack_text()
    return ev


def mem_total() -> int:
    """Bytes of memory of this machine (0 where /proc does not say)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def outside_kill_hint(peak: int, host: str) -> str:
    """What a SIGKILL nobody in forrestq sent may have been: the OOM killer when the task's peak
    was a large part of the machine's memory, else someone."""
    total = mem_total()
    if peak and total and peak >= total // 2:
        return f" (out of memory? peak {size_text(peak)} of {size_text(total)} on host {host})"
    if peak:
        return f" (not by this worker: out of memory, or an operator? peak {size_text(peak)})"
    return " (out of memory?)"


class Kill(NamedTuple):
    """A child this worker killed: why, and the token of the task it held then."""

    why: str  # "autokill" (a time limit) | "memory" (over --max-memory) | "stop" | "lost" (taken over)
    token: str
    limit: float = 0.0  # seconds ("autokill") or bytes ("memory")
    own: bool = False  # with "autokill": the limit is the task's own timeout, not --autokill
    peak: int = 0  # with "memory": the resident bytes of the task's processes when it was killed

    def reason(self, status: int) -> str:
        if self.why == "memory":
            return f"killed: over --max-memory {size_text(int(self.limit))} (peak {size_text(self.peak)})"
        return signal_reason(status, self.limit, self.own)


def ask_for_stack(pid: int, asked: dict[int, float], files: TaskFiles, now: float) -> bool:
    """Whether a child about to be killed for its time limit may be killed now: first send it
    :data:`DUMP_SIGNAL` (faulthandler writes its threads' stacks to the slot's stack file) and
    note when in ``asked``; True once the stack is written or :data:`DUMP_WAIT` has passed."""
    when = asked.get(pid)
    if when is None:
        asked[pid] = now
        files.clear_stack()
        try:
            os.kill(pid, DUMP_SIGNAL)
        except ProcessLookupError:
            return True
        return False
    return now - when >= DUMP_WAIT or files.stack_written()
