"""The topology launchers themselves (forrestq.topology), checked with plain redis-py: the cluster
serves every primary's slots and survives a primary's SIGKILL; the sentinel set names a primary,
moves it on SENTINEL FAILOVER and after a SIGKILL, keeping what was written (and WAITed for).

Module-scoped launchers of its own (not the session fixtures of ``topologies``): a test that kills
a node restarts it in its ``finally``, so the next test finds a healthy topology again.
"""
from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from redis.cluster import RedisCluster
from redis.sentinel import Sentinel

from forrestq.topology import LocalCluster, LocalSentinel, Node


@pytest.fixture(scope="module")
def local_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster(tmp_path_factory.mktemp("topology-cluster")) as launched:
        yield launched


@pytest.fixture(scope="module")
def local_sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSentinel]:
    with LocalSentinel(tmp_path_factory.mktemp("topology-sentinel")) as launched:
        yield launched


def _cluster_client(node: Node) -> RedisCluster:
    return RedisCluster(host="127.0.0.1", port=node.port, decode_responses=True)


def test_the_cluster_serves_keys_in_every_primarys_slots(local_cluster: LocalCluster) -> None:
    assert re.fullmatch(r"redis\+cluster://(127\.0\.0\.1:\d+,){2}127\.0\.0\.1:\d+/", local_cluster.url)
    local_cluster.flush()
    keys = {}
    for i in range(100):  # a key for each primary
        keys.setdefault(local_cluster.primary_for(f"key-{i}").port, f"key-{i}")
    assert len(keys) == 3
    client = _cluster_client(local_cluster.nodes[0])
    try:
        for port, key in keys.items():
            client.set(key, str(port))
        assert all(client.get(key) == str(port) for port, key in keys.items())
        for port, key in keys.items():  # each really is on the primary primary_for named
            with next(n for n in local_cluster.nodes if n.port == port).client() as direct:
                assert direct.get(key) == str(port).encode()
    finally:
        client.close()
    assert local_cluster.primary_for("{key-1}x") is local_cluster.primary_for("key-1")  # hash tags


def test_killing_a_cluster_primary_promotes_its_replica_and_keeps_its_keys(local_cluster: LocalCluster) -> None:
    old = local_cluster.primary_for("survivor")
    with old.client() as direct:
        direct.set("survivor", "kept")
        assert direct.execute_command("WAIT", 1, 1000) == 1
    local_cluster.kill(old)
    try:
        assert not old.running
        new = local_cluster.wait_promoted(old)
        assert new is not old and local_cluster.primary_for("survivor") is new
        client = _cluster_client(new)
        try:
            assert client.get("survivor") == "kept"
        finally:
            client.close()
    finally:
        local_cluster.restart(old)  # rejoins as a replica; waits until the cluster is healthy
    with old.client() as restarted:
        assert restarted.execute_command("ROLE")[0] == b"slave"


def test_the_sentinels_name_a_primary_and_failover_moves_it(local_sentinel: LocalSentinel) -> None:
    assert re.fullmatch(r"redis\+sentinel://(127\.0\.0\.1:\d+,){2}127\.0\.0\.1:\d+/mymaster/0", local_sentinel.url)
    local_sentinel.flush()
    old = local_sentinel.primary()
    with old.client() as direct:
        direct.set("moved", "kept")
        assert direct.execute_command("WAIT", 1, 1000) == 1
    new = local_sentinel.failover()
    assert new is not old and local_sentinel.primary() is new
    sentinel = Sentinel([("127.0.0.1", s.port) for s in local_sentinel.sentinels], socket_timeout=2)
    assert sentinel.discover_master("mymaster") == ("127.0.0.1", new.port)
    assert sentinel.master_for("mymaster").get("moved") == b"kept"
    with old.client() as demoted:
        assert demoted.execute_command("ROLE")[0] == b"slave"  # demoted: the set is healthy again


def test_killing_the_sentinel_primary_fails_over_and_keeps_its_data(local_sentinel: LocalSentinel) -> None:
    old = local_sentinel.primary()
    with old.client() as direct:
        direct.set("crash", "kept")
        assert direct.execute_command("WAIT", 1, 1000) == 1
    assert local_sentinel.kill_primary() is old
    try:
        new = local_sentinel.wait_failover(old)
        assert new is not old
        with new.client() as client:
            assert client.get("crash") == b"kept"
    finally:
        local_sentinel.restart(old)  # comes back as a replica of the new primary
    with old.client() as restarted:
        assert restarted.execute_command("ROLE")[0] == b"slave"
