"""A task's history as events (issue 13): ``q.events()`` and ``forrestq events``.

What a user relies on: every state change of a task shows up once, in order, with the host and the
attempt; a crashed worker's task shows as lost; the stream stays capped; ``--json`` lines parse; a
follower sees what happens after it started, also across a Redis outage; user text prints literally.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import redis
import tasks
from helpers import wait_for
from procs import child_pids, spawn_worker, stop, worker, worker_env

from forrestq import Queue, defer
from forrestq.errors import ConfigError
from forrestq.events import Event
from forrestq.server import ServerProcess

FAST = ("--lease", "1", "--grace", "0")


def kinds(q: Queue, task_id: str | None = None) -> list[str]:
    return [e.kind for e in q.events() if task_id is None or e.task == task_id]


def of(q: Queue, task_id: str) -> list[Event]:
    return [e for e in q.events() if e.task == task_id]


def test_fail_retry_succeed_is_told_in_order_with_hosts_and_attempts(url, tmp_path):
    q = Queue("ev-retry", events=True)
    ref = q.schedule(defer(tasks.flaky, str(tmp_path / "n"), 1), retries=2, retry_backoff=0.05, retry_on=OSError)
    with worker(url, "ev-retry", 1):
        assert q.wait(ref, timeout=60).state == "done"
    got = of(q, ref.id)
    assert [e.kind for e in got] == ["scheduled", "started", "retried", "started", "done"]
    assert got[0].name.endswith("flaky")
    assert [e.attempt for e in got[1:]] == [1, 1, 2, 2]
    host = os.uname().nodename
    assert {e.host for e in got[1:]} == {host}
    assert got[2].reason == "OSError: attempt 1" and got[2].delay == pytest.approx(0.05)
    assert got[4].runtime is not None and got[4].runtime >= 0
    times = [e.time for e in got]
    assert times == sorted(times) and abs(times[-1] - time.time()) < 60


def test_a_failure_fails_its_dependents_with_a_reason_and_requeue_and_cancel_are_told(url):
    q = Queue("ev-dag", events=True)
    bad = defer(tasks.crash, "boom")
    ref = q.schedule(defer(tasks.add, bad, 1))
    with worker(url, "ev-dag", 1):
        assert q.wait(ref, timeout=60).state == "failed"
        failed = [e for e in q.events() if e.kind == "failed"]
        assert [e.task for e in failed][-1] == ref.id
        assert failed[-1].reason.startswith(f"input task {bad._id} failed: ") and "boom" in failed[-1].reason
        assert q.requeue_failed() and kinds(q).count("requeued") == 2
        assert q.wait(ref, timeout=60).state == "failed"
    late = q.schedule(defer(tasks.sleep_then, 60))
    assert q.cancel(late) == [late.id]
    assert kinds(q, late.id) == ["scheduled", "cancelled"]
    assert of(q, late.id)[-1].reason == "cancelled"


def test_a_worker_killed_mid_task_gives_a_lost_event(url):
    """Killed with its children, the worker reports nothing: the next worker's sweep finds the expired
    leases. A task with attempts left is lost, then runs again; one on its last attempt is lost, then fails."""
    q = Queue("ev-lost", events=True)
    again = q.schedule(defer(tasks.sleep_then, 3.0, "ok"))
    last = q.schedule(defer(tasks.sleep_then, 3.0, "ok"), max_attempts=1)
    first = spawn_worker(url, "ev-lost", 2, *FAST)
    try:
        wait_for(lambda: kinds(q).count("started") == 2, timeout=30, what="both tasks to start")
        for pid in [first.pid, *child_pids(first.pid)]:
            os.kill(pid, signal.SIGKILL)
        first.wait(5)
    finally:
        stop(first)
    with worker(url, "ev-lost", 1, *FAST):
        assert q.wait(again, timeout=60).state == "done"
        assert q.wait(last, timeout=60).state == "failed"
    host = os.uname().nodename
    got = of(q, again.id)
    assert [e.kind for e in got] == ["scheduled", "started", "lost", "started", "done"]
    assert got[2].host == host and got[2].attempt == 1 and got[3].attempt == 2
    got = of(q, last.id)
    assert [e.kind for e in got] == ["scheduled", "started", "lost", "failed"]
    assert got[2].host == host and got[3].reason == f"lost 1 times; last on host {host}"


def test_events_are_opt_in_per_queue_stored_for_every_process_and_capped(url, r):
    plain = Queue("ev-plain")
    with worker(url, "ev-plain", 1):
        plain.wait(plain.schedule(defer(tasks.identity, 1)), timeout=60)
    assert not r.exists(plain.keys.events) and list(plain.events()) == []
    node = int(r.config_get("stream-node-max-entries")["stream-node-max-entries"])
    q = Queue("ev-cap", events=300)
    q.schedule_many(defer(tasks.identity, i) for i in range(3000))
    assert 300 <= r.xlen(q.keys.events) <= 300 + node  # MAXLEN ~: whole stream nodes are trimmed
    assert next(iter(Queue("ev-cap").events())).kind == "scheduled"  # any process reads the same

    on = Queue("ev-on", events=True)
    on.schedule(defer(tasks.identity, 0))
    on.clean(all=True)  # forgets the emptied queue and all its keys; scheduling again stores the setting
    on.schedule(defer(tasks.identity, 1))
    assert kinds(on) == ["scheduled"]
    Queue("ev-on", events=False).schedule(defer(tasks.identity, 2))  # and it can be turned off again
    assert kinds(on) == ["scheduled"]
    for bad in (0, -1, "yes", 1.5):
        with pytest.raises(ConfigError):
            Queue("ev-bad", events=bad)


def test_since_resumes_after_an_event_or_a_time(url):
    q = Queue("ev-since", events=True)
    q.schedule(defer(tasks.identity, 1))
    first = next(q.events())
    later = time.time() + 0.01
    wait_for(lambda: time.time() > later + 0.01, what="the clock to pass the mark")
    second = q.schedule(defer(tasks.identity, 2))
    assert [e.task for e in q.events(since=first)] == [second.id]
    assert [e.task for e in q.events(since=first.id)] == [second.id]
    assert [e.task for e in q.events(since=later)] == [second.id]
    assert list(q.events(since="now")) == []
    with pytest.raises(ConfigError):
        list(q.events(since="yesterday"))


def test_follow_sees_new_events_and_stops_after_its_timeout(url):
    q = Queue("ev-follow", events=True)
    seen: list[Event] = []
    following = q.events(since="now", follow=True, timeout=3)  # "now" is the call's now
    follower = threading.Thread(target=lambda: seen.extend(following))
    follower.start()
    ref = q.schedule(defer(tasks.identity, 1))
    wait_for(lambda: seen, timeout=10, what="the follower to see the new event")
    follower.join(15)
    assert not follower.is_alive() and [(e.kind, e.task) for e in seen] == [("scheduled", ref.id)]


def test_follow_rides_out_a_redis_outage(tmp_path):
    srv = ServerProcess(tmp_path / "srv", appendfsync="always").start()
    try:
        q = Queue("ev-outage", url=srv.url, events=True)
        seen: list[Event] = []
        # timeout: seconds without an event once it is reading again; short, so the thread ends here
        follower = threading.Thread(target=lambda: seen.extend(q.events(follow=True, timeout=3)), daemon=True)
        q.schedule(defer(tasks.identity, 1))
        follower.start()
        wait_for(lambda: len(seen) == 1, timeout=10, what="the first event")
        srv.kill()
        time.sleep(1.0)  # the outage itself (what is tested is that the follower survives it)
        srv.start()
        after = Queue("ev-outage", url=srv.url).schedule(defer(tasks.identity, 2))
        wait_for(lambda: len(seen) == 2, timeout=30, what="the event written after the outage")
        assert seen[1].task == after.id
        follower.join(15)  # before the server goes: a follower left behind would wait out an outage
        assert not follower.is_alive()
    finally:
        srv.stop()


# ------------------------------------------------------------------------------------ command line


def fq(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "forrestq", *args], env=worker_env(), capture_output=True,
                          text=True, timeout=timeout)


def test_cli_json_lines_parse_and_lines_show_user_text_literally(url):
    q = Queue("ev-cli", events=True)
    ref = q.schedule(defer(tasks.crash, "\x1b[2J[red]wiped[/red]\x07 end"))
    with worker(url, "ev-cli", 1):
        q.wait(ref, timeout=60)
    out = fq("events", "-q", "ev-cli", "--json")
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [row["kind"] for row in rows] == ["scheduled", "started", "failed"]
    assert rows[2]["reason"] == "ValueError: \x1b[2J[red]wiped[/red]\x07 end" and rows[2]["task"] == ref.id
    text = fq("events", "-q", "ev-cli").stdout
    lines = text.splitlines()
    assert len(lines) == 3 and "\x1b" not in text
    assert lines[2].endswith(": ValueError: \\x1b[2J[red]wiped[/red]\\x07 end")
    assert f"failed    {ref.id} on {os.uname().nodename} (attempt 1) after " in lines[2]
    assert fq("events", "-q", "ev-nothing-here").returncode == 5
    Queue("ev-cli-plain").schedule(defer(tasks.identity, 1))
    plain = fq("events", "-q", "ev-cli-plain")
    assert plain.returncode == 0 and plain.stdout == "" and "events=True" in plain.stderr


def test_cli_follow_sees_an_event_written_after_it_started(url, tmp_path):
    q = Queue("ev-cli-f", events=True)
    q.schedule(defer(tasks.identity, 0))
    last = list(q.events())[-1]
    log = tmp_path / "events.log"
    readers = _blocked(url)  # other tests' readers (a results() thread) may block in XREAD too
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "forrestq", "events", "-q", "ev-cli-f", "--follow", "--json",
                                 "--since", last.id], env=worker_env(), stdout=out, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: proc.poll() is None and _blocked(url) > readers, timeout=20, what="the follower to block")
        ref = Queue("ev-cli-f").schedule(defer(tasks.identity, 1))
        line = wait_for(lambda: Path(log).read_text().strip(), timeout=20, what="the event in the log")
        assert json.loads(line.splitlines()[0])["task"] == ref.id
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(10)
    assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""


def _blocked(url: str) -> int:
    """How many clients wait in XREAD (an events follower is one)."""
    r = redis.Redis.from_url(url)
    try:
        return sum(c.get("cmd") == "xread" for c in r.client_list())
    finally:
        r.close()
