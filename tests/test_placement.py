"""Placement of coroutine tasks (issue 13, item 6): with ``--async-concurrency N`` only IO-bound
coroutines (``defer(io_bound(fn), ...)``, ``schedule_graph(io_bound=[...])``) share a child's event
loop; any other coroutine runs in a child by itself, and one claimed while IO-bound ones run waits,
held, and is neither started early, starved, nor lost.

Placement is proven from what the tasks record themselves (pid, start and end), never from timings.
"""
from __future__ import annotations

import pytest
import tasks_io
from helpers import wait_for
from procs import worker
from tasks_io import read_log

from forrestq import Queue, defer, evaluate, io_bound, schema

CONCURRENCY = ("--async-concurrency", "4")


def overlap(a: dict, b: dict) -> bool:
    return a["t0"] < b["t1"] and b["t0"] < a["t1"]


def test_io_bound_coroutines_share_one_child_at_once(url, r, tmp_path):
    q = Queue("pl-io")
    log, started = tmp_path / "log", tmp_path / "started"
    started.mkdir()
    # each ends only once all 3 have started: they can only finish if they ran at the same time
    refs = [q.schedule(defer(io_bound(tasks_io.io_together), str(log), f"io{i}", str(started), 3))
            for i in range(3)]
    assert all(r.hget(q.keys.task(ref.id), schema.TASK_IO_BOUND) == b"1" for ref in refs)
    with worker(url, "pl-io", 1, *CONCURRENCY):
        ends = [q.wait(ref, timeout=60) for ref in refs]
    assert [t.state for t in ends] == ["done"] * 3, [t.reason for t in ends]
    rows = read_log(log)
    assert len({row["pid"] for row in rows}) == 1  # one child ...
    assert max(row["t0"] for row in rows) < min(row["t1"] for row in rows)  # ... all three at once


def test_coroutines_not_io_bound_never_share_a_child_while_they_run(url, tmp_path):
    q = Queue("pl-mixed")
    log = tmp_path / "log"
    tasks = []
    for i in range(4):  # interleaved on the stream: a child that claims freely takes both kinds
        tasks.append(defer(tasks_io.blocking, str(log), f"cpu{i}", 0.2))
        tasks.append(defer(io_bound(tasks_io.io_short), str(log), f"io{i}", 0.2))
    refs = q.schedule_many(tasks)
    with worker(url, "pl-mixed", 2, *CONCURRENCY):
        ends = [q.wait(ref, timeout=90) for ref in refs]  # none starved
    assert [t.state for t in ends] == ["done"] * 8, [t.reason for t in ends]
    rows = read_log(log)
    assert sorted(row["name"] for row in rows) == sorted([f"cpu{i}" for i in range(4)] + [f"io{i}" for i in range(4)])
    for cpu in (row for row in rows if row["kind"] == "cpu"):
        shared = [o["name"] for o in rows if o is not cpu and o["pid"] == cpu["pid"] and overlap(o, cpu)]
        assert shared == [], f"{cpu['name']} ran in child {cpu['pid']} at the same time as {shared}"


@pytest.mark.parametrize("marked", [True, False])
def test_the_io_bound_flag_is_what_lets_blocking_coroutines_share_a_loop(url, tmp_path, marked):
    """One child, four blocking coroutines ready before it starts: marked IO-bound they are claimed
    together and interleave on its loop (the check above would see it); unmarked they run one by one."""
    q = Queue(f"pl-flag-{marked}")
    log = tmp_path / "log"
    fn = io_bound(tasks_io.blocking) if marked else tasks_io.blocking
    refs = q.schedule_many([defer(fn, str(log), f"t{i}", 0.1) for i in range(4)])
    with worker(url, q.name, 1, *CONCURRENCY):
        assert [q.wait(ref, timeout=60).state for ref in refs] == ["done"] * 4
    rows = read_log(log)
    overlapping = [(x["name"], y["name"]) for x in rows for y in rows if x["name"] < y["name"] and overlap(x, y)]
    assert bool(overlapping) == marked, overlapping


def _held_setup(q: Queue, tmp_path):
    """An IO-bound task A waiting on a gate, claimed first; then a coroutine B that is not IO-bound,
    claimed while A runs (the only child): B is held."""
    log, gate, marker = tmp_path / "log", tmp_path / "gate", tmp_path / "a-ended"
    a = q.schedule(defer(io_bound(tasks_io.io_gated_then_mark), str(log), "A", str(gate), str(marker)))
    wait_for(lambda: q.get(a).state == "running", 30, what="A claimed")
    b = q.schedule(defer(tasks_io.after, str(log), "B", str(marker)))
    wait_for(lambda: q.get(b).state == "running", 30, what="B claimed (and held)")
    return a, b, log, gate


def test_a_coroutine_claimed_while_io_bound_ones_run_waits_for_them(url, tmp_path):
    q = Queue("pl-held")
    with worker(url, "pl-held", 1, *CONCURRENCY):
        a, b, log, gate = _held_setup(q, tmp_path)
        assert [row["name"] for row in read_log(log)] == []  # B claimed but not started
        gate.write_text("open")
        assert q.wait(a, timeout=60).state == "done"
        tb = q.wait(b, timeout=60)
    assert tb.state == "done", tb.reason
    rows = {row["name"]: row for row in read_log(log)}
    assert rows["B"]["marker_seen"]  # B started only after A's coroutine had ended
    assert rows["A"]["pid"] == rows["B"]["pid"]  # in the same child: not handed around
    assert tb.attempts == 1


def test_a_held_coroutine_is_handed_back_when_the_worker_stops(url, tmp_path):
    q = Queue("pl-stop")
    with worker(url, "pl-stop", 1, *CONCURRENCY, "--grace", "1"):
        a, b, log, gate = _held_setup(q, tmp_path)
    # stopped: B (never started) handed back at once, A after the grace; neither attempt counted
    assert [q.get(a).state, q.get(b).state] == ["ready", "ready"]
    assert [q.get(a).attempts, q.get(b).attempts] == [0, 0]
    gate.write_text("open")
    with worker(url, "pl-stop", 1, *CONCURRENCY):
        ta, tb = q.wait(a, timeout=60), q.wait(b, timeout=60)
    assert [ta.state, tb.state] == ["done", "done"], [ta.reason, tb.reason]
    assert tb.attempts == 1


def test_graph_io_bound_names_are_flagged_and_no_others(url, r):
    q = Queue("pl-graph")
    refs = q.schedule_graph({"fetch": tasks_io.io_short, "crunch": tasks_io.blocking, "plain": max},
                            {"fetch": [], "crunch": [], "plain": []}, io_bound=["fetch", "fetch", "nope"])
    flags = {name: r.hget(q.keys.task(ref.id), schema.TASK_IO_BOUND) for name, ref in refs.items()}
    assert flags == {"fetch": b"1", "crunch": None, "plain": None}
    assert list(refs)[0] == "fetch"  # io-bound names still go on the queue first


def test_io_bound_is_a_marker_never_a_keyword_of_defer():
    def f(x, io_bound=False):
        return (x, io_bound)

    assert evaluate(defer(f, 1, io_bound=True)) == (1, True)  # the user's keyword, passed through
    assert evaluate(defer(io_bound(f), 2)) == (2, False)  # a plain function: runs as usual
    assert defer(io_bound(f), 2)._io and not defer(f, 2)._io
    try:
        io_bound(42)
    except TypeError as e:
        assert "io_bound() takes a function" in str(e)
    else:
        raise AssertionError("io_bound(42) accepted")
