"""Writing to a queue: scheduling task trees and graphs, requeueing, re-running, cancelling, cleaning.

Every write goes through a Lua script (:mod:`forrestq.ops`), so each is atomic on the server.
Scheduling serialises everything before it writes anything: a bad argument raises at the call and
leaves Redis as it was. Large schedules are cut into chunks (:data:`CHUNK_NODES` nodes or
:data:`CHUNK_BYTES` of payload per script call) so one call never blocks the server for long.
"""
from __future__ import annotations

import datetime
import hashlib
import math
import re
import socket
import time
import traceback
from collections.abc import Iterable
from typing import Any

from . import codec, context, durability, ops, schema, signing, unfinished
from . import resources as requests
from .core import QueueCore
from .deferred import Call, Deferred, _identity
from .errors import Cancelled, ConfigError, SerializationError, UnknownTask, shown
from .graph import DropNone, build
from .lease import new_token
from .limits import keys_text
from .plan import NodeSpec, Planner
from .reading import counts, get, task_id
from .runner import Outcome, failure, invoke, one_line
from .schema import CONTINUED, GROUP, QueueKeys
from .task import Task, TaskRef

CHUNK_NODES = 2000  # nodes per schedule script call: bounds how long one call blocks the server
CHUNK_BYTES = 8 << 20
BATCH = 1000  # ids per requeue/clean script call
CANCEL_BATCH = 500
ARGS_LIMIT = 500 << 20  # bytes: Redis refuses a bulk string past proto-max-bulk-len (512 MB)
_SAFE_KEY = re.compile(r"[A-Za-z0-9_.:@+=-]{1,48}")


# ------------------------------------------------------------------------------------ validation


def seconds_or_empty(value: float | None, what: str) -> str:
    """A positive number of seconds as ARGV text ("" for None); ConfigError otherwise."""
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value <= 0:
        raise ConfigError(f"{what} must be a positive number of seconds, not {shown(value)}")
    return repr(float(value))


def ttl_text(value: Any, what: str = "result_ttl") -> str:
    """A result TTL as text: seconds (a positive number or a ``timedelta``), or "0" for 0/False (kept for
    ever); ConfigError otherwise. Why text: it is what schedule.lua stores (TASK_RESULT_TTL)."""
    if value is False or (isinstance(value, (int, float)) and not isinstance(value, bool) and value == 0):
        return "0"
    if isinstance(value, datetime.timedelta):
        value = value.total_seconds() or "0"  # a zero timedelta: none, like 0
    if value == "0":
        return "0"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ConfigError(f"{what} must be a positive number of seconds or a timedelta, not {shown(value)}")
    return repr(float(value))


def priority_text(priority: Any) -> str:
    """A priority level as ``ops.Node.priority``: "" for 0 (the queue's stream, exactly as without
    priorities), else "1".."9"; ConfigError for anything but an int in 0..PRIORITY_MAX."""
    if isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= schema.PRIORITY_MAX:
        raise ConfigError(f"priority must be an int from 0 to {schema.PRIORITY_MAX} (higher runs first), "
                          f"not {shown(priority)}")
    return str(priority) if priority else ""


def due_text(delay: Any, at: Any) -> str:
    """When the nodes of one schedule call may start, as their ``ops.Node.due``: "" at once, "+S" S
    seconds after the call by the Redis server's clock (so skewed hosts agree), else ``at`` as a time
    (an ``at`` in the past runs at once). ConfigError for a negative or non-numeric ``delay`` (seconds
    or a ``timedelta``), an ``at`` that is not a timezone-aware ``datetime``, or both given."""
    if delay is not None and at is not None:
        raise ConfigError("give delay= or at=, not both")
    if isinstance(delay, datetime.timedelta):
        delay = delay.total_seconds()
    if delay is not None:
        if isinstance(delay, bool) or not isinstance(delay, (int, float)) or not math.isfinite(delay) or delay < 0:
            raise ConfigError(f"delay must be a non-negative number of seconds (or a timedelta), not {shown(delay)}")
        return f"+{float(delay)!r}" if delay > 0 else ""
    if at is None:
        return ""
    if not isinstance(at, datetime.datetime) or at.utcoffset() is None:
        raise ConfigError(f"at must be a timezone-aware datetime (e.g. datetime.now(timezone.utc) + timedelta("
                          f"hours=1)), not {shown(at)}")
    return repr(at.timestamp())


def check_attempts(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"max_attempts must be a positive integer, not {shown(value)}")
    return value


def retry_policy(retries: int, backoff: float, retry_on: Any) -> bytes | str:
    """The serialised retry policy of a task ("" for none)."""
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ConfigError(f"retries must be a non-negative integer, not {shown(retries)}")
    if isinstance(backoff, bool) or not isinstance(backoff, (int, float)) or not backoff >= 0 \
            or not math.isfinite(backoff):
        raise ConfigError(f"retry_backoff must be a non-negative number of seconds, not {shown(backoff)}")
    types = retry_on if isinstance(retry_on, tuple) else (retry_on,)
    if not all(isinstance(t, type) and issubclass(t, BaseException) for t in types):
        raise ConfigError(f"retry_on must be an exception class or a tuple of them, not {shown(retry_on)}")
    return codec.dumps((retries, float(backoff), types)) if retries else ""


def keyed(task: Any, key: str) -> Call:
    """The task with its root node's id derived from a user key (same key -> same node)."""
    if not isinstance(key, str) or not key:
        raise ConfigError(f"key must be a non-empty string, not {shown(key)}")
    node_id = "k-" + (key if _SAFE_KEY.fullmatch(key) else hashlib.sha1(key.encode()).hexdigest())
    root = task if isinstance(task, Call) else Call(_identity, (task,))
    root._id = node_id
    return root


# ------------------------------------------------------------------------------------ scheduling


def set_result_ttl(r: Any, keys: QueueKeys, ttl: str) -> None:
    """Store a queue's default result TTL (``ttl_text``; "0": none) where schedule.lua reads it."""
    r.execute_command(*result_ttl_command(keys, ttl))


def result_ttl_command(keys: QueueKeys, ttl: str) -> tuple[str, ...]:
    """:func:`set_result_ttl`'s command, as a tuple."""
    return ("DEL", keys.result_ttl) if ttl == "0" else ("SET", keys.result_ttl, ttl)


def ensure_group(q: QueueCore, pipe: Any) -> None:
    """Queue on ``pipe`` the registration of the queue (every time: another process may have
    forgotten the queue, see :func:`clean`) and the creation of its stream and consumer group (a
    BUSYGROUP reply means they exist), until a schedule has seen them made."""
    for command in group_commands(q):
        pipe.execute_command(*command)


def group_commands(q: QueueCore) -> list[tuple[Any, ...]]:
    """:func:`ensure_group`'s commands, as tuples."""
    if q.group_ready:
        return [("SADD", schema.QUEUES, q.name)]
    return [("SADD", schema.QUEUES, q.name), ("XGROUP", "CREATE", q.keys.stream, GROUP, "0", "MKSTREAM")]


class _Options:
    """The per-node options of one schedule call, validated once."""

    def __init__(self, q: QueueCore | None, timeout: float | None, max_attempts: int | None, retries: int,
                 retry_backoff: float, retry_on: Any, soft_timeout: float | None = None,
                 resources: Any = None, node_resources: dict[str, str] | None = None, delay: Any = None,
                 at: Any = None, node_due: dict[str, str] | None = None, result_ttl: Any = None,
                 limits: Any = None, priority: Any = 0) -> None:
        self.timeout = seconds_or_empty(timeout, "timeout")
        self.priority = priority_text(priority)  # every new node's level ("": 0)
        self.limits = keys_text(limits)  # every node's limit keys, "a,b" (forrestq.limits)
        self.result_ttl = "" if result_ttl is None else ttl_text(result_ttl)  # the roots': "" the queue's
        self.due = due_text(delay, at)  # every new node's: a tree starts no earlier than that
        self.node_due = node_due or {}  # node id -> its own (schedule_graph's delay={name: s})
        self.resources = requests.request(resources)  # every node's, unless node_resources has its own
        self.node_resources = node_resources or {}
        self.soft_timeout = seconds_or_empty(soft_timeout, "soft_timeout")
        if timeout is not None and soft_timeout is not None and soft_timeout >= timeout:
            raise ConfigError(f"soft_timeout ({soft_timeout:g} s) must be below timeout ({timeout:g} s): "
                              "the hard limit would kill the task before it could clean up")
        default = q.max_attempts if q is not None else 3
        self.max_attempts = str(check_attempts(max_attempts) if max_attempts is not None else default)
        self.policy = retry_policy(retries, retry_backoff, retry_on)

    def node(self, spec: NodeSpec, root: bool, metadata: bytes, key: str | None) -> ops.Node:
        """The node of ``spec`` with these options (``metadata``, ``key``: a root's)."""
        sid = spec.id
        return ops.Node(sid, spec.fn_sha, spec.args, ",".join(spec.inputs) if spec.inputs else "", spec.name,
                        root, metadata if root else b"", self.timeout, self.max_attempts,
                        (key or "") if root else "", self.policy, spec.io_bound, self.soft_timeout,
                        self.node_resources.get(sid, self.resources) if self.node_resources else self.resources,
                        spec.allow_failed, self.node_due.get(sid, self.due) if self.node_due else self.due,
                        self.result_ttl if root else "", self.limits, self.priority)


def plan(tasks: Iterable[Any], metadata: Iterable[Any] | None, user_keys: Iterable[str] | None,
         o: _Options) -> tuple[list[TaskRef], list[ops.Node], dict[str, bytes]]:
    """Serialise the trees into nodes (nothing is written yet): refs of the roots, the nodes, and the
    function blobs by sha."""
    ids, nodes, fns = plan_ids(tasks, metadata, user_keys, o)
    return [TaskRef(i, "", "") for i in ids], nodes, fns


def plan_ids(tasks: Iterable[Any], metadata: Iterable[Any] | None, user_keys: Iterable[str] | None,
             o: _Options) -> tuple[list[str], list[ops.Node], dict[str, bytes]]:
    """:func:`plan`, with the ids of the roots instead of refs."""
    add = Planner().add
    metas = iter(metadata) if metadata is not None else None
    keys_in = iter(user_keys) if user_keys is not None else None
    fns: dict[str, bytes] = {}
    nodes: list[ops.Node] = []
    ids: list[str] = []
    for task in tasks:
        md = next(metas, None) if metas is not None else None
        user_key = next(keys_in, None) if keys_in is not None else None
        if user_key is not None:
            task = keyed(_deferred(task), user_key)
        elif callable(task) and not isinstance(task, Deferred):
            _deferred(task)
        root_id, specs = add(task)
        root_nodes(root_id, specs, md, user_key, o, nodes, fns)
        ids.append(root_id)
    return ids, nodes, fns


def check_sizes(specs: list[NodeSpec]) -> None:
    """SerializationError for a node whose arguments Redis would refuse (past proto-max-bulk-len)."""
    for spec in specs:
        if len(spec.args) > ARGS_LIMIT:
            raise SerializationError(f"the arguments of {spec.name} take {len(spec.args) >> 20} MiB "
                                     f"serialised; Redis takes at most {ARGS_LIMIT >> 20} MiB: pass big "
                                     "inputs with q.put(obj) instead")


def root_nodes(root_id: str, specs: list[NodeSpec], md: Any, user_key: str | None, o: _Options,
               nodes: list[ops.Node], fns: dict[str, bytes]) -> None:
    """The nodes of one planned root (``Planner.add``'s) with its metadata and key, appended to ``nodes``,
    their function blobs to ``fns`` (by sha)."""
    check_sizes(specs)
    md_blob = codec.dumps(md) if md is not None else b""
    for spec in specs:
        if spec.fn_sha not in fns:
            fns[spec.fn_sha] = spec.fn_blob
        nodes.append(o.node(spec, spec.id == root_id, md_blob, user_key))
    if not specs or specs[-1].id != root_id:  # planned before (shared): mark it a root
        nodes.append(ops.Node(root_id, root=True, metadata=md_blob, max_attempts=o.max_attempts))


def _deferred(task: Any) -> Any:
    """``task``; ConfigError for a function passed in place of a deferred call of it."""
    if callable(task) and not isinstance(task, Deferred):
        raise ConfigError(f"schedule() takes a deferred call, not the function {shown(task)} itself: "
                          "did you mean defer(fn, *args)?")
    return task


def write(q: QueueCore, nodes: list[ops.Node], fns: dict[str, bytes]) -> str:
    """Write functions and nodes in one pipeline, in chunks; returns the finished stream's id
    before the first chunk (where a waiter may start to block)."""
    now = time.time()
    # the first chunk also sets the signer's fingerprint (workers compare their secret's with it) and the
    # function blobs (SET NX), and reads the finished stream's newest id: the one returned
    signer = signing.fingerprint()
    return send_schedule(q, [ops.schedule.command(q.scripts, q.keys, ops.ScheduleArgs(chunk, now, True, signer, fns)
                                                  if i == 0 else ops.ScheduleArgs(chunk, now, False))
                             for i, chunk in enumerate(chunks(nodes))])


def send_schedule(q: QueueCore, scripts: list[tuple[Any, ...]]) -> str:
    """Send a schedule's script calls (``ops.schedule`` commands, the first chunk first) in one write, with
    what goes with them: the queue's registration, events cap and result TTL; returns the first's
    finished stream id."""
    k = q.keys
    commands = group_commands(q)
    if q.events_cap is not None:  # Queue(events=...), again: a clean(all=True) may have forgotten it
        commands.append(("SET", k.events_cap, q.events_cap))
    if q.result_ttl is not None:  # Queue(result_ttl=...), again, for the same reason
        commands.append(result_ttl_command(k, q.result_ttl))
    first = len(commands)
    commands += scripts
    if q.replicas:  # durability: return once a replica has every write above (same connection)
        commands.append(durability.wait_args(q.replicas))
    replies = q.scripts.send_all(commands, raise_on_error=False, retried=True)  # a schedule may be sent twice
    waited = replies.pop() if q.replicas else None
    for reply in replies:
        if isinstance(reply, Exception) and "BUSYGROUP" not in str(reply):
            raise reply
    if q.replicas:
        durability.confirm(waited, q.replicas, f"schedule on queue {q.name!r}")
    q.group_ready = True
    return ops.schedule.reply(replies[first]).since


def chunks(nodes: list[ops.Node]) -> list[list[ops.Node]]:
    """``nodes`` cut into the chunks of one script call each: :data:`CHUNK_NODES` nodes or
    :data:`CHUNK_BYTES` of arguments, whichever comes first."""
    out: list[list[ops.Node]] = []
    chunk: list[ops.Node] = []
    size = 0
    for node in nodes:
        chunk.append(node)
        size += len(node.args)
        if len(chunk) >= CHUNK_NODES or size >= CHUNK_BYTES:
            out.append(chunk)
            chunk, size = [], 0
    if chunk:
        out.append(chunk)
    return out


def schedule_many(q: QueueCore, tasks: Iterable[Any], metadata: Iterable[Any] | None = None,
                  timeout: float | None = None, max_attempts: int | None = None,
                  keys: Iterable[str] | None = None, retries: int = 0, retry_backoff: float = 1.0,
                  retry_on: Any = (Exception,), soft_timeout: float | None = None, resources: Any = None,
                  node_resources: dict[str, str] | None = None, delay: Any = None, at: Any = None,
                  node_due: dict[str, str] | None = None, result_ttl: Any = None,
                  limits: Any = None, priority: Any = 0) -> list[TaskRef]:
    """Schedule many task trees in one round trip (see ``Queue.schedule_many``); ``resources``: what
    every node needs, ``node_resources``: node id -> its own request (text form), for graphs;
    ``delay``/``at``: no new node starts before then (:func:`due_text`); ``node_due``: node id -> its own;
    ``result_ttl``: seconds each new root's finished record is kept (None: the queue's default);
    ``priority``: every new node's level (:func:`priority_text`)."""
    if not node_resources and not node_due and no_options(timeout, max_attempts, retries, retry_backoff, retry_on,
                                                          soft_timeout, resources, delay, at, result_ttl, limits,
                                                          priority):
        options = _plain_options(q.max_attempts)  # none given: the common case, validated once
    else:
        options = _Options(q, timeout, max_attempts, retries, retry_backoff, retry_on, soft_timeout, resources,
                           node_resources, delay, at, node_due, result_ttl, limits, priority)
    ids, nodes, fns = plan_ids(tasks, metadata, keys, options)
    since = write(q, nodes, fns) if nodes else ""
    name = q.name
    return [TaskRef(i, name, since) for i in ids]


def schedule_one(q: QueueCore, task: Any, metadata: Any = None, timeout: float | None = None,
                 max_attempts: int | None = None, key: str | None = None, retries: int = 0,
                 retry_backoff: float = 1.0, retry_on: Any = (Exception,), soft_timeout: float | None = None,
                 resources: Any = None, delay: Any = None, at: Any = None, result_ttl: Any = None,
                 limits: Any = None, priority: Any = 0) -> TaskRef:
    """Schedule one task tree (``Queue.schedule``): :func:`schedule_many` of one. A deferred call without
    metadata, key or options, the common single call, skips a batch's steps (options checked, metadata
    and keys paired with tasks, a list of refs): the same planning (``Planner.add``), and a leaf (no inputs)
    goes as ``ops.leaf_command``: the command :func:`write` would send for it, made from a template."""
    if metadata is None and key is None and type(task) is Call and no_options(
            timeout, max_attempts, retries, retry_backoff, retry_on, soft_timeout, resources, delay, at, result_ttl,
            limits, priority):
        o = _plain_options(q.max_attempts)
        root_id, specs = Planner().add(task)
        if len(specs) == 1 and not (specs[0].inputs or specs[0].io_bound or specs[0].allow_failed):  # a leaf
            (spec,) = specs
            check_sizes(specs)
            command = ops.leaf_command(q.scripts, q.keys, root_id, spec.fn_sha, spec.args, spec.name, spec.fn_blob,
                                       time.time(), signing.fingerprint(), o.max_attempts)
            return TaskRef(root_id, q.name, send_schedule(q, [command]))
        nodes: list[ops.Node] = []
        fns: dict[str, bytes] = {}
        root_nodes(root_id, specs, None, None, o, nodes, fns)
        return TaskRef(root_id, q.name, write(q, nodes, fns))
    return schedule_many(q, (task,), None if metadata is None else (metadata,), timeout, max_attempts,
                         None if key is None else (key,), retries, retry_backoff, retry_on, soft_timeout, resources,
                         delay=delay, at=at, result_ttl=result_ttl, limits=limits, priority=priority)[0]


def no_options(timeout: Any, max_attempts: Any, retries: Any, retry_backoff: Any, retry_on: Any, soft_timeout: Any,
               resources: Any, delay: Any, at: Any, result_ttl: Any, limits: Any, priority: Any) -> bool:
    """Every option of a schedule call is its default, as given (a value equal to a default but of another
    type, True for 1, is not: it is checked, and refused)."""
    return (timeout is None and max_attempts is None and soft_timeout is None and resources is None and delay is None
            and at is None and result_ttl is None and limits is None and _default(retries, 0)
            and _default(priority, 0) and _default(retry_backoff, 1.0) and type(retry_on) is tuple
            and len(retry_on) == 1 and retry_on[0] is Exception)


def _default(value: Any, default: float) -> bool:
    """``value`` is ``default`` exactly (same type: True is not 1)."""
    return type(value) is type(default) and value == default


_PLAIN: dict[int, _Options] = {}  # a queue's max_attempts -> the options of a call that gives none


def _plain_options(max_attempts: int) -> _Options:
    """The options of a schedule call that gives none, on a queue of ``max_attempts`` (read only)."""
    got = _PLAIN.get(max_attempts)
    if got is None:
        got = _PLAIN[max_attempts] = _Options(None, None, max_attempts, 0, 1.0, (Exception,))
    return got


def graph_resources(nodes: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """``schedule_graph``'s options with ``resources`` split: a dict of name -> request (every value
    a dict) gives each named node its own (checked here: a bad one, or an unknown name, raises and
    writes nothing); any other value is one request for every node."""
    given = options.get("resources")
    if not isinstance(given, dict) or not given or not all(isinstance(v, dict) for v in given.values()):
        return options
    unknown = [n for n in given if n not in nodes]
    if unknown:
        raise ConfigError(f"resources= names {shown(unknown[0])}, which is not a scheduled task of the graph")
    per_node = {nodes[n]._id: requests.request(v) for n, v in given.items()}
    return {**{k: v for k, v in options.items() if k != "resources"}, "node_resources": per_node}


def graph_delays(nodes: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """``schedule_graph``'s options with a ``delay`` dict of name -> seconds split into each named
    node's own due time (checked here: a bad value or an unknown name raises and writes nothing);
    any other value is one delay for every node."""
    given = options.get("delay")
    if not isinstance(given, dict):
        return options
    unknown = [n for n in given if n not in nodes]
    if unknown:
        raise ConfigError(f"delay= names {shown(unknown[0])}, which is not a scheduled task of the graph")
    per_node = {nodes[n]._id: due_text(v, None) for n, v in given.items()}
    return {**{k: v for k, v in options.items() if k != "delay"}, "node_due": per_node}


def schedule_graph(q: QueueCore, funcs: dict[str, Any], dependencies: dict[str, Iterable[str]],
                   done: Iterable[str] | None = None, results: dict[str, Any] | None = None,
                   io_bound: Iterable[str] | None = None, **options: Any) -> dict[str, TaskRef]:
    """Schedule a named graph (see ``Queue.schedule_graph``)."""
    io = list(io_bound or ())
    nodes = build(funcs, dependencies, done=done, results=results, io_bound=io)
    for name in nodes:  # each function travels wrapped (DropNone): check it unwrapped
        codec.check_task_fn(funcs[name], f"{shown(name)}: {codec.qualified_name(funcs[name])}")
    first = [n for n in dict.fromkeys(io) if n in nodes]
    names = first + [n for n in nodes if n not in first]
    options = graph_delays(nodes, graph_resources(nodes, options))
    refs = schedule_many(q, [nodes[n] for n in names], metadata=[{"name": n} for n in names], **options)
    return dict(zip(names, refs))


# ------------------------------------------------------------------------ continuations (issue 15)


def continuation(r: Any, k: QueueKeys, outcome: Outcome, max_attempts: int) -> Outcome:
    """The outcome of a task that returned a deferred tree (``outcome.state`` CONTINUED, ``outcome.tree``),
    ready to record: the tree planned into nodes exactly as :func:`schedule_many` would (same
    serialisation and signing, in the process that ran the task: a worker child signs with the
    secret it checked the task with), its function blobs written now (content-addressed, SET NX: a
    blob left by an attempt that is then refused is harmless), and the nodes carried on the outcome
    for complete.lua, which writes them, fenced by the attempt's token, in the same atomic call
    that makes the task wait for the tree's root. The nodes are not roots (``results()`` yields the
    task itself once the tree is done); each gets ``max_attempts`` (the task's own), no time limit of
    its own and no retry policy. A tree that cannot be planned (a function or argument that cannot be
    serialised, a cycle) fails the task, saying so. ``r``: a client of the queue's server (Redis
    errors propagate: the caller retries)."""
    try:
        options = _Options(None, None, max_attempts, 0, 1.0, (Exception,))
        refs, nodes, fns = plan([outcome.tree], None, None, options)
    except Exception as e:  # noqa: BLE001 - the tree is the task's result: its fault is the task's failure
        return failure(e, f"could not schedule the deferred tree the task returned: {one_line(e)}", outcome.runtime)
    for node in nodes:
        node.root = False
    pipe = r.pipeline(transaction=False)
    for sha, blob in fns.items():
        pipe.set(k.fn(sha), blob, nx=True)
    pipe.execute()
    return Outcome(CONTINUED, runtime=outcome.runtime, cpu_time=outcome.cpu_time, peak_rss=outcome.peak_rss,
                   continuation=(refs[0].id, nodes))


# ------------------------------------------------------------------------------ running again


def requeue(q: QueueCore, follow: str, ids: list[str]) -> list[str]:
    out: list[str] = []
    for i in range(0, len(ids), BATCH):
        out += ops.requeue(q.scripts, q.keys, ops.RequeueArgs(follow, ids[i:i + BATCH]))
    return out


def error_type(task: Task) -> str:
    """The name of a failed task's exception type (from its reason when the class does not load)."""
    try:
        return type(task.errorvalue).__name__
    except Exception:  # noqa: BLE001 - an error class not importable here: fall back to the reason
        return task.reason.split(":", 1)[0]


def requeue_failed(q: QueueCore, candidates: list[Task], error_type_name: str | None = None,
                   dry_run: bool = False) -> list[str]:
    """Run failed tasks again, with the dependents that failed because of them."""
    chosen = [t.id for t in candidates if t.state == schema.FAILED and not t.upstream
              and (error_type_name is None or error_type(t) == error_type_name)]
    if dry_run:
        return chosen + [d for d in downstream(q, chosen, only_failed=True) if d not in chosen]
    return requeue(q, "failed", chosen)


def downstream(q: QueueCore, ids: list[str], only_failed: bool) -> list[str]:
    """Every node downstream of ``ids`` (``only_failed``: those failed because of an input)."""
    found: list[str] = []
    seen = set(ids)
    todo = list(ids)
    while todo:
        for raw in q.r.smembers(q.keys.dependents(todo.pop())):
            dep = raw.decode()
            if dep in seen:
                continue
            if only_failed:
                st, up = q.r.hmget(q.keys.task(dep), schema.TASK_STATE, schema.TASK_UPSTREAM)
                if st != schema.FAILED.encode() or not up:
                    continue
            seen.add(dep)
            found.append(dep)
            todo.append(dep)
    return found


def descendants(q: QueueCore, ref: TaskRef | Task | str) -> list[str]:
    """The ids of every task downstream of one (its dependents, theirs, ...; not the task itself),
    each once: what :func:`rerun` re-runs besides it. UnknownTask for an id the queue does not hold."""
    tid = task_id(ref)
    if not q.r.exists(q.keys.task(tid)):
        raise UnknownTask(f"no task {shown(tid)} in queue {q.name!r}")
    return downstream(q, [tid], only_failed=False)


def rerun(q: QueueCore, ref: TaskRef | str, fn: Any = None) -> list[str]:
    """Run one task again and everything downstream of it; ``fn`` replaces its function first."""
    task = get(q, ref)
    if fn is not None:
        old_sha = q.r.hget(q.keys.task(task.id), schema.TASK_FN)
        old = codec.load_fn(q.r.get(q.keys.fn(old_sha.decode()))) if old_sha else None
        if isinstance(old, DropNone):  # a named-graph node: keep taskmap's None rule
            fn = DropNone(fn)
        sha, blob, name = codec.dump_fn(fn)
        pipe = q.r.pipeline(transaction=False)
        pipe.set(q.keys.fn(sha), blob, nx=True)
        pipe.hset(q.keys.task(task.id), mapping={schema.TASK_FN: sha, schema.TASK_NAME: name})
        pipe.execute()
    return requeue(q, "all", [task.id])


# ---------------------------------------------------------------------- cancelling and cleaning


def cancel(q: QueueCore, ids: list[str]) -> list[str]:
    """End unfinished tasks as failed, "cancelled" (see ``Queue.cancel``); returns the ids cancelled (of
    ``ids``). A task that returned a deferred tree takes its continuation with it: the tree's unfinished
    nodes (nested ones too) are cancelled after it, and looked for again once it is cancelled, so that
    a continuation recorded while the cancel ran (the task was running) is cancelled as well."""
    out = _cancel(q, ids)
    seen, parents = set(ids), list(ids)
    while parents:
        extra = [n for n in continuation_nodes(q, parents) if n not in seen]
        seen.update(extra)
        if extra:
            _cancel(q, extra)
        parents = extra
    return out


def continuation_nodes(q: QueueCore, ids: list[str]) -> list[str]:
    """The unfinished nodes of the continuations of ``ids`` (the trees they returned, see
    :func:`continuation`), nested ones too: from each tree's root through the inputs, only nodes the
    tree created (``TASK_OWNER``), never a node it merely used."""
    todo: list[tuple[str, str]] = []
    for i in range(0, len(ids), CANCEL_BATCH):
        pipe = q.r.pipeline(transaction=False)
        for tid in ids[i:i + CANCEL_BATCH]:
            pipe.hget(q.keys.task(tid), schema.TASK_CONT)
        todo += [(cont.decode(), tid) for tid, cont in zip(ids[i:i + CANCEL_BATCH], pipe.execute()) if cont]
    found: list[str] = []
    seen: set[str] = set()
    while todo:
        node, owner = todo.pop()
        if node in seen:
            continue
        seen.add(node)
        st, own, inputs, cont = q.r.hmget(q.keys.task(node), schema.TASK_STATE, schema.TASK_OWNER,
                                          schema.TASK_INPUTS, schema.TASK_CONT)
        if own is None or own.decode() != owner:
            continue
        if st is not None and st.decode() not in schema.FINISHED_STATES:
            found.append(node)
        todo += [(dep, owner) for dep in (inputs or b"").decode().split(",") if dep]
        if cont:
            todo.append((cont.decode(), node))
    return found


def _cancel(q: QueueCore, ids: list[str]) -> list[str]:
    token = "cancel-" + new_token()
    error = codec.dump_exception(Cancelled("cancelled"))
    out: list[str] = []
    for i in range(0, len(ids), CANCEL_BATCH):
        part = ids[i:i + CANCEL_BATCH]
        pipe = q.r.pipeline(transaction=True)
        ops.takeover.queue(q.scripts, pipe, q.keys, ops.TakeoverArgs(token, part))
        for tid in part:
            ops.complete.queue(q.scripts, pipe, q.keys, ops.Completion(
                tid, token, schema.FAILED, error=error, reason="cancelled", cancelled=True))
        replies = q.scripts.execute(pipe)
        out += [tid for tid, raw in zip(part, replies[1:]) if ops.complete.reply(raw)]
    return out


def clean(q: QueueCore, done: bool = False, failed: bool = False, all: bool = False,
          older_than: Any = None) -> int:
    """Delete task records (see ``Queue.clean``); returns how many were deleted. ``older_than`` (seconds
    or a timedelta): only finished records whose finish time (the done/failed zsets' score) is older;
    without ``done``/``failed`` both. ConfigError (nothing deleted) for a bad value, or with ``all``."""
    k = q.keys
    cutoff = "+inf"
    if older_than is not None:
        age = ttl_text(older_than, "older_than")
        if all:
            raise ConfigError("older_than= deletes finished records only: it does not go with all=True")
        cutoff = f"({time.time() - float(age)!r}"
        done, failed = (done, failed) if done or failed else (True, True)
    sources = [k.done] * (done or all) + [k.failed] * (failed or all)
    deleted = 0
    for source in sources:
        start = 0
        while True:
            ids = [i.decode() for i in q.r.zrangebyscore(source, "-inf", cutoff, start, BATCH)]
            if not ids:
                break
            n = ops.clean(q.scripts, k, ids)
            deleted += n
            # the kept ones stay in front (n also counts continuations deleted with their task, which
            # may have stood further on: re-reading a few kept ones is harmless, skipping would not be)
            start = max(0, start + len(ids) - n)
    if all:  # then the unfinished ones, a snapshot (clean.lua keeps the running ones and what they need)
        ids = unfinished.ids(q.r, k)
        deleted += sum(ops.clean(q.scripts, k, ids[i:i + BATCH]) for i in range(0, len(ids), BATCH))
    if all and not sum(counts(q).values()):
        forget(q)
    return deleted


def forget(q: QueueCore) -> None:
    """Delete every key of a queue that holds no task any more and take its name off ``fq:queues``
    (status and the "known:" lists stop showing it). Scheduling to it again registers it again. Its
    periodic schedules (``Queue.every``/``cron``) are not tasks: they stay (with their functions and the
    producers' signer fingerprint), and keep the queue listed; its limits and rates by key stay too."""
    schedules = (q.keys.periodic.encode(), (q.keys.prefix + schema.SUFFIX_PERIODIC).encode())
    names = [n.decode() for n in q.r.zrange(q.keys.periodic, 0, -1)]
    shas = [q.r.hget(q.keys.schedule(n), schema.TASK_FN) for n in names]
    kept = {q.keys.fn(sha.decode()).encode() for sha in shas if sha} | ({q.keys.signer.encode()} if names else set())
    kept |= {q.keys.limits.encode(), q.keys.rates.encode()}  # limits by key are settings, like schedules
    stale = [key for key in q.r.scan_iter(match=q.keys.pattern(), count=1000)
             if not key.startswith(schedules) and key not in kept]
    if stale:
        q.r.delete(*stale)
    q.group_ready = False
    q.r.srem(schema.QUEUES, q.name)
    if sum(counts(q).values()) or q.r.exists(q.keys.periodic):  # scheduled meanwhile, or periodic: listed
        q.r.sadd(schema.QUEUES, q.name)


# ------------------------------------------------------------------------------------ by hand


def _inputs(q: QueueCore, task: Task) -> list[Any]:
    values = []
    for dep in task.inputs:
        st, rv = q.r.hmget(q.keys.task(dep), schema.TASK_STATE, schema.TASK_RESULT)
        if st != schema.DONE.encode():
            raise ConfigError(f"input task {dep} of {task.id} is not done ({(st or b'missing').decode()})")
        values.append(codec.loads(rv))
    return values


def run_here(q: QueueCore, ref: TaskRef | str, record: bool = False) -> Task:
    """Run one task in this process with its real inputs (see ``Queue.run_here``)."""
    task = get(q, ref)
    fields = q.r.hgetall(q.keys.task(task.id))
    inputs = _inputs(q, task)
    fn = codec.load_fn(q.r.get(q.keys.fn(fields[schema.TASK_FN.encode()].decode())))
    args, kwargs = codec.load_args(fields[schema.TASK_ARGS.encode()], inputs)
    t0 = time.perf_counter()
    out: dict[bytes, bytes] = {}
    exc: BaseException | None = None
    value: Any = None
    current = _by_hand(q, task, fields, t0)
    entered = context.enter(current)  # current_task() inside; progress kept in memory (the Task below)
    try:
        value = invoke(fn, args, kwargs)
        out[schema.TASK_RESULT.encode()] = codec.dumps(value)
    except Exception as e:  # noqa: BLE001 - the task's own failure is the outcome
        exc = e
        out[schema.TASK_TRACEBACK.encode()] = traceback.format_exc().encode()
        out[schema.TASK_REASON.encode()] = f"{type(e).__name__}: {e}".encode()
    finally:
        context.leave(entered)
    runtime = time.perf_counter() - t0
    if current.stored():
        out[schema.TASK_PROGRESS.encode()] = current.stored().encode()
    state = schema.FAILED if exc is not None else schema.DONE
    if record:
        _record_by_hand(q, task.id, state, out, exc, runtime)
    result = Task(q.name, task.id, {**fields, schema.TASK_STATE.encode(): state.encode(),
                                    schema.TASK_RUNTIME.encode(): repr(runtime).encode(), **out})
    if exc is not None:
        result.__dict__["errorvalue"] = exc  # the live exception, traceback included
    else:
        result.__dict__["returnvalue"] = value
    return result


def _by_hand(q: QueueCore, task: Task, fields: dict[bytes, bytes], t0: float) -> context.Current:
    """The task run by hand as :func:`forrestq.current_task` gives it: its next attempt, no time limit,
    progress kept in memory (under the token of its record, so the Task that comes back shows it)."""
    token = fields.get(schema.TASK_TOKEN.encode(), b"").decode()
    claimed = ops.Claimed(task.id, "", b"", b"", 0.0, task.attempts + 1, 0, b"", 0, [], token)
    return context.Current(context.Where(q.url, socket.gethostname(), local=q.local, record=False), q.name,
                           claimed, t0)


def _record_by_hand(q: QueueCore, tid: str, state: str, out: dict[bytes, bytes], exc: BaseException | None,
                    runtime: float) -> None:
    token = "run-" + new_token()
    pipe = q.r.pipeline(transaction=True)
    ops.takeover.queue(q.scripts, pipe, q.keys, ops.TakeoverArgs(token, [tid], finished_too=True))
    ops.complete.queue(q.scripts, pipe, q.keys, ops.Completion(
        tid, token, state, result=out.get(schema.TASK_RESULT.encode(), b""),
        error=codec.dump_exception(exc) if exc else b"",
        traceback=out.get(schema.TASK_TRACEBACK.encode(), b"").decode(),
        reason=out.get(schema.TASK_REASON.encode(), b"").decode(), runtime=runtime, host="(by hand)"))
    q.scripts.execute(pipe)

