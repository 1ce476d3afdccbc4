"""``forrestq launch slurm --adapt MIN,MAX``: keep between MIN and MAX worker jobs, by the work there is.

Every ``interval`` seconds the controller reads the queue's counts (ready + running tasks) and the
jobs (:func:`forrestq.slurm.jobs`) with their workers, and wants ``ceil((ready + running) / procs)``
jobs, held to MIN..MAX. A job counts while it is pending or running, unless its worker is stopping
(it is on its way out).

* Too few: it submits the difference (``sbatch``).
* Too many: it cancels pending jobs first, newest first, with ``scancel --state=PENDING`` (a job that
  started meanwhile is left alone); then it asks the workers of running jobs that held no task for
  ``idle_after`` seconds to stop after their tasks (the remote stop of :mod:`forrestq.worker.remote`,
  as the dashboard's "stop": the worker exits 0 and its job ends). It never cancels a running job:
  a worker that runs a task is never stopped by it, and a job whose worker has not started yet is
  left to start.

:func:`plan` is the decision alone (plain data in, plain data out); :class:`Controller` does the I/O.
"""
from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis

from . import schema
from .errors import ConfigError, SlurmError
from .slurm import Job, LaunchSpec, cancel_pending, jobs, submit, workers_of, write_files
from .status import queue_status
from .worker.remote import request_stop

__all__ = ["Plan", "parse_range", "wanted", "plan", "Controller"]


def parse_range(text: str) -> tuple[int, int]:
    """'0,8' -> (0, 8); MIN <= MAX, both 0 or more."""
    try:
        lo, hi = (int(part) for part in text.split(","))
    except ValueError:
        raise ConfigError(f"--adapt takes MIN,MAX (two whole numbers, e.g. 0,8), not {text!r}") from None
    if lo < 0 or hi < lo or hi == 0:
        raise ConfigError(f"--adapt MIN,MAX needs 0 <= MIN <= MAX and MAX >= 1, not {text!r}")
    return lo, hi


def wanted(ready: int, running: int, procs: int, lo: int, hi: int) -> int:
    """How many jobs of ``procs`` each the work asks for, held to ``lo..hi``."""
    return max(lo, min(hi, math.ceil((ready + running) / procs)))


@dataclass
class Plan:
    """One round's decision: jobs to submit, pending jobs to cancel, workers to ask to stop."""

    want: int
    have: int
    submit: int = 0
    cancel: list[str] = field(default_factory=list)
    stop: list[str] = field(default_factory=list)  # worker ids


def plan(want: int, listed: list[Job], workers: dict[str, dict[str, Any]], idle_since: dict[str, float],
         now: float, idle_after: float) -> Plan:
    """What to do to go from the jobs ``listed`` (with ``workers``: job id -> its worker) to ``want``.
    ``idle_since``: worker id -> when it was first seen holding no task (kept by the caller)."""
    counted = [j for j in listed if j.active and workers.get(j.id, {}).get("state") != "stopping"]
    out = Plan(want=want, have=len(counted))
    if len(counted) < want:
        out.submit = want - len(counted)
        return out
    excess = len(counted) - want
    for j in reversed([j for j in counted if j.state == "PENDING"]):
        if excess:
            out.cancel.append(j.id)
            excess -= 1
    for j in reversed([j for j in counted if j.state == "RUNNING" and j.id in workers]):
        w = workers[j.id]
        if excess and w["state"] == "running" and not w["busy"] and now - idle_since.get(w["id"], now) >= idle_after:
            out.stop.append(w["id"])
            excess -= 1
    return out


class Controller:
    """Runs :func:`plan` every ``interval`` seconds for one queue until :meth:`stop` (or Ctrl-C)."""

    def __init__(self, r: redis.Redis, spec: LaunchSpec, lo: int, hi: int, interval: float = 10.0,
                 idle_after: float = 60.0, say: Callable[[str], None] = print) -> None:
        self.r, self.spec, self.lo, self.hi = r, spec, lo, hi
        self.interval, self.idle_after, self.say = interval, idle_after, say
        self.idle_since: dict[str, float] = {}  # worker id -> monotonic time it was first seen idle
        self.asked: set[str] = set()  # workers asked to stop (asked once)
        self.submitted: list[str] = []  # job ids, in order
        self.stopped = threading.Event()
        self.script = write_files(spec)

    def stop(self) -> None:
        self.stopped.set()

    def run(self) -> None:
        """Rounds until :meth:`stop`; a round that fails (slurmctld or Redis busy or away) is said and
        tried again at the next one."""
        while not self.stopped.is_set():
            try:
                self.step()
            except (SlurmError, redis.RedisError) as e:
                self.say(f"this round failed, trying again in {self.interval:g} s: {e}")
            self.stopped.wait(self.interval)

    def step(self) -> Plan:
        """One round: read, decide, act; says what it did (one line per action)."""
        counts = queue_status(self.r, [self.spec.queue])[self.spec.queue]
        ready, running = counts[schema.READY], counts[schema.RUNNING]
        listed = jobs(self.spec.name)
        workers = workers_of(self.r, listed)
        now = time.monotonic()
        live = {w["id"] for w in workers.values()}
        self.idle_since = {wid: t for wid, t in self.idle_since.items() if wid in live}  # the gone: forgotten
        for w in workers.values():
            if w["busy"]:
                self.idle_since.pop(w["id"], None)
            else:
                self.idle_since.setdefault(w["id"], now)
        for w in workers.values():  # asked already: counted as leaving by its state once it beats
            if w["id"] in self.asked:
                w["state"] = "stopping"
        p = plan(wanted(ready, running, self.spec.procs, self.lo, self.hi), listed, workers, self.idle_since,
                 now, self.idle_after)
        why = f"{ready} ready + {running} running tasks, {self.spec.procs} procs a job: {p.want} wanted, {p.have} there"
        if p.submit:
            ids = submit(self.spec, p.submit, self.script)
            self.submitted += ids
            self.say(f"submitted job(s) {', '.join(ids)} ({why})")
        if p.cancel:
            cancel_pending(p.cancel)
            self.say(f"cancelled pending job(s) {', '.join(p.cancel)} ({why})")
        for wid in p.stop:
            request_stop(self.r, wid)
            self.asked.add(wid)
            self.say(f"asked idle worker {wid} to stop after its tasks ({why})")
        return p
