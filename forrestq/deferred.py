"""Deferred values: ``defer(fn, *args, **kwargs)`` records a call instead of making it.

A :class:`Call` is one node of a task DAG. Indexing or reading an attribute of a deferred value
(``t[1]``, ``t.thing``, ``t.args[0]``) gives a :class:`Part`, which is not a node: it is applied to
the value of its base call by whichever task consumes it.

The node's own fields live in underscore slots (``_fn``, ``_args``, ``_kwargs``, ``_id`` on a Call;
``_parent``, ``_op``, ``_key`` on a Part) because every public name must stay free for the user:
``defer(Exception, "msg").args[0]`` is a deferred read of the *result's* ``args``. For the same
reason, names starting with ``_`` are never deferred; they raise AttributeError, so pickle, copy,
numpy and ``hasattr(t, "__len__")`` probes see an ordinary object.

Guarded traps (RunForrest had all of them): iterating or unpacking a deferred value raises TypeError
instead of looping forever, ``bool(t)`` and ``len(t)`` raise TypeError, ``t[1]`` and ``t["1"]`` (and
``t.x`` and ``t["x"]``) are different paths, ``==`` is identity and never raises. A Call also equals
the :class:`~forrestq.task.Task` and :class:`~forrestq.task.TaskRef` of the node it became, and
hashes like them (by node id), so what came back can be matched with what was scheduled.

The helpers :func:`_identity`, :func:`_apply` and :func:`apply_path` are top level so that they
pickle by reference and workers import them from here.
"""
from __future__ import annotations

import itertools
import os
import secrets
from typing import Any, NoReturn

from .errors import shown

__all__ = ["Deferred", "Call", "Part", "IoBound", "AllowFailed", "Failed", "defer", "io_bound", "allow_failed",
           "new_id", "base_and_path", "apply_path"]

# --------------------------------------------------------------------------------------------- ids

_ALPHABET = "0123456789abcdefghijklmnopqrstuv"  # base32, lower case: safe in keys, shells, URLs
_PREFIX_CHARS = 12  # 60 random bits per process


def _draw_prefix() -> str:
    bits = secrets.randbits(5 * _PREFIX_CHARS)
    return "".join(_ALPHABET[(bits >> (5 * i)) & 31] for i in range(_PREFIX_CHARS))


_pid = os.getpid()
_prefix = _draw_prefix()
_counter = itertools.count()


def new_id() -> str:
    """A short id, unique across processes and machines.

    A random 60-bit prefix drawn once per process (and re-drawn in a forked child, which would
    otherwise repeat its parent's ids) followed by a counter in hex: no system call per id.
    """
    global _pid, _prefix, _counter
    if os.getpid() != _pid:
        _pid, _prefix, _counter = os.getpid(), _draw_prefix(), itertools.count()
    return _prefix + format(next(_counter), "x")


# ------------------------------------------------------------------------------------- the values


class Deferred:
    """Base of deferred values. Users get instances from :func:`defer`, never construct one."""

    __slots__ = ("__weakref__",)

    def __getitem__(self, key: Any) -> Part:
        if isinstance(key, Deferred):
            raise TypeError("a deferred value cannot be indexed with another deferred value; "
                            "defer a function that does the indexing instead")
        return Part(self, "item", key)

    def __getattr__(self, name: str) -> Part:
        # Only called when normal lookup fails, i.e. never for the slots and methods below.
        if name.startswith("_"):
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r} "
                                 "(private and dunder names are not deferred)")
        return Part(self, "attr", name)

    def __iter__(self) -> NoReturn:
        raise TypeError("a deferred value cannot be iterated or unpacked before it runs; "
                        "take its parts by index instead: t[0], t[1]")

    def __contains__(self, item: Any) -> bool:
        raise TypeError("'in' cannot look inside a deferred value before it runs; "
                        "defer(operator.contains, t, item) does it in a task")

    def __bool__(self) -> bool:
        raise TypeError("a deferred value has no truth value until it runs")

    def __eq__(self, other: object) -> bool:
        # Another type answers for itself: a Task or TaskRef equals the Call that became its node
        # (forrestq.task), anything else falls back to identity (never raises, never guesses).
        return self is other if isinstance(other, Deferred) else NotImplemented

    def __ne__(self, other: object) -> bool:
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal

    __hash__ = object.__hash__

    def __repr__(self) -> str:
        return f"<deferred {_describe(self)}>"


class Call(Deferred):
    """One deferred call ``_fn(*_args, **_kwargs)``: one node of the DAG, identified by ``_id``;
    ``_io``: an IO-bound coroutine (``defer(io_bound(fn), ...)``), which may share a worker child's
    event loop with other IO-bound ones; ``_allow_failed``: it runs when inputs failed, getting a
    :class:`Failed` in place of each (``defer(allow_failed(fn), ...)``)."""

    __slots__ = ("_fn", "_args", "_kwargs", "_id", "_io", "_allow_failed")

    def __init__(self, fn: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None,
                 io: bool = False) -> None:
        self._fn = fn
        self._args = args
        self._kwargs = kwargs if kwargs is not None else {}
        self._id = new_id()
        self._io = io
        self._allow_failed = False

    def __hash__(self) -> int:
        # The hash of its node id, as a Task's and a TaskRef's: ``results[task]`` finds the value
        # stored under the deferred that produced it. ``schedule(t, key=...)`` gives ``t`` the key's
        # node id (and so a new hash): key a deferred before putting it in a set or a dict.
        return hash(self._id)


class Part(Deferred):
    """``parent[key]`` (op ``"item"``) or ``getattr(parent, key)`` (op ``"attr"``), deferred."""

    __slots__ = ("_parent", "_op", "_key")

    def __init__(self, parent: Deferred, op: str, key: Any) -> None:
        self._parent = parent
        self._op = op
        self._key = key


# -------------------------------------------------------------------------------------- functions


def _identity(value: Any) -> Any:
    """The function of a data task: ``defer(42)`` runs ``_identity(42)``."""
    return value


def _apply(fn: Any, /, *args: Any, **kwargs: Any) -> Any:
    """The function of ``defer(deferred_fn, ...)``: the function slot is an input like any other."""
    return fn(*args, **kwargs)


class _Marker:
    """A function marked for :func:`defer` (``io_bound(fn)``, ``allow_failed(fn)``). Only a marker:
    ``defer`` unwraps it, and the task records ``fn`` itself (so it still travels by name)."""

    __slots__ = ("fn",)
    label = ""  # the marking function's name, for messages and repr

    def __init__(self, fn: Any) -> None:
        if not callable(fn) and not isinstance(fn, Deferred):
            raise TypeError(f"{self.label}() takes a function, not {_short(fn)} (a {type(fn).__name__})")
        self.fn = fn

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"{self.label}({_short(self.fn, 60)})"


class IoBound(_Marker):
    """``io_bound(fn)``: ``fn`` marked for :func:`defer` as an IO-bound coroutine function."""

    __slots__ = ()
    label = "io_bound"


def io_bound(fn: Any) -> IoBound:
    """Mark a coroutine function as IO-bound for one deferred call: ``defer(io_bound(fetch), url)``.

    A worker child started with ``--async-concurrency N`` runs up to N IO-bound coroutine tasks at
    once on its event loop; any other coroutine task gets a child to itself (it may block the loop:
    ``time.sleep``, CPU work). A marker, not a keyword of ``defer``, so that every keyword argument
    stays the user's own (``defer(fetch, url, io_bound=True)`` passes ``io_bound=True`` to ``fetch``).
    Plain functions are unaffected.
    """
    return IoBound(fn)


class AllowFailed(_Marker):
    """``allow_failed(fn)``: ``fn`` marked for :func:`defer` as a reduction that tolerates failed
    inputs (the two markers combine: ``allow_failed(io_bound(fn))``)."""

    __slots__ = ()
    label = "allow_failed"


def allow_failed(fn: Any) -> AllowFailed:
    """Mark a function as a reduction that runs even when some of its inputs failed:
    ``defer(allow_failed(join), [defer(work, f) for f in files])`` calls ``join`` once every input
    has finished, with a :class:`Failed` (the input's task id, reason and exception type) in place of
    each input that failed, instead of failing with ``UpstreamFailed``. Inputs that succeeded are
    passed as usual. A marker, not a keyword of ``defer`` (every keyword stays the user's, as with
    :func:`io_bound`), and per node, not a schedule option: the join that tolerates failures is
    usually one node deep inside a tree, often one a task returned, where no ``schedule`` call is.
    A part of a failed input (``t[0]`` of it) is the same :class:`Failed`."""
    return AllowFailed(fn)


class Failed:
    """What an allow-failed task (:func:`allow_failed`) gets in place of an input that failed:
    ``task_id`` (the failed input), ``reason`` (its one-line reason), ``exc_type`` (the name of its
    exception type: ``"ValueError"``; ``"UpstreamFailed"`` when it failed because of its own input,
    then named by ``upstream``; ``"Cancelled"`` for a cancel). A plain value, not an exception: test
    for it with ``isinstance(x, forrestq.Failed)``; it pickles, so a join may return it."""

    __slots__ = ("task_id", "reason", "exc_type", "upstream")

    def __init__(self, task_id: str, reason: str, exc_type: str, upstream: str = "") -> None:
        self.task_id, self.reason, self.exc_type, self.upstream = task_id, reason, exc_type, upstream

    def __reduce__(self) -> tuple[Any, ...]:
        return (Failed, (self.task_id, self.reason, self.exc_type, self.upstream))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Failed):
            return NotImplemented
        return self.__reduce__() == other.__reduce__()

    def __hash__(self) -> int:
        return hash((self.task_id, self.reason, self.exc_type))

    def __repr__(self) -> str:
        return f"Failed({self.task_id!r}, {_short(self.reason, 60)}, {self.exc_type!r})"


def defer(fn: Any, /, *args: Any, **kwargs: Any) -> Deferred:
    """Record ``fn(*args, **kwargs)`` as a task instead of calling it.

    ``defer(value)`` with a non-callable wraps plain data; ``defer(deferred_fn, ...)`` calls the
    value a deferred function turns out to have; ``defer(io_bound(fn), ...)`` marks the task an
    IO-bound coroutine (see :func:`io_bound`); ``defer(allow_failed(fn), ...)`` a reduction that
    tolerates failed inputs (see :func:`allow_failed`).
    """
    if isinstance(fn, AllowFailed):
        call = defer(fn.fn, *args, **kwargs)
        assert isinstance(call, Call)
        call._allow_failed = True
        return call
    if isinstance(fn, IoBound):
        call = defer(fn.fn, *args, **kwargs)
        assert isinstance(call, Call)
        call._io = True
        return call
    if isinstance(fn, Deferred):
        return Call(_apply, (fn, *args), kwargs)
    if callable(fn):
        return Call(fn, args, kwargs)
    if args or kwargs:
        raise TypeError(f"defer(): the first argument is not callable: {_short(fn)} "
                        f"(a {type(fn).__name__}); to defer a plain value use defer(value) alone")
    return Call(_identity, (fn,), {})


def base_and_path(d: Deferred) -> tuple[Call, tuple[tuple[str, Any], ...]]:
    """The Call a Part chain starts from, and the ``(op, key)`` steps from it, first step first."""
    steps = []
    while isinstance(d, Part):
        steps.append((d._op, d._key))
        d = d._parent
    if not isinstance(d, Call):
        raise TypeError(f"not a deferred value: {_short(d)}")
    steps.reverse()
    return d, tuple(steps)


def apply_path(value: Any, path: tuple[tuple[str, Any], ...]) -> Any:
    """Apply the steps of :func:`base_and_path` to a computed value."""
    for op, key in path:
        value = value[key] if op == "item" else getattr(value, key)
    return value


# ------------------------------------------------------------------------------------------- repr

_REPR_WIDTH = 80


def _short(obj: Any, width: int = _REPR_WIDTH) -> str:
    """``repr(obj)`` cut to ``width`` characters; never raises (:func:`forrestq.errors.shown`)."""
    return shown(obj, width)


def fn_name(fn: Any) -> str:
    """A readable name of a callable: ``fit``, ``Model.predict``, ``<lambda>``."""
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None)
    return name if isinstance(name, str) else type(fn).__qualname__


def _path_text(path: tuple[tuple[str, Any], ...]) -> str:
    return "".join(f"[{_short(k, 20)}]" if op == "item" else f".{k}" for op, k in path)


def _brief(d: Deferred) -> str:
    """A nested deferred value inside a repr: ``load(...)[1].thing``."""
    call, path = base_and_path(d)
    if call._fn is _identity:
        head = f"defer({_short(call._args[0], 20)})"
    elif call._fn is _apply:
        head = f"{_brief(call._args[0])}(...)" if isinstance(call._args[0], Deferred) else "(...)"
    else:
        head = f"{fn_name(call._fn)}(...)"
    return head + _path_text(path)


def _describe(d: Deferred) -> str:
    """``fit(load(...), 3) #id``, cut to about 80 characters."""
    call, path = base_and_path(d)
    args = list(call._args)
    if call._fn is _identity and not call._kwargs and len(args) == 1:
        head = f"defer({_arg_text(args[0])})"
    else:
        if call._fn is _apply and args:
            name = _arg_text(args.pop(0))
        else:
            name = fn_name(call._fn)
        parts = [_arg_text(a) for a in args]
        parts += [f"{k}={_arg_text(v)}" for k, v in call._kwargs.items()]
        head = f"{name}({', '.join(parts)})"
    text = head + _path_text(path)
    if len(text) > _REPR_WIDTH:
        text = text[: _REPR_WIDTH - 3] + "..."
    return f"{text} #{call._id}"


def _arg_text(a: Any) -> str:
    return _brief(a) if isinstance(a, Deferred) else _short(a, 30)
