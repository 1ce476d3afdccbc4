"""Dynamic DAGs (issue 15): tasks that return deferred trees (continuations), reductions that tolerate
failed inputs (allow_failed / Failed), and tasks that schedule more tasks from inside."""
from __future__ import annotations

import os
import signal

import pytest
import tasks_dynamic as td
from helpers import wait_for
from procs import spawn_worker, stop, worker

from forrestq import Failed, Queue, UpstreamFailed, allow_failed, defer, evaluate, producer, schema
from forrestq import ops as fops
from forrestq.lease import new_token
from forrestq.runner import Outcome, completion

FAST = ("--lease", "1", "--grace", "0")


def state(q: Queue, tid: str) -> str:
    return q.get(tid).state


# ------------------------------------------------------------------------------- with real workers


def test_a_listing_task_fans_out_over_two_workers_and_finishes_with_the_join(url, tmp_path):
    for i in range(6):
        (tmp_path / f"f{i}").write_text(str(i))
    q = Queue("dyn-list")
    parent = defer(td.listing, str(tmp_path))
    after = q.schedule(defer(td.items, parent))  # a dependent of the continued task
    with worker(url, "dyn-list", 1), worker(url, "dyn-list", 1):
        got = list(q.results(timeout=60))
    assert [t.id for t in got] == [after.id] and got[0].returnvalue == 6  # the parent's dependent got it
    joined = q.get(parent._id)
    assert joined.state == "done" and joined.returnvalue["items"] == [f"f{i}={i}" for i in range(6)]
    assert joined.returnvalue["workers"] == 2, "the continuation did not spread over both workers"
    assert q.counts() == {"waiting": 0, "scheduled": 0, "ready": 0, "running": 0, "done": 6 + 1 + 2, "failed": 0}
    assert q.root_counts() == {"unfinished": 0, "done": 1, "failed": 0}


def test_an_inner_failure_fails_the_parent_and_its_dependents_naming_the_node(url):
    q = Queue("dyn-fail")
    parent = defer(td.fanout, 4, [2])
    ref = q.schedule(defer(td.double, parent))
    with worker(url, "dyn-fail", 2):
        task = q.wait(ref, timeout=60)
    p = q.get(parent._id)
    bad = [t for t in q.fail_tasks(nodes=True) if t.name.endswith("maybe_fail")]
    assert len(bad) == 1 and bad[0].reason == "ValueError: bad input 2"
    for t in (p, task):
        assert t.state == "failed" and t.upstream == bad[0].id
        assert isinstance(t.errorvalue, UpstreamFailed) and t.errorvalue.upstream == bad[0].id
        assert t.reason == f"input task {bad[0].id} failed: ValueError: bad input 2"
    assert q.root_counts() == {"unfinished": 0, "done": 0, "failed": 1}
    # clean(failed=True) deletes the parent, and its continuation with it (the done branches too)
    assert q.clean(failed=True) == 4 + 1 + 1 + 1
    assert sum(q.counts().values()) == 0


def test_allow_failed_gets_failed_for_exactly_the_failed_inputs(url):
    q = Queue("dyn-allow")
    direct = defer(allow_failed(td.summary), [defer(td.maybe_fail, i, [1, 3]) for i in range(5)])
    inside = defer(td.tolerant_fanout, 3, [0])
    refs = q.schedule_many([direct, inside])
    with worker(url, "dyn-allow", 2):
        got = {t.id: t for t in q.results(timeout=60)}
    values = got[refs[0].id].returnvalue
    assert [v if not isinstance(v, tuple) else v[:1] + v[2:] for v in values] == [
        0, ("failed", "ValueError", "ValueError: bad input 1"), 20, ("failed", "ValueError", "ValueError: bad input 3"),
        40]
    failed_ids = {t.id for t in q.fail_tasks(nodes=True)}
    assert {values[1][1], values[3][1]} <= failed_ids
    assert got[refs[1].id].state == "done" and got[refs[1].id].returnvalue[0][0] == "failed"
    assert got[refs[1].id].returnvalue[1:] == [10, 20]


def test_allow_failed_after_an_input_failed_before_it_was_scheduled(url):
    q = Queue("dyn-late")
    bad = defer(td.maybe_fail, 7, [7])
    q.schedule(bad)
    with worker(url, "dyn-late", 1):
        wait_for(lambda: state(q, bad._id) == "failed", 30, what="the input to fail")
        ref = q.schedule(defer(allow_failed(td.summary), [bad, defer(td.double, 4)]))
        task = q.wait(ref, timeout=30)
    assert task.returnvalue == [("failed", bad._id, "ValueError", "ValueError: bad input 7"), 8]


def test_nested_continuations_end_with_the_innermost_result(url):
    q = Queue("dyn-nest")
    ref = q.schedule(defer(td.nested, 3))
    with worker(url, "dyn-nest", 2):
        got = list(q.results(timeout=60))
    assert [t.id for t in got] == [ref.id] and got[0].returnvalue == "[[[leaf]]]"
    assert q.counts()["done"] == 1 + 3 * 2


def test_cancelling_a_waiting_parent_cancels_its_continuation(url):
    q = Queue("dyn-cancel")
    ref = q.schedule(defer(td.slow_fanout, 3, 60))
    with worker(url, "dyn-cancel", 2, *FAST):
        wait_for(lambda: q.counts()["running"] == 2 and state(q, ref.id) == "waiting", 30,
                 what="the parent to wait for its continuation")
        assert q.cancel([ref.id]) == [ref.id]
        wait_for(lambda: sum(q.counts()[s] for s in ("waiting", "ready", "running")) == 0, 30,
                 what="everything to end")
    reasons = {t.name.rsplit(".", 1)[-1]: t.reason for t in q.fail_tasks(nodes=True)}
    assert reasons["slow_fanout"] == "cancelled" and reasons["sleepy"] == "cancelled"
    assert q.counts() == {"waiting": 0, "scheduled": 0, "ready": 0, "running": 0, "done": 0, "failed": 5}
    assert q.root_counts() == {"unfinished": 0, "done": 0, "failed": 1}


def test_requeue_resumes_and_rerun_restarts_a_continued_parent(url, tmp_path):
    marker = tmp_path / "marker"
    q = Queue("dyn-requeue")
    ref = q.schedule(defer(td.flaky_fanout, str(marker)))
    with worker(url, "dyn-requeue", 2):
        assert q.wait(ref, timeout=60).state == "failed"
        marker.write_text("")
        again = q.requeue_failed()
        assert ref.id in again and len(again) == 3  # flaky, the join, the parent (resumed, not re-run)
        task = wait_for(lambda: (t := q.get(ref.id)).state == "done" and t, 60, what="the requeued parent")
        assert task.returnvalue == "fixed+[ok]" and task.attempts == 1  # waited again, did not run again
        assert q.counts()["done"] == 4
        q.rerun(ref.id)  # runs the parent again: a new continuation, the old one dropped
        task = wait_for(lambda: (t := q.get(ref.id)).state == "done" and t, 60, what="the re-run parent")
    assert task.returnvalue == "fixed+[ok]" and q.counts()["done"] == 4 + 3
    assert q.root_counts() == {"unfinished": 0, "done": 1, "failed": 0}


def test_a_worker_killed_in_the_middle_of_a_continuation_loses_nothing(url):
    q = Queue("dyn-kill")
    ref = q.schedule(defer(td.slow_fanout, 4, 1.5))
    first = spawn_worker(url, "dyn-kill", 2, *FAST)
    try:
        wait_for(lambda: state(q, ref.id) == "waiting" and q.counts()["running"] == 2, 30,
                 what="the continuation to run")
        os.killpg(first.pid, signal.SIGKILL)
    finally:
        stop(first)
    with worker(url, "dyn-kill", 2, *FAST):
        task = q.wait(ref, timeout=60)
    assert task.state == "done" and task.returnvalue == [0, 1, 2, 3]
    assert q.counts() == {"waiting": 0, "scheduled": 0, "ready": 0, "running": 0, "done": 6, "failed": 0}


def test_a_task_schedules_more_tasks_on_its_queue_and_another(url):
    q, other = Queue("dyn-spawn"), Queue("dyn-other")
    ref = q.schedule(defer(td.spawner, 3, "dyn-other"))
    with worker(url, ["dyn-spawn", "dyn-other"], 2):
        ids = q.wait(ref, timeout=60).returnvalue
        mine = [wait_for(lambda i=i: (t := q.get(i)).state == "done" and t, 30, what="a spawned task") for i in ids[:3]]
        theirs = wait_for(lambda: (t := other.get(ids[3])).state == "done" and t, 30, what="the other queue's")
    assert [t.returnvalue for t in mine] == [0, 2, 4] and theirs.returnvalue == 200
    assert q.root_counts()["done"] == 4  # scheduled from inside: roots of their own


# ------------------------------------------------------------------- the protocol, step by step


def _claim(q: Queue) -> fops.Claimed:
    token = new_token()
    got = fops.claim(q.scripts, q.keys, fops.ClaimArgs("c", token, 30_000, "h", "w"))
    assert isinstance(got, fops.Claimed)
    got.token = token
    return got


def _run(q: Queue, c: fops.Claimed) -> bool:
    """Run a claimed task the way a worker child does (plan a returned tree), record it."""
    from forrestq.runner import Runner
    runner = Runner(q.r.get, "h", stale_check=False)
    outcome = runner.run(q.keys, c)
    outcome = producer.continuation(q.r, q.keys, outcome, c.max_attempts) if outcome.tree is not None else outcome
    return fops.complete(q.scripts, q.keys, completion(c, outcome, b"", "h"))


def test_counters_and_results_at_each_step_of_a_continuation(url):
    q = Queue("dyn-steps", events=True)
    ref = q.schedule(defer(td.fanout, 2, []))
    c = _claim(q)
    assert _run(q, c)
    parent = q.get(ref.id)
    assert parent.state == "waiting" and q.root_counts() == {"unfinished": 1, "done": 0, "failed": 0}
    # parent + join
    assert q.counts() == {"waiting": 2, "scheduled": 0, "ready": 2, "running": 0, "done": 0, "failed": 0}
    assert q.r.xlen(q.keys.finished) == 0
    stale = fops.complete(q.scripts, q.keys, completion(c, Outcome(schema.DONE, result=b"x"), b"", "h"))
    assert not stale  # the attempt's token no longer holds the parent
    inner = [_claim(q), _claim(q)]
    assert _run(q, inner[0])
    assert q.clean(done=True) == 0  # the join still needs it
    assert _run(q, inner[1])
    assert q.counts() == {"waiting": 1, "scheduled": 0, "ready": 1, "running": 0, "done": 2, "failed": 0}
    assert _run(q, _claim(q))  # the join: the parent ends with its result, in the same call
    assert q.counts() == {"waiting": 0, "scheduled": 0, "ready": 0, "running": 0, "done": 4, "failed": 0}
    assert q.root_counts() == {"unfinished": 0, "done": 1, "failed": 0}
    got = list(q.results(timeout=5))
    assert [t.id for t in got] == [ref.id] and got[0].returnvalue == 10
    assert q.r.xlen(q.keys.finished) == 1
    kinds = [(e.kind, e.task) for e in q.events()]
    assert kinds.index(("continued", ref.id)) < kinds.index(("done", ref.id))
    assert q.clean(done=True) == 4 and sum(q.counts().values()) == 0


def test_a_stale_attempt_writes_no_continuation(url):
    q = Queue("dyn-stale")
    ref = q.schedule(defer(td.fanout, 2, []))
    c = _claim(q)
    producer.cancel(q, [ref.id])
    assert not _run(q, c)
    assert q.counts() == {"waiting": 0, "scheduled": 0, "ready": 0, "running": 0, "done": 0, "failed": 1}


def test_returning_a_node_that_finished_already_finishes_at_once(url):
    q = Queue("dyn-shared")
    done = q.schedule(defer(td.double, 21), key="answer")
    assert _run(q, _claim(q))
    ref = q.schedule(defer(td.returns_keyed))
    assert _run(q, _claim(q)) and q.get(ref.id).returnvalue == 42
    assert q.get(done.id).state == "done"


def test_planning_failure_and_evaluate(url):
    assert evaluate(defer(td.double, 2)) == 4
    with pytest.raises(TypeError):
        allow_failed(3)
    f = Failed("a", "ValueError: x", "ValueError")
    assert f == Failed("a", "ValueError: x", "ValueError") and "ValueError" in repr(f)
    assert not isinstance(f, BaseException)


def test_debug_mode_runs_a_continuation_here(url):
    q = Queue("dyn-debug")
    ref = q.schedule(defer(td.fanout, 3, []))
    got = list(q.run(procs=0))
    assert [t.id for t in got] == [ref.id] and got[0].returnvalue == 30
