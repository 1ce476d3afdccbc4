"""What a user gets back for a task: a reference after scheduling, a record once it ran."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from . import schema
from .deferred import Call
from .errors import UpstreamFailed

_MISSING = object()


def same_node(queue: str, task_id: str, other: object) -> Any:
    """Whether ``other`` is the node ``task_id`` of ``queue`` (the ``==`` of TaskRef and Task).

    A TaskRef or a Task is that node when queue and id match. A deferred call (:class:`Call`) has no
    queue of its own (one deferred scheduled on two queues is one node on each): it is the node when
    the id matches, on any queue. Anything else: ``NotImplemented`` (Python then falls back to
    identity, so ``task == 42`` is False and never raises)."""
    if isinstance(other, (TaskRef, Task)):
        return other.id == task_id and other.queue == queue
    if isinstance(other, Call):
        return other._id == task_id
    return NotImplemented


@dataclass(frozen=True)
class TaskRef:
    """A scheduled task: its id in its queue (``since``: where the queue's finished stream stood when
    it was scheduled, so ``Queue.wait`` can block at once). Equal to the Task records of the same
    node and to the deferred call that became it (:func:`same_node`); hashed by id like them."""

    id: str
    queue: str
    since: str = field(default="", compare=False, repr=False)

    def __str__(self) -> str:
        return self.id

    def __eq__(self, other: object) -> Any:
        return same_node(self.queue, self.id, other)

    def __hash__(self) -> int:
        return hash(self.id)


def _s(v: bytes | None, default: str = "") -> str:
    return v.decode() if v is not None else default


def _float(v: bytes | None) -> float | None:
    return float(v) if v else None


def _int(v: bytes | None) -> int | None:
    return int(v) if v else None


def parse_progress(raw: bytes | None, token: bytes | None) -> dict[str, Any] | None:
    """A TASK_PROGRESS value as readers see it (see :attr:`Task.progress`); None if there is none, if
    it is another attempt's than the one ``token`` (TASK_TOKEN) names, or if it cannot be read."""
    if not raw:
        return None
    try:
        got = json.loads(raw)
        if got.pop("tok", None) != (token or b"").decode():
            return None
        return {"done": got["done"], "total": got.get("total"), "message": str(got.get("message") or ""),
                "at": got.get("at")}
    except (ValueError, TypeError, KeyError, AttributeError):
        return None


def fraction(progress: dict[str, Any] | None) -> float:
    """The share of its work a task reported done, 0 to 1 (0 without a report or a total)."""
    if not progress or not progress.get("total"):
        return 0.0
    try:
        return min(1.0, max(0.0, float(progress["done"]) / float(progress["total"])))
    except (TypeError, ValueError, ZeroDivisionError):
        return 0.0


class Task:
    """One task's record as read from Redis. Values are unpickled on first access, so listing tasks
    never fails because a result's class is not importable here. Two records of one node are equal
    (whatever their state), and equal to its TaskRef and to the deferred call that became it
    (:func:`same_node`); hashed by id, so a dict keyed by what you scheduled finds what came back."""

    def __init__(self, queue: str, task_id: str, fields: dict[bytes, bytes]) -> None:
        self.queue = queue
        self.id = task_id
        self._f = fields
        f = fields.get
        self.state: str = _s(f(b"st"), "unknown")
        self.name: str = _s(f(b"name"))
        self.reason: str = _s(f(b"why"))
        self.traceback: str = _s(f(b"tb"))
        self.host: str = _s(f(b"host"))
        self.attempts: int = int(f(b"n") or 0)
        self.root: bool = f(b"root") == b"1"
        self.key: str | None = _s(f(b"key")) or None
        self.upstream: str | None = _s(f(b"up")) or None
        self.inputs: list[str] = _s(f(b"in")).split(",") if f(b"in") else []
        self.runtime: float | None = _float(f(b"rt"))
        self.created: float | None = _float(f(b"ct"))
        self.started: float | None = _float(f(b"t0"))
        self.finished: float | None = _float(f(b"t1"))
        self.generation: int = int(f(b"g") or 0)
        self.lost_on: str | None = _s(f(b"lost")) or None
        # the evidence of the last attempt (forrestq.worker.forensics), also when its process died
        self.cpu_time: float | None = _float(f(schema.TASK_CPU.encode()))  # s
        self.peak_rss: int | None = _int(f(schema.TASK_PEAK_RSS.encode()))  # bytes
        self.pid: int | None = _int(f(schema.TASK_PID.encode()))
        self.worker: str = _s(f(schema.TASK_WORKER.encode()))
        self.stack: str = _s(f(schema.TASK_STACK.encode()))  # the Python stack at death, if it died
        # not before this time (s, the Redis server's clock): schedule(delay=, at=); `forrestq show` also
        # gives a retry's (issue 16)
        self.due: float | None = _float(f(schema.TASK_DUE.encode()))
        self.periodic: str | None = _s(f(schema.TASK_PERIODIC.encode())) or None  # the schedule that made it
        # a root's result TTL (s): its finished record is deleted that long after it finished (issue 16)
        self.result_ttl: float | None = _float(f(schema.TASK_RESULT_TTL.encode()))
        self.priority: int = _int(f(schema.TASK_PRIORITY.encode())) or 0  # schedule(priority=): higher first
        # the limit keys it holds while it runs: schedule(limits=[...]) (issue 16)
        self.limits: list[str] = _s(f(schema.TASK_LIMITS.encode())).split(",") if f(schema.TASK_LIMITS.encode()) else []

    @property
    def ref(self) -> TaskRef:
        return TaskRef(self.id, self.queue)

    def __eq__(self, other: object) -> Any:
        return same_node(self.queue, self.id, other)

    def __hash__(self) -> int:
        return hash(self.id)

    @cached_property
    def returnvalue(self) -> Any:
        from . import codec  # the values load when asked for: listing tasks imports no unpickler
        blob = self._f.get(b"rv")
        return codec.loads(blob) if blob else None

    @cached_property
    def errorvalue(self) -> BaseException | None:
        if self.state != "failed":
            return None
        if self.upstream:
            return UpstreamFailed(self.upstream, self.upstream_reason)
        from . import codec
        blob = self._f.get(b"ev")
        return codec.loads(blob) if blob else None

    @property
    def upstream_reason(self) -> str:
        """The reason of the failed input named by ``upstream`` (``reason`` reads "input task X
        failed: " and then this); "" for a task that did not fail because of an input."""
        if not self.upstream:
            return ""
        head = f"input task {self.upstream} failed: "
        return self.reason[len(head):] if self.reason.startswith(head) else self.reason

    @cached_property
    def metadata(self) -> Any:
        from . import codec
        blob = self._f.get(b"md")
        return codec.loads(blob) if blob else None

    @cached_property
    def progress(self) -> dict[str, Any] | None:
        """How far the task's current (or last) attempt got, as it reported with
        :func:`forrestq.progress`: ``{"done", "total", "message", "at"}`` (``total`` None when not
        known, ``at`` the time of the report); None if this attempt reported none (a new attempt
        starts with none: a report is shown only while its writer's token is the task's)."""
        return parse_progress(self._f.get(schema.TASK_PROGRESS.encode()), self._f.get(schema.TASK_TOKEN.encode()))

    @property
    def output(self) -> str:
        """The last 64 KiB of what the task printed (stdout and stderr together)."""
        return self._f.get(b"out", b"").decode(errors="replace")

    @property
    def ok(self) -> bool:
        return self.state == "done"

    def reraise(self) -> None:
        """Raise the task's exception here, with the remote traceback text attached as a note."""
        exc = self.errorvalue
        if exc is None:
            return
        if self.traceback and hasattr(exc, "add_note"):
            exc.add_note(f"remote traceback (task {self.id} on {self.host}):\n{self.traceback}")
        raise exc

    def __repr__(self) -> str:
        extra = f" {self.reason!r}" if self.state == "failed" else ""
        return f"<Task {self.id} {self.name} {self.state}{extra}>"
