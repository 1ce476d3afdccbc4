"""Local workers without a second terminal (issue 13, item 4): ``procs=`` on map/starmap/submitting,
``with q.workers(N):`` keeping N workers warm across calls, and nothing left behind afterwards:
not after the block, not after an exception in it, not after Ctrl-C, not after a failed start.

Real server, real worker processes, real signals; processes are looked up in /proc."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest
import tasks
from helpers import free_port, wait_for
from procs import alive, child_pids, worker_env

from forrestq import ConfigError, Queue, WorkerStartError, defer
from forrestq.local import LocalWorkers


@pytest.fixture
def importable(monkeypatch: pytest.MonkeyPatch) -> None:
    """The workers import ``tasks`` (tests/) by name, as a user's workers import their module."""
    monkeypatch.setenv("PYTHONPATH", worker_env()["PYTHONPATH"])


def gone(pids: set[int]) -> bool:
    return not any(alive(p) for p in pids)


def ours() -> set[int]:
    """This test process's live children (the session's server among them)."""
    return {p for p in child_pids(os.getpid()) if alive(p)}


def test_a_workers_block_serves_every_call_with_the_same_processes(url, importable):
    q = Queue("warm")
    before = ours()
    with q.workers(2) as w:
        worker, kids = w.pid, set(w.child_pids())
        assert len(kids) == 2 and alive(worker)
        first = {pid for _, pid in q.map(tasks.whoami, [0.02] * 6, progress=False)}
        second = {pid for _, pid in q.starmap(tasks.whoami, [(0.02,)] * 6, progress=False)}
        third = {pid for _, pid in q.map(tasks.whoami, [0.02] * 4, progress=False, procs=2)}  # reuses
        with q.submitting(progress=False, procs=2) as sub:
            sub.submit(tasks.whoami, 0.02)
        q.schedule(defer(tasks.whoami, 0.02))
        ran = {t.returnvalue[1] for t in q.run(procs=2, timeout=60)}  # run(procs=) reuses them too
        assert first | second | third | {sub.results[0][1]} | ran <= kids
        assert ours() == before | {worker}  # map(procs=2) started no other worker
        assert set(w.child_pids()) == kids and w.pid == worker
    wait_for(lambda: gone(kids | {worker}), what="the worker and its children to exit")
    assert ours() == before


def test_an_exception_inside_the_block_stops_the_workers(url, importable):
    q = Queue("warm-error")
    with pytest.raises(ZeroDivisionError):
        with q.workers(2) as w:
            pids = {w.pid, *w.child_pids()}
            assert q.map(tasks.identity, [1, 2], progress=False) == [1, 2]
            1 / 0
    wait_for(lambda: gone(pids), what="the worker and its children to exit")


def test_map_with_procs_needs_no_other_worker_and_leaves_none(url, importable):
    q = Queue("own-procs")
    before = ours()
    got = q.map(tasks.whoami, [0.02] * 6, progress=False, procs=2)
    pids = {pid for _, pid in got}
    assert 1 <= len(pids) <= 2 and os.getpid() not in pids
    assert q.starmap(tasks.add, [(1, 2), (3, 4)], progress=False, procs=1) == [3, 7]
    with q.submitting(progress=False, procs=2) as sub:
        sub.submit(tasks.add, 5, 6)
    assert sub.results == [11]
    wait_for(lambda: gone(pids) and ours() == before, what="every local worker process to exit")


def test_procs_zero_runs_here_and_bad_procs_are_refused(url, importable):
    q = Queue("procs-zero")
    assert q.starmap(tasks.pid_of_worker_child, [()], progress=False, procs=0) == [os.getpid()]
    assert q.map(tasks.identity, [1, 2], progress=False, procs=0) == [1, 2]
    for bad in (-1, 1.5, True, "2"):
        with pytest.raises(ConfigError, match="procs"):
            q.map(tasks.identity, [1], progress=False, procs=bad)
        with pytest.raises(ConfigError, match="procs"):
            q.workers(bad)


def test_a_worker_that_cannot_start_raises_one_clear_error_at_once(url, importable):
    q = Queue("no-start")
    before = ours()
    with pytest.raises(WorkerStartError, match="max-memory"):
        with q.workers(2, max_memory="1M"):
            pass
    q.schedule(defer(tasks.identity, 1))  # run() with nothing to follow starts nothing
    with pytest.raises(WorkerStartError, match="lease"):
        list(q.run(procs=1, lease=-1, timeout=30))
    with pytest.raises(ConfigError, match="unknown worker option 'bogus'"):
        q.workers(1, bogus=1)
    with pytest.raises(WorkerStartError, match="could not start"):
        LocalWorkers(f"redis://127.0.0.1:{free_port()}/0", "no-start", 1).start(timeout=30)
    wait_for(lambda: ours() == before, what="the failed workers to be gone")


SCRIPT = """
import sys, time
sys.path[:0] = {paths!r}
import tasks
from forrestq import Queue

q = Queue("interrupted")
with q.workers(2) as w:
    open({pidfile!r}, "w").write(" ".join(str(p) for p in [w.pid, *w.child_pids()]))
    q.map(tasks.sleep_then, [60] * 4, progress=False)
"""


def test_ctrl_c_in_a_script_with_a_workers_block_leaves_no_process(url, tmp_path):
    pidfile = tmp_path / "pids"
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(SCRIPT.format(paths=worker_env()["PYTHONPATH"].split(os.pathsep),
                                                    pidfile=str(pidfile))))
    proc = subprocess.Popen([sys.executable, str(script)], env=worker_env(), cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: pidfile.exists() and pidfile.read_text(), timeout=60, what="the workers to start")
        pids = {int(p) for p in pidfile.read_text().split()}
        q = Queue("interrupted")
        wait_for(lambda: q.counts().get("running", 0) >= 2, timeout=60, what="two tasks to run")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert b"KeyboardInterrupt" in err
    wait_for(lambda: gone(pids), what="the worker and its children to exit")
    assert not [p for p in pids if alive(p)]
