"""Concurrency and rate limits by key (issue 16): ``schedule(limits=[...])``, ``set_limit``, ``set_rate``.

Real workers, spans recorded from inside the tasks (tag, pid, start, end, host); limit_acquire.lua
driven directly for the protocol (holders counted only under their lease, all or nothing)."""
from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import redis
import tasks_limits as tl
from helpers import wait_for
from procs import spawn_worker, stop, worker

from forrestq import Queue, defer, limits, ops
from forrestq.errors import ConfigError, UnknownLimit
from forrestq.schema import WORKERS, QueueKeys
from forrestq.status import gather

LEASE = 2.0  # s: --lease of the SIGKILL test's worker


def _name(what: str) -> str:
    return f"lim-{what}-{uuid.uuid4().hex[:6]}"


def _most_at_once(spans: list[tuple]) -> int:
    """The largest number of (tag, pid, start, end, ...) intervals running at one moment."""
    edges = sorted([(s[2], 1) for s in spans] + [(s[3], -1) for s in spans])
    now = most = 0
    for _, step in edges:
        now += step
        most = max(most, now)
    return most


def _overlap(a: tuple, b: tuple) -> bool:
    return a[2] < b[3] and b[2] < a[3]


def _acquire(q: Queue, tid: str, token: str, keys: str) -> str:
    return ops.limit_acquire(q.scripts, q.keys, ops.LimitArgs(tid, token, keys))[0]


def test_bad_input_is_one_clear_error_and_writes_nothing(url: str, r: redis.Redis) -> None:
    q = Queue(_name("bad"))
    before = sorted(r.keys("*"))
    for call in (lambda: q.set_limit("nfs", 0), lambda: q.set_limit("nfs", -1), lambda: q.set_limit("nfs", 2.5),
                 lambda: q.set_limit("nfs", True), lambda: q.set_limit("a,b", 2), lambda: q.set_limit("", 2),
                 lambda: q.set_rate("api", -1), lambda: q.set_rate("api", 0), lambda: q.set_rate("api", 10, per=0),
                 lambda: q.set_rate("api", 10, per=-1.0), lambda: q.set_rate("api", 10, per=float("nan")),
                 lambda: q.schedule(defer(tl.span, "x", 0), limits=["ok", "not,ok"]),
                 lambda: q.schedule(defer(tl.span, "x", 0), limits=[3])):
        with pytest.raises(ConfigError) as e:
            call()
        assert "\n" not in str(e.value)
    with pytest.raises(UnknownLimit, match="no limit or rate"):
        q.remove_limit("never-set")
    assert sorted(r.keys("*")) == before
    q.set_limit("nfs", 3)
    with pytest.raises(UnknownLimit, match="no rate"):
        q.remove_limit("nfs", limit=False)
    q.remove_limit("nfs")
    assert q.limits() == []


def test_holders_count_only_under_their_lease_and_acquiring_is_all_or_nothing(url: str, r: redis.Redis) -> None:
    """limit_acquire.lua itself: a holder whose lease is gone (ended, or its worker died) frees its slot;
    a task needing two keys takes neither while one is full."""
    q = Queue(_name("lua"))
    k = q.keys
    q.set_limit("a", 1)
    q.set_limit("b", 1)
    r.set(k.lease("x"), "tx")
    assert _acquire(q, "x", "tx", "a") == ""
    r.set(k.lease("y"), "ty")
    assert _acquire(q, "y", "ty", "a,b") == "a"  # a is full: nothing taken, b neither
    assert r.hlen(k.limit_holders("b")) == 0
    r.set(k.lease("z"), "tz")
    assert _acquire(q, "z", "tz", "b") == ""  # b was never taken by y
    assert [(lim.key, lim.in_use, lim.waiting) for lim in q.limits()] == [("a", 1, 1), ("b", 1, 0)]
    r.delete(k.lease("x"))  # x ended (complete.lua) or its lease expired (its worker died)
    r.delete(k.lease("z"))
    assert _acquire(q, "y", "ty", "a,b") == ""
    assert [(lim.key, lim.in_use, lim.waiting) for lim in q.limits()] == [("a", 1, 0), ("b", 1, 0)]
    r.set(k.lease("y"), "a later attempt's token")  # an older attempt's hold does not count either
    assert _acquire(q, "x", "tx2", "a") == ""


def test_a_limit_of_2_over_4_procs_never_overlaps_3_and_other_tasks_run_meanwhile(url: str) -> None:
    q = Queue(_name("two"))
    q.set_limit("nfs", 2)
    nfs = q.schedule_many([defer(tl.span, f"nfs{i}", 0.3) for i in range(8)], limits=["nfs"])
    free = q.schedule_many([defer(tl.span, f"free{i}", 0.05) for i in range(30)])
    with worker(url, q.name, 4):
        nfs_done = nfs.wait(timeout=60)
        free_done = free.wait(timeout=60)
    assert all(t.state == "done" for t in nfs_done + free_done), [t.reason for t in nfs_done + free_done]
    spans = [t.returnvalue for t in nfs_done]
    assert _most_at_once(spans) == 2, spans
    assert any(_overlap(f.returnvalue, s) for f in free_done for s in spans), "no other task ran beside nfs"
    assert {t.attempts for t in nfs_done} == {1}  # waiting for the limit is not an attempt


def test_a_task_holding_two_keys_overlaps_no_holder_of_either(url: str) -> None:
    q = Queue(_name("both"))
    q.set_limit("a", 1)
    q.set_limit("b", 1)
    tasks = [defer(tl.span, f"{keys}{i}", 0.15) for i in range(4) for keys in ("a", "b", "ab")]
    batch = q.schedule_many(tasks[0::3], limits=["a"])
    b = q.schedule_many(tasks[1::3], limits=["b"])
    ab = q.schedule_many(tasks[2::3], limits=["a", "b"])
    with worker(url, q.name, 4):
        done = {name: got.wait(timeout=60) for name, got in (("a", batch), ("b", b), ("ab", ab))}
    assert all(t.state == "done" for ts in done.values() for t in ts)
    spans = {name: [t.returnvalue for t in ts] for name, ts in done.items()}
    for key in ("a", "b"):
        holders = spans[key] + spans["ab"]
        assert not any(_overlap(x, y) for x, y in itertools.combinations(holders, 2)), (key, holders)


def test_limits_hold_across_two_hosts(url: str) -> None:
    """Two worker processes as two hosts (FORRESTQ_HOST), 2 procs each: a limit of 3 is the queue's,
    not a worker's (4 could run), and needs both hosts (one has 2 procs)."""
    q = Queue(_name("hosts"))
    q.set_limit("nfs", 3)
    with worker(url, q.name, 2, env={"FORRESTQ_HOST": "host-a"}), \
            worker(url, q.name, 2, env={"FORRESTQ_HOST": "host-b"}):
        wait_for(lambda: q.r.zcard(WORKERS) == 2, timeout=30, what="both workers up")
        batch = q.schedule_many([defer(tl.span, f"n{i}", 0.25) for i in range(16)], limits="nfs")
        done = batch.wait(timeout=60)
    assert all(t.state == "done" for t in done)
    spans = [t.returnvalue for t in done]
    assert _most_at_once(spans) <= 3, spans
    assert {t.host for t in done} == {"host-a", "host-b"}


def test_a_sigkilled_holder_frees_its_slot_within_its_lease(url: str, tmp_path: Path) -> None:
    q = Queue(_name("kill"))
    q.set_limit("nfs", 1)
    flag, started = tmp_path / "flag", tmp_path / "started"
    flag.touch()
    holder = q.schedule(defer(tl.hang_while, str(flag), str(started)), limits=["nfs"])
    first = spawn_worker(url, q.name, 1, "--lease", f"{LEASE:g}")
    try:
        # the pid written, not just the file made (write_text creates it empty first)
        wait_for(lambda: started.exists() and started.read_text().strip(), timeout=30, what="the holder started")
        assert [lim.in_use for lim in q.limits()] == [1]
        os.killpg(first.pid, signal.SIGKILL)  # the worker and its child: nobody releases anything
        os.kill(int(started.read_text()), signal.SIGKILL)
        killed = time.time()
        flag.unlink()  # the holder's next attempt returns at once
    finally:
        stop(first)
    other = q.schedule(defer(tl.span, "after", 0), limits=["nfs"])
    with worker(url, q.name, 1, "--lease", f"{LEASE:g}"):
        got = q.wait(other, timeout=30)
        assert q.wait(holder, timeout=30).state == "done"
    assert got.state == "done"
    # the slot was free once the dead holder's lease expired (plus a claim and a back-off pause)
    assert got.returnvalue[2] - killed < LEASE + 2.0, got.returnvalue[2] - killed


def test_a_rate_of_10_per_second_over_3_seconds_is_about_30_starts(url: str) -> None:
    q = Queue(_name("rate"))
    q.set_rate("api", 10, per=1.0)
    batch = q.schedule_many([defer(tl.span, f"r{i}", 0) for i in range(45)], limits=["api"])
    with worker(url, q.name, 4):
        done = batch.wait(timeout=60)
    assert all(t.state == "done" for t in done)
    starts = sorted(t.returnvalue[2] for t in done)
    in_3s = [s for s in starts if s < starts[0] + 3.0]
    assert 24 <= len(in_3s) <= 31, len(in_3s)
    # never more than 10 starts in a second (0.95 s: the task's clock runs a little after the acquire)
    assert all(starts[i + 10] - starts[i] > 0.95 for i in range(len(starts) - 10)), starts


def test_limits_show_in_status_and_listing(url: str, r: redis.Redis) -> None:
    q = Queue(_name("status"))
    q.set_limit("nfs", 4)
    q.set_rate("api", 10, per=2.0)
    ref = q.schedule(defer(tl.span, "x", 0), limits=["nfs", "api"])
    assert q.get(ref).limits == ["api", "nfs"]  # what forrestq show prints
    got = {lim.key: lim for lim in q.limits()}
    assert got["nfs"].limit == 4 and got["nfs"].rate is None and got["nfs"].in_use == 0
    assert got["api"].rate == (10, 2.0) and got["api"].limit is None
    rows = gather(r, q.name)["queues"][q.name]["limits"]
    assert [(row["key"], row["limit"], row["rate"]) for row in rows] == [("api", None, [10, 2.0]), ("nfs", 4, None)]
    assert limits.keys_text(["nfs", "api", "nfs"]) == "api,nfs"
    tid = q.todo_tasks()[0].id
    assert r.hget(QueueKeys(q.name).task(tid), "lim") == b"api,nfs"


def test_the_command_line_sets_lists_and_removes_and_refuses_bad_input(url: str, r: redis.Redis) -> None:
    q = _name("cli")

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "forrestq", "limit", *args, "--url", url, "-q", q],
                              capture_output=True, text=True, timeout=60)

    assert cli("set", "nfs", "0").returncode == 2
    assert cli("rate", "api", "10", "--per", "-1").returncode == 2
    assert r.keys(f"fq:{{{q}}}:*") == []
    assert cli("set", "nfs", "4").returncode == 0
    assert cli("rate", "api", "10", "--per", "2").returncode == 0
    got = cli("list", "--json")
    assert [(row["key"], row["limit"], row["rate"]) for row in json.loads(got.stdout)] == [
        ("api", None, [10, 2.0]), ("nfs", 4, None)]
    assert cli("rm", "nope").returncode == 5
    assert cli("rm", "nfs").returncode == 0
    Queue(q).clean(all=True)  # limits are settings: a clean keeps them
    assert [lim.key for lim in Queue(q).limits()] == ["api"]
