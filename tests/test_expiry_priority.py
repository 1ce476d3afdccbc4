"""Result expiry and priorities (issue 16): ``Queue(result_ttl=)``, ``schedule(result_ttl=)``, expire.lua
called by the worker's timekeeper, ``clean(older_than=)`` and ``forrestq clean --older-than``;
``schedule(priority=)``: one stream per level above 0, claimed highest first, every push on the task's own
level. Real server, real workers; the waits are bounded, nothing asserts on speed."""
from __future__ import annotations

import datetime
import os
import signal
import time

import pytest
import redis
import tasks_priority
from helpers import wait_for
from procs import spawn_worker, stop, worker
from typer.testing import CliRunner

from forrestq import ConfigError, Queue, defer, ops, schema
from forrestq.cli import app
from forrestq.schema import QueueKeys

runner = CliRunner()


def cli(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args), env={"COLUMNS": "200"}, catch_exceptions=False)
    return result.exit_code, result.output


def records(r: redis.Redis, name: str) -> set[str]:
    """The ids of every task record of queue ``name`` (by SCAN: what really is there)."""
    prefix = QueueKeys(name).task("")
    return {k.decode()[len(prefix):] for k in r.scan_iter(match=prefix.replace("{", "\\{").replace("}", "\\}") + "*")}


def counted(q: Queue) -> int:
    return sum(q.counts().values())


def test_result_ttl_deletes_the_records_and_counts_stay_right(url: str, r: redis.Redis) -> None:
    """Trees with result_ttl=1 go (root and inner node), the others stay, and the counters (nodes
    and roots) agree with the records left."""
    q = Queue("e-ttl")
    short = [q.schedule(defer(tasks_priority.add, defer(tasks_priority.add, i, 1), 1), result_ttl=1) for i in range(5)]
    kept = [q.schedule(defer(tasks_priority.add, defer(tasks_priority.add, i, 2), 2)) for i in range(3)]
    assert r.hget(q.keys.task(short[0].id), schema.TASK_RESULT_TTL) == b"1.0"
    assert r.hget(q.keys.task(kept[0].id), schema.TASK_RESULT_TTL) is None
    with worker(url, "e-ttl", 2):
        assert [t.returnvalue for t in q.batch(short + kept).wait()] == [2, 3, 4, 5, 6, 4, 5, 6]
        wait_for(lambda: len(records(r, "e-ttl")) == 6, 30, what="the expired trees' records to go")
    assert {ref.id for ref in kept} <= records(r, "e-ttl")
    assert q.counts()["done"] == 6 and counted(q) == 6
    assert q.root_counts() == {"unfinished": 0, "done": 3, "failed": 0}
    assert r.zcard(q.keys.done) == 6 and r.zcard(q.keys.expiry) == 0
    assert [q.get(ref).returnvalue for ref in kept] == [4, 5, 6]


def test_queue_default_is_stored_in_redis_for_every_producer(url: str, r: redis.Redis) -> None:
    """Queue(result_ttl=) is the queue's default, also for a Queue object that did not say it; a call's
    own result_ttl (0: for ever) wins; only roots carry it."""
    Queue("e-def", result_ttl=datetime.timedelta(hours=1))
    other = Queue("e-def")
    inner = defer(tasks_priority.add, 1, 1)
    ref = other.schedule(defer(tasks_priority.add, inner, 1))
    assert r.hget(other.keys.task(ref.id), schema.TASK_RESULT_TTL) == b"3600.0"
    assert r.hget(other.keys.task(inner._id), schema.TASK_RESULT_TTL) is None
    forever = other.schedule(defer(tasks_priority.add, 2, 2), result_ttl=0)
    assert r.hget(other.keys.task(forever.id), schema.TASK_RESULT_TTL) is None
    Queue("e-def", result_ttl=False)
    assert r.get(other.keys.result_ttl) is None


def test_a_ttl_never_deletes_an_input_an_unfinished_task_needs(url: str, r: redis.Redis, tmp_path) -> None:
    """A root with a short TTL that another, still unfinished, task takes as an input stays until that
    task has read it; the dependent then ends with the right result."""
    q = Queue("e-need")
    opened = tmp_path / "open"
    first = defer(tasks_priority.add, 1, 2)
    a = q.schedule(first, result_ttl=0.5)
    slow = defer(tasks_priority.gate, str(opened), 10)
    c = q.schedule(defer(tasks_priority.add, first, slow))
    with worker(url, "e-need", 2):
        assert q.wait(a).returnvalue == 3
        wait_for(lambda: r.zscore(q.keys.expiry, a.id) is not None, 10, what="the root's expiry entry")
        # past its expiry the worker looked at it (the entry moved EXPIRE_RETRY s on): kept, c needs it
        wait_for(lambda: (r.zscore(q.keys.expiry, a.id) or 0) > r.time()[0] + 5, 15, what="the expiry to be put off")
        assert q.get(a).state == "done"
        opened.touch()
        assert q.wait(c).returnvalue == 13


def test_expire_script_deletes_only_due_finished_roots_and_their_spent_inner_nodes(url: str, r: redis.Redis) -> None:
    """expire.lua by hand: an inner node another stored root shares stays; a re-run root (not finished)
    just leaves the expiry zset."""
    q = Queue("e-script")
    shared = defer(tasks_priority.add, 1, 1)
    one = q.schedule(defer(tasks_priority.add, shared, 1), result_ttl=1)
    two = q.schedule(defer(tasks_priority.add, shared, 2))
    with worker(url, "e-script", 1):
        q.batch([one, two]).wait()
        wait_for(lambda: one.id not in records(r, "e-script"), 30, what="the expired root to go")
    assert records(r, "e-script") == {shared._id, two.id}
    assert counted(q) == 2 and q.root_counts()["done"] == 1
    # a root in the zset whose state is no longer finished: left alone, dropped from the zset
    r.zadd(q.keys.expiry, {two.id: 0})
    r.hset(q.keys.task(two.id), schema.TASK_STATE, schema.READY)
    got = ops.expire(q.scripts, q.keys, 10)
    assert got.deleted == 0 and r.zcard(q.keys.expiry) == 0 and two.id in records(r, "e-script")
    r.hset(q.keys.task(two.id), schema.TASK_STATE, schema.DONE)


def test_clean_older_than_deletes_only_older_records(url: str, r: redis.Redis) -> None:
    """clean(older_than=) and ``forrestq clean --older-than`` go by finish time (the done/failed zsets)."""
    q = Queue("e-old")
    old = [q.schedule(defer(tasks_priority.add, i, 0)) for i in range(4)]
    new = [q.schedule(defer(tasks_priority.add, i, 100)) for i in range(3)]
    with worker(url, "e-old", 2):
        q.batch(old + new).wait()
    two_hours_ago = time.time() - 7200
    r.zadd(q.keys.done, {ref.id: two_hours_ago for ref in old[:2]}, xx=True)  # finished long ago
    assert q.clean(older_than=3600) == 2
    assert counted(q) == 5
    r.zadd(q.keys.done, {ref.id: time.time() - 9 * 86400 for ref in old[2:]}, xx=True)
    code, out = cli("clean", "-q", "e-old", "--older-than", "7d", "--yes")
    assert code == 0 and "deleted 2" in out
    assert records(r, "e-old") == {ref.id for ref in new}
    assert counted(q) == 3 and q.root_counts()["done"] == 3


@pytest.mark.parametrize("bad", [-1, "10", float("nan"), True, [1]])
def test_bad_result_ttl_raises_and_writes_nothing(url: str, r: redis.Redis, bad: object) -> None:
    with pytest.raises(ConfigError, match="result_ttl"):
        Queue("e-bad").schedule(defer(tasks_priority.add, 1, 1), result_ttl=bad)
    with pytest.raises(ConfigError, match="result_ttl"):
        Queue("e-bad", result_ttl=bad)
    assert r.keys("*") == []


def test_bad_older_than_raises_and_deletes_nothing(url: str, r: redis.Redis) -> None:
    q = Queue("e-badclean")
    q.schedule(defer(tasks_priority.add, 1, 1))
    before = sorted(r.keys("*"))
    for bad in (-5, "1d", float("inf")):
        with pytest.raises(ConfigError, match="older_than"):
            q.clean(older_than=bad)
    with pytest.raises(ConfigError, match="all"):
        q.clean(all=True, older_than=60)
    code, _ = cli("clean", "-q", "e-badclean", "--older-than", "7 days", "--yes")
    assert code == 2
    code, _ = cli("clean", "-q", "e-badclean", "--older-than", "1h", "--all", "--yes")
    assert code == 2
    assert sorted(r.keys("*")) == before


def test_show_and_status_name_the_ttl(url: str, r: redis.Redis) -> None:
    q = Queue("e-show")
    ref = q.schedule(defer(tasks_priority.add, 1, 1), result_ttl=3600)
    with worker(url, "e-show", 1):
        q.wait(ref)
    code, out = cli("show", ref.id)
    assert code == 0 and "result ttl" in out and "1h00m after it finished" in out
    code, out = cli("status", "-q", "e-show")
    assert code == 0 and "expiry:" in out and "1 finished" in out


# ------------------------------------------------------------------------------------------ priorities


def test_twenty_high_start_before_the_remaining_low_ones(url: str, r: redis.Redis, tmp_path) -> None:
    """The issue's test: 200 low-priority tasks, then 20 high ones while the lows run: every high one
    starts before every low one not yet claimed (at most one per child was being claimed meanwhile)."""
    q = Queue("p-order", events=True)  # the claims' order, as the server saw them: EVENT_STARTED
    path = str(tmp_path / "starts")
    procs = 2
    with worker(url, "p-order", procs):
        # 30 ms each: a child claims tasks under 20 ms several at a time (forrestq.worker.claims), and lows
        # claimed ahead before the highs came would start before them
        low = q.schedule_many([defer(tasks_priority.stamp, path, f"low{i}", 0.03) for i in range(200)])
        wait_for(lambda: len(tasks_priority.starts(path)) >= 10, 30, what="the low ones to be running")
        sent = time.time()
        high = q.schedule_many([defer(tasks_priority.stamp, path, f"high{i}") for i in range(20)], priority=9)
        left = q.counts()["ready"] - 20  # low ones not claimed yet (read after: a lower bound of those)
        high.wait(timeout=60)
        low.wait(timeout=120)
    assert left > 50  # the test means something: most low ones were still waiting
    order = tasks_priority.starts(path)
    assert len(order) == 220
    last_high = max(i for i, (tag, _) in enumerate(order) if tag.startswith("high"))
    overtaking = [tag for tag, t in order[:last_high] if tag.startswith("low") and t > sent]
    assert len(overtaking) <= procs, overtaking  # the claims under way when the highs came
    # the rest came after, but for the overtakers: a low claimed after the last high may start before
    # it (two children: claim order and start order can swap)
    assert sum(tag.startswith("low") for tag, _ in order[last_high:]) + len(overtaking) >= left
    highs = [tag for tag, _ in order if tag.startswith("high")]
    assert sorted(highs) == sorted(f"high{i}" for i in range(20))
    # FIFO within a level: claimed in order (start order may differ by more than neighbours: a child
    # can be descheduled between its claim and the task's first line on a loaded machine)
    ids = {ref.id: f"high{i}" for i, ref in enumerate(high.refs)}
    claimed = [ids[e.task] for e in q.events() if e.kind == "started" and e.task in ids]
    assert claimed == [f"high{i}" for i in range(20)], claimed


def test_priority_applies_to_every_node_and_a_retry_comes_back_on_its_level(url: str, r: redis.Redis,
                                                                           tmp_path) -> None:
    """Script-level: every node of the tree carries the level; the ready one's entry is on the level's
    stream (a nudge on the queue's own); claimed, retried, promoted, handed back and reclaimed it stays on
    that level; the level-0 path writes no priority field."""
    q = Queue("p-level")
    k = q.keys
    inner = defer(tasks_priority.fail_once, str(tmp_path / "once"))
    ref = q.schedule(defer(tasks_priority.add, inner, 1), priority=4, retries=1, retry_backoff=0.01)
    plain = q.schedule(defer(tasks_priority.add, 2, 2))
    assert r.hget(k.task(ref.id), schema.TASK_PRIORITY) == b"4" == r.hget(k.task(inner._id), schema.TASK_PRIORITY)
    assert r.hget(k.task(plain.id), schema.TASK_PRIORITY) is None
    assert not r.hget(k.task(plain.id), schema.TASK_STREAM_ID).startswith(b"4/")

    def on_level(task_id: str) -> bool:
        sid = r.hget(k.task(task_id), schema.TASK_STREAM_ID) or b""
        level, _, entry = sid.decode().partition(schema.LEVEL_SEP)
        return level == "4" and bool(r.xrange(k.level_stream(4), entry, entry))

    assert on_level(inner._id) and r.zrange(k.levels, 0, -1) == [b"4"]

    def claim(consumer: str = "c1") -> ops.Claimed:
        got = ops.claim(q.scripts, k, ops.ClaimArgs(consumer, "tok-" + consumer, 30000, "h", "w"))
        assert isinstance(got, ops.Claimed)
        return got

    got = claim()
    assert got.id == inner._id  # the level above 0 first, though `plain` was ready too
    assert ops.complete(q.scripts, k, ops.Completion(inner._id, "tok-c1", schema.RETRY, reason="x", delay=0.0))
    wait_for(lambda: ops.promote(q.scripts, k, 10) and r.hget(k.task(inner._id), schema.TASK_STATE) == b"ready",
             5, what="the retry to be due")
    assert on_level(inner._id)
    got = claim()
    assert got.id == inner._id
    assert ops.release(q.scripts, k, ops.ReleaseArgs(inner._id, "tok-c1"))
    assert on_level(inner._id)
    got = claim("gone")  # a consumer that vanishes: its lease goes, the sweep's reclaim puts it back
    r.delete(k.lease(inner._id))
    pending = r.xpending_range(k.level_stream(4), schema.GROUP, min="-", max="+", count=10)
    ids = [f"4{schema.LEVEL_SEP}{p['message_id'].decode()}" for p in pending]
    assert ops.reclaim(q.scripts, k, ops.ReclaimArgs(ids)).gave_up == []
    assert on_level(inner._id) and q.counts()["ready"] == 2 and q.counts()["running"] == 0
    got = claim()
    assert got.id == inner._id


def test_priority_with_a_dag_and_retries_on_real_workers(url: str, r: redis.Redis, tmp_path) -> None:
    q = Queue("p-dag")
    inner = defer(tasks_priority.fail_once, str(tmp_path / "once"))
    ref = q.schedule(defer(tasks_priority.add, inner, defer(tasks_priority.add, 1, 2)), priority=7, retries=1,
                     retry_backoff=0.01)
    with worker(url, "p-dag", 2):
        task = q.wait(ref, timeout=60)
    assert task.returnvalue == 10 and q.get(inner._id).attempts == 2
    assert q.counts()["done"] == 3 and sum(q.counts().values()) == 3


def test_a_sigkilled_worker_loses_no_high_priority_task(url: str, r: redis.Redis, tmp_path) -> None:
    """A worker killed (SIGKILL, its children too) while running a level-8 task: another worker's sweep
    reclaims it onto level 8 and runs it."""
    q = Queue("p-kill")
    opened = tmp_path / "open"
    ref = q.schedule(defer(tasks_priority.gate, str(opened), 5), priority=8)
    first = spawn_worker(url, "p-kill", 1, "--lease", "2")
    try:
        wait_for(lambda: q.get(ref).state == "running", 30, what="the task to run")
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(10)
    finally:
        stop(first)
    opened.touch()
    with worker(url, "p-kill", 1, "--lease", "2"):
        task = q.wait(ref, timeout=60)
    assert task.state == "done" and task.returnvalue == 5 and task.attempts == 2
    assert q.get(ref).priority == 8
    assert q.counts()["done"] == 1 and sum(q.counts().values()) == 1


@pytest.mark.parametrize("bad", [-1, 10, 1.5, "3", True, None])
def test_bad_priority_raises_and_writes_nothing(url: str, r: redis.Redis, bad: object) -> None:
    with pytest.raises(ConfigError, match="priority"):
        Queue("p-bad").schedule(defer(tasks_priority.add, 1, 1), priority=bad)
    assert r.keys("*") == []


def test_show_names_the_priority(url: str, r: redis.Redis) -> None:
    q = Queue("p-show")
    ref = q.schedule(defer(tasks_priority.add, 1, 1), priority=3)
    code, out = cli("show", ref.id)
    assert code == 0 and "priority" in out and "3 (of 0..9" in out
    code, out = cli("status", "-q", "p-show")
    assert code == 0 and "priorities:" in out and "levels 3 and 0" in out
