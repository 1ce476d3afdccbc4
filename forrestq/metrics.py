"""Prometheus metrics of every queue and worker (issue 19): ``/metrics`` of ``forrestq dashboard`` and
the standalone exporter ``forrestq metrics --port P``.

Every scrape reads counters and a few bounded lists, never a scan of a queue's tasks, so it costs
the same with a million tasks as with ten (per queue: one HGETALL of the counts, one of the function
statistics, one GET; per function: one LRANGE of its last :data:`forrestq.stats.SAMPLES` runs; the
workers' hashes; INFO). The families, all labelled by ``queue``:

============================================  ==============  =========================================
name                                          type            what
============================================  ==============  =========================================
``forrestq_tasks{queue,state}``               gauge           DAG nodes by state: what ``Queue.counts()``
                                                              says (waiting, scheduled, ready, running,
                                                              done, failed)
``forrestq_roots{queue,state}``               gauge           the tasks users scheduled: unfinished,
                                                              done, failed (``Queue.root_counts()``)
``forrestq_finished_total{queue,function,``   counter         runs that ended, by outcome (done, failed),
``outcome}``                                                  since the queue began (the function
                                                              statistics: they survive ``clean``)
``forrestq_task_runtime_seconds{queue,``      gaugehistogram  runtimes of the function's last 1,000
``function}``                                                 measured runs (a window, not a running
                                                              total: buckets may go down)
``forrestq_lost_attempts_total{queue}``       counter         attempts lost (their worker vanished and
                                                              the sweep handed the task back)
``forrestq_workers{state}``                   gauge           workers by state: running, stopping,
                                                              refusing, lost
``forrestq_worker_slots{worker,host}``        gauge           task slots of each live worker (procs)
``forrestq_worker_busy_slots{worker,host}``   gauge           of them, busy
``forrestq_worker_rss_bytes{worker,host}``    gauge           resident memory of the worker and children
``forrestq_redis_memory_bytes``               gauge           ``used_memory`` of the server
``forrestq_redis_info{version}``              info            the server's version
============================================  ==============  =========================================
"""
from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import redis
from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeHistogramMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
)
from prometheus_client.metrics_core import Metric

from . import schema
from .reading import roots_of
from .schema import QueueKeys
from .stats import SAMPLES
from .status import queue_names, worker_status

__all__ = ["BUCKETS", "Collector", "registry", "exposition", "serve", "CONTENT_TYPE"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# runtime bucket bounds (seconds): from a quick call to a long fit
BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 3600.0, 14400.0)
WORKER_STATES = ("running", "stopping", "refusing", "lost")


def _text(v: Any) -> str:
    return v.decode(errors="replace") if isinstance(v, bytes) else str(v)


def _runtime(sample: bytes) -> float | None:
    """The runtime of one statistics sample ("runtime peak host"); None if malformed."""
    try:
        return float(_text(sample).split(schema.STATS_SEP, 1)[0])
    except ValueError:
        return None


def _buckets(runtimes: Sequence[float]) -> list[tuple[str, float]]:
    """Cumulative ``(le, count)`` pairs over :data:`BUCKETS`, ending with ``+Inf``."""
    out = [(repr(bound), float(sum(1 for rt in runtimes if rt <= bound))) for bound in BUCKETS]
    return out + [("+Inf", float(len(runtimes)))]


class Collector:
    """A prometheus_client collector that reads forrestq's counters at each scrape (``queues``: only
    these; default: every queue of the server)."""

    def __init__(self, r: redis.Redis, queues: Sequence[str] | None = None) -> None:
        self.r = r
        self.queues = list(queues) if queues else None

    def describe(self) -> list[Metric]:
        return []  # no reads at registration: the families are only known at a scrape

    def collect(self) -> Iterator[Metric]:
        names = self.queues or queue_names(self.r)
        yield from self.queue_families(names)
        yield from self.worker_families()
        yield from self.redis_families()

    def queue_families(self, names: Sequence[str]) -> Iterator[Metric]:
        tasks = GaugeMetricFamily("forrestq_tasks", "Tasks (DAG nodes) by state.", labels=["queue", "state"])
        roots = GaugeMetricFamily("forrestq_roots", "Tasks users scheduled (roots) by state.",
                                  labels=["queue", "state"])
        finished = CounterMetricFamily("forrestq_finished", "Runs that ended, by outcome, since the queue began.",
                                       labels=["queue", "function", "outcome"])
        runtime = GaugeHistogramMetricFamily("forrestq_task_runtime_seconds",
                                             f"Runtimes of each function's last {SAMPLES} measured runs.",
                                             labels=["queue", "function"])
        lost = CounterMetricFamily("forrestq_lost_attempts", "Attempts lost with their worker.", labels=["queue"])
        pipe = self.r.pipeline(transaction=False)
        for name in names:
            k = QueueKeys(name)
            pipe.hgetall(k.counts)
            pipe.hgetall(k.stats)
            pipe.hget(k.lost, schema.LOST_ATTEMPTS)
        replies = pipe.execute() if names else []
        for i, name in enumerate(names):
            counts, stats, lost_n = replies[3 * i: 3 * i + 3]
            got = {_text(f): int(v) for f, v in counts.items()}
            for state in schema.STATES:
                tasks.add_metric([name, state], max(0, got.get(state, 0)))
            for state, n in roots_of(counts).items():
                roots.add_metric([name, state], n)
            lost.add_metric([name], int(lost_n or 0))
            self.function_metrics(name, {_text(f): int(v) for f, v in stats.items()}, finished, runtime)
        return iter([tasks, roots, finished, runtime, lost])

    def function_metrics(self, queue: str, counters: dict[str, int], finished: CounterMetricFamily,
                         runtime: GaugeHistogramMetricFamily) -> None:
        """The per-function figures of one queue, from its statistics hash and sample lists."""
        functions = sorted(f[len(schema.STATS_RUNS):] for f in counters if f.startswith(schema.STATS_RUNS))
        pipe = self.r.pipeline(transaction=False)
        for fn in functions:
            pipe.lrange(QueueKeys(queue).stats_samples(fn), 0, SAMPLES - 1)
        for fn, samples in zip(functions, pipe.execute() if functions else []):
            failed = counters.get(schema.STATS_FAILED + fn, 0)
            finished.add_metric([queue, fn, schema.DONE], counters[schema.STATS_RUNS + fn] - failed)
            finished.add_metric([queue, fn, schema.FAILED], failed)
            runtimes = [rt for rt in map(_runtime, samples) if rt is not None]
            runtime.add_metric([queue, fn], _buckets(runtimes), sum(runtimes))

    def worker_families(self) -> Iterator[Metric]:
        workers = worker_status(self.r, prune=False)
        states = GaugeMetricFamily("forrestq_workers", "Workers by state.", labels=["state"])
        for state in WORKER_STATES:
            states.add_metric([state], sum(1 for w in workers if w["state"] == state))
        labels = ["worker", "host"]
        slots = GaugeMetricFamily("forrestq_worker_slots", "Task slots of each live worker.", labels=labels)
        busy = GaugeMetricFamily("forrestq_worker_busy_slots", "Busy task slots of each live worker.", labels=labels)
        mem = GaugeMetricFamily("forrestq_worker_rss_bytes", "Resident memory of each live worker and its children.",
                                labels=labels)
        for w in workers:
            if w["state"] != "lost":
                slots.add_metric([w["id"], w["host"]], w["procs"] or 0)
                busy.add_metric([w["id"], w["host"]], w["busy"] or 0)
                mem.add_metric([w["id"], w["host"]], w["rss"] or 0)
        return iter([states, slots, busy, mem])

    def redis_families(self) -> Iterable[Metric]:
        info = self.r.info()
        used = GaugeMetricFamily("forrestq_redis_memory_bytes", "Memory the Redis server uses (used_memory).")
        used.add_metric([], float(info.get("used_memory", 0)))
        version = InfoMetricFamily("forrestq_redis", "The Redis server.", labels=["version"])
        version.add_metric([_text(info.get("valkey_version") or info.get("redis_version") or "")], {})
        return [used, version]


def registry(r: redis.Redis, queues: Sequence[str] | None = None) -> CollectorRegistry:
    """A registry holding only forrestq's :class:`Collector` (no process metrics of this exporter)."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(Collector(r, queues))
    return reg


def exposition(reg: CollectorRegistry) -> bytes:
    """The registry's metrics in the Prometheus text format (:data:`CONTENT_TYPE`)."""
    return generate_latest(reg)


def serve(r: redis.Redis, port: int, bind: str = "127.0.0.1", stop: threading.Event | None = None,
          queues: Sequence[str] | None = None) -> None:
    """Serve ``/metrics`` on ``bind:port`` (prometheus_client's own server, in a thread) until ``stop``
    is set (default: for ever; SIGINT/SIGTERM end the process)."""
    server, thread = start_http_server(port, bind, registry=registry(r, queues))
    try:
        (stop or threading.Event()).wait()
    finally:
        server.shutdown()
        thread.join(5)
