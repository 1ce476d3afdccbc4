"""The ``forrestq`` joblib backend (issue 20): ``Parallel`` and scikit-learn's ``n_jobs`` on forrestq
workers. Real server, real worker processes."""
from __future__ import annotations

import os

import pytest
import tasks_executor as tx
from procs import worker_env

joblib = pytest.importorskip("joblib")
pytest.importorskip("sklearn")

from joblib import Parallel, delayed, parallel_config  # noqa: E402
from sklearn.datasets import load_iris  # noqa: E402
from sklearn.model_selection import GridSearchCV  # noqa: E402
from sklearn.svm import SVC  # noqa: E402

import forrestq.joblib_backend  # noqa: E402,F401  (registers the backend)
from forrestq import Queue  # noqa: E402


@pytest.fixture
def importable(monkeypatch: pytest.MonkeyPatch) -> None:
    """Local workers import ``tasks_executor`` (tests/) by name, as a user's workers import their module."""
    monkeypatch.setenv("PYTHONPATH", worker_env()["PYTHONPATH"])


def test_parallel_of_1000_calls_returns_the_results_in_order(url, importable):
    q = Queue("jl-1000")
    with parallel_config(backend="forrestq", queue="jl-1000", procs=2):
        out = Parallel(n_jobs=-1)(delayed(tx.square)(i) for i in range(1000))
    assert out == [i * i for i in range(1000)]
    done = q.root_counts()["done"]
    assert 1 <= done < 1000  # they ran as tasks, batched (joblib's automatic batch size)


def test_grid_search_on_two_workers_matches_n_jobs_1(url):
    X, y = load_iris(return_X_y=True)
    grid = {"C": [0.1, 1.0, 10.0], "kernel": ["linear", "rbf"]}
    here = GridSearchCV(SVC(), grid, cv=3, n_jobs=1).fit(X, y)
    q = Queue("jl-grid")
    with q.workers(2), parallel_config(backend="forrestq", queue=q):
        there = GridSearchCV(SVC(), grid, cv=3, n_jobs=-1).fit(X, y)
    assert there.best_params_ == here.best_params_
    assert there.best_score_ == here.best_score_
    assert list(there.cv_results_["mean_test_score"]) == list(here.cv_results_["mean_test_score"])
    assert list(there.cv_results_["params"]) == list(here.cv_results_["params"])
    assert q.root_counts()["done"] >= 2  # the fits ran as tasks of the queue


def test_return_as_generator_yields_in_order_as_results_come(url, importable):
    with parallel_config(backend="forrestq", queue="jl-gen", procs=2):
        gen = Parallel(n_jobs=2, return_as="generator")(delayed(tx.add)(i, 1) for i in range(20))
        assert not isinstance(gen, list)
        assert list(gen) == list(range(1, 21))
        unordered = Parallel(n_jobs=2, return_as="generator_unordered")(delayed(tx.square)(i) for i in range(10))
        assert sorted(unordered) == [i * i for i in range(10)]


def test_a_dropped_generator_cancels_the_batches_left(url, importable):
    q = Queue("jl-drop")
    with q.workers(2), parallel_config(backend="forrestq", queue=q):
        gen = Parallel(n_jobs=2, batch_size=1, return_as="generator")(
            delayed(tx.sleep_then)(0.05, i) for i in range(40))
        assert [next(gen), next(gen)] == [0, 1]
        with pytest.warns(UserWarning, match="cancelled"):
            gen.close()  # what dropping it does
    counts = q.root_counts()
    assert counts["unfinished"] == 0 and counts["done"] + counts["failed"] < 40
    assert {t.reason for t in q.fail_tasks()} <= {"cancelled"}


def test_a_task_exception_is_raised_in_the_caller_with_the_remote_traceback(url, importable):
    q = Queue("jl-boom")
    calls = [delayed(tx.boom)("bad input")] + [delayed(tx.sleep_then)(60) for _ in range(4)]
    with parallel_config(backend="forrestq", queue=q, procs=1):
        with pytest.raises(ValueError, match="bad input") as info:
            Parallel(n_jobs=2, batch_size=1)(calls)
    notes = "\n".join(getattr(info.value, "__notes__", []))
    assert "remote traceback (task" in notes and "in boom" in notes
    assert q.root_counts()["unfinished"] == 0  # the rest was cancelled when joblib aborted


def test_nested_parallel_inside_a_task_runs_sequentially_there(url, importable):
    q = Queue("jl-nested")
    with parallel_config(backend="forrestq", queue=q, procs=2):
        out = Parallel(n_jobs=2, batch_size=1)(delayed(tx.nested_parallel)(5) for _ in range(3))
    assert [(name, values) for name, values, _ in out] == [("SequentialBackend", [0, 1, 4, 9, 16])] * 3
    assert os.getpid() not in {pid for _, _, pid in out}
    assert q.root_counts()["done"] == 3  # the inner loops made no tasks


def test_n_jobs_1_runs_in_the_caller(url):
    with parallel_config(backend="forrestq", queue="jl-one"):
        assert Parallel(n_jobs=1)(delayed(os.getpid)() for _ in range(2)) == [os.getpid()] * 2
    assert Queue("jl-one").root_counts()["done"] == 0
