"""Delayed and periodic tasks (issue 16): ``schedule(delay=, at=)``, ``every``/``cron``, the ``scheduled``
state, the server's clock, and the periodic CLI. Real server; real workers where the issue asks for
them (timing bounds are the issue's own and wide: nothing else here asserts on speed)."""
from __future__ import annotations

import datetime
import json
import shutil
import subprocess
import sys
import time
import zoneinfo

import pytest
import redis
import tasks_time
from helpers import wait_for
from procs import stop, worker, worker_env
from typer.testing import CliRunner

from forrestq import ConfigError, Queue, defer, ops, periodic, schema
from forrestq.cli import app
from forrestq.errors import UnknownSchedule
from forrestq.schema import GROUP, QueueKeys

runner = CliRunner()


def cli(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args), env={"COLUMNS": "200"}, catch_exceptions=False)
    return result.exit_code, result.output


def server_now(r: redis.Redis) -> float:
    sec, usec = r.time()
    return sec + usec / 1e6


def live_workers(r: redis.Redis, n: int) -> None:
    wait_for(lambda: r.zcard(schema.WORKERS) >= n, 30, what=f"{n} worker(s) to register")


def nothing_written(r: redis.Redis) -> list[bytes]:
    return sorted(r.keys("*"))


# ------------------------------------------------------------------------------------------ delayed


def test_delay_starts_after_one_second_not_much_later(url: str, r: redis.Redis, tmp_path) -> None:
    """The issue's figure: delay=1 starts no earlier than 1 s and no later than ~2 s after scheduling,
    on an idle worker whose children block in XREADGROUP; counted as scheduled meanwhile."""
    q = Queue("t-delay")
    path = str(tmp_path / "stamps")
    with worker(url, "t-delay", 2):
        live_workers(r, 1)
        time.sleep(1.0)  # idle: its children block on the stream
        t0 = server_now(r)
        ref = q.schedule(defer(tasks_time.stamp, path), delay=1)
        assert q.counts()["scheduled"] == 1 and q.counts()["ready"] == 0
        assert q.root_counts() == {"unfinished": 1, "done": 0, "failed": 0}
        assert q.get(ref).state == "scheduled" and q.get(ref).due == pytest.approx(t0 + 1, abs=0.5)
        task = q.wait(ref, timeout=10)
    started = tasks_time.stamps(path)[0][2]
    assert task.state == "done"
    assert t0 + 1.0 - 0.05 <= started <= t0 + 2.2, started - t0
    assert q.counts() == {"waiting": 0, "scheduled": 0, "ready": 0, "running": 0, "done": 1, "failed": 0}
    assert q.root_counts() == {"unfinished": 0, "done": 1, "failed": 0}


def test_scheduled_state_in_counts_tasks_status_and_show(url: str, r: redis.Redis) -> None:
    """A delayed tree: its leaf is scheduled, the root waits; `tasks --state scheduled`, `status` and
    `show` say so; schedule_many and at= too; an `at` in the past runs at once; cancel ends it."""
    q = Queue("t-state")
    leaf = defer(tasks_time.one)
    root = q.schedule(defer(tasks_time.add, leaf, 2), delay=600)
    later = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)
    batch = q.schedule_many([defer(tasks_time.add, i, 1) for i in range(3)], at=later)
    past = q.schedule(defer(tasks_time.add, 5, 5), at=later - datetime.timedelta(hours=3))
    assert q.get(past).state == "ready"  # an `at` in the past: at once
    assert q.counts() == {"waiting": 1, "scheduled": 4, "ready": 1, "running": 0, "done": 0, "failed": 0}
    assert q.root_counts() == {"unfinished": 5, "done": 0, "failed": 0}  # a scheduled root is unfinished
    assert q.get(batch[0]).due == pytest.approx(later.timestamp(), abs=0.01)
    code, out = cli("tasks", "--queue", "t-state", "--state", "scheduled", "--json")
    assert code == 0
    listed = json.loads(out)
    assert sorted(t["state"] for t in listed) == ["scheduled"] * 4 and all(t["due"] for t in listed)
    code, out = cli("status", "--queue", "t-state", "--json")
    row = json.loads(out)["queues"]["t-state"]
    assert (row["scheduled"], row["ready"], row["waiting"]) == (4, 1, 1)
    assert row["next_due"] == pytest.approx(server_now(r) + 600, abs=5)
    code, out = cli("status", "--queue", "t-state")
    assert "(+4 scheduled)" in out and "4 task(s) wait for their time" in out
    leaf_id = q.get(root).inputs[0]
    code, out = cli("show", leaf_id)
    assert code == 0 and "scheduled" in out and "not before; server clock" in out
    assert q.cancel([leaf_id, batch[1].id]) == [leaf_id, batch[1].id]
    assert q.get(root).state == "failed"  # its input was cancelled
    assert q.counts() == {"waiting": 0, "scheduled": 2, "ready": 1, "running": 0, "done": 0, "failed": 3}
    assert q.root_counts() == {"unfinished": 3, "done": 0, "failed": 2}


def test_delayed_node_with_inputs(r: redis.Redis, url: str) -> None:
    """The delay counts from scheduling: a node whose inputs finish before its time is scheduled until
    then; one whose inputs finish after it goes straight to ready (complete.lua)."""
    k = QueueKeys("t-dag")
    r.xgroup_create(k.stream, GROUP, id="0", mkstream=True)
    s = ops.Scripts(r)
    now = server_now(r)
    ops.schedule(s, k, ops.ScheduleArgs([ops.Node("a"), ops.Node("b", inputs="a", due="+600"),
                                         ops.Node("c", inputs="a", due=repr(now - 5))]))
    assert [r.hget(k.task(n), schema.TASK_STATE) for n in "abc"] == [b"ready", b"waiting", b"waiting"]
    a = ops.claim(s, k, ops.ClaimArgs("c1", "T1", 60_000, "h", "w"))
    assert isinstance(a, ops.Claimed) and a.id == "a"
    assert ops.complete(s, k, ops.Completion("a", "T1", schema.DONE, result=b"x"))
    assert r.hget(k.task("b"), schema.TASK_STATE) == b"scheduled"
    assert r.zscore(k.delayed, "b") == pytest.approx(now + 600, abs=5)
    assert r.hget(k.task("c"), schema.TASK_STATE) == b"ready"
    assert {key.decode(): int(v) for key, v in r.hgetall(k.counts).items() if int(v)} == {
        "done": 1, "scheduled": 1, "ready": 1}
    assert ops.clean(s, k, ["a"]) == 0  # a scheduled node still needs its input's result


def test_bad_delays_write_nothing(url: str, r: redis.Redis) -> None:
    q = Queue("t-bad")
    before = nothing_written(r)
    naive = datetime.datetime.now()
    for kwargs in ({"delay": -1}, {"delay": "1"}, {"delay": float("nan")}, {"delay": True},
                   {"delay": datetime.timedelta(seconds=-3)}, {"at": naive}, {"at": "tomorrow"},
                   {"delay": 1, "at": datetime.datetime.now(datetime.timezone.utc)}):
        with pytest.raises(ConfigError):
            q.schedule(defer(tasks_time.one), **kwargs)
        with pytest.raises(ConfigError):
            q.schedule_many([defer(tasks_time.one)], **kwargs)
    assert nothing_written(r) == before


# ------------------------------------------------------------------------------------ the server clock


def test_retry_backoff_counts_on_the_server_clock(url: str, r: redis.Redis, tmp_path) -> None:
    """A worker whose clock is an hour ahead (libfaketime) records a retry due backoff seconds from now
    on the server's clock, not an hour later: hosts with skewed clocks agree."""
    if shutil.which("faketime") is None:
        pytest.skip("faketime is not installed (apt-get install faketime)")
    q = Queue("t-skew")
    ref = q.schedule(defer(tasks_time.fail_once, str(tmp_path / "once")), retries=1, retry_backoff=30.0,
                     retry_on=OSError)
    cmd = ["faketime", "-f", "+1h", sys.executable, "-m", "forrestq", "worker", "--procs", "1", "--url", url,
           "--queue", "t-skew"]
    proc = subprocess.Popen(cmd, env=worker_env(), start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: q.get(ref).state == "scheduled", 30, what="the retry to be scheduled")
        task = q.get(ref)
        assert task.started is not None and task.started > server_now(r) + 3000  # the worker's clock: +1 h
        due = r.zscore(q.keys.delayed, ref.id)
        assert 25 < due - server_now(r) <= 30.5  # the server's clock + 30 s, not the worker's
        assert q.counts()["scheduled"] == 1
        code, out = cli("show", ref.id)
        assert "not before; server clock" in out
    finally:
        stop(proc)


def test_claim_compares_due_times_with_the_server_clock(r: redis.Redis, url: str) -> None:
    """claim.lua ignores the caller's idea of now for due times: a worker clock a day ahead promotes
    nothing early, one a day behind does not hold back a due task."""
    k = QueueKeys("t-clock")
    r.xgroup_create(k.stream, GROUP, id="0", mkstream=True)
    s = ops.Scripts(r)
    ops.schedule(s, k, ops.ScheduleArgs([ops.Node("a", due="+600"), ops.Node("b", due="+0.2")]))
    ahead = server_now(r) + 86400
    assert ops.claim(s, k, ops.ClaimArgs("c1", "T1", 60_000, "h", "w", now=ahead)) is None
    time.sleep(0.3)
    got = ops.claim(s, k, ops.ClaimArgs("c1", "T2", 60_000, "h", "w", now=ahead - 2 * 86400))
    assert isinstance(got, ops.Claimed) and got.id == "b"
    assert r.hget(k.task("a"), schema.TASK_STATE) == b"scheduled"


# ----------------------------------------------------------------------------------------- periodic


def runs_of(q: Queue) -> list[str]:
    return sorted(t.id for t in q.todo_tasks(nodes=True) + q.done_tasks(nodes=True) + q.fail_tasks(nodes=True))


def test_every_second_over_five_seconds_with_three_workers(url: str, r: redis.Redis, tmp_path) -> None:
    """The issue's figure: every(1) over 5 s with three workers yields 5 (±1) runs, one per tick."""
    q = Queue("t-every")
    path = str(tmp_path / "stamps")
    with worker(url, "t-every", 1), worker(url, "t-every", 1), worker(url, "t-every", 1):
        live_workers(r, 3)
        p = q.every(1, defer(tasks_time.stamp, path, "tick"), key="tick")
        assert p.every == 1.0 and p.next_due == pytest.approx(server_now(r) + 1, abs=0.5)
        time.sleep(5.2)
        q.pause_periodic("tick")
        wait_for(lambda: q.root_counts()["unfinished"] == 0, 20, what="the ticks' tasks to end")
    ids = runs_of(q)
    assert 4 <= len(ids) <= 6, ids
    assert len(set(ids)) == len(ids) and all(i.startswith("p-tick@") for i in ids)
    ticks = sorted(int(i.rsplit("@", 1)[1]) for i in ids)
    assert all(b - a >= 1000 for a, b in zip(ticks, ticks[1:])), ticks  # never two for one tick
    ran = tasks_time.stamps(path)
    assert sorted(tid for _, tid, _ in ran) == ids  # each ran once
    assert q.periodic()[0].runs == len(ids) and q.periodic()[0].paused
    assert q.counts()["done"] == len(ids) and q.root_counts()["done"] == len(ids)


def test_a_tick_is_made_once_however_many_callers(url: str, r: redis.Redis) -> None:
    """periodic_tick.lua is a compare-and-set on the due time and registration read: of two callers
    with the same read, one makes the task; a repeated call for a tick made already makes nothing."""
    q = Queue("t-cas")
    q.every(3600, defer(tasks_time.one), key="cas")
    k = q.keys
    r.hset(k.schedule("cas"), schema.PERIODIC_NEXT, repr(server_now(r) - 1))  # due now
    f = {key.decode(): v for key, v in r.hgetall(k.schedule("cas")).items()}
    tick = float(f[schema.PERIODIC_NEXT])
    args = ops.TickArgs("cas", f[schema.PERIODIC_NEXT].decode(), f[schema.PERIODIC_SPEC].decode(),
                        periodic.next_due(3600.0, "", "", tick, server_now(r)), periodic.tick_node("cas", tick, f))
    s = ops.Scripts(r)
    assert ops.tick(s, k, args) is True
    assert ops.tick(s, k, args) is False  # the schedule moved on
    r.hset(k.schedule("cas"), schema.PERIODIC_NEXT, args.tick)  # as if a stale worker wrote it back
    assert ops.tick(s, k, args) is True and q.counts()["ready"] == 1  # the same tick's task: not a second
    assert q.root_counts() == {"unfinished": 1, "done": 0, "failed": 0}
    assert float(r.hget(k.schedule("cas"), schema.PERIODIC_NEXT)) == args.next_due
    assert r.zscore(k.periodic, "cas") == pytest.approx(args.next_due)
    q.every(3600, defer(tasks_time.one), key="cas")  # registered again: a new spec token
    assert ops.tick(s, k, args) is False  # a tick planned from the old registration is refused
    task = q.get(args.node.id)
    assert task.periodic == "cas" and task.key == args.node.key and task.root


def test_worker_restart_runs_a_missed_tick_once(url: str, r: redis.Redis, tmp_path) -> None:
    """Ticks missed while no worker ran make one task when a worker is back (the tick it was due at),
    then the cadence resumes; a restart never makes a second task for a tick."""
    q = Queue("t-restart")
    path = str(tmp_path / "stamps")
    with worker(url, "t-restart", 1):
        live_workers(r, 1)
        q.every(1, defer(tasks_time.stamp, path, "r"), key="r")
        wait_for(lambda: len(runs_of(q)) >= 2, 15, what="two ticks")
    stopped = server_now(r)
    before = runs_of(q)
    time.sleep(3.5)  # about three ticks missed
    assert runs_of(q) == before
    with worker(url, "t-restart", 1):
        wait_for(lambda: len(runs_of(q)) >= len(before) + 2, 15, what="ticks after the restart")
        q.pause_periodic("r")
        wait_for(lambda: q.root_counts()["unfinished"] == 0, 20, what="the ticks' tasks to end")
    ids = runs_of(q)
    ticks = sorted(int(i.rsplit("@", 1)[1]) / 1000 for i in ids)
    assert len(set(ids)) == len(ids)
    missed = [t for t in ticks if stopped + 0.5 < t < stopped + 3.0]
    assert len(missed) <= 1, (missed, ticks)  # the missed ones made one task, not one each
    assert len(tasks_time.stamps(path)) == len(ids)


def test_pause_resume_remove_and_the_cli(url: str, r: redis.Redis) -> None:
    q = Queue("t-manage")
    q.every(1, defer(tasks_time.one), key="beat")
    q.cron("0 3 * * *", defer(tasks_time.one), key="nightly", tz="Europe/Paris")
    listed = {p.name: p for p in q.periodic()}
    assert set(listed) == {"beat", "nightly"} and listed["nightly"].cron == "0 3 * * *"
    nightly = datetime.datetime.fromtimestamp(listed["nightly"].next_due, zoneinfo.ZoneInfo("Europe/Paris"))
    assert (nightly.hour, nightly.minute) == (3, 0)
    code, out = cli("periodic", "list", "--json")
    assert code == 0 and {p["name"] for p in json.loads(out)} == {"beat", "nightly"}
    code, out = cli("periodic", "list")
    assert "every 1 s" in out and "cron 0 3 * * * (Europe/Paris)" in out
    code, out = cli("periodic", "pause", "beat")
    assert code == 0 and "paused periodic schedule beat" in out
    assert q.periodic()[-1].name == "beat" and q.periodic()[-1].paused and r.zscore(q.keys.periodic, "beat") == \
        float("inf")
    with worker(url, "t-manage", 1):
        live_workers(r, 1)
        time.sleep(2.5)
        assert runs_of(q) == []  # paused: no tick
        code, out = cli("periodic", "resume", "beat", "--queue", "t-manage")
        assert code == 0 and "resumed" in out
        wait_for(lambda: runs_of(q), 10, what="a tick after resume")
        code, out = cli("periodic", "remove", "beat")
        assert code == 0 and "removed" in out
    assert [p.name for p in q.periodic()] == ["nightly"] and not r.exists(q.keys.schedule("beat"))
    code, out = cli("status", "--queue", "t-manage")
    assert "periodic: queue t-manage nightly: cron 0 3 * * * (Europe/Paris)" in out
    assert "has periodic schedules (a worker makes their ticks) and no live worker serves it" in out
    assert cli("periodic", "pause", "nope")[0] == 5
    with pytest.raises(UnknownSchedule):
        q.pause_periodic("nope")


def test_bad_periodic_input_writes_nothing(url: str, r: redis.Redis) -> None:
    q = Queue("t-badp")
    before = nothing_written(r)
    task = defer(tasks_time.one)
    bad_every = [(0.5, "k"), (-1, "k"), ("1", "k"), (float("inf"), "k"), (True, "k"), (5, "a b"), (5, ""), (5, None)]
    for seconds, key in bad_every:
        with pytest.raises(ConfigError):
            q.every(seconds, task, key=key)
    for expr, tz in (("61 * * * *", None), ("* * * *", None), ("0 3 * * * *", None), ("every day", None),
                     ("0 3 * * *", "Mars/Olympus"), ("0 3 * * *", 5)):
        with pytest.raises(ConfigError):
            q.cron(expr, task, key="k", tz=tz)
    with pytest.raises(ConfigError):  # a tree: one call only
        q.every(5, defer(tasks_time.add, defer(tasks_time.one), 1), key="k")
    with pytest.raises(ConfigError):
        q.every(5, tasks_time.one, key="k")  # the function itself, not a deferred call
    with pytest.raises(TypeError):
        q.every(5, task, key="k", delay=3)  # not an option of a periodic task
    assert nothing_written(r) == before


def test_next_due_follows_the_grid_and_the_zone() -> None:
    assert periodic.next_due(10.0, "", "", 100.0, 100.0) == 110.0
    assert periodic.next_due(10.0, "", "", 100.0, 135.5) == 140.0  # missed ticks skipped: the grid goes on
    paris = zoneinfo.ZoneInfo("Europe/Paris")
    now = datetime.datetime(2026, 3, 28, 12, 0, tzinfo=paris).timestamp()  # the day before DST starts
    due = datetime.datetime.fromtimestamp(periodic.next_due(None, "0 3 * * *", "Europe/Paris", now, now), paris)
    assert (due.day, due.hour) == (29, 3)
    utc = periodic.next_due(None, "@hourly", "", now, now)
    assert utc > now and utc % 3600 == 0


def test_clean_all_keeps_the_periodic_schedules(url: str, r: redis.Redis, tmp_path) -> None:
    """`clean(all=True)` deletes tasks, not schedules: the schedule, its function and the queue's
    listing stay, and its next tick runs."""
    q = Queue("t-keep")
    path = str(tmp_path / "stamps")
    q.every(3600, defer(tasks_time.stamp, path, "kept"), key="kept")
    refs = q.schedule_graph({"a": tasks_time.one, "b": tasks_time.add}, {"b": ["a", "a"]}, delay=600)
    assert q.get(refs["a"]).state == "scheduled" and q.get(refs["b"]).state == "waiting"  # graphs take delay=
    q.clean(all=True)
    assert q.counts()["scheduled"] == 0 and [p.name for p in q.periodic()] == ["kept"]
    assert r.sismember(schema.QUEUES, "t-keep")
    r.hset(q.keys.schedule("kept"), schema.PERIODIC_NEXT, repr(server_now(r) - 1))
    r.zadd(q.keys.periodic, {"kept": server_now(r) - 1})  # due now
    with worker(url, "t-keep", 1):
        wait_for(lambda: tasks_time.stamps(path), 15, what="the kept schedule's tick to run")
    assert q.done_tasks()[0].periodic == "kept"


def test_a_graph_gives_named_nodes_their_own_delay(url: str, r: redis.Redis) -> None:
    q = Queue("t-graph")
    refs = q.schedule_graph({"a": tasks_time.one, "b": tasks_time.add, "c": tasks_time.one}, {"b": ["a", "a"]},
                            delay={"b": 600, "c": 300})
    assert q.get(refs["a"]).state == "ready" and q.get(refs["a"]).due is None
    assert q.get(refs["b"]).state == "waiting" and q.get(refs["b"]).due == pytest.approx(server_now(r) + 600, abs=5)
    assert q.get(refs["c"]).state == "scheduled"
    assert q.counts() == {"waiting": 1, "scheduled": 1, "ready": 1, "running": 0, "done": 0, "failed": 0}
    before = nothing_written(r)
    for bad in ({"nope": 5}, {"a": -1}):
        with pytest.raises(ConfigError):
            q.schedule_graph({"a": tasks_time.one}, {}, delay=bad)
    assert nothing_written(r) == before
