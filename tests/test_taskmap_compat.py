"""taskmap's README, rewritten against forrestq: named graphs, async tasks, rerunning failed and changed
tasks with their children, across worker processes."""
from __future__ import annotations

import asyncio
import time

import pytest
from procs import worker

from forrestq import GraphError, Queue


async def io_bound_a():
    await asyncio.sleep(0.05)
    return "io_a"


async def io_bound_b(x):
    await asyncio.sleep(0.05)
    return x + " io_b"


async def cpu_bound_a(x):
    time.sleep(0.05)
    return x + " cpu_a"


async def cpu_bound_b():
    time.sleep(0.05)
    return "cpu_b"


def test_async_parallel_demo(url):
    funcs = {"io_bound_a": io_bound_a, "io_bound_b": io_bound_b,
             "cpu_bound_a": cpu_bound_a, "cpu_bound_b": cpu_bound_b}
    dependencies = {"io_bound_a": [], "io_bound_b": ["cpu_bound_b"],
                    "cpu_bound_a": ["io_bound_a"], "cpu_bound_b": []}
    q = Queue("taskmap-demo")
    q.schedule_graph(funcs, dependencies, io_bound=["io_bound_a", "io_bound_b"])
    with worker(url, "taskmap-demo", 2):
        results = {t.metadata["name"]: t.returnvalue for t in q.results(timeout=60)}
    assert results == {"io_bound_a": "io_a", "io_bound_b": "cpu_b io_b",
                       "cpu_bound_a": "io_a cpu_a", "cpu_bound_b": "cpu_b"}


def test_create_graph_errors():
    f = io_bound_a
    with pytest.raises(GraphError, match="cycle"):
        Queue("tm-errors").schedule_graph({"a": f, "b": f}, {"a": ["b"], "b": ["a"]})
    with pytest.raises(GraphError, match="'c'"):
        Queue("tm-errors").schedule_graph({"a": f}, {"a": ["c"]})


def test_reset_failed_and_reset_tasks(url, tmp_path):
    flag = tmp_path / "db-up"

    def extract():
        return [1, 2, 3]

    def load(rows):
        if not flag.exists():
            raise ConnectionError("database unavailable")
        return sum(rows)

    def report(total):
        return f"total={total}"

    q = Queue("tm-reset")
    refs = q.schedule_graph({"extract": extract, "load": load, "report": report},
                            {"load": ["extract"], "report": ["load"]})
    with worker(url, "tm-reset", 2):
        first = {t.metadata["name"]: t for t in q.results(timeout=60)}
        assert first["extract"].state == "done"
        assert first["load"].state == "failed" and first["report"].state == "failed"
        flag.write_text("up")  # the fix
        assert sorted(q.requeue_failed()) == sorted([refs["load"].id, refs["report"].id])
        assert q.wait(refs["report"], timeout=60).returnvalue == "total=6"

        # reset_tasks: change a function, rerun it and its children only
        def report_v2(total):
            return f"TOTAL: {total}"

        assert sorted(q.rerun(refs["report"], fn=report_v2)) == [refs["report"].id]
        assert q.wait(refs["report"], timeout=60).returnvalue == "TOTAL: 6"
    assert q.get(refs["extract"]).attempts == 1  # never re-run
