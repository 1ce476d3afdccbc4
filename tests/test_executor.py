"""``Queue.executor()`` (issue 20): a concurrent.futures.Executor on forrestq workers. Real server,
real worker processes; nothing sleeps where a condition can be awaited."""
from __future__ import annotations

import concurrent.futures as cf
import os
import threading
import time

import pytest
import tasks_executor as tx
from helpers import wait_for
from procs import alive, worker, worker_env

from forrestq import ConfigError, Queue
from forrestq.executor import TaskFuture


@pytest.fixture
def importable(monkeypatch: pytest.MonkeyPatch) -> None:
    """Local workers import ``tasks_executor`` (tests/) by name, as a user's workers import their module."""
    monkeypatch.setenv("PYTHONPATH", worker_env()["PYTHONPATH"])


def test_submit_gives_a_real_future_with_the_value_or_the_remote_exception(url, importable):
    q = Queue("ex-basic")
    with q.executor(procs=2) as ex:
        assert isinstance(ex, cf.Executor)
        ok, bad = ex.submit(tx.square, 7), ex.submit(tx.boom, "no good")
        assert isinstance(ok, cf.Future) and isinstance(ok, TaskFuture)
        assert ok.result(timeout=30) == 49 and ok.exception() is None and ok.task.host
        with pytest.raises(ValueError, match="no good") as info:
            bad.result(timeout=30)
        notes = "\n".join(getattr(info.value, "__notes__", []))
        assert f"remote traceback (task {bad.task_id}" in notes and "in boom" in notes
        assert isinstance(bad.exception(), ValueError)
        assert ex.submit(tx.add, 1, b=2).result(timeout=30) == 3
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.submit(tx.square, 1)


def test_as_completed_over_200_futures_yields_each_once(url, importable):
    q = Queue("ex-200")
    seen: list[TaskFuture] = []
    lock = threading.Lock()

    def done(f: cf.Future) -> None:
        with lock:
            seen.append(f)

    with q.executor(procs=2) as ex:
        futures = [ex.submit(tx.square, i) for i in range(200)]
        for f in futures:
            f.add_done_callback(done)
        got = list(cf.as_completed(futures, timeout=60))
        assert len(got) == 200 and set(got) == set(futures)
        assert sorted(f.result() for f in got) == sorted(i * i for i in range(200))
        waited = cf.wait(futures, timeout=1)
        assert len(waited.done) == 200 and not waited.not_done
    wait_for(lambda: len(seen) == 200, timeout=5, what="every done callback")
    assert len(set(map(id, seen))) == 200


def test_map_keeps_the_order_with_chunks_and_raises_the_failing_call(url, importable):
    q = Queue("ex-map")
    with q.executor(procs=2) as ex:
        assert list(ex.map(tx.square, range(40))) == [i * i for i in range(40)]
        assert list(ex.map(tx.add, range(30), range(30), chunksize=7)) == [2 * i for i in range(30)]
        results = ex.map(tx.boom, ["first", "second"], chunksize=2)
        with pytest.raises(ValueError, match="first") as info:
            list(results)
        assert "call 0 on" in "\n".join(info.value.__notes__)
        with pytest.raises(ConfigError, match="chunksize"):
            ex.map(tx.square, [1], chunksize=0)


def test_map_timeout_raises_and_cancels_the_calls_left(url, importable):
    q = Queue("ex-maptimeout")
    with q.executor(procs=1) as ex:
        results = ex.map(tx.sleep_then, [0, 60, 60], timeout=3)
        assert next(results) is None
        with pytest.raises(cf.TimeoutError):
            next(results)
    assert q.root_counts() == {"unfinished": 0, "done": 1, "failed": 2}
    assert {t.reason for t in q.fail_tasks()} == {"cancelled"}


def test_cancel_on_a_queued_and_on_a_running_future(url, importable, tmp_path):
    q = Queue("ex-cancel")
    marker = tmp_path / "pid"
    with q.executor(procs=1, worker_options={"lease": 3}) as ex:
        running = ex.submit(tx.pid_then_sleep, str(marker), 60)
        queued = ex.submit(tx.square, 3)  # the only child is busy: it waits
        pid = int(wait_for(lambda: marker.exists() and marker.read_text(), timeout=30, what="the task to start"))
        assert running.running() and not queued.running()
        assert queued.cancel() and queued.cancelled() and queued.done()
        with pytest.raises(cf.CancelledError):
            queued.result(timeout=1)
        t0 = time.monotonic()
        assert running.cancel() and running.cancelled()
        assert cf.wait([running, queued], timeout=1).not_done == set()
        wait_for(lambda: not alive(pid), timeout=15, what="the running task's process to be killed")
        assert time.monotonic() - t0 < 15
        assert ex.submit(tx.square, 4).result(timeout=30) == 16  # the worker carries on
        assert running.cancel() and queued.cancel()  # cancelling again: still cancelled
    for f in (running, queued):
        task = q.get(f.task_id)
        assert (task.state, task.reason) == ("failed", "cancelled")
    assert q.get(queued.task_id).started is None  # never ran


def test_a_finished_future_cannot_be_cancelled_and_cancel_futures_cancels_the_rest(url, importable):
    q = Queue("ex-shutdown")
    ex = q.executor(procs=1)
    done = ex.submit(tx.square, 5)
    assert done.result(timeout=30) == 25
    assert not done.cancel() and not done.cancelled()
    blocker = ex.submit(tx.sleep_then, 60)
    left = [ex.submit(tx.square, i) for i in range(5)]
    ex.shutdown(wait=True, cancel_futures=True)
    assert blocker.cancelled() and all(f.cancelled() for f in left)
    assert q.root_counts() == {"unfinished": 0, "done": 1, "failed": 6}


def test_without_procs_the_workers_serving_the_queue_run_the_calls(url):
    q = Queue("ex-remote")
    with worker(url, "ex-remote", 2):
        with q.executor() as ex:
            pids = {f.result(timeout=30) for f in [ex.submit(os.getpid) for _ in range(6)]}
    assert os.getpid() not in pids


def test_a_task_cancelled_elsewhere_cancels_its_future(url):
    q = Queue("ex-elsewhere")
    ex = q.executor()  # no worker: the task stays queued
    fut = ex.submit(tx.square, 2)
    assert q.cancel(fut.task_id) == [fut.task_id]
    assert cf.wait([fut], timeout=15).done == {fut} and fut.cancelled()
    ex.shutdown()


def test_procs_zero_runs_each_call_here(url):
    q = Queue("ex-inline")
    with q.executor(procs=0) as ex:
        assert ex.submit(os.getpid).result() == os.getpid()
        assert list(ex.map(tx.square, range(4), chunksize=3)) == [0, 1, 4, 9]
        with pytest.raises(ValueError, match="here"):
            ex.submit(tx.boom, "here").result()
    assert q.counts()["done"] == 0


def test_unknown_options_are_refused_at_the_call(url):
    with pytest.raises(ConfigError, match="unknown executor option 'procz'"):
        Queue("ex-bad").executor(procz=2)
