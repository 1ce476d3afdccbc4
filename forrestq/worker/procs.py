"""Process helpers of the worker and its children: prctl, process trees, signals in words, output
capture, and the back-off while Redis is away."""
from __future__ import annotations

import ctypes
import mmap
import os
import signal
import sys
import tempfile
import time

OUTPUT_TAIL = 64 * 1024  # bytes of a task's output kept with its record
RETRY_CAP = 2.0  # seconds: longest pause between two tries while Redis is away

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36


def prctl(option: int, arg: int) -> None:
    """Linux prctl(2); does nothing where there is none."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(option, arg, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def live_children() -> list[int]:
    """Pids of this process's children still running; reaps the ones that have exited."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return []
        if pid == 0:
            break
    return own_children() or [-1]  # some child lives, but /proc does not say which


def own_children() -> list[int]:
    """Pids of this process's children (from /proc; empty where /proc does not say)."""
    found: list[int] = []
    try:
        for tid in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{tid}/children") as f:
                found += [int(p) for p in f.read().split()]
    except OSError:
        pass
    return found


def kill_tree(pids: list[int]) -> None:
    """SIGKILL these processes, and the process group of any that leads one (not ours)."""
    own = os.getpgid(0)
    for pid in pids:
        if pid <= 0:
            continue
        try:
            if os.getpgid(pid) == pid != own:
                os.killpg(pid, signal.SIGKILL)
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def killpg(pid: int) -> None:
    """SIGKILL the process group ``pid`` leads (a child and whatever its task started), if any."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (from /proc; just ``pid`` where /proc does not say)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return out


def rss(pids: list[int]) -> int:
    """Resident memory of these processes together, in bytes (the ones gone count 0)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/statm") as f:
                total += int(f.read().split()[1]) * mmap.PAGESIZE
        except OSError:
            pass
    return total


def pss(pids: list[int]) -> int:
    """Proportional resident memory of these processes together, in bytes: pages they share (a fork's
    copy-on-write pages) count once in all, not once per process as in :func:`rss`. Costlier to read
    (the kernel walks the page tables): for when the cheap :func:`rss` sum is over a limit."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1]) * 1024
                        break
        except OSError:
            pass
    return total


def signal_name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


def signal_reason(status: int, limit: float | None = None, own: bool = False,
                  hint: str = " (out of memory?)") -> str:
    """Why a child ended (its wait status), in words a person can act on; ``limit``: the time limit
    the worker killed it for, ``own``: the task's own timeout (else the worker's --autokill);
    ``hint``: said after a SIGKILL nobody in forrestq sent."""
    if limit:
        return f"killed after {limit:g} s ({'timeout of this task' if own else 'worker --autokill'})"
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        return f"killed by signal {sig} ({signal_name(sig)}){hint if sig == signal.SIGKILL else ''}"
    return f"the process running the task exited with code {os.WEXITSTATUS(status)}"


class Capture:
    """Sends fds 1 and 2 (and so every grandchild's output) to a scratch file: each task's output
    follows the one before, from the offset :meth:`start` returns, and the file is emptied before a
    task once it holds over KEEP_BYTES (a truncate per task would cost each no-op a few syscalls). The
    child's fds stay redirected between tasks (a child runs nothing else); its own log lines go to
    ``stderr``, a copy of the worker's stderr taken before."""

    KEEP_BYTES = 1 << 20

    def __init__(self, fd: int = -1) -> None:
        """``fd``: the file to capture into (the worker's, so it can read a dead task's output); by
        default a scratch file of this process."""
        if fd < 0:
            self.file = tempfile.TemporaryFile(prefix="forrestq-out-")  # unlinked: nothing left behind
            fd = self.file.fileno()
        self.fd = fd
        self.stderr = os.dup(2)
        self.redirected = False
        self.begin, self.end = 0, -1  # offsets of the current task's output (end -1: the file is not ours yet)

    def start(self) -> int:
        """A task starts: the offset of the file its output begins at (what the worker reads from if
        the child dies)."""
        if not self.redirected:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(self.fd, 1)
            os.dup2(self.fd, 2)
            self.redirected = True
        if self.end < 0 or self.end > self.KEEP_BYTES:  # or a child's first task (a dead one's output may be there)
            os.ftruncate(self.fd, 0)
            self.end = os.lseek(self.fd, 0, os.SEEK_SET)
        # where the last task's output ended (the child itself writes nothing there between tasks:
        # its log lines go to ``stderr``)
        self.begin = self.end
        return self.begin

    def stop(self) -> int:
        """The task ended: the size of what it wrote."""
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        # the shared file offset: where every write through fds 1 and 2, a grandchild's too, ended
        self.end = max(self.begin, os.lseek(self.fd, 0, os.SEEK_CUR))
        return self.end - self.begin

    def tail(self, size: int) -> bytes:
        """The last OUTPUT_TAIL bytes of the ``size`` the task wrote."""
        keep = min(size, OUTPUT_TAIL)
        return os.pread(self.fd, keep, self.begin + size - keep) if keep else b""

    def copy_to(self, path: str, task_id: str, size: int, chunk: int = 1 << 20) -> None:
        """Append the whole output to the worker's log file, each line tagged with the task id
        (read in chunks: a task may print gigabytes)."""
        if not size:
            return
        tag = f"[{task_id}] ".encode()
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            rest = b""
            for offset in range(0, size, chunk):
                lines = (rest + os.pread(self.fd, min(chunk, size - offset), self.begin + offset)).split(b"\n")
                rest = lines.pop()
                if lines:
                    os.write(fd, b"".join(tag + line + b"\n" for line in lines))
            if rest:
                os.write(fd, tag + rest + b"\n")
        finally:
            os.close(fd)


class Backoff:
    """Pauses between tries while Redis is away: 0.05 s doubling up to RETRY_CAP."""

    def __init__(self) -> None:
        self.failures = 0

    def reset(self) -> None:
        self.failures = 0

    def pause(self) -> None:
        time.sleep(min(RETRY_CAP, 0.05 * 2 ** self.failures))
        self.failures += 1
