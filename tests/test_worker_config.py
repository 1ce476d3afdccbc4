"""Worker options that would make every child fail are refused at start-up: one line on stderr,
exit code 2, no child started."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import tasks
from procs import worker_env

from forrestq import Queue, defer
from forrestq.cli import EXIT_USAGE
from forrestq.errors import ConfigError
from forrestq.worker import WorkerConfig
from forrestq.worker.supervisor import MAX_PROCS, check_start


def start_worker(url: str, *args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    """``python -m forrestq worker --url URL ARGS`` to its end (a worker that starts runs until the timeout)."""
    return subprocess.run([sys.executable, "-m", "forrestq", "worker", "--procs", "1", "--url", url, *args],
                          env=worker_env(), capture_output=True, text=True, timeout=timeout)


def refused(out: subprocess.CompletedProcess[str], option: str) -> str:
    lines = out.stderr.strip().splitlines()
    assert out.returncode == EXIT_USAGE, (out.returncode, out.stderr)
    assert len(lines) == 1 and option in lines[0], out.stderr
    return lines[0]


def test_an_unwritable_logfile_is_refused_before_any_child_runs(url: str, tmp_path: Path) -> None:
    q = Queue("lf2")
    marker = tmp_path / "ran"
    ref = q.schedule(defer(tasks.record, str(marker), 1))
    line = refused(start_worker(url, "--queue", "lf2", "--logfile", "/nonexistent/dir/x.log"), "--logfile")
    assert line == "forrestq: cannot write --logfile /nonexistent/dir/x.log: No such file or directory"
    assert not marker.exists()
    task = q.get(ref)
    assert task.state == "ready" and task.attempts == 0


def test_a_logfile_that_is_a_directory_is_refused(url: str, tmp_path: Path) -> None:
    line = refused(start_worker(url, "--queue", "lf3", "--logfile", str(tmp_path)), "--logfile")
    assert line.endswith(": Is a directory")


def test_a_max_memory_no_child_fits_in_is_refused(url: str, tmp_path: Path) -> None:
    q = Queue("mm")
    marker = tmp_path / "ran"
    ref = q.schedule(defer(tasks.record, str(marker), 1))
    line = refused(start_worker(url, "--queue", "mm", "--max-memory", "10M"), "--max-memory")
    assert line.startswith("forrestq: --max-memory 10 MiB is too small: a worker child needs about ")
    assert line.endswith(" MiB of address space before it runs a task")
    assert not marker.exists() and q.get(ref).state == "ready"


def test_a_logfile_in_an_existing_directory_is_created_and_kept(tmp_path: Path) -> None:
    log = tmp_path / "w.log"
    check_start(WorkerConfig(logfile=str(log), max_memory=0))
    assert log.exists() and log.read_text() == ""
    log.write_text("earlier\n")
    check_start(WorkerConfig(logfile=str(log)))
    assert log.read_text() == "earlier\n"  # appended to, never truncated


def test_repeated_queues_are_served_once_in_order() -> None:
    assert WorkerConfig(queues=["a", "b", "a", "c", "b"]).queues == ["a", "b", "c"]


def test_procs_beyond_the_limit_are_refused() -> None:
    with pytest.raises(ConfigError, match=f"--procs must be at most {MAX_PROCS}, not 100000"):
        WorkerConfig(procs=100000)
    assert WorkerConfig(procs=MAX_PROCS).procs == MAX_PROCS
