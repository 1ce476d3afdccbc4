"""Prometheus metrics (issue 19): the text parses with prometheus_client's own parser, its task counts
are what ``Queue.counts()`` says, per-function totals and runtimes come from the statistics, lost
attempts are counted, and ``forrestq metrics`` serves them on its own. Real server, real workers."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import urllib.request

import tasks
from helpers import free_port, wait_for
from procs import spawn_worker, worker, worker_env
from prometheus_client.parser import text_string_to_metric_families

from forrestq import Queue, defer, metrics
from forrestq.connection import connect

FAST = ("--lease", "1")


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition: (name, sorted labels) -> value (parsed by prometheus_client)."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(found: dict, name: str, **labels: str) -> float:
    return found[(name, tuple(sorted(labels.items())))]


def scrape(url: str) -> str:
    return metrics.exposition(metrics.registry(connect(url))).decode()


def test_metrics_parse_and_their_counts_are_the_queues_counts(url):
    q = Queue("metered")
    ok = [q.schedule(defer(tasks.add, i, 1)) for i in range(3)]
    bad = [q.schedule(defer(tasks.crash, f"no {i}")) for i in range(2)]
    with worker(url, "metered", 1):
        for ref in ok + bad:
            q.wait(ref, timeout=20)
    q.schedule(defer(tasks.identity, "later"))  # ready, with no worker
    q.schedule(defer(tasks.identity, "much later"), delay=3600)  # scheduled
    other = Queue("metered-too")
    other.schedule(defer(tasks.add, defer(tasks.identity, 1), 2))  # one ready, one waiting
    found = samples(scrape(url))
    for queue in (q, other):
        for state, n in queue.counts().items():
            assert value(found, "forrestq_tasks", queue=queue.name, state=state) == n, state
        for state, n in queue.root_counts().items():
            assert value(found, "forrestq_roots", queue=queue.name, state=state) == n, state
    assert q.counts()["done"] == 3 and q.counts()["failed"] == 2 and q.counts()["ready"] == 1
    fn_ok, fn_bad = "tasks.add", "tasks.crash"
    assert value(found, "forrestq_finished_total", queue="metered", function=fn_ok, outcome="done") == 3
    assert value(found, "forrestq_finished_total", queue="metered", function=fn_bad, outcome="failed") == 2
    assert value(found, "forrestq_task_runtime_seconds_gcount", queue="metered", function=fn_ok) == 3
    assert value(found, "forrestq_task_runtime_seconds_bucket", queue="metered", function=fn_ok, le="+Inf") == 3
    assert value(found, "forrestq_lost_attempts_total", queue="metered") == 0
    assert value(found, "forrestq_workers", state="running") == 0
    assert value(found, "forrestq_redis_memory_bytes") > 0


def test_workers_and_their_busy_slots_are_shown_and_lost_attempts_counted(url, tmp_path):
    q = Queue("metered-lost")
    ref = q.schedule(defer(tasks.whoami, 30))
    proc = spawn_worker(url, "metered-lost", 2, *FAST, env={"FORRESTQ_HOST": "hostA"})
    try:
        wait_for(lambda: q.get(ref).state == "running", timeout=20, what="the task to start")
        def busy_and_slots() -> tuple[list[float], list[float]] | None:
            found = samples(scrape(url))
            busy = [v for (name, _), v in found.items() if name == "forrestq_worker_busy_slots"]
            slots = [v for (name, _), v in found.items() if name == "forrestq_worker_slots"]
            running = found.get(("forrestq_workers", (("state", "running"),)))
            return (busy, slots) if running == 1 and busy == [1] else None

        assert wait_for(busy_and_slots, timeout=10, what="the busy worker in the metrics") == ([1], [2])
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)
    q.cancel(q.schedule(defer(tasks.identity, 0)))  # nothing to do with the loss: just one more record
    with worker(url, "metered-lost", 1, *FAST, env={"FORRESTQ_HOST": "hostB"}):
        wait_for(lambda: value(samples(scrape(url)), "forrestq_lost_attempts_total", queue="metered-lost") == 1,
                 timeout=20, what="the lost attempt to be counted")
        q.cancel([ref])


def test_the_standalone_exporter_serves_metrics_until_stopped(url):
    q = Queue("exported")
    q.schedule(defer(tasks.identity, 1))
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "forrestq", "metrics", "--port", str(port), "--url", url],
                            env=worker_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        text = wait_for(lambda: _get(f"http://127.0.0.1:{port}/metrics"), timeout=15, what="the exporter")
        assert value(samples(text), "forrestq_tasks", queue="exported", state="ready") == 1
        assert "process_cpu_seconds_total" not in text  # forrestq's metrics only
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0


def test_serve_stops_when_asked(url):
    stop = threading.Event()
    port = free_port()
    thread = threading.Thread(target=metrics.serve, args=(connect(url), port, "127.0.0.1", stop))
    thread.start()
    try:
        wait_for(lambda: _get(f"http://127.0.0.1:{port}/metrics"), timeout=10, what="the exporter")
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive()


def _get(address: str) -> str | None:
    try:
        with urllib.request.urlopen(address, timeout=5) as response:
            return response.read().decode()
    except OSError:
        return None
