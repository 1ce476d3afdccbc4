"""Session-scoped fixtures of real local topologies (:mod:`forrestq.topology`): a Redis Cluster
(3 primaries + 3 replicas) and a Sentinel set (primary + replica + 3 sentinels).

Use them with ``from topologies import cluster, sentinel_set  # noqa: F401`` (not in conftest.py:
starting either costs about 2 s, paid only by the sessions that ask for it).

They are shared by the whole session, so a test must leave them healthy. The choice made here:
**a test that kills a node restarts it in its ``finally``** -- ``cluster.restart(node)`` /
``sentinel_set.restart(node)`` start it again on its port and wait (bounded) until the topology is
healthy again (a killed primary rejoins as a replica of its successor). Primaries move, so tests
ask ``cluster.primary_for(key)`` / ``sentinel_set.primary()`` instead of remembering a node; and
they call ``.flush()`` first rather than assume an empty store. A test that needs a topology in a
state it cannot repair starts its own ``LocalCluster`` / ``LocalSentinel`` in ``tmp_path``.
"""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from forrestq.topology import LocalCluster, LocalSentinel


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A started LocalCluster shared by the session (node-timeout 1000 ms); stopped at the end."""
    with LocalCluster(tmp_path_factory.mktemp("cluster")) as launched:
        yield launched


@pytest.fixture(scope="session")
def sentinel_set(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSentinel]:
    """A started LocalSentinel ("mymaster", down-after 1000 ms) shared by the session; stopped at the end."""
    with LocalSentinel(tmp_path_factory.mktemp("sentinel")) as launched:
        yield launched
