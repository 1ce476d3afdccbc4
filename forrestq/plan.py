"""Planning: split a deferred task tree into DAG nodes, inputs first, each node once.

:class:`Planner` turns the trees a producer schedules into :class:`NodeSpec` nodes (function blob,
argument blob, input ids) ready to be written by schedule.lua; :func:`evaluate` runs a tree in this
process through the same serialisation path a worker uses.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .codec import dump_args, dump_fn, dumps, load_args, load_fn, loads
from .deferred import Call, Deferred, Part, _identity, _short
from .errors import GraphError

__all__ = ["NodeSpec", "Planner", "evaluate"]

@dataclass(slots=True)
class NodeSpec:
    """One DAG node, ready to be written to Redis. ``inputs[i]`` is the id of input ``i``."""

    id: str
    fn_sha: str
    fn_blob: bytes
    name: str
    args: bytes
    inputs: list[str]
    io_bound: bool = False  # an IO-bound coroutine (``defer(io_bound(fn), ...)``)
    allow_failed: bool = False  # runs when inputs failed (``defer(allow_failed(fn), ...)``)


class Planner:
    """Splits deferred trees into nodes, inputs before dependents, each node once.

    ``seen`` holds the ids of every node already planned by this planner: a sub-tree shared by
    several roots is planned (and run) once.
    """

    def __init__(self) -> None:
        self.seen: set[str] = set()

    def add(self, root: Any) -> tuple[str, list[NodeSpec]]:
        """Plan ``root``; returns its node id and the new nodes in topological order.

        A plain value becomes a data node (its result is the value itself, even if callable); a
        Part becomes a node whose result is that part. Raises GraphError on a cycle (possible
        only by mutating a list after passing it to defer) and SerializationError on a function
        or argument that cannot be serialised; either way nothing is added to ``seen``.
        """
        if isinstance(root, Part) or not isinstance(root, Deferred):
            root = Call(_identity, (root,), {})
        if root._id in self.seen:
            return root._id, []
        open_ids: set[str] = set()  # on the DFS stack: reaching one again is a cycle
        frame = self._open(root, open_ids)
        if not frame[2]:  # a root without inputs: the common case, no DFS needed
            (fn_sha, fn_blob, name), root_id = frame[4], root._id
            self.seen.add(root_id)
            return root_id, [NodeSpec(root_id, fn_sha, fn_blob, name, frame[1], [], root._io, root._allow_failed)]
        specs: list[NodeSpec] = []
        done: set[str] = set()
        stack = [frame]
        while stack:
            frame = stack[-1]
            call, inputs = frame[0], frame[2]
            i = frame[3]
            if i < len(inputs):
                frame[3] = i + 1
                child_id = inputs[i]._id
                if child_id in self.seen or child_id in done:
                    continue
                if child_id in open_ids:
                    raise GraphError(f"the task graph has a cycle through {_short(inputs[i])}")
                stack.append(self._open(inputs[i], open_ids))
                continue
            stack.pop()
            open_ids.discard(call._id)
            done.add(call._id)
            fn_sha, fn_blob, name = frame[4]
            specs.append(NodeSpec(call._id, fn_sha, fn_blob, name, frame[1],
                                  [c._id for c in inputs], call._io, call._allow_failed))
        self.seen.update(done)
        return root._id, specs

    @staticmethod
    def _open(call: Call, open_ids: set[str]) -> list[Any]:
        """A DFS frame: [call, args blob, input calls, next input to visit, dump_fn result]."""
        fn = call._fn
        if not callable(fn):
            raise GraphError(f"task {call._id} has no callable function: {_short(fn)}")
        dumped = dump_fn(fn)
        blob, inputs = dump_args(call._args, call._kwargs, dumped[2])
        open_ids.add(call._id)
        return [call, blob, inputs, 0, dumped]


def evaluate(d: Any) -> Any:
    """Run a deferred tree in this process, without Redis, through a worker's path.

    Each node's function and arguments go through dump_fn/load_fn and dump_args/load_args, and
    each result through dumps/loads before dependents use it, so what works here works on a
    worker. A node reached twice runs once. Exceptions propagate unchanged.
    """
    if not isinstance(d, Deferred):
        return d
    root_id, specs = Planner().add(d)
    results: dict[str, Any] = {}
    for spec in specs:
        fn = load_fn(spec.fn_blob)
        args, kwargs = load_args(spec.args, [results[i] for i in spec.inputs])
        results[spec.id] = loads(dumps(fn(*args, **kwargs)))
    return results[root_id]
