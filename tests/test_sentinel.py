"""forrestq behind Sentinel for real (a primary, a replica and 3 sentinels, :mod:`forrestq.topology`):
producers, ``results()`` readers and workers follow a failover by themselves, and with durability
``replica`` a schedule that returned survives its primary's SIGKILL."""
from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest
import tasks
from failover import assert_all_done_once, drain_through
from procs import worker
from topologies import sentinel_set  # noqa: F401

from forrestq import Queue, defer, durability
from forrestq.connection import connect, describe
from forrestq.errors import ConfigError, NotDurable, ServerUnreachable
from forrestq.topology import LocalSentinel


@pytest.fixture
def s(sentinel_set: LocalSentinel, monkeypatch: pytest.MonkeyPatch) -> LocalSentinel:  # noqa: F811
    sentinel_set.flush()
    monkeypatch.setenv("FORRESTQ_URL", sentinel_set.url)
    return sentinel_set


def test_the_url_finds_the_primary_and_says_what_is_wrong(s: LocalSentinel) -> None:
    r = connect(s.url)
    assert r.set("fq:probe", "1") and s.primary().client().get("fq:probe") == b"1"
    port = s.sentinels[0].port
    assert describe(s.url).startswith(f"sentinel 127.0.0.1:{port},") and describe(s.url).endswith("(mymaster)")
    with pytest.raises(ServerUnreachable, match="No master found for 'nosuch'|nosuch"):
        connect(f"redis+sentinel://127.0.0.1:{port}/nosuch")
    with pytest.raises(ConfigError, match="missing the master name"):
        connect(f"redis+sentinel://127.0.0.1:{port}/", check=False)


def test_a_sentinel_failover_under_load_loses_nothing(s: LocalSentinel, tmp_path: Path) -> None:
    log = tmp_path / "w.log"
    drained = drain_through(s.url, "sf", 150, s.failover, log)
    assert_all_done_once(drained, log)
    print(f"SENTINEL FAILOVER: next result after {drained.first_after:.2f} s")


def test_a_killed_primary_under_load_loses_nothing(s: LocalSentinel, tmp_path: Path) -> None:
    log = tmp_path / "w.log"
    victim = s.primary()
    try:
        drained = drain_through(s.url, "sk", 150, s.kill_primary, log)
        assert_all_done_once(drained, log)
        assert s.primary().port != victim.port
        print(f"primary SIGKILL: next result after {drained.first_after:.2f} s")
    finally:
        s.restart(victim)


@pytest.mark.parametrize("mode", ["none", "replica"])
def test_a_schedule_that_returned_survives_the_primary_s_sigkill_with_durability_only(
        s: LocalSentinel, tmp_path: Path, mode: str) -> None:
    """The replica is stopped (SIGSTOP) and its link cut, so it cannot have the writes until it runs
    again: without durability ``schedule`` returns at once and the primary's SIGKILL takes the 500
    tasks with it; with it ``schedule`` returns only once the thawed replica has them (WAIT)."""
    primary = s.primary()
    replica = next(n for n in s.servers if n.port != primary.port)
    name = f"durable-{mode}"
    q = Queue(name, durability=mode)
    q.schedule(defer(tasks.identity, -1))  # scripts loaded and the group made before the cut
    os.kill(replica.pid, signal.SIGSTOP)
    thaw = threading.Timer(0.3 if mode == "replica" else 30, os.kill, (replica.pid, signal.SIGCONT))
    try:
        primary.client().execute_command("CLIENT", "KILL", "TYPE", "replica")
        thaw.start()
        q.schedule_many([defer(tasks.identity, i) for i in range(500)])
        primary.kill()  # right after schedule returned
    finally:
        thaw.cancel()
        os.kill(replica.pid, signal.SIGCONT)
    try:
        s.wait_failover(primary)
        after = Queue(name)  # a new producer, on the promoted replica
        if mode == "none":  # Redis replicates asynchronously: the 500 acknowledged tasks are gone
            assert after.counts()["ready"] <= 1  # (the first one too, if it was still in flight)
            return
        assert after.counts()["ready"] == 501
        s.restart(primary)  # back as the new primary's replica: the workers' writes wait for it
        with worker(s.url, name, 2, env={"FORRESTQ_DURABILITY": "replica"}, log=tmp_path / "w.log"):
            got = sorted(t.returnvalue for t in after.results(timeout=60))
        assert got == list(range(-1, 500)) and after.counts()["done"] == 501
    finally:
        if not primary.running:
            s.restart(primary)


def test_a_bad_durability_is_one_clear_error(s: LocalSentinel) -> None:
    with pytest.raises(ConfigError, match="durability='always' is not one of none, replica"):
        Queue("x", durability="always")


def test_a_write_no_replica_confirms_raises_not_durable_and_stands(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(durability, "WAIT_MS", 100)
    q = Queue("lonely", url, durability="replica")  # the session server has no replica
    with pytest.raises(NotDurable, match="schedule on queue 'lonely': no replica confirmed the write"):
        q.schedule(defer(tasks.identity, 1))
    assert q.counts()["ready"] == 1  # on the primary all the same
