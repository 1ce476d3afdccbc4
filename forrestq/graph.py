"""Named dependency graphs (taskmap's ``create_graph``) turned into deferred trees.

Validation happens here, before anything is written: a missing dependency, a dependency without a
function, or a cycle raises ``GraphError`` naming the culprit. :func:`check_graph` (public, as
``forrestq.check_graph``) is that validation alone.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .deferred import Deferred, IoBound, defer
from .errors import GraphError


class DropNone:
    """A graph node's function: calls ``fn`` with the dependency results that are not ``None``
    (taskmap's rule), in order."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self.__qualname__ = getattr(fn, "__qualname__", repr(fn))
        self.__module__ = getattr(fn, "__module__", None) or __name__

    def __call__(self, *values: Any) -> Any:
        return self.fn(*[v for v in values if v is not None])

    def __reduce__(self) -> tuple[Any, ...]:
        return (DropNone, (self.fn,))


def find_cycle(dependencies: Mapping[str, Iterable[str]]) -> list[str] | None:
    """A cycle as a path [a, b, ..., a], or None. Iterative; visits every node, reachable or not."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = finished
    for start in dependencies:
        if state.get(start):
            continue
        path: list[str] = []
        stack: list[tuple[str, Iterable[str]]] = [(start, iter(dependencies.get(start, ())))]
        state[start] = 1
        path.append(start)
        while stack:
            node, children = stack[-1]
            for child in children:
                if state.get(child) == 1:
                    return path[path.index(child):] + [child]
                if not state.get(child):
                    state[child] = 1
                    path.append(child)
                    stack.append((child, iter(dependencies.get(child, ()))))
                    break
            else:
                state[node] = 2
                path.pop()
                stack.pop()
    return None


def check_graph(funcs: Mapping[str, Callable[..., Any]], dependencies: Mapping[str, Iterable[str]],
                done: Iterable[str] | None = None) -> list[str]:
    """Check a named graph without scheduling it, as ``Queue.schedule_graph`` does; return the names
    that would be scheduled, inputs before the names that need them.

    Raises ``GraphError`` for a dependency list given as a string, a function that is not callable, a
    name in ``dependencies`` without a function (and not in ``done``), a dependency that is not in the
    graph, a ``done`` name that is not in the graph, or a cycle (naming its path).

    The no-entry rule: a name of ``funcs`` without a ``dependencies`` entry is a task without inputs,
    scheduled like the others (taskmap ignores such names; forrestq runs them, so a function passed
    is never silently left out). Names in ``done`` are not returned and never run.
    """
    done_set = set(done or ())
    deps = _checked(funcs, dependencies, done_set)
    return [name for name in _topological(deps) if name not in done_set]


def _checked(funcs: Mapping[str, Callable[..., Any]], dependencies: Mapping[str, Iterable[str]],
             done_set: set[str]) -> dict[str, list[str]]:
    """The graph as name -> dependency names (every name of ``funcs`` included); GraphError if bad."""
    for name, d in dependencies.items():
        if isinstance(d, (str, bytes)):
            raise GraphError(f"dependencies of {name!r} must be a list of names, not the string {d!r} "
                             f"(did you mean [{d!r}]?)")
    for name, fn in funcs.items():
        if not callable(fn) and name not in done_set:  # a done name's function never runs
            raise GraphError(f"funcs[{name!r}] is not callable: {type(fn).__name__}")
    deps = {name: list(d) for name, d in dependencies.items()}
    for name in funcs:
        deps.setdefault(name, [])  # the no-entry rule: a task without inputs
    for name, needed in deps.items():
        if name not in funcs and name not in done_set:
            raise GraphError(f"task {name!r} has no function in funcs")
        for d in needed:
            if d not in deps:
                raise GraphError(f"task {name!r} depends on {d!r}, which is not in the graph")
    unknown_done = done_set - set(deps)
    if unknown_done:
        raise GraphError(f"done names unknown tasks: {', '.join(sorted(map(repr, unknown_done)))}")
    cycle = find_cycle(deps)
    if cycle:
        raise GraphError("cycle in task graph: " + " -> ".join(cycle))
    return deps


def build(funcs: Mapping[str, Callable[..., Any]], dependencies: Mapping[str, Iterable[str]],
          done: Iterable[str] | None = None, results: Mapping[str, Any] | None = None,
          io_bound: Iterable[str] = ()) -> dict[str, Deferred]:
    """Check the graph (:func:`check_graph`) and return name -> deferred call for every name not in
    ``done``; the ``io_bound`` names are IO-bound coroutine tasks (:func:`forrestq.deferred.io_bound`)."""
    done_set = set(done or ())
    deps = _checked(funcs, dependencies, done_set)
    results = dict(results or {})
    io = set(io_bound)
    built: dict[str, Any] = {}

    def value(name: str) -> Any:
        return results.get(name) if name in done_set else built[name]

    for name in _topological(deps):
        if name in done_set:
            continue
        fn: Any = DropNone(funcs[name])
        built[name] = defer(IoBound(fn) if name in io else fn, *[value(d) for d in deps[name]])
    return built


def _topological(deps: Mapping[str, list[str]]) -> list[str]:
    order: list[str] = []
    seen: set[str] = set()
    for start in deps:
        stack = [(start, iter(deps[start]))]
        if start in seen:
            continue
        seen.add(start)
        while stack:
            node, children = stack[-1]
            for child in children:
                if child not in seen:
                    seen.add(child)
                    stack.append((child, iter(deps[child])))
                    break
            else:
                order.append(node)
                stack.pop()
    return order
