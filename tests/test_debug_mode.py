"""Debug mode: tasks run in the calling process, in order, so pdb post-mortem and breakpoints work
(JobRunner's ``n_workers=1`` single mode; runforrest's "evaluate() as a local test-run helper")."""
from __future__ import annotations

import io
import os
import pdb

import pytest

from forrestq import Queue, UpstreamFailed, debug, defer


def whoami(i):
    return i, os.getpid()


def crash_here(x):
    secret = x * 2  # noqa: F841 - read back through pdb post-mortem
    raise ValueError(f"bad {x}")


def interrupted():
    raise KeyboardInterrupt


def _frames(tb):
    while tb is not None:
        yield tb.tb_frame
        tb = tb.tb_next


def test_run_inline_in_order_in_this_process(url):
    q = Queue("dbg-order")
    refs = q.schedule_many([defer(whoami, i) for i in range(10)])
    got = list(debug.run_inline(q.core))
    assert [t.id for t in got] == [r.id for r in refs]  # in order
    assert [t.returnvalue for t in got] == [(i, os.getpid()) for i in range(10)]  # no child process
    assert q.counts() == {"waiting": 0, "scheduled": 0, "ready": 0, "running": 0, "done": 10, "failed": 0}
    assert all(t.host for t in got) and all(t.runtime is not None for t in got)


def test_failed_task_is_ready_for_pdb_post_mortem(url):
    q = Queue("dbg-pm")
    q.schedule(defer(crash_here, 21))
    q.schedule(defer(whoami, 1))
    bad, good = list(debug.run_inline(q.core))
    assert good.returnvalue == (1, os.getpid())
    exc = bad.errorvalue
    assert type(exc) is ValueError and exc.args == ("bad 21",)
    frame = [f for f in _frames(exc.__traceback__) if f.f_code is crash_here.__code__]
    assert frame and frame[0].f_locals["secret"] == 42  # the live frame of the task, here
    out = io.StringIO()
    debugger = pdb.Pdb(stdin=io.StringIO("p secret\np os.getpid()\nq\n"), stdout=out)
    debugger.use_rawinput = False
    debugger.reset()
    debugger.interaction(None, exc.__traceback__)
    assert "42" in out.getvalue() and str(os.getpid()) in out.getvalue()
    # the record in Redis is an ordinary failure, same as from a worker
    rec = q.get(bad.id)
    assert rec.state == "failed" and "crash_here" in rec.traceback and rec.reason == "ValueError: bad 21"


def test_upstream_failure_carries_the_live_cause(url):
    q = Queue("dbg-tree")
    ref = q.schedule(defer(whoami, defer(crash_here, 1)))
    (task,) = list(debug.run_inline(q.core))
    assert task.id == ref.id and isinstance(task.errorvalue, UpstreamFailed)
    assert isinstance(task.errorvalue.__cause__, ValueError)
    assert task.errorvalue.__cause__.__traceback__ is not None


def test_ctrl_c_in_a_task_hands_it_back(url):
    q = Queue("dbg-int")
    q.schedule(defer(interrupted))
    with pytest.raises(KeyboardInterrupt):
        list(debug.run_inline(q.core))
    assert q.counts()["ready"] == 1 and q.counts()["running"] == 0


def test_map_in_local_mode_raises_the_live_exception(url):
    q = Queue("dbg-map", local=True)
    assert q.map(whoami, range(5), progress=False) == [(i, os.getpid()) for i in range(5)]
    with pytest.raises(ValueError) as info:
        q.map(crash_here, [3], progress=False)
    names = [f.f_code.co_name for f in _frames(info.value.__traceback__)]
    assert names[-1] == "crash_here"  # pdb.pm() / %debug lands in the task's frame


def test_local_queue_results(url):
    q = Queue("dbg-local", local=True)
    q.schedule_many([defer(whoami, i) for i in range(3)])
    assert [t.returnvalue for t in q.results()] == [(i, os.getpid()) for i in range(3)]


def test_run_procs_zero(url):
    q = Queue("dbg-run0")
    q.schedule_many([defer(whoami, i) for i in range(3)])
    got = [t.returnvalue for t in q.run(procs=0)]
    assert got == [(i, os.getpid()) for i in range(3)]
