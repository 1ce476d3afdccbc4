"""Rough edges of issue 12 on the library side, each checked on a real server (and real workers where
a task has to run): roots counted apart from nodes, a word when no live worker serves the queue, an
upstream failure named once, forgotten empty queues, cancelled tasks keeping their host, bad
timeouts, generator functions, live connections as arguments, ``__main__`` functions that use
forrestq, and echoes of user input cut to a readable length."""
from __future__ import annotations

import functools
import io
import subprocess
import sys
import textwrap
import time

import pytest
import redis
import tasks
from helpers import wait_for
from procs import ROOT, worker, worker_env
from rich.console import Console

import forrestq
from forrestq import ConfigError, Queue, SerializationError, UnknownTask, UpstreamFailed, defer, reading, schema
from forrestq.bars import MapProgress, ResultsProgress

# ------------------------------------------------------------------------------ roots and nodes


def test_root_counts_count_what_was_scheduled_nodes_stay_apart(url: str) -> None:
    q = Queue("roots")
    good = [defer(tasks.add, defer(tasks.identity, i), 1) for i in range(8)]  # 2 nodes each
    bad = [defer(tasks.identity, defer(tasks.crash, f"x{i}")) for i in range(2)]  # fails upstream
    q.schedule_many(good + bad)
    assert q.root_counts() == {"unfinished": 10, "done": 0, "failed": 0}
    with worker(url, "roots", 2):
        got = list(q.results(timeout=60))
    assert len(got) == 10
    assert q.root_counts() == {"unfinished": 0, "done": 8, "failed": 2}
    assert q.counts() == {"waiting": 0, "scheduled": 0, "ready": 0, "running": 0, "done": 16, "failed": 4}
    assert reading.root_counts(q.r, q.keys) == q.root_counts()
    assert q.requeue_failed() and q.root_counts() == {"unfinished": 2, "done": 8, "failed": 0}
    q.cancel(all=True)
    assert q.root_counts() == {"unfinished": 0, "done": 8, "failed": 2}
    q.clean(done=True)
    assert q.root_counts() == {"unfinished": 0, "done": 0, "failed": 2}


# ---------------------------------------------------------------------- no live worker serves it


def heartbeat(r: redis.Redis, queue: str, log) -> None:  # type: ignore[no-untyped-def]
    """Wait for a live worker serving ``queue``; on failure say what the worker logged."""
    try:
        wait_for(lambda: reading.live_workers(r, queue) == 1, 30, what="the worker's first heartbeat")
    except AssertionError as e:
        raise AssertionError(f"{e}; fq:workers {r.zrange(schema.WORKERS, 0, -1)}; log: {log.read_text()[-3000:]}")


def test_live_workers_counts_the_workers_serving_a_queue(url: str, r: redis.Redis, tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert reading.live_workers(r, "served") == 0
    log = tmp_path / "worker.log"
    with worker(url, ["other", "served"], 1, log=log):
        heartbeat(r, "served", log)
        assert reading.live_workers(r, "other") == 1 and reading.live_workers(r, "nobody") == 0
    assert reading.live_workers(r, "served") == 0  # a stopped worker deletes its hash


def test_a_timeout_says_when_no_live_worker_serves_the_queue(url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    q = Queue("lonely")
    ref = q.schedule(defer(tasks.identity, 1))
    hint = "and no live worker serves queue 'lonely'; start one with: forrestq worker --queue lonely"
    t0 = time.monotonic()
    with pytest.raises(TimeoutError) as got:
        list(q.results(timeout=0.3))
    assert hint in str(got.value) and "1 still unfinished" in str(got.value)
    with pytest.raises(TimeoutError, match=hint):
        q.wait(ref, timeout=0.3)
    with pytest.raises(TimeoutError, match=hint):
        q.map(tasks.identity, [1, 2], timeout=0.3, progress=False)
    assert time.monotonic() - t0 < 20
    log = tmp_path / "worker.log"
    with worker(url, "lonely", 1, log=log):  # once one serves it, a timeout says nothing of workers
        heartbeat(q.r, "lonely", log)
        slow = q.schedule(defer(tasks.sleep_then, 30))
        with pytest.raises(TimeoutError) as got:
            q.wait(slow, timeout=0.5)
        assert "no live worker" not in str(got.value)
        q.cancel([slow])


def test_the_bars_say_when_no_live_worker_serves_the_queue(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reading, "QUIET_BEFORE_CHECK", 0.0)
    notes: list[str] = []
    monkeypatch.setattr(ResultsProgress, "note", lambda self, text: notes.append(text))
    monkeypatch.setattr(MapProgress, "note", lambda self, text: notes.append(text))
    q = Queue("x:b:c")
    q.schedule(defer(tasks.identity, 1))
    with pytest.raises(TimeoutError):
        list(q.results(progress=True, timeout=0.5))
    assert set(notes) == {"no live worker serves queue 'x:b:c'"}
    notes.clear()
    with pytest.raises(TimeoutError):
        q.map(tasks.identity, [1], timeout=0.5, progress=True)
    assert set(notes) == {"no live worker serves queue 'x:b:c'"}


def test_a_bar_shows_the_queue_name_and_its_note_literally() -> None:
    for bar in (ResultsProgress("x:b:c"), MapProgress(True, 3, "x:b:c")):
        with bar:
            bar.note("no live worker serves queue 'x:b:c' [red]not markup[/red]")
            out = io.StringIO()
            assert bar.progress is not None
            Console(file=out, width=200).print(bar.progress.get_renderable())
        text = out.getvalue()
        assert text.startswith("x:b:c ") and "no live worker serves queue 'x:b:c' [red]not markup[/red]" in text


# ------------------------------------------------------------------- an upstream failure, named once


def test_a_dependent_names_the_failed_input_once(url: str) -> None:
    q = Queue("upstream")
    inner = defer(tasks.crash, "x")
    middle = defer(tasks.identity, inner)
    top = q.schedule(defer(tasks.identity, middle))
    with worker(url, "upstream", 1):
        (task,) = list(q.results(timeout=60))
        assert task.id == top.id and task.state == "failed"
        assert task.reason == f"input task {inner._id} failed: ValueError: x"
        exc = task.errorvalue
        assert isinstance(exc, UpstreamFailed) and (exc.upstream, exc.reason) == (inner._id, "ValueError: x")
        assert str(exc) == task.reason
        # scheduled after its input failed because of another: names the first failure, once
        late = q.wait(q.schedule(defer(tasks.identity, middle)), timeout=60)
    assert late.reason == task.reason and late.upstream == inner._id
    assert str(late.errorvalue) == task.reason


# ------------------------------------------------------------------------ forgetting empty queues


def test_clean_all_forgets_an_empty_queue(url: str, r: redis.Redis) -> None:
    q, kept = Queue("gone"), Queue("kept")
    other = Queue("gone")  # another producer of the same queue
    other.schedule(defer(tasks.identity, 0))
    kept.schedule(defer(tasks.identity, 1))
    with worker(url, ["gone", "kept"], 1):
        q.wait(q.schedule(defer(tasks.identity, 2)), timeout=60)
    assert r.smembers(schema.QUEUES) == {b"gone", b"kept"}
    assert q.clean(all=True) == 2
    assert r.smembers(schema.QUEUES) == {b"kept"}
    assert not r.keys(q.keys.pattern())
    other.schedule(defer(tasks.identity, 3))  # scheduling again registers it again
    assert r.smembers(schema.QUEUES) == {b"gone", b"kept"}
    kept.clean(done=True)  # not all: the queue stays known (its ready task too)
    assert b"kept" in r.smembers(schema.QUEUES)


def test_clean_all_keeps_a_queue_with_a_running_task(url: str, r: redis.Redis) -> None:
    q = Queue("busy")
    ref = q.schedule(defer(tasks.sleep_then, 30))
    with worker(url, "busy", 1):
        wait_for(lambda: q.get(ref).state == "running", 30, what="the task to run")
        assert q.clean(all=True) == 0
        assert b"busy" in r.smembers(schema.QUEUES)
        q.cancel([ref])


# ---------------------------------------------------------------------- cancelling keeps the host


def test_cancelling_a_running_task_keeps_the_host_it_ran_on(url: str) -> None:
    q = Queue("cancelhost")
    running = q.schedule(defer(tasks.sleep_then, 30))
    with worker(url, "cancelhost", 1, env={"FORRESTQ_HOST": "hostC"}):
        wait_for(lambda: q.get(running).state == "running", 30, what="the task to run")
        queued = q.schedule(defer(tasks.identity, 1))  # the only child is busy: it stays queued
        assert sorted(q.cancel([running, queued])) == sorted([running.id, queued.id])
        task = q.get(running)
    assert (task.state, task.reason, task.host) == ("failed", "cancelled", "hostC")
    assert q.get(queued).host == ""  # never ran anywhere


# ------------------------------------------------------------------------------- bad timeouts


@pytest.mark.parametrize("bad", [float("nan"), True, False, float("inf"), -1, 0, "5", [1]])
def test_a_bad_task_timeout_is_refused_at_schedule(url: str, r: redis.Redis, bad: object) -> None:
    q = Queue("timeouts")
    with pytest.raises(ConfigError, match="timeout must be a positive number of seconds"):
        q.schedule(defer(tasks.identity, 1), timeout=bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="timeout must be a positive number of seconds"):
        q.schedule_many([defer(tasks.identity, 1)], timeout=bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="timeout must be a positive number of seconds"):
        q.map(tasks.identity, [1], task_timeout=bad, progress=False)
    assert r.keys("*") == []  # nothing written


@pytest.mark.parametrize("option", ["max_attempts", "retries"])
@pytest.mark.parametrize("bad", [True, float("nan"), -1, "2"])
def test_bad_attempts_and_retries_are_refused_at_schedule(url: str, r: redis.Redis, option: str,
                                                          bad: object) -> None:
    q = Queue("attempts")
    with pytest.raises(ConfigError, match=option):
        q.schedule(defer(tasks.identity, 1), **{option: bad})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=option):
        q.schedule_many([defer(tasks.identity, 1)], **{option: bad})  # type: ignore[arg-type]
    if option == "max_attempts":
        with pytest.raises(ConfigError, match=option):
            q.map(tasks.identity, [1], max_attempts=bad, progress=False)
        with pytest.raises(ConfigError, match=option):
            Queue("attempts", max_attempts=bad)  # type: ignore[arg-type]
    assert r.keys("*") == []


@pytest.mark.parametrize("bad", [float("nan"), True, -1, float("inf"), "5"])
def test_a_bad_wait_timeout_is_refused_at_the_call(url: str, bad: object) -> None:
    q = Queue("waits")
    ref = q.schedule(defer(tasks.identity, 1))
    match = "timeout must be None or a non-negative number of seconds"
    with pytest.raises(ConfigError, match=match):
        q.results(timeout=bad)  # type: ignore[arg-type]  # at the call, before the first next()
    with pytest.raises(ConfigError, match=match):
        q.wait(ref, timeout=bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=match):
        q.run(procs=1, timeout=bad)  # type: ignore[arg-type]  # no worker started
    with pytest.raises(ConfigError, match=match):
        q.map(tasks.identity, [1], timeout=bad, progress=False)
    with pytest.raises(ConfigError, match=match):
        q.submitting(timeout=bad, progress=False).__enter__()
    assert q.counts()["ready"] == 1  # only the first task


# ------------------------------------------------------------------------- generator functions


def numbers(n: int):  # type: ignore[no-untyped-def]
    yield from range(n)


async def anumbers(n: int):  # type: ignore[no-untyped-def]
    for i in range(n):
        yield i


@pytest.mark.parametrize("fn", [numbers, anumbers, functools.partial(numbers, 3)], ids=["gen", "agen", "partial"])
def test_a_generator_function_is_refused_at_schedule(url: str, r: redis.Redis, fn: object) -> None:
    q = Queue("gens")
    calls = [
        lambda: q.schedule(defer(fn, 3)),
        lambda: q.schedule_many([defer(tasks.identity, 1), defer(fn, 3)]),  # nothing of the batch is written
        lambda: q.map(fn, [1, 2], progress=False),  # type: ignore[arg-type]
        lambda: q.map(fn, [1, 2], chunksize=2, progress=False),  # type: ignore[arg-type]
        lambda: q.schedule_graph({"a": fn, "b": tasks.identity}, {"b": ["a"]}),
    ]
    for call in calls:
        with pytest.raises(SerializationError) as got:
            call()
        message = str(got.value)
        assert "generator function" in message and "wrap it in list()" in message and "\n" not in message
        assert len(message) < 300
    assert r.keys("*") == []


# ---------------------------------------------------------------------------- live connections


def test_a_queue_or_a_redis_client_is_refused_as_function_or_argument(url: str, r: redis.Redis) -> None:
    q = Queue("live")

    def uses_the_queue() -> dict[str, int]:
        return q.counts()  # a closure over a live Queue

    cases = [
        (lambda: q.schedule(defer(q.counts)), "Queue('live') is a Queue"),
        (lambda: q.schedule(defer(uses_the_queue)), "Queue('live') is a Queue"),
        (lambda: q.schedule(defer(tasks.identity, q)), "argument 1 of tasks.identity(...): Queue('live') is a Queue"),
        (lambda: q.schedule(defer(tasks.identity, x={"client": q.r})), "is a Redis client"),
        (lambda: q.schedule(defer(functools.partial(tasks.identity, q.core))), "is a queue's QueueCore"),
        (lambda: q.schedule(defer(tasks.identity, q.r.connection_pool)), "is a Redis connection pool"),
        (lambda: q.map(tasks.identity, [q], chunksize=1, progress=False), "is a Queue"),
    ]
    t0 = time.monotonic()
    for call, words in cases:
        with pytest.raises(SerializationError) as got:
            call()
        message = str(got.value)
        assert words in message and "cannot travel to a worker" in message, message
        assert "\n" not in message and len(message) < 400
    assert time.monotonic() - t0 < 5  # refused at once, not after a deadlock
    assert r.keys("*") == []


# ---------------------------------------------------------------- __main__ functions using forrestq


def test_a_main_function_that_uses_forrestq_runs_on_a_worker(url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    script = tmp_path / "producer.py"
    script.write_text(textwrap.dedent("""
        import sys
        import forrestq
        import forrestq.schema as fs
        from forrestq import Queue, defer

        def version():
            return forrestq.__version__, fs.DONE, forrestq.defer.__name__

        q = Queue("usesfq", url=sys.argv[1])
        print(q.schedule(defer(version)).id)
    """))
    made = subprocess.run([sys.executable, str(script), url], env=worker_env(), capture_output=True, text=True,
                          timeout=60)
    assert made.returncode == 0, made.stderr
    q = Queue("usesfq")
    log = tmp_path / "worker.log"
    with worker(url, "usesfq", 1, log=log):
        task = q.wait(made.stdout.strip(), timeout=60)
    assert task.state == "done", (task.reason, log.read_text()[-3000:])
    assert task.returnvalue == (forrestq.__version__, "done", "defer")


# ------------------------------------------------------------------------- echoes of user input


def test_echoed_user_input_is_cut_to_a_readable_length(url: str) -> None:
    q = Queue("echo")
    huge = "t" * 5000
    calls = [
        lambda: Queue("q" * 10_000),
        lambda: q.get(huge),
        lambda: q.wait(huge),
        lambda: q.rerun(huge),
        lambda: q.schedule(defer(tasks.identity, 1), key=["k"] * 5000),  # type: ignore[arg-type]
        lambda: q.schedule(defer(tasks.identity, 1), timeout="9" * 5000),  # type: ignore[arg-type]
        lambda: q.schedule(defer(tasks.identity, 1), max_attempts="9" * 5000),  # type: ignore[arg-type]
        lambda: q.schedule(defer(tasks.identity, 1), retries=[0] * 5000),  # type: ignore[arg-type]
        lambda: q.schedule(defer(tasks.identity, 1), retries=1, retry_on="e" * 5000),
        lambda: q.map(tasks.identity, [1], chunksize="c" * 5000, progress=False),
        lambda: q.map(tasks.identity, [1], progress="p" * 5000),
        lambda: q.map(tasks.identity, [1], **{"o" * 5000: 1}),
        lambda: q.results(timeout="s" * 5000),  # type: ignore[arg-type]
        lambda: q.run(procs="p" * 5000),  # type: ignore[arg-type]
    ]
    for call in calls:
        with pytest.raises((ConfigError, UnknownTask, TypeError)) as got:
            call()
        assert len(str(got.value)) < 200, str(got.value)[:300]
        assert "..." in str(got.value)


# ------------------------------------------------------------------------------------ the README


def test_the_readme_example_runs_as_written(url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The first python block of README.md, run as a script against a worker: prepare() returns what
    the tree indexes (t[0]) and reads (t.thing)."""
    text = (ROOT / "README.md").read_text()
    snippet = text.split("```python\n", 1)[1].split("```", 1)[0]
    assert "Queue(\"fits\")" in snippet and "q.results(progress=True)" in snippet
    script = tmp_path / "readme_example.py"
    script.write_text(snippet)
    with worker(url, "fits", 2):
        out = subprocess.run([sys.executable, str(script)], env=worker_env(), capture_output=True, text=True,
                             timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    q = Queue("fits")
    assert q.root_counts() == {"unfinished": 0, "done": 200, "failed": 0}
    assert sorted(t.returnvalue for t in q.done_tasks() if t.root) == sorted(i * (i % 7) for i in range(200))


# ------------------------------------------------------- found by a careless-user trial after the fixes


def test_scheduling_a_function_instead_of_a_deferred_call_is_refused_and_writes_nothing(url: str) -> None:
    q = Queue("edge-bare-fn", pre_clean=True)
    for bare in (tasks.identity, print, functools.partial(tasks.add, 1)):
        with pytest.raises(ConfigError, match=r"did you mean defer\(fn, \*args\)"):
            q.schedule(bare)
        with pytest.raises(ConfigError, match="not the function"):
            q.schedule(bare, key="k")
    assert sum(q.counts().values()) == 0
    assert q.schedule(5).id  # a plain value is still a data node


def test_an_argument_payload_redis_cannot_take_is_refused_at_schedule(url: str, monkeypatch) -> None:
    from forrestq import producer

    monkeypatch.setattr(producer, "ARGS_LIMIT", 1 << 20)  # the real limit is 500 MiB: too big to test
    q = Queue("edge-big-args", pre_clean=True)
    with pytest.raises(SerializationError, match=r"take 2 MiB serialised; Redis takes at most 1 MiB: pass big "
                                                 r"inputs with q.put\(obj\)"):
        q.schedule_many([defer(tasks.identity, 1), defer(tasks.identity, b"x" * (2 << 20))])
    assert sum(q.counts().values()) == 0


def test_named_graphs_refuse_a_string_of_names_and_a_function_that_is_not_callable(url: str) -> None:
    from forrestq import GraphError

    q = Queue("edge-graph", pre_clean=True)
    with pytest.raises(GraphError, match=r"must be a list of names, not the string 'ab' \(did you mean \['ab'\]"):
        q.schedule_graph({"a": tasks.identity, "b": tasks.identity, "ab": tasks.identity}, {"b": "ab"})
    with pytest.raises(GraphError, match=r"funcs\['a'\] is not callable: int"):
        q.schedule_graph({"a": 5}, {})
    assert sum(q.counts().values()) == 0


def test_a_task_record_is_accepted_wherever_a_task_reference_is(url: str) -> None:
    q = Queue("edge-task-as-ref", pre_clean=True)
    first, second = q.schedule(defer(tasks.identity, 1)), q.schedule(defer(tasks.identity, 2))
    record = q.get(first)
    assert q.get(record).id == first.id
    assert q.cancel(second.id) == [second.id]  # one id given as a string is not a string of letters
    assert q.cancel(record) == [first.id]
    assert q.get(first).reason == "cancelled"


def test_wait_in_debug_mode_runs_the_queue_here_instead_of_hanging(url: str) -> None:
    q = Queue("edge-local-wait", pre_clean=True, local=True)
    ref = q.schedule(defer(tasks.add, 2, 3))
    assert q.wait(ref, timeout=30).returnvalue == 5
