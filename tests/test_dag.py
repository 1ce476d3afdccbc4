"""Task trees and DAGs spread over workers: one node per deferred call, dependents released
atomically, shared nodes run once, failures propagate, failed branches re-run."""
from __future__ import annotations

import random

import pytest
import tasks
from procs import worker

from forrestq import GraphError, Queue, UpstreamFailed, defer, evaluate, io_bound


def lines(path):
    return path.read_text().split("\n")[:-1] if path.exists() else []


def test_diamond_runs_shared_node_once_and_branches_in_parallel(url, tmp_path):
    log = tmp_path / "spans"
    a = defer(tasks.span, str(log), "a", 0.05)
    b = defer(tasks.span, str(log), "b", 0.6, a)
    c = defer(tasks.span, str(log), "c", 0.6, a)
    d = defer(tasks.counted, str(tmp_path / "d"), "d", b, c)
    q = Queue("diamond")
    ref = q.schedule(d)
    with worker(url, "diamond", 2):
        task = q.wait(ref, timeout=60)
    assert task.state == "done" and task.returnvalue == "d(b)(c)"
    spans = {}
    for line in lines(log):
        name, pid, start, end = line.split()
        assert name not in spans, f"{name} ran twice"
        spans[name] = (int(pid), float(start), float(end))
    assert set(spans) == {"a", "b", "c"}
    (pb, sb, eb), (pc, sc, ec) = spans["b"], spans["c"]
    assert pb != pc, "b and c ran in the same child process"
    assert sb < ec and sc < eb, "b and c did not overlap in time"
    assert spans["a"][2] <= min(sb, sc), "a branch started before its input finished"


def random_dag(n, seed=7):
    rng = random.Random(seed)
    nodes = []
    for i in range(n):
        k = rng.randint(0, min(5, len(nodes)))
        inputs = rng.sample(nodes, k) if k else []
        nodes.append(defer(tasks.total, i, *inputs))
    return nodes


def test_random_dag_of_1000_nodes_matches_evaluate(url):
    nodes = random_dag(1000)
    everything = defer(tasks.identity, nodes)  # one root whose inputs are all 1000 nodes
    expected = evaluate(everything)
    q = Queue("random")
    roots = q.schedule_many([everything, nodes[-1]])
    assert sum(q.counts().values()) == 1001  # one node per distinct deferred call
    with worker(url, "random", 2):
        got = {t.id: t.returnvalue for t in q.results(timeout=120)}
    assert got[roots[0].id] == expected and got[roots[1].id] == expected[-1]
    assert q.counts()["done"] == 1001


def test_failure_marks_exactly_the_downstream_nodes(url, tmp_path):
    log = tmp_path / "runs"
    flag = tmp_path / "flag"
    ok1 = defer(tasks.counted, str(log), "ok1")
    bad = defer(tasks.fail_unless_exists, str(flag), str(log), "bad")
    mid = defer(tasks.counted, str(log), "mid", bad, ok1)
    top = defer(tasks.counted, str(log), "top", mid)
    side = defer(tasks.counted, str(log), "side", ok1)
    q = Queue("failing")
    top_ref, side_ref = q.schedule_many([top, side])
    with worker(url, "failing", 2):
        got = {t.id: t for t in q.results(timeout=60)}
    assert got[side_ref.id].state == "done"
    failed = got[top_ref.id]
    assert failed.state == "failed"
    assert isinstance(failed.errorvalue, UpstreamFailed)
    assert failed.upstream == bad._id and "RuntimeError" in failed.reason and bad._id in failed.reason
    states = {t.id: t.state for t in q.fail_tasks(nodes=True)}
    assert states == {bad._id: "failed", mid._id: "failed", top._id: "failed"}
    assert sorted(lines(log)) == ["bad", "ok1", "side"]  # mid and top never ran

    # fix the cause, requeue: only bad, mid and top run; ok1 and side are not run again
    flag.write_text("fixed")
    requeued = q.requeue_failed()
    assert sorted(requeued) == sorted([bad._id, mid._id, top._id])
    with worker(url, "failing", 2):
        task = q.wait(top_ref, timeout=60)
    assert task.state == "done" and task.returnvalue == "top(mid(bad)(ok1))"
    assert sorted(lines(log)) == ["bad", "bad", "mid", "ok1", "side", "top"]
    assert q.counts() == {"waiting": 0, "scheduled": 0, "ready": 0, "running": 0, "done": 5, "failed": 0}


def test_requeue_dry_run_and_error_type_filter(url):
    q = Queue("filters")
    a = q.schedule(defer(tasks.crash, "a"))
    b = q.schedule(defer(tasks.identity, defer(tasks.fail_unless_exists, "/nonexistent", "/dev/null", "b")))
    with worker(url, "filters", 1):
        assert {t.state for t in q.results(timeout=60)} == {"failed"}
    assert q.requeue_failed(error_type="KeyError") == []
    dry = q.requeue_failed(error_type="RuntimeError", dry_run=True)
    assert len(dry) == 2 and b.id in dry  # the failed input and its dependent root
    assert q.counts()["failed"] == 3  # dry run changed nothing
    assert q.requeue_failed(ids=[a.id]) == [a.id]
    assert q.get(a).state == "ready"


@pytest.mark.parametrize("case", ["cycle3", "self", "unreachable", "missing", "nofunc"])
def test_graph_errors_leave_redis_empty(url, r, case):
    f = tasks.identity
    graphs = {
        "cycle3": ({"a": f, "b": f, "c": f}, {"a": ["b"], "b": ["c"], "c": ["a"]}, "a -> b -> c -> a"),
        "self": ({"a": f}, {"a": ["a"]}, "a -> a"),
        "unreachable": ({"x": f, "a": f, "b": f}, {"x": [], "a": ["b"], "b": ["a"]}, "cycle"),
        "missing": ({"a": f}, {"a": ["ghost"]}, "ghost"),
        "nofunc": ({"a": f}, {"a": [], "b": ["a"]}, "'b' has no function"),
    }
    funcs, deps, message = graphs[case]
    with pytest.raises(GraphError, match=message):
        Queue("graphs").schedule_graph(funcs, deps)
    assert r.dbsize() == 0


def test_schedule_graph_passes_results_in_order_and_skips_none(url):
    funcs = {"one": lambda: 1, "nothing": lambda: None, "two": lambda: 2,
             "pair": lambda a, b: (a, b), "done_one": None}
    deps = {"pair": ["two", "nothing", "one"], "final": ["pair", "done_one"]}
    funcs["final"] = lambda p, d: [p, d]
    q = Queue("named")
    refs = q.schedule_graph(funcs, deps, done=["done_one"], results={"done_one": "cached"})
    assert set(refs) == {"one", "nothing", "two", "pair", "final"}
    with worker(url, "named", 2):
        got = {t.metadata["name"]: t.returnvalue for t in q.results(timeout=60)}
    assert got["pair"] == (2, 1) and got["final"] == [(2, 1), "cached"] and got["nothing"] is None


def test_coroutine_task(url):
    q = Queue("async")
    ref = q.schedule(defer(tasks.coro_add, defer(tasks.coro_add, 1, 2), 4))
    with worker(url, "async", 1):
        assert q.wait(ref, timeout=60).returnvalue == 7


def test_shared_node_across_schedule_calls_runs_once(url, tmp_path):
    log = tmp_path / "runs"
    data = defer(tasks.counted, str(log), "load")
    q = Queue("sharedq")
    refs = [q.schedule(defer(tasks.counted, str(log), f"fit{p}", data)) for p in range(4)]
    with worker(url, "sharedq", 2):
        values = sorted(t.returnvalue for t in q.results(timeout=60))
    assert values == [f"fit{p}(load)" for p in range(4)]
    assert lines(log).count("load") == 1
    # scheduled again after it finished: still not re-run, the new dependent reads its result
    late = q.schedule(defer(tasks.counted, str(log), "late", data))
    with worker(url, "sharedq", 1):
        assert q.wait(late, timeout=60).returnvalue == "late(load)"
    assert lines(log).count("load") == 1 and len(refs) == 4


def test_rerun_with_new_function_reruns_downstream_only(url, tmp_path):
    log = tmp_path / "runs"
    base = defer(tasks.counted, str(log), "base")
    changed = defer(tasks.counted, str(log), "old", base)
    top = defer(tasks.counted, str(log), "top", changed)
    q = Queue("rerun")
    ref = q.schedule(top)
    with worker(url, "rerun", 2):
        assert q.wait(ref, timeout=60).returnvalue == "top(old(base))"

        def fixed(log_path, name, *inputs):
            with open(log_path, "a") as f:
                f.write("new\n")
            return "new" + "".join(f"({i})" for i in inputs)

        assert sorted(q.rerun(changed._id, fn=fixed)) == sorted([changed._id, top._id])
        assert q.wait(ref, timeout=60).returnvalue == "top(new(base))"
    assert lines(log) == ["base", "old", "top", "new", "top"]


def test_keyed_scheduling_is_idempotent(url):
    q = Queue("keyed")
    first = q.schedule(defer(tasks.identity, 1), key="item-17")
    again = q.schedule(defer(tasks.identity, 2), key="item-17")
    other = q.schedule(defer(tasks.identity, 3), key="ünïcode key with spaces")
    assert first.id == again.id != other.id
    assert sum(q.counts().values()) == 2
    with worker(url, "keyed", 1):
        got = {t.id: t.returnvalue for t in q.results(timeout=60)}
    assert got == {first.id: 1, other.id: 3}


def test_cancel_and_clean(url):
    q = Queue("cancelq")
    gate = defer(tasks.crash)  # never runs: no worker
    waiting = q.schedule(defer(tasks.identity, gate))
    ready = q.schedule(defer(tasks.identity, 1))
    assert sorted(q.cancel(all=True)) == sorted([waiting.id, ready.id, gate._id])
    assert q.get(ready).reason == "cancelled" and q.get(waiting).state == "failed"
    assert q.counts()["failed"] == 3
    assert sorted(t.id for t in q.results(timeout=5)) == sorted([waiting.id, ready.id])
    assert q.clean(failed=True) == 3
    assert sum(q.counts().values()) == 0


def test_pre_clean_and_exist_ok(url):
    q = Queue("guarded")
    q.schedule(defer(tasks.identity, 1))
    with pytest.raises(Exception, match="already holds 1 tasks"):
        Queue("guarded", exist_ok=False)
    fresh = Queue("guarded", pre_clean=True, exist_ok=False)
    assert sum(fresh.counts().values()) == 0


def test_rerun_executes_the_code_as_it_is_now(url, tmp_path):
    import os
    import sys

    mod = tmp_path / "userlib_stale.py"
    mod.write_text("def version():\n    return 1\n")
    sys.path.insert(0, str(tmp_path))
    try:
        import userlib_stale

        q = Queue("stale")
        ref = q.schedule(defer(userlib_stale.version))
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("userlib_stale", None)
    path = os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])
    with worker(url, "stale", 1, env={"PYTHONPATH": path}):
        assert q.wait(ref, timeout=60).returnvalue == 1
        mod.write_text("def version():\n    return 2\n")
        st = mod.stat()
        os.utime(mod, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))  # a visibly newer file
        q.rerun(ref)
        task = q.wait(ref, timeout=60)
    assert task.state == "done" and task.returnvalue == 2
    assert task.attempts == 1  # handing back to a fresh process is not a lost attempt


def test_async_concurrency_runs_coroutines_of_one_child_at_once(url, tmp_path):
    log = tmp_path / "spans"
    q = Queue("aio")
    refs = q.schedule_many(defer(io_bound(tasks.io_wait), str(log), f"io{i}", 0.5) for i in range(6))
    sync = q.schedule(defer(tasks.add, 1, 2))  # a plain function among them runs as usual
    with worker(url, "aio", 1, "--async-concurrency", "6"):
        got = {t.id: t for t in q.results(timeout=60)}
    assert [got[r.id].returnvalue for r in refs] == [f"io{i}" for i in range(6)]
    assert got[sync.id].returnvalue == 3
    spans = [line.split() for line in lines(log)]
    assert len({pid for _, pid, _, _ in spans}) == 1  # one child process ran them all
    starts, ends = [float(s[2]) for s in spans], [float(s[3]) for s in spans]
    assert max(starts) < min(ends), "the coroutines did not run at the same time"


def test_async_concurrency_autokill_hands_back_the_others(url, tmp_path):
    log = tmp_path / "spans"
    q = Queue("aio-kill")
    slow = q.schedule(defer(io_bound(tasks.io_wait), str(log), "slow", 30), timeout=1)
    quick = q.schedule_many(defer(io_bound(tasks.io_wait), str(log), f"q{i}", 0.05) for i in range(3))
    with worker(url, "aio-kill", 1, "--async-concurrency", "4"):
        got = {t.id: t for t in q.results(timeout=60)}
    assert got[slow.id].state == "failed" and got[slow.id].reason.startswith("killed after 1 s")
    assert all(got[r.id].state == "done" for r in quick)
