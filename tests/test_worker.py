"""The worker and its children: time and memory limits, crashes, output, child replacement, leases,
fencing and stopping, what its log says when it loses a task, and its import path. Real server, real
worker processes, real signals; every wait bounded."""
from __future__ import annotations

import importlib
import operator
import os
import pickle
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import tasks
from helpers import wait_for
from procs import alive, spawn_worker, stop, worker, worker_env

from forrestq import Queue, defer, ops
from forrestq.schema import QueueKeys

FAST = ("--lease", "1")  # heartbeats every 1/3 s, sweeps every 1/3 s


def read_pids(path: Path, timeout: float = 20) -> list[int]:
    text = wait_for(lambda: path.exists() and path.read_text().strip(), timeout=timeout,
                    what=f"pids in {path.name}")
    return [int(p) for p in text.split()]


def all_gone(pids: list[int]) -> bool:
    return not any(alive(p) for p in pids)


def running(q: Queue, ref) -> bool:
    return q.get(ref).state == "running"


# --- the child process --------------------------------------------------------------------------
def test_task_timeout_kills_grandchildren_even_in_their_own_session(url, tmp_path):
    q = Queue("timeout")
    pidfile = tmp_path / "pids"
    hang = q.schedule(defer(tasks.start_sleepers, str(pidfile), 2, True), timeout=1)
    with worker(url, "timeout", 1, *FAST) as proc:
        sleepers = read_pids(pidfile)
        assert all(alive(p) for p in sleepers)
        task = q.wait(hang, timeout=20)
        assert task.state == "failed" and task.reason == "killed after 1 s (timeout of this task)"
        wait_for(lambda: all_gone(sleepers), timeout=5, what="the grandchildren to be killed")
        after = q.schedule(defer(tasks.identity, "next"))
        assert q.wait(after, timeout=20).returnvalue == "next"
        assert proc.poll() is None


def test_max_memory_fails_the_task_with_memory_error_and_the_worker_lives_on(url):
    q = Queue("mem")
    before = q.schedule(defer(tasks.pid_of_worker_child))
    with worker(url, "mem", 1, *FAST, "--max-memory", "200M") as proc:
        first = q.wait(before, timeout=20).returnvalue
        bomb = q.wait(q.schedule(defer(tasks.memory_bomb, 4096)), timeout=30)
        assert bomb.state == "failed" and bomb.reason.startswith("MemoryError"), bomb.reason
        assert isinstance(bomb.errorvalue, MemoryError)
        again = q.wait(q.schedule(defer(tasks.pid_of_worker_child)), timeout=20)
        assert again.state == "done" and again.returnvalue != first  # a fresh child after MemoryError
        assert proc.poll() is None


def test_a_fork_that_returns_from_the_task_does_not_act_as_a_child(url, tmp_path):
    q = Queue("forkret")
    pidfile = tmp_path / "fork"
    ref = q.schedule(defer(tasks.fork_and_return, str(pidfile)))
    with worker(url, "forkret", 1, *FAST):
        task = q.wait(ref, timeout=20)
        assert task.state == "done" and task.returnvalue == "from the parent"
        (forked,) = read_pids(pidfile)
        wait_for(lambda: not alive(forked), timeout=5, what="the fork to be gone")
        refs = q.schedule_many(defer(tasks.identity, i) for i in range(5))
        assert [q.wait(r, timeout=20).returnvalue for r in refs] == list(range(5))
    assert q.counts()["done"] == 6 and q.get(ref).attempts == 1


def test_processes_left_behind_by_a_finished_task_are_killed(url, tmp_path):
    q = Queue("leftover")
    pidfile = tmp_path / "pids"
    ref = q.schedule(defer(tasks.start_sleepers, str(pidfile), 2, False, False))
    with worker(url, "leftover", 1, *FAST):
        task = q.wait(ref, timeout=20)
        assert task.state == "done"
        wait_for(lambda: all_gone(task.returnvalue), timeout=5, what="the left-behind sleepers to go")
        assert q.wait(q.schedule(defer(tasks.identity, 1)), timeout=20).returnvalue == 1


def test_logfile_appends_all_output_tagged_with_task_ids(url, tmp_path):
    log = tmp_path / "tasks.log"
    log.write_text("an earlier line\n")
    q = Queue("logs")
    refs = [q.schedule(defer(tasks.talk, f"t{i}", 3)) for i in range(3)]
    with worker(url, "logs", 2, "--logfile", str(log)):
        got = [q.wait(r, timeout=20) for r in refs]
    lines = log.read_text().splitlines()
    assert lines[0] == "an earlier line"
    for ref, task in zip(refs, got):
        tag = task.returnvalue
        assert task.output == "".join(f"{tag} line {i}\n" for i in range(3))
        assert [line for line in lines if f" {tag} " in line] == \
            [f"[{ref.id}] {tag} line {i}" for i in range(3)]


def test_max_tasks_per_child_replaces_children(url):
    q = Queue("maxtasks")
    refs = q.schedule_many(defer(tasks.pid_of_worker_child) for _ in range(6))
    with worker(url, "maxtasks", 1, "--max-tasks-per-child", "2"):
        pids = [q.wait(r, timeout=20).returnvalue for r in refs]
    assert len(set(pids)) == 3 and all(pids.count(p) == 2 for p in pids)


def test_max_child_rss_replaces_a_child_that_grew(url):
    q = Queue("rss")
    with worker(url, "rss", 1, "--max-child-rss", "150M"):
        small = [q.wait(q.schedule(defer(tasks.hog, 1)), timeout=20).returnvalue for _ in range(2)]
        assert small[0] == small[1]  # under the limit: the same child
        big = [q.wait(q.schedule(defer(tasks.hog, 200)), timeout=20).returnvalue for _ in range(3)]
        assert big[0] == small[0] and len(set(big)) == 3  # each grew past it: replaced after its task


def test_a_crashing_task_never_affects_another(url):
    q = Queue("neighbours")
    trees = []
    for i in range(12):
        trees.append(defer(tasks.add, i, 100))
        trees.append(defer([tasks.segfault, tasks.exit_now, tasks.crash][i % 3]))
    refs = q.schedule_many(trees)
    with worker(url, "neighbours", 2, *FAST):
        got = [q.wait(r, timeout=30) for r in refs]
    assert [t.returnvalue for t in got[0::2]] == [i + 100 for i in range(12)]
    assert all(t.state == "failed" for t in got[1::2])
    assert all(t.attempts == 1 for t in got)


def test_a_child_killed_from_outside_is_retried_then_fails_naming_the_signal(url, tmp_path):
    q = Queue("outside", max_attempts=2)
    ref = q.schedule(defer(tasks.kill_myself))  # SIGKILL, as the OOM killer would
    pidfile = tmp_path / "pid"
    victim = q.schedule(defer(tasks.note_pid, str(pidfile), 1.0))
    with worker(url, "outside", 2, *FAST) as proc:
        task = q.wait(ref, timeout=20)
        assert task.state == "failed" and task.attempts == 2
        assert task.reason.startswith("killed by signal 9 (SIGKILL) (not by this worker: out of memory, or an "
                                      "operator? peak ") and task.reason.endswith(" MiB); attempt 2 of 2"), task.reason
        # an operator's SIGKILL of a child: the task goes back (attempt counted) and runs again
        (pid,) = read_pids(pidfile)
        pidfile.unlink()
        os.kill(pid, signal.SIGKILL)
        task = q.wait(victim, timeout=20)
        assert task.state == "done" and task.attempts == 2 and task.returnvalue != pid
        assert proc.poll() is None


# --- leases and recovery ------------------------------------------------------------------------
def test_fencing_refuses_a_stale_attempt(url, r):
    q = Queue("fence")
    ref = q.schedule(defer(tasks.identity, 1))
    k, s = QueueKeys("fence"), ops.Scripts(r)

    def claim(token: str) -> ops.Claimed:
        got = ops.claim(s, k, ops.ClaimArgs("c", token, 60000, "h", "w"))
        assert isinstance(got, ops.Claimed)
        return got

    def complete(token: str, value: bytes) -> bool:
        return ops.complete(s, k, ops.Completion(ref.id, token, "done", result=value, runtime=0.1, host="h"))

    first = claim("T1")
    assert first.id == ref.id
    r.delete(k.lease(ref.id))  # the lease expires: the first attempt's worker is cut off
    assert ops.reclaim(s, k, ops.ReclaimArgs([first.sid])).gave_up == []
    assert claim("T2").id == ref.id
    assert complete("T1", pickle.dumps("stale")) is False
    assert complete("T2", pickle.dumps("fresh")) is True
    assert complete("T1", pickle.dumps("stale")) is False
    task = q.get(ref)
    assert task.state == "done" and task.returnvalue == "fresh" and task.attempts == 2
    assert r.hget(k.task(ref.id), "tok") == b"T2"


def test_sigkilled_worker_loses_its_task_to_another_and_attempts_are_counted(url, tmp_path):
    q = Queue("reclaim", max_attempts=2)
    ref = q.schedule(defer(tasks.whoami, 30))
    hosts = iter(["hostA", "hostB"])

    def run_and_kill() -> None:
        proc = spawn_worker(url, "reclaim", 1, *FAST, env={"FORRESTQ_HOST": next(hosts)})
        try:
            wait_for(lambda: running(q, ref) and q.get(ref).attempts == attempts + 1, timeout=20,
                     what="the task to start")
        finally:
            os.killpg(proc.pid, signal.SIGKILL)  # the worker (its children die with it)
            proc.wait(5)

    for attempts in range(2):  # noqa: B007 - run_and_kill reads it
        run_and_kill()
    assert q.get(ref).state == "running"  # nobody knows yet
    with worker(url, "reclaim", 1, *FAST, env={"FORRESTQ_HOST": "hostC"}):
        task = q.wait(ref, timeout=20)
    assert task.state == "failed" and task.attempts == 2
    assert task.reason == "lost 2 times; last on host hostB"


def test_a_lost_task_runs_again_elsewhere(url, tmp_path):
    q = Queue("again")
    ref = q.schedule(defer(tasks.whoami, 1.5))
    proc = spawn_worker(url, "again", 1, *FAST, env={"FORRESTQ_HOST": "hostA"})
    try:
        wait_for(lambda: running(q, ref), timeout=20, what="the task to start")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)
    t0 = time.monotonic()
    with worker(url, "again", 1, *FAST, env={"FORRESTQ_HOST": "hostB"}):
        task = q.wait(ref, timeout=20)
    assert task.state == "done" and task.attempts == 2 and task.host == "hostB"
    assert task.returnvalue[0] == "hostB" and task.lost_on == "hostA"
    assert time.monotonic() - t0 < 10


def test_sigterm_lets_a_running_task_finish_and_stops_claiming(url, tmp_path):
    q = Queue("term")
    ref = q.schedule(defer(tasks.sleep_then, 1.0, "finished"))
    with worker(url, "term", 1, *FAST, "--grace", "20") as proc:
        wait_for(lambda: running(q, ref), timeout=20, what="the task to start")
        queued = q.schedule(defer(tasks.identity, "later"))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    assert q.get(ref).state == "done" and q.get(ref).returnvalue == "finished"
    assert q.get(queued).state == "ready" and q.get(queued).attempts == 0


def test_sigterm_past_the_grace_kills_and_hands_back_at_once(url, r, tmp_path):
    q = Queue("grace")
    pidfile = tmp_path / "pids"
    ref = q.schedule(defer(tasks.start_sleepers, str(pidfile), 1))
    with worker(url, "grace", 1, "--lease", "60", "--grace", "1") as proc:
        sleepers = read_pids(pidfile)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        took = time.monotonic() - t0
    assert 0.9 < took < 5
    task = q.get(ref)
    assert task.state == "ready" and task.attempts == 0  # the attempt is not counted
    assert r.exists(QueueKeys("grace").lease(ref.id)) == 0  # no waiting for a 60 s lease
    assert all_gone(sleepers)
    with worker(url, "grace", 1, *FAST, "--grace", "0"):  # and another worker takes it at once
        wait_for(lambda: running(q, ref), timeout=20, what="the task to run again")


def test_second_sigint_stops_at_once(url, tmp_path):
    q = Queue("int")
    ref = q.schedule(defer(tasks.sleep_then, 60))
    with worker(url, "int", 1, "--grace", "60") as proc:
        wait_for(lambda: running(q, ref), timeout=20, what="the task to start")
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        with pytest.raises(subprocess.TimeoutExpired):  # the first one only starts the grace
            proc.wait(0.5)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0
        assert time.monotonic() - t0 < 5
    assert q.get(ref).state == "ready" and q.get(ref).attempts == 0


def test_worker_rides_out_a_redis_restart_while_a_child_dies(url, tmp_path):
    """A failure the worker must record (a segfault) waits in its outbox while Redis is away; a
    completion waits in its child; leases that expired meanwhile are set again."""
    from forrestq.server import ServerProcess

    srv = ServerProcess(tmp_path / "srv", appendfsync="always").start()
    log = tmp_path / "worker.log"
    try:
        q = Queue("outbox", url=srv.url)
        gate = tmp_path / "gate"
        ok = q.schedule(defer(tasks.wait_for_file, str(gate), 60))
        crash = q.schedule(defer(tasks.segfault_after, str(gate), 60))
        with worker(srv.url, "outbox", 2, *FAST, log=log) as proc:
            wait_for(lambda: running(q, ok) and running(q, crash), timeout=20, what="both tasks to start")
            srv.kill()
            gate.touch()  # both end while Redis is down
            time.sleep(2)
            srv.start()
            assert q.wait(ok, timeout=30).state == "done"
            task = q.wait(crash, timeout=30)
            assert task.state == "failed" and "SIGSEGV" in task.reason
            assert proc.poll() is None
        assert q.get(ok).attempts == 1 and q.get(crash).attempts == 1
    finally:
        srv.stop()
    text = log.read_text()
    assert "Redis is back" in text and f"failed outbox {crash.id} killed by signal 11" in text


def test_results_keeps_reading_through_a_redis_restart(url, tmp_path):
    """Even with a client that does not retry by itself: results() waits for Redis to come back."""
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    from forrestq.connection import connect
    from forrestq.server import ServerProcess

    srv = ServerProcess(tmp_path / "srv", appendfsync="always").start()
    try:
        q = Queue("outage", url=srv.url)
        q.core.r = connect(srv.url, retry=Retry(NoBackoff(), 0))  # results() reads through q.core.r
        gate = tmp_path / "gate"
        first = q.schedule(defer(tasks.identity, 0))
        second = q.schedule(defer(tasks.wait_for_file, str(gate), 60))
        with worker(srv.url, "outage", 1, *FAST):
            it = q.results(timeout=30)
            assert next(it).id == first.id

            def outage() -> None:
                srv.kill()
                time.sleep(2)
                srv.start()
                gate.touch()

            import threading

            t = threading.Thread(target=outage)
            t.start()
            try:
                task = next(it)
            finally:
                t.join(30)
            assert task.id == second.id and task.state == "done"
            assert list(it) == []
    finally:
        srv.stop()


def test_heartbeat_racing_a_completion_never_kills_the_child(url, tmp_path):
    """A heartbeat that lands between a task's recorded end and its slot's update must not take the
    task for lost (that killed the child mid-drain and stalled a claimed task for a whole lease)."""
    log = tmp_path / "worker.log"
    q = Queue("race")
    q.schedule_many(defer(tasks.identity, i) for i in range(3000))
    with worker(url, "race", 2, "--lease", "0.3", log=log):
        got = list(q.results(timeout=120))
    assert len(got) == 3000 and all(t.state == "done" for t in got)
    assert "killing this attempt" not in log.read_text()
    assert max(t.attempts for t in got) == 1


# --- what the worker says (issue 12) ------------------------------------------------------------------
def test_lease_lost_to_a_cancel_says_it_was_cancelled(url, tmp_path):
    log = tmp_path / "worker.log"
    q = Queue("cancel-log")
    ref = q.schedule(defer(tasks.wait_for_file, str(tmp_path / "never"), 60))
    with worker(url, "cancel-log", 1, *FAST, log=log):
        wait_for(lambda: running(q, ref), timeout=20, what="the task to start")
        assert q.cancel([ref]) == [ref.id]
        wait_for(lambda: "killing this attempt" in log.read_text(), timeout=20, what="the worker to notice")
    text = log.read_text()
    assert f"lease lost cancel-log {ref.id}: the task was cancelled; killing this attempt" in text
    assert "another attempt" not in text and "taken over" not in text
    assert q.get(ref).reason == "cancelled"


def test_lease_lost_to_a_flushall_says_the_record_is_gone(url, r, tmp_path):
    log = tmp_path / "worker.log"
    q = Queue("flush-log")
    pidfile = tmp_path / "pid"
    ref = q.schedule(defer(tasks.note_pid, str(pidfile), 60))
    with worker(url, "flush-log", 1, *FAST, log=log):
        # its code runs (not only claimed: a FLUSHALL before the child loaded the function would fail
        # the task as a missing payload instead)
        read_pids(pidfile)
        r.flushall()
        try:
            wait_for(lambda: "killing this attempt" in log.read_text(), timeout=20, what="the worker to notice")
        except AssertionError as e:
            raise AssertionError(f"{e}; the worker's log:\n{log.read_text()}") from None
        after = q.schedule(defer(tasks.identity, "after"))  # and it goes on serving the queue
        assert q.wait(after, timeout=20).returnvalue == "after"
    text = log.read_text()
    assert f"lease lost flush-log {ref.id}: the task record is gone (deleted by a clean, or the server lost " \
           "its data); killing this attempt" in text
    assert "another attempt" not in text and "NOGROUP" not in text


def test_a_result_refused_for_a_deleted_record_says_so(url, r, tmp_path):
    log = tmp_path / "worker.log"
    gate = tmp_path / "gate"
    q, k = Queue("gone-log"), QueueKeys("gone-log")
    ref = q.schedule(defer(tasks.wait_for_file, str(gate), 60))
    with worker(url, "gone-log", 1, *FAST, log=log):
        wait_for(lambda: running(q, ref), timeout=20, what="the task to start")
        r.delete(k.task(ref.id))  # the record goes, its lease stays: the result is what gets refused
        gate.touch()
        wait_for(lambda: "refused" in log.read_text(), timeout=20, what="the result to be refused")
    assert f"result of task {ref.id} refused: this attempt no longer holds it: the task record is gone" \
        in log.read_text()
    assert "another attempt" not in log.read_text()


def test_clean_all_while_workers_run_recreates_the_group_quietly(url, r, tmp_path):
    log = tmp_path / "worker.log"
    q, k = Queue("regroup"), QueueKeys("regroup")
    with worker(url, "regroup", 2, *FAST, log=log):
        assert q.wait(q.schedule(defer(tasks.identity, 1)), timeout=20).state == "done"
        wait_for(lambda: len(r.xinfo_consumers(k.stream, "workers")) == 2, timeout=20,
                 what="both children to read the stream")
        assert q.clean(all=True) == 1  # deletes the stream, and its consumer group with it
        # nothing here makes the stream again: the worker does, once its children meet NOGROUP
        wait_for(lambda: r.exists(k.stream) and len(r.xinfo_consumers(k.stream, "workers")) == 2, timeout=20,
                 what="both children to read the stream again")
        assert q.wait(q.schedule(defer(tasks.identity, 2)), timeout=20).returnvalue == 2
    text = log.read_text()
    assert "NOGROUP" not in text and "retrying" not in text and "gone" not in text, text


def test_q_run_prints_nothing_of_the_worker_on_stderr(url, capfd):
    """q.run() starts `forrestq worker --quiet`: no startup line, no task lines, no stopping line."""
    q = Queue("quiet-run")
    q.schedule_many(defer(operator.add, i, 1) for i in range(3))
    got = sorted(t.returnvalue for t in q.run(procs=1, timeout=60))
    assert got == [1, 2, 3]
    out, err = capfd.readouterr()
    assert "stopping" not in err and "Ctrl-C" not in err and "forrestq." not in err, err
    assert out == ""


# --- the import path (issue 12) ------------------------------------------------------------------------
def task_module(where: Path, monkeypatch: pytest.MonkeyPatch):
    """A module in ``where`` (a fresh name), imported here (its functions travel by reference)."""
    name = f"fq_cwd_mod_{uuid.uuid4().hex[:8]}"
    where.mkdir(parents=True, exist_ok=True)
    (where / f"{name}.py").write_text("import os\n\ndef where():\n    return os.getcwd()\n")
    monkeypatch.syspath_prepend(str(where))
    return importlib.import_module(name)


def test_the_console_script_worker_imports_task_modules_from_its_working_directory(url, tmp_path, monkeypatch):
    project = tmp_path / "project"
    mod = task_module(project, monkeypatch)
    q = Queue("cwd")
    ref = q.schedule(defer(mod.where))
    script = Path(sys.executable).parent / "forrestq"  # the console script, not `python -m forrestq`
    proc = subprocess.Popen([str(script), "worker", "--procs", "1", "--queue", "cwd", "--url", url, *FAST],
                            cwd=project, env=worker_env(), start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        task = q.wait(ref, timeout=30)
    finally:
        stop(proc)
    assert task.state == "done" and task.returnvalue == str(project), task.reason


def test_worker_config_paths_are_on_the_childrens_import_path(url, tmp_path, monkeypatch):
    mod = task_module(tmp_path / "lib", monkeypatch)
    q = Queue("paths")
    ref = q.schedule(defer(mod.where))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code = ("import sys; from forrestq.worker import Worker, WorkerConfig; "
            f"sys.exit(Worker(WorkerConfig(url={url!r}, queues=['paths'], procs=1, lease=1, "
            f"paths=[{str(tmp_path / 'lib')!r}])).run())")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=elsewhere, env=worker_env(), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        task = q.wait(ref, timeout=30)
    finally:
        stop(proc)
    assert task.state == "done" and task.returnvalue == str(elsewhere), task.reason
