"""Every Lua script, each called through one typed wrapper.

A script is one atomic operation in ``scripts/<name>.lua`` (a KEYS/ARGV/returns header opens each
file). Scripts name fields and states (``TASK_STATE``, ``READY``: :func:`forrestq.schema.lua_constants`)
instead of spelling them; the loader writes each value in place of its name (a name the schema lacks
is an error when the script is loaded), and expands ``--- @include <name>`` lines with
``scripts/include/<name>.lua`` (stanzas several scripts share, e.g. dropping a stream entry).

Each wrapper below is an :class:`Op`: it picks its KEYS by name from the queue's
:class:`~forrestq.schema.QueueKeys`, builds its ARGV from a small dataclass, and turns the reply into
a typed value. No caller builds a KEYS list or reads a reply by index::

    got = ops.claim(scripts, k, ops.ClaimArgs(consumer, token, lease_ms, host, worker_id))
    ops.complete.queue(scripts, pipe, k, completion)   # pipelined: reply later via ops.complete.reply
"""
from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Generic, NamedTuple, TypeVar, cast

import redis
from redis.client import Pipeline
from redis.exceptions import NoScriptError

from .cluster import ClusterClient, primaries, send_batch
from .errors import as_permission_error, is_permission_error
from .schema import (
    DEFAULT_MAX_ATTEMPTS,
    FAILED,
    GROUP,
    NODE_ALLOW,
    NODE_HAS_KEY,
    NODE_HAS_META,
    NODE_HAS_OPTIONS,
    NODE_IO,
    NODE_ROOT,
    TOKEN_SEP,
    QueueKeys,
    lua_constants,
)

_DIR = Path(__file__).parent / "scripts"
_INCLUDE = re.compile(r"^--- @include (\w+)\s*$", re.M)

A = TypeVar("A")
R = TypeVar("R")


# earliest match wins: comments and strings are kept as they are, names outside them are looked at
_LEX = re.compile(r"""
    (?P<skip>--\[(?P<ceq>=*)\[.*?\](?P=ceq)\]     # long comment
      | --[^\n]*                                  # line comment
      | '(?:[^'\\\n]|\\.)*' | "(?:[^"\\\n]|\\.)*"      # strings
      | \[(?P<leq>=*)\[.*?\](?P=leq)\])            # [[long string]]
  | (?P<params>\bfunction\b[\w\s.:]*\([\w\s,.]*\))      # a function's parameters (declared)
  | (?P<local>\blocal\s+[\w\s,]*?(?=\s*(?:=|$|\n)))      # declared names
  | (?P<name>\b[A-Z][A-Z0-9_]*\b)                  # a constant
""", re.S | re.X)
_LUA_GLOBALS = {"KEYS", "ARGV"}


@cache
def source(name: str) -> str:
    """The text sent to the server for script ``name``: its includes expanded, each schema constant
    replaced by its quoted value. Raises ValueError for an UPPER_CASE name that is neither a schema
    constant nor declared ``local`` (a misspelt field would otherwise read nil, silently)."""
    text = (_DIR / f"{name}.lua").read_text()
    text = _INCLUDE.sub(lambda m: (_DIR / "include" / f"{m.group(1)}.lua").read_text().rstrip("\n"), text)
    return expand(_unused_dropped(text), name)


# a function defined at the top of a script or include: "local function name(" to the first "end" line
_TOP_FUNCTION = re.compile(r"^local function (\w+)\(.*?^end\n", re.S | re.M)


def _unused_dropped(text: str) -> str:
    """``text`` without the top-level functions nothing else in it names (an include's helpers the
    script does not use): the server would make each again, a closure, at every call (issue 18)."""
    while True:
        for m in _TOP_FUNCTION.finditer(text):
            rest = text[:m.start()] + text[m.end():]
            if not re.search(rf"\b{m.group(1)}\b", rest):
                text = rest
                break
        else:
            return text


def expand(text: str, name: str = "script") -> str:
    """``text`` with every schema constant outside comments and strings replaced by its quoted value."""
    constants, declared, unknown = lua_constants(), set(_LUA_GLOBALS), set()

    def sub(m: re.Match[str]) -> str:
        if m.group("local") or m.group("params"):
            declared.update(re.findall(r"\w+", m.group("local") or m.group("params"))[1:])
        word = m.group("name")
        if word is None:
            return m.group(0)
        if word in constants:
            return "'" + constants[word] + "'"
        unknown.add(word)
        return word

    out = _LEX.sub(sub, text)
    if unknown - declared:
        raise ValueError(f"{name}: {', '.join(sorted(unknown - declared))} is not a forrestq.schema constant "
                         "(see schema.lua_constants) nor a local")
    return out


def _plain(error: Exception) -> Exception:
    """A script's error as the caller should see it: a command the ACL refused inside the script
    as the NoPermissionError a refused command outside one is (one line, exit 4)."""
    return as_permission_error(error) if is_permission_error(error) else error


# commands Scripts.execute may send raw (no reply callback): scripts, WAIT, and the registrations a
# schedule sends with its script (their replies are only looked at for errors)
_RAW = frozenset(("EVALSHA", "WAIT", "SADD", "SET", "XGROUP"))


class Scripts:
    """The scripts registered on one client. Called alone, a script is redis-py's Script (EVALSHA,
    loaded on NOSCRIPT). Queued on a pipeline it is a bare EVALSHA: redis-py would otherwise send
    SCRIPT EXISTS before every such pipeline (a round trip per task); :meth:`execute` loads the
    scripts and replays the pipeline on NOSCRIPT."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._cluster = isinstance(client, ClusterClient)  # asked once: a protocol check costs a few us
        self._registered: dict[str, Any] = {}
        self._conn: Any = None  # this object's own connection, for :meth:`send`
        self._pid = 0

    def script(self, name: str) -> Any:
        got = self._registered.get(name)
        if got is None:
            got = self._registered[name] = self.client.register_script(source(name))
        return got

    def run(self, name: str, keys: Sequence[str], args: Sequence[Any], pipe: Pipeline | None = None) -> Any:
        script = self.script(name)
        if pipe is not None:
            return pipe.evalsha(script.sha, len(keys), *keys, *args)
        try:
            try:
                return self.client.evalsha(script.sha, len(keys), *keys, *args)
            except NoScriptError:
                self.load()
                return self.client.evalsha(script.sha, len(keys), *keys, *args)
        except redis.ResponseError as e:
            raise _plain(e) from None

    def load(self) -> None:
        """Load every script (the server's script cache is empty after a restart or a failover) — all
        of them, not only the ones this client used so far, so that a pipeline never finds some loaded
        and some not; on a cluster, on every primary (a script runs where its keys are)."""
        for node in primaries(self.client):
            for path in sorted(_DIR.glob("*.lua")):
                self.script(path.stem)
                node.script_load(source(path.stem))

    def send(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Send commands in one write on this object's own connection and read every reply raw (an
        error reply comes back as its exception): a pipeline of scripts without redis-py's
        per-command machinery (about 70 us of a child's CPU per task, a quarter of it)."""
        if self._cluster:
            return cast(ClusterClient, self.client).send_raw(commands)
        conn = self._conn
        if conn is None or self._pid != os.getpid():  # none yet, or the parent's (this is a fork)
            pool = self.client.connection_pool
            conn = self._conn = pool.connection_class(**pool.connection_kwargs)
            self._pid = os.getpid()
        try:
            return send_batch(conn, commands)
        except BaseException:
            self._conn = None
            raise

    def execute(self, pipe: Pipeline, raise_on_error: bool = True, retried: bool = False) -> list[Any]:
        """Execute a pipeline holding scripts. If the server had forgotten some of them, load every
        script and send again only the commands it refused with NOSCRIPT: the others ran, and running
        them twice would, e.g., claim a second task and strand the first. Replies stay in order.
        ``retried``: on a connection error, send it all again under the client's retry policy, as
        redis-py does for a pipeline (for commands that may run twice: a schedule)."""
        stack = list(pipe.command_stack)
        if not pipe.transaction and all(args[0] in _RAW for args, _ in stack):
            pipe.reset()
            return self.send_all([args for args, _ in stack], raise_on_error, retried)
        replies = pipe.execute(raise_on_error=False)
        again = _to_send_again(replies, [args for args, _ in stack])
        if again:
            self.load()
            for i in again:
                args, options = stack[i]
                pipe.pipeline_execute_command(*args, **options)
            for i, reply in zip(again, pipe.execute(raise_on_error=False)):
                replies[i] = reply
        if raise_on_error:
            _raise_any(replies)
        return replies

    def send_all(self, commands: list[tuple[Any, ...]], raise_on_error: bool = True,
                 retried: bool = False) -> list[Any]:
        """:meth:`execute` for commands given as tuples (scripts as :meth:`Op.command` builds them, and
        plain commands whose replies are only looked at for errors): sent raw (:meth:`send`), without a
        pipeline object; the commands refused with NOSCRIPT (and a WAIT after them) sent again once
        every script is loaded, as :meth:`execute` does."""
        replies = self._sent(commands, retried)
        again = _to_send_again(replies, commands)
        if again:
            self.load()
            for i, reply in zip(again, self._sent([commands[i] for i in again], retried)):
                replies[i] = reply
        if raise_on_error:
            _raise_any(replies)
        return replies

    def _sent(self, commands: list[tuple[Any, ...]], retried: bool) -> list[Any]:
        """:meth:`send`; ``retried``: again on a connection error, under the client's retry policy."""
        if not retried:
            return self.send(commands)
        retry = cast(ClusterClient, self.client).router_retry if self._cluster else self.client.get_retry()
        if retry is None:
            return self.send(commands)
        replies: list[Any] = retry.call_with_retry(lambda: self.send(commands), lambda e: None)
        return replies


def _to_send_again(replies: list[Any], commands: Sequence[Sequence[Any]]) -> list[int]:
    """The commands to send again once every script is loaded: those the server refused with
    NOSCRIPT, and each WAIT after the first of them (it follows them again, in its place: it covers
    the writes before it)."""
    missing = [i for i, r in enumerate(replies) if isinstance(r, NoScriptError)]
    if not missing:
        return []
    return sorted({*missing, *(i for i, c in enumerate(commands) if c[0] == "WAIT" and i > missing[0])})


def _raise_any(replies: list[Any]) -> None:
    for reply in replies:
        if isinstance(reply, Exception):
            raise _plain(reply)


class Op(Generic[A, R]):
    """One script: its KEYS (from the queue's keys and the arguments), ARGV and reply parser."""

    def __init__(self, name: str, keys: Callable[[QueueKeys, A], list[str]],
                 argv: Callable[[QueueKeys, A], list[Any]], reply: Callable[[Any], R]) -> None:
        self.name = name
        self._keys, self._argv, self._reply = keys, argv, reply

    def __call__(self, scripts: Scripts, k: QueueKeys, args: A) -> R:
        """Run the script now and return its typed reply."""
        return self._reply(scripts.run(self.name, self._keys(k, args), self._argv(k, args)))

    def queue(self, scripts: Scripts, pipe: Pipeline, k: QueueKeys, args: A) -> None:
        """Queue the script on ``pipe`` (execute it with ``scripts.execute``; parse with :meth:`reply`)."""
        scripts.run(self.name, self._keys(k, args), self._argv(k, args), pipe=pipe)

    def command(self, scripts: Scripts, k: QueueKeys, args: A) -> tuple[Any, ...]:
        """The script's EVALSHA as a command tuple, for :meth:`Scripts.send_all` (parse with :meth:`reply`)."""
        keys = self._keys(k, args)
        return ("EVALSHA", scripts.script(self.name).sha, len(keys), *keys, *self._argv(k, args))

    def reply(self, raw: Any) -> R:
        """The typed reply of a pipelined call; an error reply is raised."""
        if isinstance(raw, Exception):
            raise _plain(raw)
        return self._reply(raw)


def _named(*names: str) -> Callable[[QueueKeys, Any], list[str]]:
    """KEYS picked by attribute name from the queue's keys (built once per queue: this runs per task)."""
    built: dict[str, list[str]] = {}

    def pick(k: QueueKeys, _: Any) -> list[str]:
        got = built.get(k.prefix)
        if got is None:
            got = built[k.prefix] = [getattr(k, n) for n in names]
        return got
    return pick


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _now() -> float:
    return time.time()


# ------------------------------------------------------------------------------------------ schedule


@dataclass(slots=True)
class Node:
    """One DAG node as schedule.lua writes it (slots: one is made per node scheduled)."""

    id: str
    fn_sha: str = ""
    args: bytes = b""
    inputs: str = ""  # "a,b,c"
    name: str = ""
    root: bool = False
    metadata: bytes = b""
    timeout: str = ""
    max_attempts: str = DEFAULT_MAX_ATTEMPTS
    key: str = ""
    retry_policy: bytes | str = ""
    io_bound: bool = False  # an IO-bound coroutine: may share a child's event loop
    soft_timeout: str = ""  # seconds before TimeLimitExceeded is raised in the task; "": the worker's
    resources: str = ""  # what it needs (forrestq.resources.request); "": cpus=1
    allow_failed: bool = False  # runs when inputs failed, with forrestq.Failed in their place
    due: str = ""  # not before: "" at once, "+S" S s from now by the server's clock, else a server-clock time
    result_ttl: str = ""  # a root's: seconds its finished record is kept; "" the queue's default, "0" for ever
    limits: str = ""  # limit keys it holds while it runs, "a,b" (forrestq.limits); "": none
    priority: str = ""  # "" (0) or "1".."9": higher levels are claimed first (include/stream.lua)

    def options(self) -> tuple[Any, ...]:
        """The options write_nodes takes once per call (include/nodes.lua, NODE_OPTIONS), in its order."""
        return (self.timeout, self.max_attempts, self.retry_policy, self.soft_timeout, self.resources, self.due,
                self.result_ttl, self.limits, self.priority)


_PLAIN_FLAGS = ("", NODE_ROOT)


def nodes_argv(nodes: Sequence[Node]) -> list[Any]:
    """The ARGV of write_nodes (include/nodes.lua) for ``nodes``: the call's options once (the first
    node's; the result TTL the first root's: only a root's counts), then per node its NODE_FIELDS
    fields, then its metadata, its key and its own options when it has them (schema.NODE_HAS_*)."""
    if not nodes:
        return ["", DEFAULT_MAX_ATTEMPTS, "", "", "", "", "", "", ""]
    head = nodes[0]
    ttl = head.result_ttl if head.root else next((n.result_ttl for n in nodes if n.root), "")
    t, ma, rp, st, res, due, _, lim, pr = head.options()
    out: list[Any] = [t, ma, rp, st, res, due, ttl, lim, pr]
    add = out.extend
    for n in nodes:
        root = n.root
        own = n is not head and (  # the head's options are the call's
            n.timeout != t or n.max_attempts != ma or n.retry_policy != rp or n.soft_timeout != st
            or n.resources != res or n.due != due or n.limits != lim or n.priority != pr
            or (root and n.result_ttl != ttl))
        if not (own or n.metadata or n.key or n.io_bound or n.allow_failed):
            add((n.id, n.fn_sha, n.args, n.inputs, n.name, _PLAIN_FLAGS[root]))
            continue
        flags = (NODE_ROOT if root else "") + (NODE_IO if n.io_bound else "") \
            + (NODE_ALLOW if n.allow_failed else "") + (NODE_HAS_META if n.metadata else "") \
            + (NODE_HAS_KEY if n.key else "") + (NODE_HAS_OPTIONS if own else "")
        add((n.id, n.fn_sha, n.args, n.inputs, n.name, flags))
        if n.metadata:
            out.append(n.metadata)
        if n.key:
            out.append(n.key)
        if own:
            add(n.options())
    return out


@dataclass(slots=True)  # one per schedule call
class ScheduleArgs:
    nodes: list[Node]
    now: float = field(default_factory=_now)
    since: bool = True  # reply with the finished stream's newest id (False: "", one read less)
    signer: str = ""  # the producer's signer fingerprint, SET with the nodes ("": not set)
    fns: dict[str, bytes] = field(default_factory=dict)  # function blobs by sha, SET NX with the nodes


class Scheduled(NamedTuple):  # a tuple: made per schedule call, cheaper than a frozen dataclass
    states: list[str]  # per node, its state after the call
    since: str  # the newest id of the finished stream ("" unless ScheduleArgs.since)


def _schedule_keys(k: QueueKeys, a: ScheduleArgs) -> list[str]:
    keys = _SCHEDULE_KEYS(k, a)  # the queue's, built once (not to be changed: a copy is made for the blobs)
    return [*keys, *map(k.fn, a.fns)] if a.fns else keys


_SCHEDULE_KEYS = _named("stream", "counts", "todo", "finished", "failed", "delayed", "signer")


def _schedule_argv(k: QueueKeys, a: ScheduleArgs) -> list[Any]:
    return [k.prefix, created_text(a.now), len(a.nodes), "1" if a.since else "", a.signer, len(a.fns),
            *a.fns.values(), *nodes_argv(a.nodes)]


def created_text(now: float) -> str:
    """``now`` as schedule.lua stores TASK_CREATED: to the ms (4 bytes less a record than repr)."""
    return f"{now:.3f}"


# marks put in place of one node's fields in the command leaf_command fills; each must occur once in it
_LEAF_MARKS = ("\0fq-id", "\0fq-sha", b"\0fq-args", "\0fq-name", b"\0fq-blob", "\0fq-signer")
_LEAF_NOW = -1.25  # a time no call has: its created_text marks where the call's goes
_leaf_templates: dict[tuple[str, str, str], tuple[list[Any], tuple[int, ...]]] = {}


def leaf_command(scripts: Scripts, k: QueueKeys, node_id: str, fn_sha: str, args: bytes, name: str, blob: bytes,
                 now: float, signer: str, max_attempts: str) -> tuple[Any, ...]:
    """``schedule.command`` of the first chunk of one plain root (no inputs, flags, metadata, key; the
    options of a call that gives none, ``max_attempts`` the queue's) with its one function ``blob``: the
    same tuple, made from the one that command built for marks once per queue and max_attempts, with
    this node's fields put in. A single schedule() call (issue 18): a tenth of its wall time less."""
    key = (scripts.script("schedule").sha, k.prefix, max_attempts)
    got = _leaf_templates.get(key)
    if got is None:
        if len(_leaf_templates) >= 1000:  # a process that schedules to many queues: kept small
            _leaf_templates.clear()
        got = _leaf_templates[key] = _leaf_template(scripts, k, max_attempts)
    out, (i_id, i_sha, i_args, i_name, i_blob, i_signer, i_now, i_fn) = list(got[0]), got[1]
    out[i_id], out[i_sha], out[i_args], out[i_name], out[i_blob] = node_id, fn_sha, args, name, blob
    out[i_signer], out[i_now], out[i_fn] = signer, created_text(now), k.fn(fn_sha)
    return tuple(out)


def _leaf_template(scripts: Scripts, k: QueueKeys, max_attempts: str) -> tuple[list[Any], tuple[int, ...]]:
    """:func:`leaf_command`'s command with marks, and where each mark stands (the marks' order, then now's
    and the blob's key)."""
    node_id, sha, args, name, blob, signer = _LEAF_MARKS
    command = schedule.command(scripts, k, ScheduleArgs([Node(node_id, sha, args, "", name, root=True,
                                                              max_attempts=max_attempts)],
                                                        _LEAF_NOW, True, signer, {sha: blob}))
    at = []
    for mark in (*_LEAF_MARKS, created_text(_LEAF_NOW), k.fn(sha)):
        found = [i for i, v in enumerate(command) if type(v) is type(mark) and v == mark]
        if len(found) != 1:
            raise RuntimeError(f"schedule's command holds {mark!r} {len(found)} times, not once")
        at.append(found[0])
    return list(command), tuple(at)


def _scheduled(raw: list[Any]) -> Scheduled:
    states = _text(raw[0])
    return Scheduled(states.split(",") if states else [], _text(raw[1]))


schedule: Op[ScheduleArgs, Scheduled] = Op("schedule", _schedule_keys, _schedule_argv, _scheduled)


# ------------------------------------------------------------------------- the clock (issue 16)


@dataclass(frozen=True)
class Promoted:
    """promote.lua's look at a queue's clock: the server's time, the earliest due time left among its
    SCHEDULED tasks and among its periodic schedules (None: none), and the schedules due now."""

    now: float
    next_task: float | None
    next_tick: float | None
    due: list[str]


def _time_or_none(raw: Any) -> float | None:
    text = _text(raw)
    return float(text) if text not in ("", "inf") else None


promote: Op[int, Promoted] = Op(
    "promote", _named("stream", "counts", "delayed", "periodic"), lambda k, limit: [k.prefix, limit],
    lambda raw: Promoted(float(raw[0]), _time_or_none(raw[1]), _time_or_none(raw[2]), [_text(n) for n in raw[3:]]))
"""Move the SCHEDULED tasks due by the server's clock (at most the argument) onto the stream."""


@dataclass
class TickArgs:
    """One due tick of periodic schedule ``name``, fenced by what the caller read of it (``tick``: its
    PERIODIC_NEXT text, ``spec``: its PERIODIC_SPEC), moving it on to ``next_due``; ``node``: its task."""

    name: str
    tick: str
    spec: str
    next_due: float
    node: Node
    now: float = field(default_factory=_now)


tick: Op[TickArgs, bool] = Op(
    "periodic_tick", lambda k, a: [k.stream, k.counts, k.todo, k.finished, k.failed, k.delayed, k.periodic,
                                   k.schedule(a.name)],
    lambda k, a: [k.prefix, a.name, a.tick, a.spec, repr(a.next_due), repr(a.now), *nodes_argv([a.node])], bool)


# --------------------------------------------------------------------------------------------- claim


@dataclass
class ClaimArgs:
    consumer: str
    token: str
    lease_ms: int
    host: str
    worker_id: str
    sid: str = ""  # a stream entry XREADGROUP delivered to this consumer; "" = read one in the script
    now: float | None = field(default_factory=_now)  # TASK_STARTED; None: the server's clock at the claim
    count: int = 1  # tasks to claim at most (claim_many)
    ahead: bool = False  # a claim made while the child's task runs: none while the queue has priority levels


@dataclass
class Claimed:
    """What a worker needs to run a claimed task."""

    id: str
    sid: str
    fn_sha: bytes
    args: bytes
    timeout: float  # 0: the worker's --autokill
    attempts: int
    max_attempts: int
    retry_policy: bytes  # b"": none
    retries_used: int
    inputs: list[bytes]  # serialised results of the inputs, in reference order
    token: str = ""  # the fencing token of this attempt (the claimer sets it)
    io_bound: bool = False  # an IO-bound coroutine: may share a child's event loop with other such tasks
    soft_timeout: float = 0.0  # s before TimeLimitExceeded is raised in it; 0: the worker's --soft-timeout
    resources: str = ""  # what it needs (forrestq.resources text form); "": cpus=1
    waits: int = 0  # times it was handed back unrun for its resources (forrestq.worker.capacity)
    limits: str = ""  # the limit keys it holds while it runs, "a,b" (forrestq.worker.limits); "": none


class Skip:
    """claim.lua's answer for a delivered stream entry that was stale (acked, deleted)."""

    def __repr__(self) -> str:
        return "SKIP"


SKIP = Skip()


def _claim_argv(k: QueueKeys, a: ClaimArgs) -> list[Any]:
    return [k.prefix, GROUP, a.consumer, a.token, a.lease_ms, a.host, a.worker_id,
            "" if a.now is None else a.now, a.sid, a.count,
            "1" if a.ahead else ""]


def claim_token(token: str, n: int) -> str:
    """The fencing token of the n-th task (from 0) of one claim_many call with ``token``."""
    return token if n == 0 else f"{token}{TOKEN_SEP}{n + 1}"


def _claimed(raw: Any) -> Claimed | Skip | None:
    if not raw:
        return None
    if raw[0] == b"skip":
        return SKIP
    return Claimed(id=_text(raw[0]), sid=_text(raw[1]), fn_sha=raw[2], args=raw[3],
                   timeout=float(raw[4]) if raw[4] else 0.0, attempts=int(raw[5]),
                   max_attempts=int(raw[6] or 3), retry_policy=raw[7] or b"", retries_used=int(raw[8] or 0),
                   io_bound=raw[9] == b"1", soft_timeout=float(raw[10]) if raw[10] else 0.0,
                   resources=_text(raw[11]), waits=int(raw[12]), limits=_text(raw[13]), inputs=list(raw[14:]))


def _claimed_many(raw: Any) -> list[Claimed]:
    return [cast(Claimed, _claimed(one)) for one in raw or ()]


claim: Op[ClaimArgs, Claimed | Skip | None] = Op("claim", _named("stream", "counts", "delayed"), _claim_argv,
                                                    _claimed)
# the same script claiming up to ClaimArgs.count tasks; each Claimed's token: claim_token(args.token, i)
claim_many: Op[ClaimArgs, list[Claimed]] = Op("claim", _named("stream", "counts", "delayed"), _claim_argv,
                                              _claimed_many)


# ------------------------------------------------------------------------------------------ complete


@dataclass
class Completion:
    """A task's end as complete.lua records it, fenced by the attempt's token ("" = the task was lost:
    accepted only while no lease exists)."""

    task_id: str
    token: str
    outcome: str  # schema.DONE | schema.FAILED | schema.RETRY | schema.CONTINUED (with ``continuation``)
    result: bytes = b""
    error: bytes = b""
    traceback: str = ""
    reason: str = ""
    runtime: float = 0.0
    output: bytes = b""
    host: str = ""
    delay: float = 0.0  # with RETRY: seconds before the task may run again
    cancelled: bool = False  # a cancel (Queue.cancel): its event is "cancelled", not "failed"
    cpu_time: float = 0.0  # s (forrestq.worker.forensics)
    peak_rss: int = 0  # bytes
    pid: int = 0  # of the process that ran the attempt; 0 = unknown (e.g. a cancel): fields kept
    stack: str = ""  # the Python stack at death
    now: float = field(default_factory=_now)
    # with CONTINUED: the root id and the nodes of the deferred tree the task returned (issue 15)
    continuation: tuple[str, list[Node]] | None = None


def _complete_block(c: Completion) -> list[Any]:
    """One end as complete.lua reads it: its length, then its fields."""
    fields = [c.task_id, c.token, c.outcome, c.result, c.error, c.traceback, c.reason,
              f"{c.runtime:.6f}", c.now, c.output, c.host, c.delay, "1" if c.cancelled else "",
              f"{c.cpu_time:.6f}", c.peak_rss, c.pid or "", c.stack]
    if c.continuation is not None:
        root, nodes = c.continuation
        fields += [len(nodes), root, *nodes_argv(nodes)]
    return [len(fields), *fields]


_COMPLETE_KEYS = _named("stream", "counts", "todo", "done", "failed", "finished", "delayed", "expiry")

complete: Op[Completion, bool] = Op(
    "complete", _COMPLETE_KEYS, lambda k, c: [k.prefix, GROUP, *_complete_block(c)], lambda raw: bool(raw[0]))
# several ends of one queue in one call (a child's ends, with its next claim): whether each was kept, in order
complete_many: Op[Sequence[Completion], list[bool]] = Op(
    "complete", _COMPLETE_KEYS, lambda k, cs: [k.prefix, GROUP, *(x for c in cs for x in _complete_block(c))],
    lambda raw: [bool(x) for x in raw])


# ------------------------------------------------------------------------------------- limit_acquire


@dataclass
class LimitArgs:
    """Take a slot of each of ``limits`` ("a,b") for the attempt ``token`` of task ``task_id``."""

    task_id: str
    token: str
    limits: str


def _limit_reply(raw: Any) -> tuple[str, float]:
    """("", 0) when taken; else (the key that had no room, seconds until a rate's window has room or 0)."""
    if not isinstance(raw, list):
        return "", 0.0
    return _text(raw[0]), float(raw[1]) if raw[1] else 0.0


limit_acquire: Op[LimitArgs, tuple[str, float]] = Op(
    "limit_acquire", _named("limits", "rates"), lambda k, a: [k.prefix, a.task_id, a.token, a.limits],
    _limit_reply)


# ------------------------------------------------------------------------------------------- release


@dataclass
class ReleaseArgs:
    """Hand a running task back at once; ``counted``: its attempt counts (killed from outside);
    ``why``: "" or, for a task handed back unrun for its resources, ``schema.RELEASE_WAIT`` or
    ``schema.RELEASE_UNFIT`` (then ``host`` is noted on it as too small)."""

    task_id: str
    token: str
    counted: bool = False
    why: str = ""
    host: str = ""


release: Op[ReleaseArgs, bool] = Op(
    "release", _named("stream", "counts", "unfit"),
    lambda k, a: [k.prefix, GROUP, a.task_id, a.token, "1" if a.counted else "", a.why, _host_word(a.host)],
    bool)


# --------------------------------------------------------------------------------------------- renew


@dataclass
class RenewArgs:
    """Token-owned lease keys to extend by ``lease_ms``: ``(key, token)`` pairs."""

    lease_ms: int
    leases: list[tuple[str, str]]


renew: Op[RenewArgs, list[bool]] = Op(
    "renew", lambda k, a: [key for key, _ in a.leases],
    lambda k, a: [a.lease_ms, *[tok for _, tok in a.leases]], lambda raw: [bool(x) for x in raw])


# ------------------------------------------------------------------------------------------- reclaim


@dataclass
class ReclaimArgs:
    entry_ids: list[Any]  # stream entries idle longer than a lease
    now: float = field(default_factory=_now)


@dataclass(frozen=True)
class GaveUp:
    """A lost task that used up its attempts: the caller fails it."""

    task_id: str
    attempts: int
    host: str


@dataclass(frozen=True)
class Reclaimed:
    """What reclaim.lua found: running tasks lost (put back or given up) and the ones given up."""

    lost: int
    gave_up: list[GaveUp]


def _reclaimed(raw: list[Any]) -> Reclaimed:
    return Reclaimed(int(raw[0]), [GaveUp(_text(raw[i]), int(raw[i + 1]), _text(raw[i + 2]))
                                   for i in range(1, len(raw), 3)])


reclaim: Op[ReclaimArgs, Reclaimed] = Op(
    "reclaim", _named("stream", "counts", "lost"), lambda k, a: [k.prefix, GROUP, a.now, *a.entry_ids],
    _reclaimed)


# ------------------------------------------------------------------- requeue, takeover, clean


@dataclass
class RequeueArgs:
    """``follow``: "failed" (only dependents that failed because of an input) or "all"."""

    follow: str
    ids: list[str]
    now: float = field(default_factory=_now)


def _ids(raw: list[Any]) -> list[str]:
    return [_text(x) for x in raw]


requeue: Op[RequeueArgs, list[str]] = Op(
    "requeue", _named("stream", "counts", "todo", "done", "failed"),
    lambda k, a: [k.prefix, GROUP, a.now, a.follow, *a.ids], _ids)


@dataclass
class TakeoverArgs:
    """Make ``token`` the holder of these tasks (``finished_too``: re-open finished ones)."""

    token: str
    ids: list[str]
    finished_too: bool = False
    now: float = field(default_factory=_now)


takeover: Op[TakeoverArgs, list[str]] = Op(
    "takeover", _named("stream", "counts", "todo", "done", "failed"),
    lambda k, a: [k.prefix, GROUP, a.now, a.token, "1" if a.finished_too else "", *a.ids], _ids)


clean: Op[list[str], int] = Op(
    "clean", _named("stream", "counts", "todo", "done", "failed", "finished", "expiry"),
    lambda k, ids: [k.prefix, GROUP, *ids], int)


@dataclass(frozen=True)
class Expired:
    """expire.lua's reply: tasks deleted, and the earliest expiry time left (server clock; None: none)."""

    deleted: int
    next_expiry: float | None


expire: Op[int, Expired] = Op(
    "expire", _named("stream", "counts", "todo", "done", "failed", "expiry"),
    lambda k, limit: [k.prefix, GROUP, limit], lambda raw: Expired(int(raw[0]), _time_or_none(raw[1])))
"""Delete the finished roots whose result TTL ran out (at most the argument), with their spent inner nodes."""


# ------------------------------------------------------------------------------- exactly-once keys


@dataclass
class OnceClaimArgs:
    """Claim the first claimable of ``candidates`` (once_claim.lua) for ``lease_ms``; ``renewed``: its
    holder renews the lease (``lease=``) or never does (``timeout=``); ``every_ms``: a key done at least
    that long ago is claimable again (0: done is for good); ``host``/``pid``: shown in listings."""

    version: int
    token: str
    lease_ms: int
    candidates: list[str]
    renewed: bool = True
    every_ms: int = 0
    host: str = ""
    pid: int = 0


@dataclass(frozen=True)
class OnceClaimed:
    """``index``: 1-based index of the claimed candidate (0: none); ``letters``: per candidate
    examined, "d" done, "b" busy, "c" claimed."""

    index: int
    letters: str


once_claim: Op[OnceClaimArgs, OnceClaimed] = Op(
    "once_claim", lambda k, a: k.once_indexes(a.version),
    lambda k, a: [k.once_prefix(a.version), a.token, a.lease_ms, "1" if a.renewed else "", a.host, a.pid,
                  a.every_ms, *a.candidates],
    lambda raw: OnceClaimed(int(raw[0]), _text(raw[1])))


@dataclass
class OnceArgs:
    """One claim of one key; for once_release, ``outcome`` is ``schema.FAILED`` (recorded failed with
    ``reason``) or ``schema.ONCE_FREE`` (the key goes back to free)."""

    version: int
    key: str
    token: str
    outcome: str = FAILED
    reason: str = ""


once_confirm: Op[OnceArgs, int] = Op(
    "once_confirm", lambda k, a: k.once_indexes(a.version),
    lambda k, a: [k.once_prefix(a.version), a.key, a.token], int)
"""Reply of once_confirm: 1 confirmed; 0 done already (nothing changed); 2 not confirmed, the lease
expired (nobody holds the key); 3 not confirmed, another claim holds it."""

once_release: Op[OnceArgs, bool] = Op(
    "once_release", lambda k, a: k.once_indexes(a.version),
    lambda k, a: [k.once_prefix(a.version), a.key, a.token, a.outcome, a.reason], bool)


@dataclass
class OnceRenewArgs:
    """Extend by ``lease_ms`` the claims ``(lease key, record key, token)`` this process holds."""

    lease_ms: int
    claims: list[tuple[str, str, str]]


once_renew: Op[OnceRenewArgs, list[bool]] = Op(
    "once_renew", lambda k, a: [key for lease, rec, _ in a.claims for key in (lease, rec)],
    lambda k, a: [a.lease_ms, *[token for _, _, token in a.claims]], lambda raw: [bool(x) for x in raw])

once_sweep: Op[int, int] = Op(
    "once_sweep", lambda k, version: k.once_indexes(version), lambda k, version: [k.once_prefix(version)], int)
"""Record as expired the running keys of a version (the argument) whose lease is gone; how many."""


@dataclass
class OnceMarkArgs:
    """Mark ``keys`` done (``mode`` ``schema.DONE``) or forget them (``schema.ONCE_FREE``)."""

    version: int
    mode: str
    keys: list[str]
    host: str = ""
    pid: int = 0


once_mark: Op[OnceMarkArgs, list[int]] = Op(
    "once_mark", lambda k, a: k.once_indexes(a.version),
    lambda k, a: [k.once_prefix(a.version), a.mode, a.host, a.pid, *a.keys], lambda raw: [int(x) for x in raw])
"""Per key: 1 changed, 0 unchanged (done already, nothing to forget), -1 held by a live lease."""


# -------------------------------------------------------------------------------------------- refuse


@dataclass
class RefuseArgs:
    """This host cannot load a task it claimed: record the host, and hand the task back (at the end
    of the stream, its attempt not counted) unless every one of ``hosts`` (the live hosts that might
    load it, this one included) or ``max_hosts`` distinct hosts have refused it."""

    task_id: str
    token: str
    host: str
    hosts: list[str]
    max_hosts: int = 3


@dataclass(frozen=True)
class Refused:
    """refuse.lua's verdict: ``handed_back`` (another host may load it), ``must_fail`` (every host that
    might has refused it: the caller records its failure, fenced by the same token), or neither (the
    token no longer holds the task); ``hosts``: the distinct hosts that refused it so far, in order."""

    handed_back: bool
    must_fail: bool
    hosts: list[str]


def _host_word(host: str) -> str:
    return host.replace(",", ";")  # TASK_REFUSED is comma-separated


def _refuse_argv(k: QueueKeys, a: RefuseArgs) -> list[Any]:
    return [k.prefix, GROUP, a.task_id, a.token, _host_word(a.host), a.max_hosts, *[_host_word(h) for h in a.hosts]]


def _refused(raw: list[Any]) -> Refused:
    verdict = int(raw[0])
    return Refused(verdict == 1, verdict == 2, [_text(h) for h in raw[1:]])


refuse: Op[RefuseArgs, Refused] = Op("refuse", _named("stream", "counts"), _refuse_argv, _refused)


# ------------------------------------------------------------------------------------------ progress


@dataclass
class ProgressArgs:
    """A running attempt's progress (``value``: JSON, "" = nothing new), fenced by its ``token``;
    ``final``: its last report (the task's code returned), which takes it out of the queue's index."""

    task_id: str
    token: str
    value: str
    final: bool = False
    now: float = field(default_factory=_now)


progress: Op[ProgressArgs, bool] = Op(
    "progress", lambda k, a: [k.task(a.task_id), k.progress],
    lambda k, a: [a.task_id, a.token, a.value, a.now, "1" if a.final else ""], bool)
