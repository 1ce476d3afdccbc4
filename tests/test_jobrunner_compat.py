"""ecogdata JobRunner's habits on forrestq: ``q.map``/``q.starmap``/``q.submitting``, rewritten from the
JobRunner demo notebook and test suite, plus regressions for its traps (hang on empty input, the
batch run even when the submitting body raised, only the first error re-raised)."""
from __future__ import annotations

import functools
import io
import os
import random
import string
import time

import numpy as np
import pytest
from procs import worker
from rich.console import Console
from rich.progress import Progress, track

from forrestq import Queue

# --- task functions (importable by the workers: tests/ is on their PYTHONPATH) ------------------


def hates_eights(n):
    if n == 8:
        raise ValueError("n == 8, what did you think would happen?!")
    return n


def logged_hates_eights(path, n):
    with open(path, "a") as f:
        f.write(f"{n}\n")
    return hates_eights(n)


def picky(n):
    """Fails at 3 (late) and at 8 (early): the first failure in INPUT order is 3's."""
    if n == 3:
        time.sleep(0.5)
        raise ValueError("three")
    if n == 8:
        raise KeyError("eight")
    return n


def jittery_identity(n):
    time.sleep(random.random() * 0.02)
    return n


def reverse3(a, b, c):
    return c, b, a


def slow_unless_zero(n):
    if n == 0:
        raise ValueError("zero")
    time.sleep(20)
    return n


def lines(path):
    return open(path).read().split() if os.path.exists(path) else []


# --- results in order, exceptions ---------------------------------------------------------------


def test_hates_eights_return_exceptions(url):
    q = Queue("jr-return")
    with worker(url, "jr-return", 2):
        results = q.map(hates_eights, range(10), return_exceptions=True, progress=False, timeout=60)
    assert len(results) == 10
    err = results[8]
    assert type(err) is ValueError and err.args == ("n == 8, what did you think would happen?!",)
    assert "remote traceback" in "".join(err.__notes__) and "hates_eights" in err.remote_traceback
    assert [r for i, r in enumerate(results) if i != 8] == [i for i in range(10) if i != 8]
    with pytest.raises(ValueError, match="what did you think"):  # re-raisable as it is
        raise err


def test_hates_eights_reraises_original_type_after_all_ran(url, tmp_path):
    log = tmp_path / "ran"
    q = Queue("jr-reraise")
    with worker(url, "jr-reraise", 2):
        with pytest.raises(ValueError) as info:
            q.map(functools.partial(logged_hates_eights, str(log)), range(10), progress=False, timeout=60)
    assert type(info.value) is ValueError  # the original type, not a wrapper
    assert any("logged_hates_eights" in n and "Traceback" in n for n in info.value.__notes__)
    assert sorted(map(int, lines(log))) == list(range(10))  # every other input ran before the raise
    assert q.counts()["done"] == 9 and q.counts()["failed"] == 1


def test_first_failure_in_input_order_is_raised(url):
    q = Queue("jr-order")
    with worker(url, "jr-order", 2):
        with pytest.raises(ValueError, match="three"):  # 8's KeyError finishes first, 3 comes first
            q.map(picky, range(10), progress=False, timeout=60)
        results = q.map(picky, range(10), return_exceptions=True, progress=False, timeout=60)
    assert isinstance(results[3], ValueError) and isinstance(results[8], KeyError)


def test_fail_fast_raises_at_once_and_cancels_the_rest(url):
    q = Queue("jr-fast")
    with worker(url, "jr-fast", 2, "--grace", "0"):
        t0 = time.monotonic()
        with pytest.raises(ValueError, match="zero"):
            q.map(slow_unless_zero, range(6), fail_fast=True, progress=False, timeout=60)
        assert time.monotonic() - t0 < 15  # did not wait for the 20 s tasks
    failed = q.fail_tasks()
    assert sum(t.reason == "cancelled" for t in failed) >= 4
    assert q.counts()["running"] == 0 and q.counts()["ready"] == 0


def test_results_in_input_order(url):
    q = Queue("jr-ordered")
    with worker(url, "jr-ordered", 2):
        assert q.map(jittery_identity, range(60), progress=False, timeout=60) == list(range(60))
        # chunks: several inputs per task, still in order; one failing item does not fail its chunk
        got = q.map(hates_eights, range(20), chunksize=6, return_exceptions=True, progress=False, timeout=60)
    assert isinstance(got[8], ValueError) and "item 8" in got[8].__notes__[0]
    assert [g for i, g in enumerate(got) if i != 8] == [i for i in range(20) if i != 8]
    assert q.counts()["done"] == 60 + 4  # 20 inputs in chunks of 6: 4 tasks


def test_tuple_results_preserved_and_starmap(url):
    # JobRunner's test_nonnumeric: tuple inputs are spread as arguments, tuple results stay tuples
    rng = random.Random(1)
    inputs = [(i, rng.choice(string.ascii_letters), list(range(rng.randint(1, 5)))) for i in range(20)]
    q = Queue("jr-tuples")
    with worker(url, "jr-tuples", 2):
        out = q.starmap(reverse3, inputs, progress=False, timeout=60)
        lengths = q.map(len, [(1, 2), (3, 4, 5)], progress=False, timeout=60)  # map: a tuple is ONE argument
        var = q.map(functools.partial(np.var, axis=1), [np.ones((5, 100)) * i for i in range(3)],
                    progress=False, timeout=60)
    assert all(isinstance(o, tuple) for o in out)
    assert [o[::-1] for o in out] == inputs
    assert lengths == [2, 3]
    assert [v.shape for v in var] == [(5,)] * 3 and all((v == 0).all() for v in var)


# --- submitting ----------------------------------------------------------------------------------


def test_submitting_runs_on_exit_in_order(url):
    q = Queue("jr-submit")
    with worker(url, "jr-submit", 2):
        with q.submitting(progress=False, timeout=60) as sub:
            for i in range(12):
                sub.submit(np.sum, np.arange(10) * i)
            assert q.counts()["ready"] == 0  # nothing scheduled before the block exits
            with pytest.raises(RuntimeError):
                sub.results
    assert sub.results == [45 * i for i in range(12)]


def test_submitting_schedules_nothing_when_the_body_raises(url):
    q = Queue("jr-submit-raise")
    with pytest.raises(ZeroDivisionError):
        with q.submitting(progress=False) as sub:
            sub.submit(hates_eights, 1)
            1 / 0
    assert sum(q.counts().values()) == 0  # JobRunner ran the batch anyway and could mask the error
    assert not q.todo_tasks()


def test_empty_input_returns_at_once(url):
    q = Queue("jr-empty")  # no worker at all: JobRunner waited forever here
    t0 = time.monotonic()
    assert q.map(hates_eights, [], progress=True) == []
    assert q.starmap(reverse3, []) == []
    with q.submitting() as sub:
        pass
    assert sub.results == []
    assert time.monotonic() - t0 < 2
    assert sum(q.counts().values()) == 0


def test_no_worker_times_out_instead_of_hanging(url):
    q = Queue("jr-timeout")
    with pytest.raises(TimeoutError):
        q.map(hates_eights, range(3), progress=False, timeout=1)


def test_killed_task_gives_taskfailed_with_reason(url):
    q = Queue("jr-killed")
    with worker(url, "jr-killed", 1):
        got = q.map(time.sleep, [30], task_timeout=1, return_exceptions=True, progress=False, timeout=60)
    assert isinstance(got[0], Exception) and "killed" in str(got[0]).lower()
    assert "killed" in q.fail_tasks()[0].reason


# --- progress ------------------------------------------------------------------------------------


def test_progress_bar_smoke_and_nesting(url):
    q = Queue("jr-progress")
    buf = io.StringIO()
    outer = Progress(console=Console(file=buf, width=150, force_terminal=False))
    with worker(url, "jr-progress", 2):
        assert q.map(hates_eights, range(4), progress=True, return_exceptions=True, timeout=60)[1] == 1
        with outer:
            for _ in range(2):  # a row per run in the outer bar, removed at the end (leave=False)
                q.map(hates_eights, range(10), progress=outer, transient=True, return_exceptions=True,
                      timeout=60)
            assert outer.tasks == [] or all(not t.visible for t in outer.tasks)
            q.map(hates_eights, range(10), progress=outer, return_exceptions=True, timeout=60,
                  description="kept")
        row = outer.tasks[-1]
        assert row.description == "kept" and row.completed == 10 and row.total == 10
        assert row.fields["done"] == 9 and row.fields["failed"] == 1 and row.fields["rate"].endswith("/s")
        # an own transient bar nested under rich's track works too (no "only one live display")
        for _ in track(range(2), console=Console(file=io.StringIO())):
            q.map(hates_eights, range(3), progress=True, transient=True, timeout=60)
    assert "kept" in buf.getvalue()
