"""Crash forensics (issue 14): every record keeps its evidence, however the task ended: runtime,
CPU time, peak memory, the output up to its death, the pid, and for a time-limit kill or a crash
the Python stack at that moment. Real worker processes, real kills; every wait bounded."""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import tasks_forensics as tf
from helpers import wait_for
from procs import worker

from forrestq import ConfigError, Queue, TimeLimitExceeded, defer

FAST = ("--lease", "1")
MIB = 1 << 20


def test_a_hung_task_killed_for_its_timeout_keeps_its_output_and_its_stack(url: str) -> None:
    q = Queue("hung")
    ref = q.schedule(defer(tf.hung_fit), timeout=1)
    with worker(url, "hung", 1, *FAST):
        task = q.wait(ref, timeout=30)
    assert task.state == "failed"
    assert task.reason == "killed after 1 s (timeout of this task)"
    assert "fitting the model" in task.output
    line = next(i for i, text in enumerate(Path(tf.__file__).read_text().splitlines(), 1) if "must name" in text)
    assert f'tasks_forensics.py", line {line} in fit_model' in task.stack, task.stack
    assert "in hung_fit" in task.stack
    assert 1.0 <= task.runtime < 10 and task.cpu_time is not None and task.cpu_time < 0.5
    assert task.pid and task.peak_rss and task.peak_rss > 5 * MIB


def test_a_segfault_keeps_faulthandlers_traceback(url: str) -> None:
    q = Queue("segv")
    ref = q.schedule(defer(tf.segfault_in_solver))
    with worker(url, "segv", 1, *FAST):
        task = q.wait(ref, timeout=30)
    assert task.state == "failed" and task.reason.startswith("killed by signal 11 (SIGSEGV)")
    assert "Segmentation fault" in task.stack and "in segfault_in_solver" in task.stack, task.stack
    assert "solving" in task.output


def test_each_tasks_output_is_its_own_in_a_reused_child_and_at_its_death(url: str) -> None:
    """One child runs them all: each record holds what that task printed (a grandchild's lines too),
    never the task's before; a task killed for its timeout keeps its own output, not the earlier ones'."""
    q = Queue("own-output")
    with worker(url, "own-output", 1, *FAST):
        first = q.wait(q.schedule(defer(tf.say, "alpha output", True)), timeout=60)
        second = q.wait(q.schedule(defer(tf.say, "beta output")), timeout=60)
        quiet = q.wait(q.schedule(defer(tf.allocate, 1)), timeout=60)
        hung = q.wait(q.schedule(defer(tf.hung_fit), timeout=1), timeout=60)
    assert first.pid == second.pid == quiet.pid, "one child ran the first three"
    assert first.output == "alpha output\nalpha output (grandchild)\n", first.output
    assert second.output == "beta output\n", second.output
    assert quiet.output == "", quiet.output
    assert hung.state == "failed" and hung.output == "fitting the model\n", hung.output


def test_output_past_the_capture_files_reuse_size_still_reads_as_each_tasks_own(url: str) -> None:
    """A child's output file is emptied only once it holds over a MiB: a task that printed 2 MiB keeps
    the last 64 KiB of its own output, and the tasks after it theirs, exactly."""
    q = Queue("much-output")
    with worker(url, "much-output", 1, *FAST):
        small = q.wait(q.schedule(defer(tf.chatter, 3, "before")), timeout=60)
        big = q.wait(q.schedule(defer(tf.chatter, 20_000, "big")), timeout=60)
        after = [q.wait(q.schedule(defer(tf.chatter, 2, f"after{i}")), timeout=60) for i in range(2)]
    assert small.pid == big.pid == after[0].pid == after[1].pid, "one child ran them all"
    assert small.output.splitlines()[0].startswith("before 00000000 ") and len(small.output.splitlines()) == 3
    assert len(big.output.encode()) == 64 * 1024 and big.output.endswith(f"big {19_999:08d} " + "x" * 80 + "\n")
    for i, task in enumerate(after):
        assert [line.split()[:2] for line in task.output.splitlines()] == [[f"after{i}", "00000000"],
                                                                         [f"after{i}", "00000001"]]


def test_peak_memory_is_the_tasks_own_in_a_reused_child(url: str) -> None:
    """The second task of one child reports its own peak, not the bigger one of the task before."""
    q = Queue("peak")
    big = q.schedule(defer(tf.allocate, 600))
    with worker(url, "peak", 1, *FAST):
        first = q.wait(big, timeout=60)
        second = q.wait(q.schedule(defer(tf.allocate, 300)), timeout=60)
    assert first.pid == second.pid, "one child ran both"
    assert first.peak_rss is not None and second.peak_rss is not None
    assert abs(first.peak_rss - 600 * MIB) < 0.2 * 600 * MIB, first.peak_rss / MIB
    assert abs(second.peak_rss - 300 * MIB) < 0.2 * 300 * MIB, second.peak_rss / MIB


def test_cpu_time_counts_work_not_waiting(url: str) -> None:
    q = Queue("cpu")
    busy, idle = q.schedule_many([defer(tf.spin, 0.4), defer(tf.fit_model, 0.6)])
    with worker(url, "cpu", 1, *FAST):
        busy_t, idle_t = q.wait(busy, timeout=30), q.wait(idle, timeout=30)
    assert busy_t.cpu_time is not None and idle_t.cpu_time is not None
    assert 0.4 <= busy_t.cpu_time < 1.0 and idle_t.cpu_time < 0.1, (busy_t.cpu_time, idle_t.cpu_time)


def test_a_child_killed_for_its_time_limit_still_reports_its_cpu(url: str) -> None:
    q = Queue("cpukill")
    ref = q.schedule(defer(tf.spin, 60), timeout=1)
    with worker(url, "cpukill", 1, *FAST):
        task = q.wait(ref, timeout=30)
    assert task.state == "failed" and "timeout of this task" in task.reason
    assert task.cpu_time is not None and task.cpu_time > 0.02, task.cpu_time  # 0 if wait4's figure were lost
    assert "in spin" in task.stack


def test_processes_of_one_task_over_max_memory_are_killed_with_the_peak(url: str) -> None:
    q = Queue("mmtree")
    ref = q.schedule(defer(tf.greedy_helpers, 3, 100))
    with worker(url, "mmtree", 1, *FAST, "--max-memory", "200M"):
        task = q.wait(ref, timeout=60)
    assert task.state == "failed"
    assert task.reason.startswith("killed: over --max-memory 200 MiB (peak "), task.reason


def test_a_kill_from_outside_names_the_peak(url: str, tmp_path: Path) -> None:
    q = Queue("outside", max_attempts=1)
    pidfile = tmp_path / "pid"
    ref = q.schedule(defer(tf.hold_then_sleep, 120, str(pidfile)))
    with worker(url, "outside", 1, *FAST):
        pid = int(wait_for(lambda: pidfile.exists() and pidfile.read_text(), timeout=30, what="the task's pid"))
        os.kill(pid, signal.SIGKILL)
        task = q.wait(ref, timeout=30)
    assert task.state == "failed"
    assert task.reason.startswith("killed by signal 9 (SIGKILL) (")
    assert "peak 1" in task.reason and task.reason.endswith("attempt 1 of 1"), task.reason
    assert task.peak_rss is not None and task.peak_rss > 100 * MIB


def test_show_and_tasks_json_carry_the_evidence(url: str) -> None:
    from typer.testing import CliRunner

    from forrestq.cli import app
    q = Queue("showev")
    ref = q.schedule(defer(tf.hung_fit), timeout=1)
    with worker(url, "showev", 1, *FAST):
        q.wait(ref, timeout=30)
    runner = CliRunner()
    shown = runner.invoke(app, ["show", ref.id], env={"COLUMNS": "200"}, catch_exceptions=False)
    assert shown.exit_code == 0, shown.output
    assert "stack at death" in shown.output and "fit_model" in shown.output and "CPU" in shown.output
    listed = runner.invoke(app, ["tasks", "-q", "showev", "--json"], catch_exceptions=False)
    row = json.loads(listed.stdout)[0]
    assert row["peak_rss"] > 0 and row["cpu_time"] is not None and row["pid"] > 0


# --- soft time limits --------------------------------------------------------------------------
def test_a_soft_timeout_raises_in_the_task_so_its_finally_runs(url: str, tmp_path: Path) -> None:
    q = Queue("soft")
    marker = tmp_path / "marker"
    ref = q.schedule(defer(tf.fit_with_cleanup, str(marker)), soft_timeout=1, timeout=30)
    with worker(url, "soft", 1, *FAST):
        task = q.wait(ref, timeout=30)
    assert task.state == "failed" and task.reason == "TimeLimitExceeded: soft time limit of 1 s exceeded"
    assert marker.read_text() == "cleaned up"
    line = next(i for i, text in enumerate(Path(tf.__file__).read_text().splitlines(), 1) if "must name" in text)
    assert f'tasks_forensics.py", line {line}, in fit_model' in task.traceback, task.traceback
    assert isinstance(task.errorvalue, TimeLimitExceeded)
    assert not task.stack  # it ended by itself: no stack at death


def test_the_workers_soft_timeout_applies_to_tasks_without_their_own(url: str, tmp_path: Path) -> None:
    q = Queue("softw")
    marker = tmp_path / "marker"
    ref = q.schedule(defer(tf.fit_with_cleanup, str(marker)))
    quick = q.schedule(defer(tf.fit_model, 0.01))
    with worker(url, "softw", 1, *FAST, "--soft-timeout", "1"):
        task, ok = q.wait(ref, timeout=30), q.wait(quick, timeout=30)
    assert task.reason == "TimeLimitExceeded: soft time limit of 1 s exceeded" and marker.exists()
    assert ok.state == "done", "the timer of the task before does not fire in the next one"


def test_a_soft_timeout_not_below_the_timeout_is_refused_and_nothing_is_scheduled(url: str) -> None:
    q = Queue("softbad")
    with pytest.raises(ConfigError, match=r"soft_timeout \(5 s\) must be below timeout \(5 s\)"):
        q.schedule(defer(tf.fit_model, 1), soft_timeout=5, timeout=5)
    with pytest.raises(ConfigError, match="soft_timeout must be a positive number"):
        q.schedule(defer(tf.fit_model, 1), soft_timeout=-1)
    assert sum(q.counts().values()) == 0


def test_memory_shared_by_a_tasks_forks_counts_once_against_max_memory(url: str) -> None:
    """Ten forks sharing 60 MiB copy-on-write hold ~660 MiB of RSS summed, ~60 MiB really: not killed."""
    q = Queue("mmfork")
    ref = q.schedule(defer(tf.fork_and_hold, 10, 60, 1.5))
    with worker(url, "mmfork", 1, *FAST, "--max-memory", "200M"):
        task = q.wait(ref, timeout=60)
    assert task.state == "done" and task.returnvalue == "shared", task.reason


def test_a_soft_timeout_cancels_a_coroutine_sharing_the_loop(url: str, tmp_path: Path) -> None:
    from forrestq import io_bound
    q = Queue("softio")
    marker = tmp_path / "marker"
    ref = q.schedule(defer(io_bound(tf.slow_io), str(marker)), soft_timeout=1, timeout=30)
    with worker(url, "softio", 1, *FAST, "--async-concurrency", "4"):
        task = q.wait(ref, timeout=30)
    assert task.state == "failed" and task.reason == "TimeLimitExceeded: soft time limit of 1 s exceeded"
    assert marker.read_text() == "cleaned up" and "in slow_io" in task.traceback, task.traceback
