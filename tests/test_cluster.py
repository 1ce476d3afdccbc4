"""forrestq on a real Redis Cluster (3 primaries + 3 replicas, :mod:`forrestq.topology`).

The rule that makes it work: every script, transaction and hot-path pipeline touches the keys of one
queue, and they all share the queue's hash tag, so each runs on the primary of that slot
(:mod:`forrestq.cluster`); the global registry keys are routed on their own. The queues below are
picked so that they live on different primaries: one worker serves them all.
"""
from __future__ import annotations

import json
import operator
import signal
from pathlib import Path

import pytest
import tasks
from failover import assert_all_done_once, drain_through
from helpers import wait_for
from procs import spawn_worker, stop, worker
from topologies import cluster  # noqa: F401
from typer.testing import CliRunner

from forrestq import Queue, defer, signing
from forrestq.cli import app
from forrestq.cluster import ClusterClient, slot_of, slots_along
from forrestq.connection import connect
from forrestq.errors import ConfigError
from forrestq.schema import QUEUES, TASK_ARGS, QueueKeys
from forrestq.topology import LocalCluster


def names_on_distinct_primaries(c: LocalCluster, n: int, stem: str) -> list[str]:
    """n queue names whose slots are served by n different primaries."""
    found: dict[int, str] = {}
    for i in range(1000):
        name = f"{stem}{i}"
        found.setdefault(c.primary_for(QueueKeys(name).prefix).port, name)
        if len(found) == n:
            return list(found.values())
    raise AssertionError("no such names")


@pytest.fixture
def c(cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch) -> LocalCluster:  # noqa: F811
    cluster.flush()
    monkeypatch.setenv("FORRESTQ_URL", cluster.url)
    return cluster


def test_urls_name_the_topology_they_expect(c: LocalCluster, server) -> None:
    assert isinstance(connect(c.url), ClusterClient)
    with pytest.raises(ConfigError, match="is a cluster node; use redis\\+cluster://"):
        connect(f"redis://127.0.0.1:{c.nodes[0].port}/0")
    with pytest.raises(ConfigError, match="is not a cluster node"):
        connect(f"redis+cluster://127.0.0.1:{server.port}/")
    with pytest.raises(ConfigError, match="a cluster has only database 0"):
        connect(f"redis+cluster://127.0.0.1:{c.nodes[0].port}/3", check=False)


def test_dags_results_wait_and_map_over_queues_on_three_primaries(c: LocalCluster, tmp_path: Path) -> None:
    a, b, m = names_on_distinct_primaries(c, 3, "cq")
    qa, qb, qm = Queue(a), Queue(b), Queue(m)
    first = defer(operator.add, 1, 2)
    root = qa.schedule(defer(operator.mul, first, defer(operator.add, first, 4)))
    single = qb.schedule(defer(tasks.identity, "b"))
    with worker(c.url, [a, b, m], 2, log=tmp_path / "w.log"):
        assert [t.returnvalue for t in qa.results(timeout=30)] == [21]
        assert qb.wait(single, timeout=30).returnvalue == "b"
        assert qm.map(tasks.identity, range(20), progress=False) == list(range(20))
    assert qa.counts()["done"] == 3 and qa.get(root).state == "done"
    for q in (qa, qb, qm):  # nothing left delivered to a consumer and unclaimed
        assert q.r.xpending(q.keys.stream, "workers")["pending"] == 0


def test_an_idle_worker_on_three_primaries_wakes_for_each_on_the_connections_it_has(c: LocalCluster,
                                                                                    tmp_path: Path) -> None:
    names = names_on_distinct_primaries(c, 3, "ci")
    queues = [Queue(n) for n in names]
    admin = [c.primary_for(q.keys.prefix).client() for q in queues]

    def child_connections() -> list[set[str]]:  # the child's blocking reads (named by its consumer)
        return [{x["id"] for x in a.client_list() if x["name"] and x["cmd"] == "xreadgroup" and "b" in x["flags"]}
                for a in admin]

    def one_round(base: int) -> None:  # each task wakes the idle child on another primary
        for i, q in enumerate(queues):
            assert q.wait(q.schedule(defer(tasks.identity, base + i)), timeout=30).returnvalue == base + i

    with worker(c.url, names, 1, log=tmp_path / "w.log"):
        def blocked_everywhere() -> list[set[str]] | None:
            ids = child_connections()
            return ids if all(len(i) == 1 for i in ids) else None
        before = wait_for(blocked_everywhere, timeout=20, what="the idle child blocked on every primary")
        one_round(0)
        one_round(10)
        one_round(20)
        after = wait_for(blocked_everywhere, timeout=20, what="the idle child blocked on every primary again")
        assert after == before  # one blocking read per slot, kept; losers ended by CLIENT UNBLOCK
    for q in queues:
        assert q.r.xpending(q.keys.stream, "workers")["pending"] == 0


def test_exactly_once_keys_and_shared_inputs(c: LocalCluster, tmp_path: Path) -> None:
    q = Queue(names_on_distinct_primaries(c, 2, "co")[1])
    ran = [key for key in q.iterate(range(5), lease=30)]
    assert ran == list(range(5)) and list(q.iterate(range(5), lease=30)) == []
    assert q.once_counts()["done"] == 5
    shared = q.put(list(range(1000)))
    with worker(c.url, q.name, 1, log=tmp_path / "w.log"):
        assert q.wait(q.schedule(defer(len, shared)), timeout=30).returnvalue == 1000


def test_cli_commands_on_a_cluster(c: LocalCluster, tmp_path: Path) -> None:
    name = names_on_distinct_primaries(c, 3, "cc")[2]
    q = Queue(name)
    flag, log = tmp_path / "fixed", tmp_path / "ran"
    bad = q.schedule(defer(tasks.fail_unless_exists, str(flag), str(log), "x"))
    parked = q.schedule(defer(tasks.identity, 1), delay=3600)
    runner = CliRunner()
    with worker(c.url, name, 1, log=tmp_path / "w.log"):
        assert q.wait(bad, timeout=30).state == "failed"
        wait_for(lambda: connect(c.url).zcard("fq:workers") == 1, timeout=15)
        status = runner.invoke(app, ["status", "--url", c.url, "--json"])
        assert status.exit_code == 0 and name in status.stdout, status.stdout
        assert len(json.loads(status.stdout)["workers"]) == 1
        assert bad.id in runner.invoke(app, ["tasks", "--url", c.url, "-q", name]).stdout
        assert "RuntimeError" in runner.invoke(app, ["show", "--url", c.url, bad.id]).stdout
        flag.write_text("now")
        out = runner.invoke(app, ["requeue", "--url", c.url, "-q", name, "--failed"])
        assert out.stdout.strip() == f"requeued 1 task(s) (1 in {name})", out.stdout
        assert q.wait(bad, timeout=30).state == "done"
        assert runner.invoke(app, ["cancel", "--url", c.url, parked.id]).exit_code == 0
        assert q.get(parked).state == "failed"
    out = runner.invoke(app, ["clean", "--url", c.url, "-q", name, "--all", "--yes"])
    assert out.exit_code == 0, out.stdout
    assert sum(q.counts().values()) == 0
    assert c.primary_for(q.keys.prefix).client().keys(f"fq:{{{name}}}:t:*") == []


def test_a_killed_worker_s_task_is_reclaimed_and_signatures_hold(c: LocalCluster, tmp_path: Path,
                                                                 no_secret: None,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORRESTQ_SECRET", "cluster-secret")
    signing.use_environment()
    name = names_on_distinct_primaries(c, 2, "cr")[0]
    q = Queue(name)
    task = q.schedule(defer(tasks.sleep_then, 3, "late"))
    first = spawn_worker(c.url, name, 1, "--lease", "1", log=tmp_path / "a.log")
    try:
        wait_for(lambda: q.get(task).state == "running", timeout=20)
        first.send_signal(signal.SIGKILL)
    finally:
        stop(first)
    with worker(c.url, name, 1, "--lease", "1", log=tmp_path / "b.log"):
        done = q.wait(task, timeout=60)
    assert done.state == "done" and done.attempts == 2
    assert signing.is_signed(c.primary_for(q.keys.prefix).client().hget(q.keys.task(task.id), TASK_ARGS))


def test_a_killed_primary_loses_no_task(c: LocalCluster, tmp_path: Path) -> None:
    name = names_on_distinct_primaries(c, 1, "cf")[0]
    victim = c.primary_for(QueueKeys(name).prefix)
    try:
        drained = drain_through(c.url, name, 150, lambda: c.kill(victim), tmp_path / "w.log")
        assert_all_done_once(drained, tmp_path / "w.log")
        print(f"cluster primary SIGKILL: next result after {drained.first_after:.2f} s")
        assert c.primary_for(QueueKeys(name).prefix).port != victim.port
    finally:
        c.restart(victim)


def test_slot_routing_is_by_hash_tag() -> None:
    assert slot_of("fq:{a}:x") == slot_of("fq:{a}:t:1") == slot_of("a") != slot_of("fq:{b}:x")


def test_durability_waits_on_the_primary_that_took_the_writes(c: LocalCluster, tmp_path: Path) -> None:
    registry = c.primary_for(QUEUES).port  # a queue elsewhere: a WAIT sent with the registry's SADD would not count
    name = next(n for n in names_on_distinct_primaries(c, 3, "cd")
                if c.primary_for(QueueKeys(n).prefix).port != registry)
    primary = c.primary_for(QueueKeys(name).prefix).client()
    primary.config_resetstat()
    q = Queue(name, durability="replica")  # NotDurable if the WAIT went to a connection without the writes
    q.schedule_many([defer(tasks.identity, i) for i in range(20)])
    q.schedule(defer(tasks.identity, 20))
    with worker(c.url, name, 2, env={"FORRESTQ_DURABILITY": "replica"}, log=tmp_path / "w.log"):
        assert sorted(t.returnvalue for t in q.results(timeout=30)) == list(range(21))
    assert primary.info("commandstats")["cmdstat_wait"]["calls"] >= 2 + 21  # each schedule, each task's end
    assert "no replica confirmed" not in (tmp_path / "w.log").read_text()


def test_a_keyless_command_goes_with_the_writes_before_it() -> None:
    a, b = slot_of("fq:{a}:x"), slot_of("fq:{b}:x")
    commands = [("WAIT", 1, 5), ("SADD", "fq:{b}:x", 1), ("EVALSHA", "sha", 1, "fq:{a}:x"), ("WAIT", 1, 5),
                ("TIME",)]
    assert slots_along(commands, 0) == [b, b, a, a, a]
    assert slots_along([("PING",)], 7) == [7]


def test_multi_key_commands_over_several_slots_and_a_worker_that_leaves(c: LocalCluster, tmp_path: Path) -> None:
    r = connect(c.url)
    keys = [QueueKeys(n).prefix + "x" for n in names_on_distinct_primaries(c, 3, "cm")]
    for i, key in enumerate(keys):
        r.set(key, i)
    assert r.mget([keys[2], keys[0], keys[1]]) == [b"2", b"0", b"1"]
    assert r.exists(*keys) == 3 and r.delete(*keys) == 3 and r.exists(*keys) == 0
    name = names_on_distinct_primaries(c, 3, "cw")[2]
    with worker(c.url, name, 1, log=tmp_path / "w.log"):
        wait_for(lambda: r.zcard("fq:workers") == 1, timeout=15)
        wid = r.zrange("fq:workers", 0, -1)[0].decode()
        assert r.exists(f"fq:w:{wid}")
    assert r.zcard("fq:workers") == 0 and not r.exists(f"fq:w:{wid}")  # its hash and sweep guards deleted


def test_a_batch_is_written_in_pieces_each_bounded_by_the_socket_timeout() -> None:
    """send_batch writes about 64 KiB at a time: a big schedule_many (tens of MB of script arguments)
    must not have to be taken by the server within one socket timeout."""
    from forrestq.cluster import _pieces

    packed = [bytes(40_000), bytes(40_000), bytes(10), bytes(200_000), bytes(5)]
    pieces = _pieces(packed)
    assert b"".join(pieces) == b"".join(packed)
    assert [len(p) for p in pieces] == [40_000, 40_010, 200_000, 5]
    assert _pieces([]) == []
