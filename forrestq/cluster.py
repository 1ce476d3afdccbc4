"""Redis Cluster without a cluster client: a ``redis.Redis`` that sends each command, pipeline and
batch of scripts to the primary serving its key's slot.

Why not redis-py's RedisCluster: it refuses scripts in pipelines, changes the reply shape of
transactions and of multi-key reads, and so would need a second code path through every layer.
forrestq does not need one: every script, transaction and hot-path pipeline touches the keys of one
queue, every key of a queue carries the queue name as its hash tag, so each of them belongs to one
slot and runs unchanged on a plain connection to that slot's primary.

The rules (:class:`ClusterClient`):

* a command goes to the slot of its first key; a keyless one (TIME, PING, WAIT) to the client's home
  slot (:func:`pinned`: a queue's client is pinned to its queue);
* a non-transactional pipeline over several slots is split by slot, one pipeline per slot, replies
  put back in order (the global registry keys ride with a queue's pipeline this way); a transaction
  over several slots is a bug in forrestq and refused; multi-key DEL, EXISTS, MGET are split too;
* commands for every node: FLUSHALL goes to every primary, SCAN to the node of the
  pattern's hash tag (else every primary), CLIENT LIST/UNBLOCK node by node (:meth:`primaries`);
* ``MOVED`` (the command did not run) updates the slot map and resends at once; connection errors,
  ``CLUSTERDOWN``, ``TRYAGAIN``, ``ASK`` ask any reachable node for the map again and retry with the
  caller's back-off (a failover: the replica is promoted while we wait).
"""
from __future__ import annotations

import copy
import os
import select
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import hiredis
import redis
from redis.backoff import NoBackoff
from redis.client import Pipeline
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot
from redis.retry import Retry

__all__ = ["Topology", "ClusterClient", "pinned", "slot_of", "primaries", "slot_groups"]

T = TypeVar("T")
Address = tuple[str, int]

# redirections and refusals that mean "ask again, maybe elsewhere" (MOVED is handled at once)
_RETRY_ON = (redis.ConnectionError, redis.TimeoutError, redis.exceptions.ClusterDownError,
             redis.exceptions.TryAgainError, redis.exceptions.AskError, redis.ReadOnlyError)
_MAX_MOVED = 5
# commands without a key (sent to the home slot's primary, or as said above)
_KEYLESS = frozenset("""PING TIME INFO CLIENT SCRIPT WAIT WAITAOF FLUSHALL FLUSHDB DBSIZE CONFIG ACL
    COMMAND MULTI EXEC DISCARD UNWATCH ECHO HELLO SELECT READONLY READWRITE CLUSTER DEBUG SCAN KEYS
    RANDOMKEY SAVE BGSAVE BGREWRITEAOF LASTSAVE ROLE SHUTDOWN AUTH SLOWLOG LATENCY MONITOR PUBLISH
    FUNCTION MODULE MEMORY LOLWUT SWAPDB""".split())
_CONTAINERS = frozenset(("XGROUP", "XINFO", "OBJECT"))  # CONTAINER SUB key ...
_SPLIT = frozenset(("DEL", "UNLINK", "EXISTS", "TOUCH", "MGET"))  # multi-key commands a caller may spread
_EVALS = frozenset(("EVAL", "EVALSHA", "EVAL_RO", "EVALSHA_RO", "FCALL", "FCALL_RO"))


def _bytes(v: Any) -> bytes:
    return v if isinstance(v, bytes) else str(v).encode()


def slot_of(key: str | bytes) -> int:
    """The cluster slot of a key (CRC16 of its hash tag, or of the whole key)."""
    return int(key_slot(_bytes(key)))


def command_key(args: Sequence[Any]) -> Any:
    """The first key of a command (as redis-py sends it: ``("HGET", key, ...)``,
    ``("XGROUP CREATE", key, ...)``), or None for a command without one."""
    words = str(args[0]).upper().split()
    name = words[0]
    if name in _EVALS:
        return args[3] if len(args) > 3 and int(args[2]) > 0 else None
    if name in ("XREADGROUP", "XREAD"):
        upper = [str(a).upper() if isinstance(a, str) else _bytes(a).upper().decode(errors="replace")
                 for a in args]
        return args[upper.index("STREAMS") + 1] if "STREAMS" in upper else None
    if name in _KEYLESS:
        return None
    if name in _CONTAINERS:
        index = 1 if len(words) > 1 else 2
        return args[index] if len(args) > index else None
    return args[1] if len(args) > 1 else None


class Topology:
    """Which primary serves which slot, learned from any reachable node (CLUSTER SLOTS) and
    learned again whenever a node moves a slot, dies or refuses; and one client per primary.
    ``options``: what every node connection gets (credentials, TLS, timeouts, client name)."""

    def __init__(self, seeds: Sequence[Address], options: dict[str, Any]) -> None:
        self.seeds = list(seeds)
        self.options = {**options, "retry": Retry(NoBackoff(), 0)}  # the ClusterClient retries
        self.slots: list[Address | None] = [None] * REDIS_CLUSTER_HASH_SLOTS
        self.nodes: dict[Address, redis.Redis] = {}

    def node(self, address: Address) -> redis.Redis:
        """The client of the node at ``address`` (made once)."""
        got = self.nodes.get(address)
        if got is None:
            got = self.nodes[address] = redis.Redis(host=address[0], port=address[1], **self.options)
        return got

    def primary(self, slot: int) -> redis.Redis:
        """The client of the primary that serves ``slot`` (the map is read first if unknown)."""
        address = self.slots[slot]
        if address is None:
            self.refresh()
            address = self.slots[slot]
            if address is None:
                raise redis.exceptions.ClusterDownError(f"CLUSTERDOWN no node serves slot {slot}")
        return self.node(address)

    def primaries(self) -> list[redis.Redis]:
        """Every primary that serves a slot, one client each."""
        if not any(self.slots):
            self.refresh()
        return [self.node(a) for a in dict.fromkeys(a for a in self.slots if a is not None)]

    def moved(self, error: redis.exceptions.MovedError) -> None:
        self.slots[error.slot_id] = (error.host, int(error.port))

    def refresh(self) -> None:
        """Read the slot map from the first node that answers: the primaries known, then the seeds.
        Raises the last error if none answers."""
        last: Exception | None = None
        for address in [*dict.fromkeys([*(a for a in self.slots if a), *self.seeds])]:
            try:
                reply = self.node(address).execute_command("CLUSTER SLOTS")
            except redis.RedisError as e:
                last = e
                continue
            fresh: list[Address | None] = [None] * REDIS_CLUSTER_HASH_SLOTS
            for start, end, primary, *_ in reply:
                host = primary[0].decode() if isinstance(primary[0], bytes) else str(primary[0])
                served = (host or address[0], int(primary[1]))
                fresh[int(start):int(end) + 1] = [served] * (int(end) - int(start) + 1)
            self.slots = fresh
            return
        raise last if last is not None else redis.ConnectionError("no cluster node to ask")

    def call(self, slot: int, fn: Callable[[redis.Redis], T], retry: Retry) -> T:
        """fn(primary of slot), following MOVED at once and retrying the other refusals (and
        connection errors) with ``retry``'s back-off, the map read again before each try."""
        def attempt() -> T:
            for _ in range(_MAX_MOVED):
                try:
                    return fn(self.primary(slot))
                except redis.exceptions.MovedError as e:
                    self.moved(e)
            return fn(self.primary(slot))

        def failed(_: Exception) -> None:
            try:
                self.refresh()
            except redis.RedisError:
                pass  # nobody answers yet: the next attempt fails the same way, after a pause

        return retry.call_with_retry(attempt, failed)


def _router_retry(retry: Retry | None) -> Retry:
    out = copy.copy(retry) if retry is not None else Retry(NoBackoff(), 0)
    out.update_supported_errors(list(_RETRY_ON))
    return out


class ClusterClient(redis.Redis):  # type: ignore[misc]
    """A redis.Redis over a whole cluster (see the module's rules); ``home``: the key whose slot
    keyless commands and key-less pipelines go to."""

    def __init__(self, topology: Topology, retry: Retry | None, home: str = "") -> None:
        host, port = topology.seeds[0]
        # the attributes redis.Redis needs (encoder, reply callbacks); this pool never sends
        super().__init__(host=host, port=port, **{**topology.options, "retry": Retry(NoBackoff(), 0)})
        self.topology = topology
        self.router_retry = _router_retry(retry)
        self.home = home
        self.home_slot = slot_of(home) if home else 0
        self._raw: dict[Address, Any] = {}
        self._blocking: dict[int, tuple[Any, int]] = {}  # slot -> (connection, its client id)
        self._raw_pid = 0

    def pinned(self, home: str) -> ClusterClient:
        """A client of the same cluster whose keyless commands go to ``home``'s slot."""
        twin = copy.copy(self)
        twin.home, twin.home_slot = home, slot_of(home)
        twin._raw, twin._blocking, twin._raw_pid = {}, {}, 0
        return twin

    def slot_for(self, args: Sequence[Any]) -> int:
        key = command_key(args)
        return self.home_slot if key is None else slot_of(key)

    def execute_command(self, *args: Any, **options: Any) -> Any:
        name = str(args[0]).upper()
        if name in _SPLIT and len({slot_of(k) for k in args[1:]}) > 1:  # keys of several slots: one call per slot
            return self._split(name, list(args[1:]), options)
        return self.topology.call(self.slot_for(args), lambda n: n.execute_command(*args, **options),
                                  self.router_retry)

    def _split(self, name: str, keys: list[Any], options: dict[str, Any]) -> Any:
        """DEL/UNLINK/EXISTS/TOUCH (counts added up) or MGET (values in the keys' order) over keys of
        several slots."""
        parts: dict[int, list[Any]] = {}
        for key in keys:
            parts.setdefault(slot_of(key), []).append(key)
        if name != "MGET":
            return sum(int(self.execute_command(name, *part)) for part in parts.values())
        found: dict[Any, Any] = {}
        for part in parts.values():
            found.update(zip(part, self.execute_command("MGET", *part, **{**options, "keys": part})))
        return [found[key] for key in keys]

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> SlotPipeline:
        return SlotPipeline(self, transaction)

    def primaries(self) -> list[redis.Redis]:
        """One client per primary (for commands about a node: CLIENT LIST, INFO)."""
        return self.topology.call(self.home_slot, lambda _: self.topology.primaries(), self.router_retry)

    def close(self) -> None:
        """Close the connections to every node (they reopen if the client is used again)."""
        for node in list(self.topology.nodes.values()):
            node.close()
        for conn in [*self._raw.values(), *(c for c, _ in self._blocking.values())]:
            conn.disconnect()
        self._raw, self._blocking = {}, {}
        super().close()

    def flushall(self, asynchronous: bool = False, **kwargs: Any) -> bool:
        for node in self.primaries():
            node.flushall(asynchronous, **kwargs)
        return True

    def scan_iter(self, match: Any = None, count: int | None = None, _type: str | None = None,
                  **kwargs: Any) -> Iterator[Any]:
        """SCAN on the node of the pattern's hash tag (``fq:{q}:*``: one queue), else on every primary."""
        tagged = match is not None and "{" in str(match) and "}" in str(match).split("{", 1)[1]
        nodes = [self.topology.primary(slot_of(match))] if tagged else self.primaries()
        for node in nodes:
            yield from node.scan_iter(match=match, count=count, _type=_type, **kwargs)

    # --- the child's hot path: scripts as raw bytes, one own connection per node -----------------
    def send_raw(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Send commands (their replies raw; an error reply as its exception) slot by slot on this
        client's own connections. A command refused with MOVED did not run: it is sent again to the
        primary named, the others are not."""
        out: list[Any] = [None] * len(commands)
        todo = list(range(len(commands)))
        slots = slots_along(commands, self.home_slot)
        for _ in range(_MAX_MOVED + 1):
            by_node: dict[Address, list[int]] = {}
            for i in todo:
                address = self.topology.slots[slots[i]]
                if address is None:
                    self.topology.refresh()
                    address = self.topology.slots[slots[i]]
                if address is None:
                    raise redis.exceptions.ClusterDownError("CLUSTERDOWN the slot map has a hole")
                by_node.setdefault(address, []).append(i)
            todo = []
            for address, indexes in by_node.items():
                replies = self._send_node(address, [commands[i] for i in indexes])
                for i, reply in zip(indexes, replies):
                    out[i] = reply
                    if isinstance(reply, redis.exceptions.MovedError):
                        self.topology.moved(reply)
                        todo.append(i)
            if not todo:
                return out
        return out

    def _own_connections(self) -> None:
        """Forget the raw and blocking connections if another process made them (this is a fork)."""
        if self._raw_pid != os.getpid():
            self._raw, self._blocking, self._raw_pid = {}, {}, os.getpid()

    def _send_node(self, address: Address, commands: list[tuple[Any, ...]]) -> list[Any]:
        self._own_connections()
        conn = self._raw.get(address)
        if conn is None:
            pool = self.topology.node(address).connection_pool
            conn = self._raw[address] = pool.connection_class(**pool.connection_kwargs)
        try:
            return send_batch(conn, commands)
        except BaseException as e:
            if isinstance(e, redis.ConnectionError | redis.TimeoutError):
                try:
                    self.topology.refresh()
                except redis.RedisError:
                    pass
            raise

    def xreadgroup_any(self, group: str, consumer: str, streams: dict[str, str], block_ms: int,
                       ) -> list[tuple[Any, Any]]:
        """XREADGROUP COUNT 1 BLOCK over streams of several slots: one blocking read per slot, all
        at once, each on a connection of its own (kept from call to call); returns what the first to
        answer delivered, and what the others delivered before CLIENT UNBLOCK ended their wait (the
        caller claims or hands back every entry: none is left delivered and unclaimed). A read that
        fails loses its connection; its error is raised only if nothing was delivered."""
        groups: dict[int, dict[str, str]] = {}
        for name, at in streams.items():
            groups.setdefault(slot_of(name), {})[name] = at
        waiting: dict[int, tuple[Any, int]] = {}
        try:
            for slot, part in groups.items():
                waiting[slot] = self._blocking_conn(slot)
                waiting[slot][0].send_command("XREADGROUP", "GROUP", group, consumer, "COUNT", 1, "BLOCK",
                                              block_ms, "STREAMS", *part.keys(), *part.values())
            socks = {conn._sock: slot for slot, (conn, _) in waiting.items()}
            patience = block_ms / 1000 + (self.topology.options.get("socket_timeout") or 30.0)
            ready = [socks[s] for s in select.select(list(socks), [], [], patience)[0]]
            if not ready:
                raise redis.TimeoutError("no answer to a blocking read")
        except BaseException:
            self._drop(list(waiting))
            raise
        got: list[tuple[Any, Any]] = []
        errors = [e for e in (self._read_into(got, slot) for slot in ready) if e]
        rest = set(waiting) - set(ready)
        if got:  # a task came: end the other waits (each answers nil, or an entry it delivered)
            answered = {socks[s] for s in select.select([waiting[s][0]._sock for s in rest], [], [], 0)[0]}
            for slot in rest - answered:
                try:
                    self.topology.primary(slot).client_unblock(waiting[slot][1])
                except redis.RedisError as e:
                    errors.append(e)
                    self._drop([slot])
        # after a timeout the others time out too, at the same moment: read them as they are
        errors += [e for e in (self._read_into(got, slot) for slot in rest if slot in self._blocking) if e]
        if errors and not got:
            raise errors[0]
        return got

    def _read_into(self, got: list[tuple[Any, Any]], slot: int) -> Exception | None:
        """Read the blocking read of slot into got; on an error drop its connection and return it."""
        try:
            got.extend(self._read_entries(self._blocking[slot][0]))
            return None
        except (redis.RedisError, OSError) as e:
            self._drop([slot])
            return e

    def _drop(self, slots: list[int]) -> None:
        for slot in slots:
            held = self._blocking.pop(slot, None)
            if held is not None:
                held[0].disconnect()

    def _read_entries(self, conn: Any) -> list[Any]:
        """The (stream, entries) pairs of a blocking read's reply (none: it timed out, or was unblocked)."""
        reply = conn.read_response()
        return list(_pairs(self.response_callbacks["XREADGROUP"](reply))) if reply else []

    def _blocking_conn(self, slot: int) -> tuple[Any, int]:
        """This process's connection for blocking reads on the primary of slot, and its client id."""
        self._own_connections()
        node = self.topology.primary(slot)
        held = self._blocking.get(slot)
        where = node.connection_pool.connection_kwargs
        if held is not None and (held[0].host, held[0].port) == (where["host"], where["port"]):
            return held
        if held is not None:
            held[0].disconnect()
        conn = node.connection_pool.connection_class(**where)
        conn.send_command("CLIENT", "ID")
        held = self._blocking[slot] = (conn, int(conn.read_response()))
        return held


def send_batch(conn: Any, commands: list[tuple[Any, ...]]) -> list[Any]:
    """Send commands in one write on conn and read every reply raw (an error reply comes back as its
    exception): a pipeline without redis-py's per-command machinery. On any failure the connection
    is dropped (a reply may be left unread: the next send starts on a fresh one) and it raises."""
    try:
        conn.send_packed_command(_pieces([hiredis.pack_command(c) for c in commands]))
        out: list[Any] = []
        for _ in commands:
            try:
                out.append(conn.read_response())
            except redis.ResponseError as e:
                out.append(e)
        return out
    except BaseException:
        conn.disconnect()
        raise


def _pieces(packed: list[bytes], size: int = 1 << 16) -> list[bytes]:
    """The packed commands joined into writes of about ``size`` bytes: the socket timeout bounds each
    write, not the whole batch (a big schedule_many is written as fast as the server runs its chunks)."""
    out: list[bytes] = []
    part: list[bytes] = []
    held = 0
    for p in packed:
        if part and held + len(p) > size:
            out.append(b"".join(part))
            part, held = [], 0
        part.append(p)
        held += len(p)
    if part:
        out.append(b"".join(part))
    return out


def slots_along(commands: Sequence[Sequence[Any]], home: int) -> list[int]:
    """The slot each command goes to: its first key's; a keyless one (WAIT, TIME) the slot of the
    keyed command before it (WAIT must follow, on their connection, the writes it covers), or at the
    start of the first keyed one after it, else ``home``."""
    keyed = [command_key(c) for c in commands]
    last = next((slot_of(k) for k in keyed if k is not None), home)
    out = []
    for key in keyed:
        last = last if key is None else slot_of(key)
        out.append(last)
    return out


def _pairs(read: Any) -> Iterator[tuple[Any, Any]]:
    """(stream, entries) pairs of an XREADGROUP reply in either shape (RESP2 list, RESP3 dict)."""
    if isinstance(read, dict):
        yield from read.items()
    else:
        for item in read:
            yield item[0], item[1]


class SlotPipeline(Pipeline):  # type: ignore[misc]
    """A pipeline of a :class:`ClusterClient`: split by slot when it executes (a transaction must
    stay in one slot). forrestq never WATCHes, so WATCH is refused rather than routed."""

    def __init__(self, client: ClusterClient, transaction: bool) -> None:
        super().__init__(client.connection_pool, client.response_callbacks, transaction, None)
        self.client = client

    def watch(self, *names: Any) -> Any:
        raise NotImplementedError("WATCH on a forrestq ClusterClient pipeline")

    def execute(self, raise_on_error: bool = True) -> list[Any]:
        stack = self.command_stack
        if not stack:
            return []
        groups: dict[int, list[int]] = {}
        for i, slot in enumerate(slots_along([args for args, _ in stack], self.client.home_slot)):
            groups.setdefault(slot, []).append(i)
        if self.transaction and len(groups) > 1:
            self.reset()
            raise RuntimeError("forrestq bug: one transaction over keys of several cluster slots: "
                               + ", ".join(str(a[0]) for a, _ in stack))
        replies: list[Any] = [None] * len(stack)
        try:
            for slot, indexes in groups.items():
                part = [stack[i] for i in indexes]

                def run(node: redis.Redis, part: list[Any] = part) -> list[Any]:
                    return _run_on(node, part, self.transaction)
                got = self.client.topology.call(slot, run, self.client.router_retry)
                for i, reply in zip(indexes, got):
                    replies[i] = reply
        finally:
            self.reset()
        if raise_on_error:
            for reply in replies:
                if isinstance(reply, Exception):
                    raise reply
        return replies


def _run_on(node: redis.Redis, stack: list[Any], transaction: bool) -> list[Any]:
    """Execute ``stack`` on node as one pipeline; a MOVED among the replies is raised (none of
    the keyed commands ran there: the caller asks the map again and resends them all)."""
    pipe = node.pipeline(transaction=transaction)
    pipe.command_stack = list(stack)
    replies = pipe.execute(raise_on_error=False)
    for reply in replies:
        if isinstance(reply, redis.exceptions.MovedError | redis.exceptions.AskError
                      | redis.exceptions.ClusterDownError | redis.exceptions.TryAgainError):
            raise reply
    return list(replies)


def pinned(client: redis.Redis, home: str) -> redis.Redis:
    """client, with its keyless commands sent to ``home``'s slot if it is a cluster client."""
    return client.pinned(home) if isinstance(client, ClusterClient) else client


def primaries(client: redis.Redis) -> list[redis.Redis]:
    """The clients of every node a command about a node must go to: each primary of a cluster,
    else the client itself."""
    return client.primaries() if isinstance(client, ClusterClient) else [client]


def slot_groups(client: redis.Redis, keys: Sequence[str]) -> int:
    """How many slots ``keys`` span, as far as ``client`` cares (1 unless it is a cluster client)."""
    return len({slot_of(k) for k in keys}) if isinstance(client, ClusterClient) else 1
