"""Resources (issue 14): a worker starts a task only while its free capacity covers the task's request.

Real server, real workers (tests/procs.py), bounded waits; the tasks (tests/tasks_resources.py) record
when and where they ran, and the assertions are about order and overlap, never about how fast."""
from __future__ import annotations

import itertools
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest
import redis
import tasks_resources as tr
from helpers import wait_for
from procs import worker, worker_env

from forrestq import Queue, defer, resources, schema
from forrestq.errors import ConfigError
from forrestq.schema import QueueKeys
from forrestq.status import gather
from forrestq.worker.capacity import Capacity, worker_totals

BIG = {"mem": "600M"}


def _overlap(a: tuple, b: tuple) -> bool:
    """Whether two (tag, pid, start, end, ...) intervals overlap in time."""
    return a[2] < b[3] and b[2] < a[3]


def _fields(r: redis.Redis, q: str, tid: str, *names: str) -> list[str]:
    return [(v or b"").decode() for v in r.hmget(QueueKeys(q).task(tid), *names)]


def test_requests_have_one_text_form_and_bad_ones_one_clear_error() -> None:
    assert resources.request(None) == ""
    assert resources.request({"mem": "6G", "gpu": 1, "cpus": 2}) == "cpus=2,gpu=1,mem=6442450944"
    assert resources.request({"gpu": 1}) == "cpus=1,gpu=1"  # every task occupies a child
    assert resources.from_text("") == {"cpus": 1.0}
    for bad, words in [({"mem": "6X"}, "mem='6X'"), ({"1gpu": 1}, "resource name '1gpu'"),
                       ({"gpu": 1.5}, "GPUs are whole"), ({"cpus": -1}, "cpus=-1"), ("gpu=1", "use a dict"),
                       ({"licence": "2G"}, "licence='2G'"), ({"cpus": True}, "cpus=True")]:
        with pytest.raises(ConfigError, match="bad resources") as e:
            resources.request(bad)  # type: ignore[arg-type]
        assert words in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="bad --resources: 'gpu' given twice"):
        worker_totals("gpu=1,gpu=2", 2)
    assert worker_totals("gpu=2", 3)["cpus"] == 3 and worker_totals(None, 1)["mem"] > 0


def test_the_shared_capacity_sets_aside_what_the_holder_needs() -> None:
    """The anti-starvation rule, unit by unit: once slot 0 holds a task needing mem=1000, no other
    slot takes memory it would need; a task needing no memory still starts; GPUs go by index."""
    cap = Capacity({"cpus": 4, "mem": 1000, "gpu": 2}, procs=4)
    small = cap.need("cpus=1,mem=400")
    big = cap.need("cpus=1,mem=1000")
    gpu = cap.need("cpus=1,gpu=1")
    assert small and big and gpu and cap.need("cpus=1,gpu=3") is None and cap.need("cpus=1,tpu=1") is None
    assert cap.reserve(1, small)
    assert not cap.reserve(0, big) and cap.hold(0, big) and not cap.hold(2, big)
    assert not cap.reserve(2, small)  # would eat what the holder waits for
    assert cap.reserve(2, gpu) and cap.reserve(3, gpu)  # needs none of it: starts
    assert {cap.devices(2), cap.devices(3)} == {"0", "1"}
    cap.release(1)
    assert cap.reserve(0, big) and cap.free_now()["mem"] == 0
    cap.release_child(0)
    cap.release_child(2)
    cap.release_child(3)
    assert cap.free_now() == {"cpus": 4, "gpu": 2, "mem": 1000} and cap.pool.gpus == 0b11


def test_bad_resources_fail_at_the_call_and_write_nothing(url: str, r: redis.Redis) -> None:
    q = Queue(f"res-bad-{uuid.uuid4().hex[:6]}")
    with pytest.raises(ConfigError, match=r"bad resources: mem='lots'"):
        q.schedule(defer(tr.span, "x", 0), resources={"mem": "lots"})
    with pytest.raises(ConfigError, match="not a scheduled task of the graph"):
        q.schedule_graph({"a": tr.hog}, {}, resources={"b": {"gpu": 1}})
    with pytest.raises(ConfigError, match="bad resources"):
        q.map(tr.span, ["x"], resources={"gpu": "two"}, progress=False)
    assert r.keys(QueueKeys(q.name).prefix.replace("{", "[{]") + "t:*") == []
    out = subprocess.run([sys.executable, "-m", "forrestq", "worker", "--url", url, "--resources", "mem=lots"],
                         env=worker_env(), capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip().splitlines() == ["forrestq: bad --resources: mem='lots': use a number with an "
                                               "optional unit K/M/G/T, e.g. 6G"]


def test_big_tasks_never_overlap_while_small_ones_keep_running(url: str, r: redis.Redis) -> None:
    """--procs 3 --resources mem=1G: three tasks of 600M run one at a time, small ones beside them;
    nothing is counted as an attempt for waiting."""
    q = Queue(f"res-mem-{uuid.uuid4().hex[:6]}")
    bigs = q.schedule_many([defer(tr.span, f"big{i}", 0.6) for i in range(3)], resources=BIG)
    smalls = q.schedule_many([defer(tr.span, f"small{i}", 0.1) for i in range(30)])
    with worker(url, q.name, 3, "--resources", "mem=1G"):
        big_done = bigs.wait(timeout=60)
        small_done = smalls.wait(timeout=60)
    assert all(t.state == "done" for t in big_done + small_done), [t.reason for t in big_done + small_done]
    big_spans = [t.returnvalue for t in big_done]
    assert not any(_overlap(a, b) for a, b in itertools.combinations(big_spans, 2)), big_spans
    assert any(_overlap(s.returnvalue, b) for s in small_done for b in big_spans), "no small task ran beside a big"
    assert [t.attempts for t in big_done] == [1, 1, 1]


def test_two_gpu_tasks_get_different_devices(url: str, tmp_path: Path) -> None:
    q = Queue(f"res-gpu-{uuid.uuid4().hex[:6]}")
    batch = q.schedule_many([defer(tr.together, str(tmp_path), 2) for _ in range(2)], resources={"gpu": 1})
    plain = q.schedule(defer(tr.span, "plain", 0))
    with worker(url, q.name, 3, "--resources", "gpu=2"):
        got = batch.wait(timeout=60)
        other = q.wait(plain, timeout=60)
    devices = sorted(t.returnvalue[0] for t in got)
    assert devices == ["0", "1"], [(t.state, t.reason, t.returnvalue) for t in got]
    assert other.returnvalue[4] == ""  # a task that asked for no GPU sees none


def test_a_task_no_live_worker_can_run_stays_ready_and_status_names_it(url: str, r: redis.Redis) -> None:
    q = Queue(f"res-unfit-{uuid.uuid4().hex[:6]}")
    k = QueueKeys(q.name)
    ref = q.schedule(defer(tr.span, "huge", 0), resources={"gpu": 4})
    small = q.schedule(defer(tr.span, "small", 0))
    with worker(url, q.name, 1, "--resources", "gpu=1"):
        assert q.wait(small, timeout=60).state == "done"
        wait_for(lambda: r.hexists(k.unfit, ref.id), timeout=30, what="the worker to note the task as too big")
        state, attempts, unfit = wait_for(
            lambda: (f := _fields(r, q.name, ref.id, schema.TASK_STATE, schema.TASK_ATTEMPTS, schema.TASK_UNFIT))
            and f[0] == schema.READY and f, timeout=30, what="the task ready again")
        assert attempts == "0" and unfit
        row = wait_for(lambda: gather(r, q.name)["queues"][q.name]["unfit"], timeout=30, what="status to say so")
        assert row == [{"tasks": 1, "need": "gpu=4", "request": "cpus=1,gpu=4"}]
        out = subprocess.run([sys.executable, "-m", "forrestq", "status", "--queue", q.name],
                             env=worker_env({"COLUMNS": "200"}), capture_output=True, text=True, timeout=60)
        assert "1 ready task needs gpu=4; no live worker has it" in out.stdout, out.stdout
        with worker(url, q.name, 1, "--resources", "gpu=4"):
            done = q.wait(ref, timeout=60)
    assert done.state == "done" and done.attempts == 1
    assert not r.hexists(k.unfit, ref.id)  # the worker that ran it took the note down
    assert gather(r, q.name)["queues"][q.name]["unfit"] == []


def test_a_big_task_among_a_stream_of_small_ones_still_runs(url: str, r: redis.Redis) -> None:
    """Small tasks (400M each: two fit in 1G) keep coming; a task of 1G needs the whole worker. It is
    handed back while they run, then held, and what it needs is set aside: it runs while the stream
    still flows."""
    q = Queue(f"res-stream-{uuid.uuid4().hex[:6]}")
    stop = threading.Event()
    smalls = []

    def keep_busy() -> None:
        feeder = Queue(q.name)
        while not stop.is_set() and len(smalls) < 2000:
            if feeder.counts()["ready"] < 4:
                smalls.extend(feeder.schedule_many([defer(tr.span, "small", 0.3)] * 2, resources={"mem": "400M"}))
            stop.wait(0.02)

    feeding = threading.Thread(target=keep_busy, daemon=True)
    with worker(url, q.name, 2, "--resources", "mem=1G"):
        feeding.start()
        wait_for(lambda: q.counts()["done"] >= 4, timeout=60, what="the small tasks to flow")
        wait_for(lambda: q.counts()["running"] == 2, timeout=60, what="two small tasks running")
        big = q.schedule(defer(tr.span, "big", 0.2), resources={"mem": "1G"})
        done = q.wait(big, timeout=90)
        stop.set()
        feeding.join(10)
    assert done.state == "done" and done.attempts == 1
    ran = [t for t in (q.get(ref) for ref in smalls) if t.state == "done"]
    assert not any(_overlap(done.returnvalue, t.returnvalue) for t in ran)  # 1G + 400M do not fit in 1G
    # (whether it was handed back first depends on the moment it was claimed: with both small tasks of
    # the moment just ended it fits at once; the hold rule itself is tested in-process above)


def test_admit_by_memory_does_not_start_a_function_whose_recent_peak_the_host_lacks(url: str,
                                                                                   r: redis.Redis) -> None:
    q = Queue(f"res-admit-{uuid.uuid4().hex[:6]}")
    k = QueueKeys(q.name)
    hog = q.schedule(defer(tr.hog))
    name = _fields(r, q.name, hog.id, schema.TASK_NAME)[0]
    huge = 1 << 50  # a PiB: far above any MemAvailable
    r.lpush(k.stats_samples(name), *[f"1.0{schema.STATS_SEP}{huge}{schema.STATS_SEP}elsewhere"] * 20)
    others = q.schedule_many([defer(tr.span, "other", 0.05) for _ in range(10)])
    with worker(url, q.name, 2, "--admit-by-memory"):
        assert all(t.state == "done" for t in others.wait(timeout=60))
        state, attempts, waits = wait_for(
            lambda: (f := _fields(r, q.name, hog.id, schema.TASK_STATE, schema.TASK_ATTEMPTS, schema.TASK_WAITS))
            and f[0] == schema.READY and int(f[2] or 0) >= 1 and f, timeout=30, what="the hog handed back")
    assert attempts == "0"  # nothing lost, nothing counted: it is ready for a host with the memory
    assert q.get(hog).state == "ready"
    with worker(url, q.name, 1):  # without --admit-by-memory it runs
        assert q.wait(hog, timeout=60).returnvalue == "ran"
