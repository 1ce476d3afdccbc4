"""RunForrest's README and test suite, rewritten against forrestq (and its known traps, fixed)."""
from __future__ import annotations

import pytest
import tasks
from procs import worker

from forrestq import Queue, defer, evaluate


def test_readme_examples_evaluate_like_runforrest():
    assert evaluate(defer(dict, alpha="a", beta="b")) == {"alpha": "a", "beta": "b"}
    assert evaluate(defer(lambda x: x, 42)) == 42
    assert evaluate(defer(42)) == 42
    task1 = defer(dict, value=42)
    assert evaluate(defer(lambda x: x["value"], task1)) == 42
    assert evaluate(task1["value"]) == 42  # a part scheduled/evaluated directly
    assert evaluate(defer(Exception, "an error message").args[0]) == "an error message"
    inner = defer(tasks.identity, Exception(42))
    assert evaluate(defer(tasks.identity, inner.args)) == (42,)


def test_traps_of_the_old_tool_are_gone():
    t = defer(tasks.identity, [1, 2])
    with pytest.raises(TypeError, match="t\\[0\\]"):
        list(t)
    with pytest.raises(TypeError):
        a, b = t
    assert t[1] is not t["1"] and evaluate(defer(tasks.identity, {1: "int", "1": "str"})[1]) == "int"
    assert (t == 5) is False and t == t
    assert not hasattr(t, "__len__") and not hasattr(t, "_private")
    f = defer(tasks.identity, tasks.add)
    assert evaluate(defer(f, 1, 2)) == 3  # a deferred function is resolved before the call
    assert evaluate(defer(tasks.identity, [defer(tasks.add, 1, 1), {"k": defer(tasks.add, 2, 2)}])) == [2, {"k": 4}]


def test_tasklist_habits_on_a_queue(url, tmp_path):
    # runforrest's test suite: run, data task, nested, multiple, accessor, indexing, metadata, failing
    q = Queue("tasklist", pre_clean=True)
    refs = {
        "run": q.schedule(defer(tasks.identity, 42)),
        "data": q.schedule(defer(42)),
        "nested": q.schedule(defer(tasks.identity, defer(tasks.identity, 42))),
        "accessor": q.schedule(defer(tasks.identity, defer(tasks.identity, Exception(42)).args)),
        "indexing": q.schedule(defer(tasks.identity, defer(tasks.identity, [42])[0])),
        "metadata": q.schedule(defer(tasks.identity, 1), metadata="the truth"),
        "failing": q.schedule(defer(tasks.crash)),
    }
    many = q.schedule_many(defer(tasks.identity, defer(tasks.identity, v)) for v in range(20))
    assert len(q.todo_tasks()) == len(refs) + len(many)  # what was scheduled: roots
    assert len(q.todo_tasks(nodes=True)) == sum(q.counts().values())
    with worker(url, "tasklist", 2, "--logfile", str(tmp_path / "log")):
        got = {t.id: t for t in q.results(timeout=60)}
    values = {name: got[ref.id].returnvalue for name, ref in refs.items()}
    assert values == {"run": 42, "data": 42, "nested": 42, "accessor": (42,), "indexing": 42,
                      "metadata": 1, "failing": None}
    assert got[refs["metadata"].id].metadata == "the truth"
    assert sorted(got[r.id].returnvalue for r in many) == list(range(20))
    failed = got[refs["failing"].id]
    assert failed.errorvalue.args == ("TESTING",)
    assert [t.id for t in q.fail_tasks()] == [refs["failing"].id]
    assert all(t.runtime is not None for t in got.values())


def test_resume_after_a_crash_without_rescheduling(url):
    # noschedule_if_exist, per task: the producer runs again, keys that exist are not scheduled twice
    q = Queue("resume")
    first = [q.schedule(defer(tasks.identity, i), key=f"item-{i}") for i in range(10)]
    again = [q.schedule(defer(tasks.identity, i), key=f"item-{i}") for i in range(10)]
    assert first == again and sum(q.counts().values()) == 10
    with worker(url, "resume", 2):
        assert sorted(t.returnvalue for t in q.results(timeout=60)) == list(range(10))


def test_rerun_one_task_by_hand(url):
    q = Queue("byhand")
    ref = q.schedule(defer(tasks.crash, "by hand"))
    with worker(url, "byhand", 1):
        assert q.wait(ref, timeout=60).state == "failed"
    outcome = q.run_here(ref)
    assert isinstance(outcome.errorvalue, ValueError) and outcome.errorvalue.__traceback__ is not None
    assert q.get(ref).state == "failed" and q.get(ref).attempts == 1  # nothing recorded
