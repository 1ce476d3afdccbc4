"""Per-function statistics of a queue (``Queue.stats()``, ``forrestq stats``), kept incrementally.

complete.lua (``scripts/include/stats.lua``) keeps them as tasks end, so reading them never scans a
queue's tasks, and they outlive the task records (``clean(done=True)``); ``clean(all=True)`` of an
emptied queue deletes them with its other keys. Per function name (the task's qualified name):

* ``runs`` and ``failed``: every end of a task (done or failed, a cancel excepted) since the queue
  began; a task run again (``requeue_failed``, ``rerun``) counts once per end;
* the percentiles and ``hosts``: over the last :data:`SAMPLES` *measured* runs (an attempt whose
  worker measured it: a child that reported, or one that died; not a task failed because it was
  lost too often, nor one recorded by hand). ``samples`` says how many there were.

Percentiles are nearest-rank: each one is a runtime (or peak) one of those runs had.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import redis

from . import schema
from .schema import QueueKeys

__all__ = ["SAMPLES", "FunctionStats", "read", "percentile"]

SAMPLES = int(schema.STATS_SAMPLES)  # recent runs per function the percentiles are over


@dataclass(frozen=True)
class FunctionStats:
    """What the runs of one function of one queue looked like (see the module doc for which runs)."""

    queue: str
    name: str  # the function's qualified name (user text)
    runs: int  # tasks that ended, done or failed, since the queue began
    failed: int  # of them, failed
    samples: int  # measured recent runs the figures below are over (at most SAMPLES)
    p50_runtime: float | None  # seconds; None without samples
    p95_runtime: float | None
    p95_peak_rss: int | None  # bytes; None when no sample had a measured peak
    hosts: dict[str, int] = field(default_factory=dict)  # host -> measured recent runs, most first

    @property
    def failed_pct(self) -> float:
        """Failed runs in percent of all runs (0.0 without runs)."""
        return 100.0 * self.failed / self.runs if self.runs else 0.0

    def as_json(self) -> dict[str, Any]:
        """The record as plain JSON data (``forrestq stats --json``)."""
        return {"queue": self.queue, "function": self.name, "runs": self.runs, "failed": self.failed,
                "failed_pct": round(self.failed_pct, 2), "samples": self.samples,
                "p50_runtime": self.p50_runtime, "p95_runtime": self.p95_runtime,
                "p95_peak_rss": self.p95_peak_rss, "hosts": self.hosts}


def percentile(values: list[float], p: float) -> float | None:
    """The nearest-rank ``p`` percentile (0 < p <= 100) of ``values``: a value of the list; None if empty."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100.0 * len(ordered)) - 1)]


def _text(v: bytes | str) -> str:
    return v.decode(errors="replace") if isinstance(v, bytes) else v


def _parse(sample: bytes) -> tuple[float, int, str] | None:
    """A sample "runtime peak host" (the host may hold spaces: it comes last); None if malformed."""
    parts = _text(sample).split(schema.STATS_SEP, 2)
    try:
        return float(parts[0]), int(float(parts[1])), parts[2] if len(parts) > 2 else ""
    except (ValueError, IndexError):
        return None


def _record(queue: str, name: str, runs: int, failed: int, raw: list[bytes]) -> FunctionStats:
    samples = [s for s in map(_parse, raw) if s is not None]
    runtimes = [rt for rt, _, _ in samples]
    peaks = [float(peak) for _, peak, _ in samples if peak > 0]
    hosts: dict[str, int] = {}
    for _, _, host in samples:
        hosts[host] = hosts.get(host, 0) + 1
    p95_peak = percentile(peaks, 95)
    return FunctionStats(queue, name, runs, failed, len(samples), percentile(runtimes, 50),
                         percentile(runtimes, 95), None if p95_peak is None else int(p95_peak),
                         dict(sorted(hosts.items(), key=lambda kv: (-kv[1], kv[0]))))


def read(r: redis.Redis, k: QueueKeys) -> dict[str, FunctionStats]:
    """The statistics of every function of queue ``k``, by name (sorted): two round trips, whatever
    the number of tasks."""
    counters = {_text(f): int(v) for f, v in r.hgetall(k.stats).items()}
    runs_prefix, failed_prefix = schema.STATS_RUNS, schema.STATS_FAILED
    names = sorted(f[len(runs_prefix):] for f in counters if f.startswith(runs_prefix))
    pipe = r.pipeline(transaction=False)
    for name in names:
        pipe.lrange(k.stats_samples(name), 0, SAMPLES - 1)
    lists = pipe.execute() if names else []
    return {name: _record(k.name, name, counters[runs_prefix + name], counters.get(failed_prefix + name, 0), raw)
            for name, raw in zip(names, lists)}
