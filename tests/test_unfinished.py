"""The unfinished tasks of a queue, indexed once each (issue 18: a queued no-op's memory): a ready or
running task by its stream entry, a scheduled one by the delayed zset, a waiting one by the todo zset;
every reader (``todo_tasks``, ``forrestq tasks``, the dashboard's pages, ``cancel(all=True)``,
``clean(all=True)``) sees each of them exactly once, whatever moved it between the indexes."""
from __future__ import annotations

import time
from pathlib import Path

import tasks
from procs import worker

from forrestq import Queue, defer, status, unfinished
from forrestq.dashboard import data


def _until(check, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def _mixed(q: Queue) -> dict[str, str]:
    """Tasks in every unfinished state but running: id -> state."""
    out = {}
    for i in range(3):
        out[q.schedule(defer(tasks.identity, i)).id] = "ready"
    out[q.schedule(defer(tasks.identity, 9), delay=600).id] = "scheduled"
    leaf = defer(tasks.identity, 5)
    root = q.schedule(defer(tasks.add, leaf, 1))
    out[root.id] = "waiting"
    out[q.r.hget(q.keys.task(root.id), "in").decode()] = "ready"  # the leaf, its one input
    out[q.schedule(defer(tasks.identity, 7), priority=5).id] = "ready"
    return out


def test_each_unfinished_task_is_in_one_index_and_listed_once(url, r):
    q = Queue("unf", url=url)
    states = _mixed(q)
    waiting = [t for t, s in states.items() if s == "waiting"]
    assert [m.decode() for m in r.zrange(q.keys.todo, 0, -1)] == waiting  # ready ones: their entry only
    assert r.zcard(q.keys.delayed) == 1
    listed = [t.id for t in q.todo_tasks(nodes=True)]
    assert sorted(listed) == sorted(states)  # each once (the priority task's nudge entry is not a task)
    assert {t.id: t.state for t in q.todo_tasks(nodes=True)} == states
    assert len(q.todo_tasks()) == len(states) - 1  # the roots: the leaf is an inner node
    for state in ("waiting", "scheduled", "ready"):
        found, partial = status.list_tasks(r, "unf", state, limit=100)
        assert sorted(t.id for t in found) == sorted(t for t, s in states.items() if s == state)
        assert not partial
    assert [t.id for t in status.list_tasks(r, "unf", None, limit=3)[0]] == listed[:3]


def test_pages_of_the_dashboard_cover_every_unfinished_task_once(url, r):
    q = Queue("unf", url=url)
    states = _mixed(q)
    seen, start, pages = [], 0, 0
    while start is not None:
        page = data.list_page(r, data.Filter("unf", state="unfinished", start=start), size=2)
        seen += [t.id for t in page.tasks]
        start, pages = page.next_start, pages + 1
        assert pages <= 10
    assert sorted(seen) == sorted(states)
    page = data.list_page(r, data.Filter("unf", state="ready"), size=50)
    assert sorted(t.id for t in page.tasks) == sorted(t for t, s in states.items() if s == "ready")
    assert page.total == unfinished.size(r, q.keys, "ready") < unfinished.size(r, q.keys)


def test_cancel_and_clean_all_reach_tasks_that_are_only_on_the_stream(url, r):
    q = Queue("unf", url=url)
    states = _mixed(q)
    assert sorted(q.cancel(all=True)) == sorted(states)
    assert q.todo_tasks(nodes=True) == []
    assert q.counts()["failed"] == len(states) and r.zcard(q.keys.todo) == 0
    states = _mixed(q)
    assert q.clean(all=True) >= 2 * len(states)
    assert q.todo_tasks(nodes=True) == [] and r.xlen(q.keys.stream) == 0


def test_running_retried_and_requeued_tasks_stay_listed(url, r, tmp_path: Path):
    q = Queue("unf", url=url)
    flag = tmp_path / "go"
    gate = q.schedule(defer(tasks.wait_for_file, str(flag)))
    bad = q.schedule(defer(tasks.crash, "once"))
    with worker(url, "unf", 1):
        _until(lambda: q.get(gate).state == "running")
        assert [(t.id, t.state) for t in q.todo_tasks() if t.id == gate.id] == [(gate.id, "running")]
        found, _ = status.list_tasks(r, "unf", "running")
        assert [t.id for t in found] == [gate.id]
        flag.touch()
        _until(lambda: q.get(bad).state == "failed")
    assert q.get(gate).state == "done"
    assert q.todo_tasks() == []
    q.requeue_failed()
    assert [(t.id, t.state) for t in q.todo_tasks()] == [(bad.id, "ready")]
    assert r.zcard(q.keys.todo) == 0  # back on the stream, not in the zset as well
