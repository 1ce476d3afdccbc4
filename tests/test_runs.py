"""Results of one run, not of the queue's history; listings of what users scheduled; comparing what
was scheduled with what came back (issue 13, items 1, 2 and 9)."""
from __future__ import annotations

import threading
import warnings

import pytest
import redis
import tasks
from helpers import wait_for
from procs import worker, worker_env

from forrestq import Batch, ConfigError, Queue, Task, TaskRef, UnknownTask, UpstreamFailed, defer
from forrestq.schema import WORKERS
from forrestq.server import ServerProcess


def ids(items) -> list[str]:
    return sorted(t.id for t in items)


@pytest.fixture(autouse=True)
def importable(monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers that q.run() starts import `tasks` from tests/."""
    monkeypatch.setenv("PYTHONPATH", worker_env()["PYTHONPATH"])


# --- 1. results of one run -----------------------------------------------------------------------------


def test_a_second_run_yields_only_what_was_scheduled_since(url):
    q = Queue("runs-two")
    first = q.schedule_many(defer(tasks.identity, i) for i in range(3))
    assert ids(q.run(procs=1, timeout=60)) == ids(first)
    second = q.schedule_many(defer(tasks.identity, i) for i in range(10, 12))
    got = list(q.run(procs=1, timeout=60))
    assert ids(got) == ids(second)
    assert sorted(t.returnvalue for t in got) == [10, 11]
    assert ids(q.results(timeout=60)) == ids([*first, *second])  # the whole queue's reader is unchanged


def test_a_run_left_early_leaves_the_rest_to_the_next_run(url):
    q = Queue("runs-early")
    refs = q.schedule_many(defer(tasks.identity, i) for i in range(4))
    run = q.run(procs=0)
    taken = next(run)
    run.close()  # the loop left early
    rest = list(q.run(procs=0))
    assert ids([taken, *rest]) == ids(refs)  # each once, none lost
    assert list(q.run(procs=0)) == []  # all yielded: nothing left to follow


def test_tasks_a_resumed_key_matched_come_back_too_finished_ones_first(url):
    crashed = Queue("runs-resume")  # the first run of a producer, which "crashed" after two keys ran
    done = crashed.schedule_many([defer(tasks.identity, "a"), defer(tasks.identity, "b")], keys=["a", "b"])
    assert ids(crashed.run(procs=1, timeout=60)) == ids(done)
    again = Queue("runs-resume")  # the producer runs again: same keys, one more
    batch = again.schedule_many([defer(tasks.identity, v) for v in "abc"], keys=["a", "b", "c"])
    assert [ref.id for ref in batch[:2]] == [ref.id for ref in done]
    with worker(url, "runs-resume", 1):
        got = list(batch.results(timeout=60))
    assert [t.returnvalue for t in got[:2]] == ["a", "b"] and got[2].returnvalue == "c"
    assert ids(got) == ids(batch)
    assert ids(again.run(procs=0)) == ids(batch)  # run() follows the same roots: finished, yielded at once


def test_a_batch_reads_its_own_tasks_beside_other_producers(url):
    mine, theirs = Queue("runs-share"), Queue("runs-share")
    other = theirs.schedule_many(defer(tasks.identity, i) for i in range(3))
    batch = mine.schedule_many([defer(tasks.identity, "x"), defer(tasks.sleep_then, 0.3, "y")])
    assert isinstance(batch, Batch) and len(batch) == 2 and batch.queue == "runs-share"
    assert batch.counts() == {"unfinished": 2, "done": 0, "failed": 0}
    with worker(url, "runs-share", 2):
        got = list(batch.results(timeout=60))
        assert ids(got) == ids(batch)
        assert [t.returnvalue for t in batch.wait(timeout=60)] == ["x", "y"]  # batch order
        wait_for(lambda: theirs.scheduled().counts()["done"] == 3, timeout=60, what="the other producer's tasks")
    assert batch.counts() == {"unfinished": 0, "done": 2, "failed": 0}
    assert [t.returnvalue for t in batch.tasks()] == ["x", "y"]
    assert ids(mine.scheduled()) == ids(batch) and ids(theirs.scheduled()) == ids(other)
    assert ids(mine.results(timeout=60)) == ids([*batch, *other])
    reader = Queue("runs-share")  # another process, with the ids the producer saved
    assert [t.returnvalue for t in reader.batch([ref.id for ref in batch]).wait(timeout=60)] == ["x", "y"]


def test_a_batch_rides_out_a_redis_outage(tmp_path):
    srv = ServerProcess(tmp_path / "srv", appendfsync="always").start()
    try:
        q = Queue("runs-outage", url=srv.url)
        batch = q.schedule_many(defer(tasks.identity, i) for i in range(5))
        got: list[Task] = []
        failure: list[BaseException] = []

        def read() -> None:
            try:
                got.extend(batch.results(timeout=90))
            except BaseException as exc:  # noqa: BLE001 - handed to the test thread
                failure.append(exc)

        reader = threading.Thread(target=read)
        reader.start()
        probe = redis.Redis.from_url(srv.url)
        wait_for(lambda: any(c.get("cmd") == "xread" for c in probe.client_list()), timeout=10,
                 what="the reader to block on the finished stream")
        probe.close()
        srv.kill()
        srv.start()
        with worker(srv.url, "runs-outage", 1):
            reader.join(90)
        assert not reader.is_alive() and not failure, failure
        assert ids(got) == ids(batch) and len(got) == 5
    finally:
        srv.stop()


def test_bad_batches_fail_at_the_call(url):
    q = Queue("runs-bad")
    inner = defer(tasks.identity, 1)
    ref = q.schedule(defer(tasks.identity, inner))
    with pytest.raises(UnknownTask, match="nope"):
        q.batch([ref, "nope"])
    with pytest.raises(ConfigError, match="inner node"):
        q.batch([inner._id])
    with pytest.raises(ConfigError, match="not 'runs-bad'"):
        q.batch([TaskRef(ref.id, "elsewhere")])
    with pytest.raises(ConfigError, match="takes a Batch"):
        q.run(procs=1, batch=[ref])  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="of queue 'runs-other'"):
        q.run(procs=1, batch=Queue("runs-other").scheduled())
    assert not q.r.zcard(WORKERS)  # no worker was started
    assert q.todo_tasks() == [ref]  # nothing changed


def test_run_in_a_fresh_queue_object_says_it_follows_nothing(url):
    producer = Queue("runs-fresh")
    refs = producer.schedule_many(defer(tasks.identity, i) for i in range(2))
    q = Queue("runs-fresh")
    with pytest.warns(UserWarning, match="nothing was scheduled through this Queue object"):
        assert list(q.run(procs=1, timeout=60)) == []
    assert not q.r.zcard(WORKERS) and q.root_counts()["unfinished"] == 2  # started nothing, ran nothing
    assert ids(q.run(procs=0, batch=q.batch(q.todo_tasks()))) == ids(refs)  # RunForrest's run(): the todo
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert list(Queue("runs-fresh").run(procs=0)) == []  # nothing unfinished: nothing to say


# --- 2. listings show roots ----------------------------------------------------------------------------


def test_listings_show_roots_and_every_node_on_request(url):
    q = Queue("runs-list")
    inputs = [defer(tasks.identity, i) for i in range(3)]
    roots = q.schedule_many(defer(tasks.add, x, 1) for x in inputs)
    assert ids(q.todo_tasks()) == ids(roots) and all(t.root for t in q.todo_tasks())
    assert ids(q.todo_tasks(nodes=True)) == sorted([r.id for r in roots] + [d._id for d in inputs])
    limited = q.todo_tasks(limit=2)
    assert len(limited) == 2 and all(t in roots for t in limited) and q.todo_tasks(limit=0) == []
    list(q.run(procs=0))
    assert ids(q.done_tasks()) == ids(roots) and len(q.done_tasks(nodes=True)) == 6
    assert len(q.done_tasks(limit=2)) == 2 and all(t.root for t in q.done_tasks(limit=2))
    with pytest.raises(ConfigError, match="limit"):
        q.done_tasks(limit=-1)


def test_failed_listing_shows_the_root_and_requeue_still_finds_the_inner_failure(url, tmp_path):
    flag = tmp_path / "flag"
    q = Queue("runs-fail")
    bad = defer(tasks.fail_unless_exists, str(flag), str(tmp_path / "log"), "bad")
    root = q.schedule(defer(tasks.identity, bad))
    (task,) = q.run(procs=0)
    assert isinstance(task.errorvalue, UpstreamFailed)
    assert q.fail_tasks() == [root]
    assert ids(q.fail_tasks(nodes=True)) == sorted([root.id, bad._id])
    flag.write_text("fixed")
    assert sorted(q.requeue_failed()) == sorted([root.id, bad._id])
    (again,) = q.run(procs=0, batch=q.batch([root]))
    assert again.state == "done" and q.fail_tasks(nodes=True) == []


# --- 9. what came back equals what was scheduled -------------------------------------------------------


def test_a_finished_task_equals_its_ref_and_its_deferred_and_hashes_alike(url):
    q = Queue("runs-eq")
    d = defer(tasks.identity, 42)
    ref = q.schedule(d)
    assert q.todo_tasks()[0] == ref == d  # RunForrest: task == done[0] == todo[0]
    (task,) = q.run(procs=0)
    assert task == ref and ref == task and task == d and d == task and q.done_tasks()[0] == d
    assert hash(task) == hash(ref) == hash(d)
    assert {d: "mine"}[task] == "mine" and {task: 1}[ref] == 1 and {ref: 1}[d] == 1
    mine = q.batch([ref])
    assert task in mine and d in mine and ref in mine and ref.id in mine and defer(tasks.identity, 42) not in mine
    assert task != TaskRef(ref.id, "other-queue") and ref != TaskRef(ref.id, "other-queue")
    assert task != defer(tasks.identity, 42) and task != ref.id  # another deferred; a plain id string
    assert d.__eq__(5) is NotImplemented and (d == 5) is False and (d != 5) is True
    assert (task == object()) is False and (ref == 5) is False and d[0] != task  # parts are not nodes


def test_a_keyed_deferred_and_one_on_two_queues_equal_the_tasks_they_became(url):
    keyed = defer(tasks.identity, 1)
    ref = Queue("runs-key").schedule(keyed, key="item-1")
    assert ref.id == "k-item-1" and keyed == ref and hash(keyed) == hash(ref)
    both = defer(tasks.identity, 2)
    a, b = Queue("runs-a").schedule(both), Queue("runs-b").schedule(both)
    (ta,) = Queue("runs-a").run(procs=0, batch=Queue("runs-a").batch([a]))
    (tb,) = Queue("runs-b").run(procs=0, batch=Queue("runs-b").batch([b]))
    assert ta == both and tb == both and ta != tb  # one deferred, one node on each queue
    assert both in Queue("runs-a").batch([a]) and ta not in Queue("runs-b").batch([b])
