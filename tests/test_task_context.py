"""From inside a task (issue 15, first half): ``forrestq.current_task()`` (who am I) and
``forrestq.progress()`` (how far along am I), in worker children (plain and coroutine tasks), debug
mode and by hand; progress as readers see it (``Task.progress``, the CLI, status, the bars), fenced
by the attempt's token, and harmless while Redis is away. Waits are bounded; no timing assertions."""
from __future__ import annotations

import json
import socket

import pytest
import redis
import tasks_context
from helpers import wait_for
from procs import worker
from typer.testing import CliRunner

import forrestq
from forrestq import ConfigError, Queue, defer, io_bound, ops, schema
from forrestq.bars import ResultsProgress, counted
from forrestq.cli import app
from forrestq.reading import RunningShares, running_progress
from forrestq.schema import QueueKeys
from forrestq.server import ServerProcess
from forrestq.status import gather
from forrestq.task import fraction, parse_progress

cli = CliRunner()


def _cli(*args: str) -> str:
    result = cli.invoke(app, list(args), env={"COLUMNS": "200"}, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


# ------------------------------------------------------------------------------------ current_task


def test_current_task_is_none_outside_a_task_and_progress_does_nothing_there():
    assert forrestq.current_task() is None
    forrestq.progress(1, 2, "outside")  # checked, then nothing: no task to report for
    assert forrestq.current_task() is None


def test_a_plain_task_on_a_worker_knows_who_it_is(url):
    q = Queue("ctx-sync")
    ref = q.schedule(defer(tasks_context.whoami), metadata={"item": 7}, timeout=120)
    with worker(url, "ctx-sync", 1):
        task = q.wait(ref, timeout=60)
    assert task.state == "done", task.traceback
    seen = task.returnvalue
    assert seen["id"] == ref.id and seen["queue"] == "ctx-sync" and seen["queue_obj"] == "ctx-sync"
    assert seen["attempt"] == 1 and seen["host"] == task.host == socket.gethostname()
    assert seen["metadata"] == {"item": 7}
    assert task.started is not None and abs(seen["deadline"] - (task.started + 120)) < 30  # its hard limit


def test_each_coroutine_sharing_a_loop_sees_its_own_task(url, tmp_path):
    q = Queue("ctx-async")
    started = tmp_path / "started"
    started.mkdir()
    refs = [q.schedule(defer(io_bound(tasks_context.whoami_async), str(started), f"c{i}", 3)) for i in range(3)]
    with worker(url, "ctx-async", 1, "--async-concurrency", "4"):
        got = [q.wait(ref, timeout=90) for ref in refs]
    assert [t.state for t in got] == ["done"] * 3, [t.traceback for t in got]
    assert [t.returnvalue["id"] for t in got] == [ref.id for ref in refs]  # each its own, read while all ran
    assert {t.returnvalue["name"] for t in got} == {"c0", "c1", "c2"}
    assert all(t.returnvalue["attempt"] == 1 and t.returnvalue["deadline"] is None for t in got)


def test_debug_mode_and_run_here_give_the_context_too(url):
    q = Queue("ctx-local", local=True)
    ref = q.schedule(defer(tasks_context.whoami), metadata="md")
    (task,) = list(q.results(timeout=30))
    seen = task.returnvalue
    assert seen["id"] == ref.id and seen["queue"] == "ctx-local" and seen["metadata"] == "md"
    assert seen["attempt"] == 1 and seen["deadline"] is None
    assert forrestq.current_task() is None  # reset after the task

    by_hand = Queue("ctx-local").run_here(ref)  # forrestq run ID: the next attempt, by hand
    assert by_hand.returnvalue["id"] == ref.id and by_hand.returnvalue["attempt"] == 2
    assert by_hand.returnvalue["metadata"] == "md"


def test_the_attempt_number_counts_a_retry(url, tmp_path):
    q = Queue("ctx-retry")
    ref = q.schedule(defer(tasks_context.fails_first, str(tmp_path / "marker")), retries=1, retry_backoff=0.05,
                     retry_on=(OSError,))
    with worker(url, "ctx-retry", 1):
        task = q.wait(ref, timeout=60)
    assert task.state == "done", task.traceback
    assert task.returnvalue == 2 and task.attempts == 2


# ---------------------------------------------------------------------------------------- progress


def _seen_at(q: Queue, ref, step: int) -> bool:
    p = q.get(ref).progress
    return bool(p and p["done"] == step)


def test_a_reader_sees_a_running_task_step_by_step(url, r, tmp_path):
    q = Queue("ctx-steps")
    ref = q.schedule(defer(tasks_context.stepper, str(tmp_path)))
    with worker(url, "ctx-steps", 1):
        for step in range(1, 11):
            wait_for(lambda s=step: _seen_at(q, ref, s), timeout=30, what=f"step {step} to be seen")  # type: ignore[misc]
            if step == 5:
                _check_mid_way(q, r, ref)
            (tmp_path / f"go{step}").touch()
        task = q.wait(ref, timeout=60)
    assert task.state == "done" and task.progress is not None
    assert task.progress["done"] == 10 and task.progress["message"] == "step 10"  # the last report stays
    assert r.zcard(QueueKeys("ctx-steps").progress) == 0  # it left the index when it returned


def _check_mid_way(q: Queue, r: redis.Redis, ref) -> None:
    """What every reader shows while the stepper sits at step 5 of 10."""
    task = q.get(ref)
    assert task.state == "running"
    assert task.progress is not None and set(task.progress) == {"done", "total", "message", "at"}
    assert (task.progress["done"], task.progress["total"], task.progress["message"]) == (5, 10, "step 5")
    assert running_progress(r, q.keys)[ref.id]["done"] == 5
    assert RunningShares(r, q.keys).read() == {ref.id: 0.5}
    shown = _cli("show", ref.id)
    assert "5/10" in shown and "step 5" in shown
    listed = _cli("tasks", "-q", "ctx-steps", "--state", "running")
    assert "progress" in listed and "5/10" in listed
    as_json = json.loads(_cli("tasks", "-q", "ctx-steps", "--state", "running", "--json"))
    assert as_json[0]["progress"]["done"] == 5
    status = gather(r, "ctx-steps")
    assert status["queues"]["ctx-steps"]["running_tasks"][0]["progress"]["done"] == 5
    assert "step 5" in _cli("status", "-q", "ctx-steps")


def test_fast_reports_are_throttled_and_the_last_one_is_kept(url):
    q = Queue("ctx-fast", local=True)
    ref = q.schedule(defer(tasks_context.reports, 500))
    (task,) = list(q.results(timeout=30))
    assert task.state == "done", task.traceback
    assert "'done': 500" in task.returnvalue  # the context keeps the last value
    assert task.progress is not None and task.progress["done"] == 500  # flushed when the task returned
    assert task.id == ref.id


@pytest.mark.parametrize("args", [(-1,), (1, 0), (1, -2), ("3",), (True,), (float("nan"),), (1, 2, 3),
                                  (1, float("inf"))])
def test_bad_progress_is_one_clear_error_at_the_call(args):
    with pytest.raises(ConfigError, match="progress: "):
        forrestq.progress(*args)


def test_bad_progress_inside_a_task_writes_nothing(url):
    q = Queue("ctx-bad", local=True)
    ref = q.schedule(defer(forrestq.progress, -1))
    (task,) = list(q.results(timeout=30))
    assert task.state == "failed" and "done must be >= 0" in task.reason
    assert task.progress is None and q.get(ref).progress is None


def test_a_stale_attempt_cannot_overwrite_the_progress_of_a_newer_one(url, r):
    k = QueueKeys("ctx-stale")
    r.hset(k.task("t1"), mapping={schema.TASK_STATE: schema.RUNNING, schema.TASK_TOKEN: "new"})
    scripts = ops.Scripts(r)
    value = json.dumps({"done": 1, "total": 2, "message": "", "at": 0.0, "tok": "new"})
    assert ops.progress(scripts, k, ops.ProgressArgs("t1", "new", value))
    stale = json.dumps({"done": 9, "total": 9, "message": "stale", "at": 0.0, "tok": "old"})
    assert not ops.progress(scripts, k, ops.ProgressArgs("t1", "old", stale))
    assert json.loads(r.hget(k.task("t1"), schema.TASK_PROGRESS))["tok"] == "new"
    # what an older attempt left is not shown once a newer one holds the task
    assert parse_progress(stale.encode(), b"new") is None
    assert parse_progress(value.encode(), b"new") == {"done": 1, "total": 2, "message": "", "at": 0.0}
    r.hset(k.task("t1"), schema.TASK_STATE, schema.DONE)  # ended: no more writes, even with its token
    assert not ops.progress(scripts, k, ops.ProgressArgs("t1", "new", value))
    assert r.zrange(k.progress, 0, -1) == [b"t1"]  # what the finished one left: readers drop it
    assert running_progress(r, k, prune=True) == {} and r.zcard(k.progress) == 0


def test_a_retry_starts_with_no_progress(url, tmp_path):
    q = Queue("ctx-retry-progress", local=True)
    ref = q.schedule(defer(tasks_context.reports_then_fails_first, str(tmp_path / "m")), retries=1,
                     retry_backoff=0.05, retry_on=(OSError,))
    (task,) = list(q.results(timeout=30))
    assert task.state == "done" and task.returnvalue == "None"  # the second attempt saw no progress
    assert q.get(ref).progress is None


def test_redis_briefly_away_does_not_fail_the_task(tmp_path):
    srv = ServerProcess(tmp_path / "srv", appendfsync="always").start()
    try:
        q = Queue("ctx-outage", url=srv.url)
        gate = tmp_path / "gate"
        gate.mkdir()
        ref = q.schedule(defer(tasks_context.reports_until, str(gate)))
        with worker(srv.url, "ctx-outage", 1):
            wait_for(lambda: q.get(ref).progress, timeout=30, what="the first progress")
            srv.kill()
            calls = len((gate / "calls").read_text())
            wait_for(lambda: len((gate / "calls").read_text()) > calls + 5, timeout=30,
                     what="the task to go on reporting while Redis is away")
            srv.start()
            (gate / "end").touch()
            task = q.wait(ref, timeout=90)
        assert task.state == "done", task.traceback
        assert task.returnvalue > calls + 5 and task.progress is not None
        assert task.progress["done"] == task.returnvalue  # the last report was flushed at the end
    finally:
        srv.stop()


# -------------------------------------------------------------------------------------------- bars


def test_a_bar_counts_the_fraction_done_of_running_tasks():
    assert fraction({"done": 3, "total": 4}) == 0.75
    assert fraction({"done": 5, "total": None}) == 0.0 and fraction(None) == 0.0
    assert fraction({"done": 12, "total": 10}) == 1.0
    assert counted(3, {"a": 0.5, "b": 0.25}) == 3.75
    assert counted(3, {"a": 2.0, "b": -1.0}) == 4.0  # a share is 0..1
    assert counted(9, {"a": 0.9, "b": 0.9}, total=10) == 10.0  # never past the total
    bar = ResultsProgress("q", enabled=False)
    bar.running({"a": 0.5})  # a disabled bar does nothing
    bar.running(None)


def test_setting_the_context_is_thread_local_to_the_task(url):
    """A thread the task starts does not inherit its context (the documented behaviour)."""
    q = Queue("ctx-thread", local=True)
    q.schedule(defer(tasks_context.from_a_thread))
    (task,) = list(q.results(timeout=30))
    assert task.returnvalue == [True, False, True]


def test_nothing_is_left_current_after_a_failing_task(url):
    q = Queue("ctx-fail", local=True)
    q.schedule(defer(tasks_context.fails_first, "/nonexistent-dir/x"))
    (task,) = list(q.results(timeout=30))
    assert task.state == "failed"
    assert forrestq.current_task() is None
