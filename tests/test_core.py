"""The core promise end to end, on a real server with real worker processes."""
from __future__ import annotations

import subprocess
import sys
import textwrap
import threading

import pytest
import tasks
from procs import ROOT, worker, worker_env

from forrestq import Queue, SerializationError, Task, defer


def executions(path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def test_readme_example_end_to_end(url, tmp_path):
    q = Queue("fits")
    items = list(range(40))
    refs = []
    for item in items:
        t = defer(tasks.identity, (item, {"thing": item * 10}))
        t = defer(tasks.add, t[0], t[1]["thing"])  # indexing a deferred value is deferred
        refs.append(q.schedule(t, metadata={"item": item}))
    with worker(url, "fits", 2):
        got = list(q.results(timeout=60))
    assert sorted(t.id for t in got) == sorted(r.id for r in refs)
    for task in got:
        item = task.metadata["item"]
        assert task.state == "done"
        assert task.returnvalue == item * 11
        assert task.errorvalue is None and task.traceback == ""
        assert task.runtime is not None and task.runtime >= 0
        assert task.host and task.attempts == 1
    assert q.counts() == {"waiting": 0, "scheduled": 0, "ready": 0, "running": 0, "done": 80, "failed": 0}


def test_shared_subtask_runs_once(url, tmp_path):
    log = tmp_path / "runs"
    shared = defer(tasks.record, str(log), "shared")
    roots = [defer(tasks.add, shared, defer(tasks.record, str(log), f"leaf{i}")) for i in range(5)]
    q = Queue("shared")
    q.schedule_many(roots)
    with worker(url, "shared", 2):
        got = list(q.results(timeout=60))
    assert len(got) == 5 and all(t.state == "done" for t in got)
    runs = executions(log)
    assert runs.count("shared") == 1
    assert sorted(r for r in runs if r != "shared") == [f"leaf{i}" for i in range(5)]
    assert sorted(t.returnvalue for t in got) == sorted(f"shared{'leaf'}{i}" for i in range(5))


def test_indexing_and_getattr_chains(url):
    inner = defer(Exception, "an error message", 42)
    q = Queue("chains")
    refs = [
        q.schedule(inner.args[0]),  # scheduling a part directly
        q.schedule(defer(tasks.identity, inner.args[1])),
        q.schedule(defer(dict, alpha="a", beta=[1, 2, 3])["beta"][2]),
        q.schedule(defer(tasks.identity, {"nested": [defer(tasks.add, 1, 2), (defer(tasks.identity, 4),)]})),
        q.schedule(defer(tasks.identity, defer(tasks.identity, {"1": "str", 1: "int"})[1])),
    ]
    with worker(url, "chains", 2):
        got = {t.id: t for t in q.results(timeout=60)}
    values = [got[r.id].returnvalue for r in refs]
    assert values == ["an error message", 42, 3, {"nested": [3, (4,)]}, "int"]


def test_failure_keeps_type_and_traceback(url):
    q = Queue("failing")
    ref = q.schedule(defer(tasks.crash, "boom"), metadata="m")
    ok = q.schedule(defer(tasks.identity, 1))
    with worker(url, "failing", 1):
        got = {t.id: t for t in q.results(timeout=60)}
    bad = got[ref.id]
    assert bad.state == "failed" and got[ok.id].state == "done"
    assert isinstance(bad.errorvalue, ValueError) and bad.errorvalue.args == ("boom",)
    assert 'raise ValueError(message)' in bad.traceback and "tasks.py" in bad.traceback
    assert bad.reason == "ValueError: boom"
    assert bad.metadata == "m"
    with pytest.raises(ValueError, match="boom"):
        bad.reraise()
    assert [t.id for t in q.fail_tasks()] == [ref.id]
    assert {t.id for t in q.done_tasks()} == {ok.id}


def test_unpicklable_exception_is_still_recorded(url):
    def raises():
        raise tasks.Unpicklable(1, 2)

    q = Queue("unpicklable")
    ref = q.schedule(defer(raises))
    with worker(url, "unpicklable", 1):
        (task,) = list(q.results(timeout=60))
    assert task.id == ref.id and task.state == "failed"
    assert "Unpicklable" in str(task.errorvalue) and "1/2" in str(task.errorvalue)
    assert "raise tasks.Unpicklable(1, 2)" in task.traceback


def test_lambdas_and_closures_run_on_workers(url):
    factor = 3

    def scale(x):
        return x * factor  # a closure

    q = Queue("closures")
    q.schedule_many([defer(scale, 2), defer(lambda x: x + 1, 41)])
    with worker(url, "closures", 2):
        assert sorted(t.returnvalue for t in q.results(timeout=60)) == [6, 42]


def test_functions_defined_in_main_script(url, tmp_path):
    script = tmp_path / "producer.py"
    script.write_text(textwrap.dedent("""
        import sys
        from forrestq import Queue, defer

        def square(x):
            return x * x

        q = Queue("mainq", url=sys.argv[1])
        q.schedule_many(defer(square, i) for i in range(10))
        q.schedule(defer(lambda: "lambda in main"))
    """))
    subprocess.run([sys.executable, str(script), url], check=True, env=worker_env(), timeout=60)
    q = Queue("mainq")
    with worker(url, "mainq", 2):
        values = [t.returnvalue for t in q.results(timeout=60)]
    assert sorted(values, key=str) == sorted([i * i for i in range(10)] + ["lambda in main"], key=str)


def test_results_yields_each_root_once_even_if_finished_before(url):
    q = Queue("before")
    refs = q.schedule_many(defer(tasks.identity, i) for i in range(30))
    with worker(url, "before", 2):
        # wait until all finished before anyone asks for results
        first = q.wait(refs[-1], timeout=60)
        assert first.state == "done"
        got = list(q.results(timeout=60))
    assert sorted(t.id for t in got) == sorted(r.id for r in refs)
    assert len(got) == len({t.id for t in got})
    # a second reader sees the same, and returns at once: nothing is unfinished
    assert sorted(t.id for t in q.results(timeout=5)) == sorted(r.id for r in refs)


def test_results_from_two_readers_and_progress(url):
    q = Queue("readers")
    refs = q.schedule_many(defer(tasks.sleep_then, 0.01, i) for i in range(20))
    seen: list[list[Task]] = [[], []]

    def read(i):
        seen[i] = list(Queue("readers").results(progress=(i == 0), timeout=60))

    readers = [threading.Thread(target=read, args=(i,)) for i in range(2)]
    for t in readers:
        t.start()
    with worker(url, "readers", 2):
        for t in readers:
            t.join(60)
    assert all(sorted(t.id for t in s) == sorted(r.id for r in refs) for s in seen)


def test_get_and_states(url, r):
    q = Queue("states")
    gate = defer(tasks.wait_for_file, "/nonexistent/never", 0.2)
    dependent = q.schedule(defer(tasks.identity, gate))
    assert q.get(dependent).state == "waiting"
    assert q.counts()["ready"] == 1 and q.counts()["waiting"] == 1
    assert {t.state for t in q.todo_tasks(nodes=True)} == {"ready", "waiting"}
    with worker(url, "states", 1):
        (task,) = list(q.results(timeout=60))
    assert task.id == dependent.id and task.state == "failed"
    assert "TimeoutError" in task.reason and gate._id in task.reason  # names the failed input
    assert q.counts()["failed"] == 2


def test_unserialisable_argument_fails_at_schedule_and_writes_nothing(url, r):
    q = Queue("bad")
    before = r.dbsize()
    gen = (i for i in range(3))
    with pytest.raises(SerializationError, match="generator"):
        q.schedule_many([defer(tasks.identity, 1), defer(tasks.identity, gen)])
    assert r.dbsize() == before


def test_missing_module_names_module_and_host(url, tmp_path):
    mod = tmp_path / "only_here.py"
    mod.write_text("def f():\n    return 1\n")
    sys.path.insert(0, str(tmp_path))
    try:
        import only_here

        q = Queue("missing")
        q.schedule(defer(only_here.f))
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("only_here", None)
    with worker(url, "missing", 1, env={"FORRESTQ_HOST": "hostA"}):
        (task,) = list(q.results(timeout=60))
    assert task.state == "failed"
    assert "only_here" in task.reason and "hostA" in task.reason


def test_run_starts_and_stops_local_workers(url, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", worker_env()["PYTHONPATH"])  # where `tasks` is importable
    q = Queue("runq")
    q.schedule_many(defer(tasks.add, i, i) for i in range(20))
    got = sorted(t.returnvalue for t in q.run(procs=2, timeout=60))
    assert got == [2 * i for i in range(20)]


def test_quickstart_example_runs(url, tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "quickstart.py")], env=worker_env(),
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "297 done, 3 failed" in out.stdout


def test_worker_recovers_when_the_queue_stream_is_deleted(url, r):
    q = Queue("flushed")
    with worker(url, "flushed", 1):
        assert q.wait(q.schedule(defer(tasks.identity, 1)), timeout=60).returnvalue == 1
        r.flushall()  # stream and consumer group gone under a running worker
        q2 = Queue("flushed")
        assert q2.wait(q2.schedule(defer(tasks.identity, 2)), timeout=60).returnvalue == 2


def test_results_do_not_read_argument_payloads(url, r):
    q = Queue("bigargs")
    ref = q.schedule(defer(len, b"x" * 5_000_000))
    with worker(url, "bigargs", 1):
        (task,) = list(q.results(timeout=60))
    assert task.id == ref.id and task.returnvalue == 5_000_000 and b"a" not in task._f


def test_scripts_forgotten_by_the_server_are_loaded_again(url, r):
    q = Queue("noscript")
    with worker(url, "noscript", 2):
        assert q.wait(q.schedule(defer(tasks.identity, 1)), timeout=60).returnvalue == 1
        r.script_flush()  # as after a server restart: every cached script is gone
        refs = q.schedule_many(defer(tasks.identity, i) for i in range(20))  # pipelined scripts
        assert [q.wait(ref, timeout=60).returnvalue for ref in refs] == list(range(20))
        r.script_flush()
        idle = Queue("noscript-idle")  # no worker serves it: the task is surely still queued
        ref = idle.schedule(defer(tasks.identity, 1))
        r.script_flush()
        assert idle.cancel([ref]) == [ref.id]  # a MULTI of scripts
