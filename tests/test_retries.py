"""retries=N with backoff, for the exceptions the user lists."""
from __future__ import annotations

import pytest
import tasks
from procs import worker

from forrestq import ConfigError, Queue, defer


def test_retry_until_success_with_backoff(url, tmp_path):
    q = Queue("retry")
    ref = q.schedule(defer(tasks.flaky, str(tmp_path / "n"), 2), retries=3, retry_backoff=0.05,
                     retry_on=(OSError,))
    with worker(url, "retry", 1):
        task = q.wait(ref, timeout=60)
    assert task.state == "done" and task.returnvalue == 3
    assert (tmp_path / "n").read_text() == "3"


def test_retries_exhausted_and_other_exceptions_fail_at_once(url, tmp_path):
    q = Queue("retry2")
    exhausted = q.schedule(defer(tasks.flaky, str(tmp_path / "a"), 5), retries=2, retry_backoff=0.01,
                           retry_on=OSError)
    other = q.schedule(defer(tasks.flaky, str(tmp_path / "b"), 5, "KeyError"), retries=2,
                       retry_backoff=0.01, retry_on=OSError)
    with worker(url, "retry2", 2):
        got = {t.id: t for t in q.results(timeout=60)}
    assert got[exhausted.id].state == "failed" and "attempt 3" in got[exhausted.id].reason
    assert (tmp_path / "a").read_text() == "3"  # 1 run + 2 retries
    assert got[other.id].state == "failed" and (tmp_path / "b").read_text() == "1"


def test_bad_retry_options_fail_at_schedule(url, r):
    q = Queue("retry3")
    for kwargs in ({"retries": -1}, {"retries": 1, "retry_on": "OSError"}, {"retries": 1, "retry_backoff": -2}):
        with pytest.raises(ConfigError):
            q.schedule(defer(tasks.identity, 1), **kwargs)
    assert r.dbsize() == 0
