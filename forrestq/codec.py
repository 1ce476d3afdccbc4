"""Serialisation of task functions, arguments, results and exceptions; planning trees into nodes.

Everything goes through the C pickle (protocol 5) first, since it is fast and its blobs load
anywhere, and falls back to dill for what the C pickle cannot do (lambdas, closures, functions
from ``__main__``, locks, ...). Every blob written here loads with the same unpickler (the C one;
dill's special globals are mapped in :meth:`_Unpickler.find_class`).

Functions (:func:`dump_fn`): functions importable by name are pickled by reference, so a worker
imports them from the installed module. Others (``__main__``, notebooks, lambdas, closures) go by
value with dill. Results are cached per function object: scheduling 100,000 tasks of one function
serialises it once. A by-value function is re-serialised when a global it uses, a closure cell
or a default is rebound (the notebook case: change ``SCALE = 2`` and schedule again); in-place
mutation of such an object is not noticed.

Arguments (:func:`dump_args`): a deferred value anywhere inside the arguments (containers, object
attributes, closures) becomes a reference ``(input index, path)`` through pickle's
``persistent_id`` hook; :func:`load_args` resolves each reference to the computed input value with
its path applied.

Refused at once (:class:`~forrestq.errors.SerializationError`, one line, before anything is written):
a generator function (its result, a generator, could never travel back; :func:`check_task_fn`), and
any function or argument that holds a live connection: a ``Queue``, a Redis client, connection pool
or connection (:func:`never_send` registers such types). dill would copy such an object's sockets and
locks by value, and the copy deadlocks in the worker child. The ``forrestq`` package itself (and its
submodules) always travels by reference: a ``__main__`` function that uses ``forrestq`` works.

Signing (:mod:`forrestq.signing`): with a secret configured, every blob the dump functions return
is signed (HMAC-SHA256, one key per kind: function, arguments, value) and every load checks the
signature before unpickling, raising :class:`~forrestq.errors.SignatureMismatch`. Without a secret
the blobs are plain pickles, and a load refuses only signed blobs (it cannot check them). The
configuration is read from the environment at the first dump or load; :mod:`forrestq.signing` holds it.
"""
from __future__ import annotations

import functools
import hashlib
import importlib
import inspect
import io
import pickle
import socket
import sys
import threading
import types
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import dill
import redis
import redis.client
import redis.connection

from . import signing
from .deferred import Call, Deferred, Failed, _short, apply_path, base_and_path, fn_name
from .errors import NotSendable, RemoteError, SerializationError, WorkerImportError, shown
from .schema import INPUT_FAILED, INPUT_SEP
from .signing import ARGS, FN, HEADER, VALUE

__all__ = ["dump_fn", "load_fn", "dump_args", "load_args", "dumps", "loads", "dump_exception",
           "WorkerImportError", "check_task_fn", "never_send", "load_input"]

PROTOCOL = 5

# ------------------------------------------------------------------------------------ unpickling


class _Unpickler(pickle.Unpickler):
    """The C unpickler plus dill's special globals, deferred references, readable import errors."""

    def __init__(self, file: Any, inputs: Sequence[Any] = (), host: str | None = None) -> None:
        super().__init__(file)
        self._inputs = inputs
        self._host = host

    def find_class(self, module: str, name: str) -> Any:
        if module == "__builtin__":  # written by dill
            if name == "__main__":
                return sys.modules["__main__"].__dict__
            if name == "NoneType":
                return type(None)
        elif module == "dill.dill":
            module = "dill._dill"
        try:
            return super().find_class(module, name)
        except ModuleNotFoundError as exc:
            missing = exc.name or module
            raise WorkerImportError(
                f"cannot import module {missing!r} on host {self._hostname()}: {exc} "
                "(install it on the worker or define the function in __main__)") from exc
        except (ImportError, AttributeError) as exc:
            if module == "__main__":
                raise WorkerImportError(
                    f"cannot find __main__.{name} on host {self._hostname()}: {exc} (the blob "
                    "refers to the script that wrote it; write it with forrestq.codec)") from exc
            raise WorkerImportError(
                f"cannot find {module}.{name} on host {self._hostname()}: {exc} "
                f"(is the same version of {module!r} installed on the worker?)") from exc

    def persistent_load(self, pid: Any) -> Any:
        index, path = pid
        value = self._inputs[index]
        return apply_path(value, path) if path else value

    def _hostname(self) -> str:
        return self._host or socket.gethostname()


def _load(blob: bytes, kind: int, inputs: Sequence[Any] = (), host: str | None = None) -> Any:
    if signing.signer is None:  # no secret: the plain pickle
        try:
            return _Unpickler(io.BytesIO(blob), inputs, host).load()
        except Exception:
            # A signed blob fails at its first byte ("F", a float opcode that cannot parse "QS1"),
            # so nothing of it ran: say why instead of "could not convert string to float".
            if signing.is_signed(blob):
                raise signing.unsigned_but_signed(kind) from None
            raise
    signer = signing.current()
    if signer is None:
        return _load(blob, kind, inputs, host)
    signer.verify(kind, blob)  # before a single byte is unpickled
    file = io.BytesIO(blob)
    file.seek(HEADER)
    return _Unpickler(file, inputs, host).load()


def loads(blob: bytes, host: str | None = None) -> Any:
    """Load a blob written by :func:`dumps` or :func:`dump_exception` (results, exceptions,
    metadata). With a secret configured, a blob without its valid signature raises
    SignatureMismatch before anything is unpickled."""
    return _load(blob, VALUE, (), host)


# ------------------------------------------------------------------------------------- the dill path

# type -> (what it is, what to do instead): objects that hold a live connection never travel
_NEVER_SENT: dict[type, tuple[str, str]] = {}
_never_cache: dict[type, tuple[str, str] | None] = {}
_CONNECT_HINT = "pass its URL (or the queue's name) and connect inside the task"


def never_send(cls: type, what: str, hint: str = _CONNECT_HINT) -> None:
    """Refuse objects of ``cls`` (and subclasses) as a task's function, bound ``self`` or argument:
    they hold a live connection (``what``: "a Queue"; ``hint``: what to pass instead)."""
    _NEVER_SENT[cls] = (what, hint)
    _never_cache.clear()


for _cls, _what in ((redis.Redis, "a Redis client"), (redis.RedisCluster, "a Redis Cluster client"),
                    (redis.ConnectionPool, "a Redis connection pool"),
                    (redis.connection.AbstractConnection, "a Redis connection"),
                    (redis.client.PubSub, "a Redis pub/sub connection")):
    never_send(_cls, _what)


def _never_sent(t: type) -> tuple[str, str] | None:
    try:
        return _never_cache[t]
    except KeyError:
        got = next((_NEVER_SENT[c] for c in t.__mro__ if c in _NEVER_SENT), None)
        _never_cache[t] = got
        return got


def _forrestq_module(obj: Any) -> bool:
    """Whether ``obj`` is the forrestq package or one of its submodules, as imported here."""
    name = getattr(obj, "__name__", "")
    return isinstance(name, str) and (name == "forrestq" or name.startswith("forrestq.")) \
        and sys.modules.get(name) is obj


class _DillPickler(dill.Pickler):  # type: ignore[misc]  # dill is untyped: its Pickler is Any
    """dill, with two changes: the forrestq package and its submodules go by reference (dill takes
    modules outside site-packages by value, and forrestq's hold thread-locals and clients), and, with
    ``refuse_live``, an object holding a live connection raises NotSendable naming it."""

    def __init__(self, file: Any, refuse_live: bool = True) -> None:
        super().__init__(file, protocol=PROTOCOL, recurse=True)
        self.refuse_live = refuse_live

    def reducer_override(self, obj: Any) -> Any:
        t = type(obj)
        if t is types.ModuleType:
            if _forrestq_module(obj):
                return importlib.import_module, (obj.__name__,)
            return NotImplemented
        if self.refuse_live:
            refused = _never_sent(t)
            if refused is not None:
                what, hint = refused
                exc = NotSendable(f"{_short(obj, 60)} is {what}: it holds a live connection, which cannot "
                                  f"travel to a worker; {hint}")
                exc.obj = obj
                raise exc
        return NotImplemented


def _dill_dumps(obj: Any, refuse_live: bool) -> bytes:
    buf = io.BytesIO()
    _DillPickler(buf, refuse_live).dump(obj)
    return buf.getvalue()


# The C pickle writes classes and functions of __main__ by reference, and a worker's (or the CLI's)
# __main__ is another script: a blob that names __main__ is redone with dill, which writes them by
# value. (The string "__main__" in plain data costs only the slower path.)
_MAIN = b"__main__"


def dumps(obj: Any) -> bytes:
    """Serialise a result or metadata: C pickle, dill fallback (also for anything that refers to
    ``__main__``); SerializationError names ``obj``. Signed if a secret is configured."""
    try:
        blob = pickle.dumps(obj, protocol=PROTOCOL)
    except Exception:
        blob = _MAIN  # use dill
    if _MAIN in blob:
        try:
            blob = _dill_dumps(obj, refuse_live=False)
        except Exception as exc:
            raise SerializationError(f"cannot serialise {_short(obj)}: {type(exc).__name__}: {exc}"
                                     ) from exc
    return blob if signing.signer is None else signing.sign(VALUE, blob)


# ------------------------------------------------------------------------------------- functions


class _Entry:
    """A cached :func:`dump_fn` result; ``ref()`` is the function while it lives."""

    __slots__ = ("ref", "names", "state", "result", "__weakref__")

    def __init__(self, ref: Callable[[], Any], names: tuple[str, ...] | None, state: tuple[Any, ...] | None,
                 result: tuple[str, bytes, str]) -> None:
        self.ref, self.names, self.state, self.result = ref, names, state, result


_fn_cache: dict[int, _Entry] = {}
# of the sha1 hex that names a function's blob: 64 bits (two of 2,000 functions clash with a chance of
# ~1e-13), 24 bytes less on every task record than all 40
FN_ID_CHARS = 16


def fn_id(blob: bytes) -> str:
    """The content address of a function's blob (``fq:{q}:fn:<id>``, kept on every task record)."""
    return hashlib.sha1(blob).hexdigest()[:FN_ID_CHARS]

_fn_cache_generation = 0  # signing.generation its blobs were signed under


def dump_fn(fn: Callable[..., Any]) -> tuple[str, bytes, str]:
    """``(fn_id, blob, "module.qualname")`` of a task function, cached per function object.

    By reference when the function is importable by name (a worker imports it), by value with
    dill otherwise. Raises SerializationError naming the function when neither works. The blob
    (and so the sha1) is signed if a secret is configured.
    """
    global _fn_cache_generation
    if _fn_cache_generation != signing.generation:  # the secret changed: blobs signed anew
        _fn_cache.clear()
        _fn_cache_generation = signing.generation
    key = id(fn)
    entry = _fn_cache.get(key)
    if entry is not None and entry.ref() is fn and (
            entry.names is None or _same_state(entry.state, _state_of(fn, entry.names))):
        return entry.result
    name = qualified_name(fn)
    check_task_fn(fn, name)
    blob = _by_reference(fn)
    if blob is not None:
        names = None
    else:
        try:
            blob = _dill_dumps(fn, refuse_live=True)
        except NotSendable as exc:
            raise NotSendable(f"cannot serialise function {name}: {exc}") from None
        except Exception as exc:
            raise SerializationError(
                f"cannot serialise function {name}: {type(exc).__name__}: {exc}") from exc
        if not isinstance(fn, types.FunctionType):
            # A callable object or bound method carries data that may change: no caching.
            blob = blob if signing.signer is None else signing.sign(FN, blob)
            return fn_id(blob), blob, name
        names = _global_names(fn)
    blob = blob if signing.signer is None else signing.sign(FN, blob)
    result = (fn_id(blob), blob, name)
    _remember(fn, key, names, result)
    return result


def check_task_fn(fn: Any, name: str | None = None) -> None:
    """SerializationError if ``fn`` cannot be a task's function: a generator function (or an async
    one), whose result could never be sent back."""
    if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
        kind = "an async generator function" if inspect.isasyncgenfunction(fn) else "a generator function"
        raise SerializationError(
            f"cannot schedule {name or qualified_name(fn)}: it is {kind}, and the generator it returns "
            "cannot travel back from a worker; make it return a list (wrap it in list())")


def _remember(fn: Any, key: int, names: tuple[str, ...] | None,
              result: tuple[str, bytes, str]) -> None:
    try:
        ref: Callable[[], Any] = weakref.ref(fn, lambda _r: _forget(key, _r))
    except TypeError:  # builtins: immortal in practice, hold them
        ref = functools.partial(_return, fn)
    state = None if names is None else _state_of(fn, names)
    _fn_cache[key] = _Entry(ref, names, state, result)


def _return(x: Any) -> Any:
    return x


def _forget(key: int, ref: Any) -> None:
    entry = _fn_cache.get(key)
    if entry is not None and entry.ref is ref:
        del _fn_cache[key]


def qualified_name(fn: Any) -> str:
    """``module.qualname`` of a callable, for listings; ``functools.partial`` shows its function."""
    if isinstance(fn, functools.partial):
        return f"functools.partial({qualified_name(fn.func)})"
    module = getattr(fn, "__module__", None)
    if not isinstance(module, str):
        module = type(fn).__module__
    return f"{module}.{fn_name(fn)}"


def _by_reference(fn: Any) -> bytes | None:
    """The C pickle of ``fn`` if it is a global that loads back as the very same object."""
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", "")
    if module == "__main__" or not isinstance(qualname, str) or "<" in qualname:
        return None  # __main__, <lambda>, <locals>: by value
    if getattr(fn, "__closure__", None):
        return None
    try:
        blob = pickle.dumps(fn, protocol=PROTOCOL)
        return blob if pickle.loads(blob) is fn else None
    except Exception:
        return None


def _global_names(fn: types.FunctionType) -> tuple[str, ...]:
    """Names of the globals ``fn`` may read, following functions of the same module it calls."""
    names: list[str] = []
    seen_names: set[str] = set()
    seen_fns: set[int] = {id(fn)}
    codes = [fn.__code__]
    g = fn.__globals__
    while codes:
        code = codes.pop()
        for const in code.co_consts:
            if isinstance(const, types.CodeType):
                codes.append(const)
        for name in code.co_names:
            if name in seen_names or name not in g:
                continue
            seen_names.add(name)
            names.append(name)
            value = g[name]
            if (isinstance(value, types.FunctionType) and value.__globals__ is g
                    and id(value) not in seen_fns):
                seen_fns.add(id(value))
                codes.append(value.__code__)
    return tuple(names)


_EMPTY = object()  # stands for an unbound global or an empty cell


def _state_of(fn: types.FunctionType, names: tuple[str, ...]) -> tuple[Any, ...]:
    """What a by-value pickle of ``fn`` depends on, compared by identity to detect rebinding."""
    g = fn.__globals__
    cells = []
    for cell in fn.__closure__ or ():
        try:
            cells.append(cell.cell_contents)
        except ValueError:  # empty cell
            cells.append(_EMPTY)
    return (fn.__code__, fn.__defaults__, fn.__kwdefaults__, *cells,
            *[g.get(n, _EMPTY) for n in names])


def _same_state(a: tuple[Any, ...] | None, b: tuple[Any, ...]) -> bool:
    return a is not None and len(a) == len(b) and all(x is y for x, y in zip(a, b))


def load_fn(blob: bytes, host: str | None = None) -> Callable[..., Any]:
    """Load a function written by :func:`dump_fn`.

    A missing module or name raises :class:`WorkerImportError` (an ImportError and a
    SerializationError) naming the module and ``host`` (default: this host); a bad signature
    raises SignatureMismatch before anything is unpickled.
    """
    return _load(blob, FN, (), host)


# ------------------------------------------------------------------------------------- arguments


def _reference(pickler: Any, obj: Any) -> tuple[int, tuple[tuple[str, Any], ...]] | None:
    """persistent_id hook: a deferred value becomes ``(input index, path)``."""
    if not isinstance(obj, Deferred):
        return None
    call, path = base_and_path(obj)
    index = pickler.input_index.get(call._id)
    if index is None:
        index = pickler.input_index[call._id] = len(pickler.inputs)
        pickler.inputs.append(call)
    return index, path


class _ArgPickler(pickle.Pickler):
    """The C pickler with deferred values turned into references; reused (see _c_pickle)."""

    persistent_id = _reference

    def __init__(self) -> None:
        self.buffer = io.BytesIO()
        super().__init__(self.buffer, protocol=PROTOCOL)
        self.inputs: list[Call] = []
        self.input_index: dict[str, int] = {}


class _DillArgPickler(_DillPickler):
    """dill, for arguments the C pickler cannot handle; same references; live connections refused."""

    persistent_id = _reference

    def __init__(self, file: Any) -> None:
        super().__init__(file, refuse_live=True)
        self.inputs: list[Call] = []
        self.input_index: dict[str, int] = {}


_spare = threading.local()  # one idle _ArgPickler per thread: building one costs more than a dump


def _c_pickle(obj: Any) -> tuple[bytes, list[Call]]:
    pickler = getattr(_spare, "pickler", None)
    if pickler is None:
        pickler = _ArgPickler()
    else:
        _spare.pickler = None  # taken: a re-entrant call builds its own
    pickler.dump(obj)  # on error the pickler, maybe mid-state, is dropped
    buffer = pickler.buffer
    blob, inputs = buffer.getvalue(), pickler.inputs
    pickler.clear_memo()  # the memo keeps the pickled objects alive
    if len(blob) < 1 << 20:  # keep only a pickler with a small buffer
        buffer.seek(0)
        buffer.truncate()
        pickler.inputs = []
        pickler.input_index.clear()
        _spare.pickler = pickler
    return blob, inputs


def _dill_pickle(obj: Any) -> tuple[bytes, list[Call]]:
    buf = io.BytesIO()
    pickler = _DillArgPickler(buf)
    pickler.dump(obj)
    return buf.getvalue(), pickler.inputs


def dump_args(args: tuple[Any, ...], kwargs: dict[str, Any], name: str | None = None) -> tuple[bytes, list[Call]]:
    """Serialise ``(args, kwargs)``; returns the blob and the distinct input Calls, in order.

    The blob holds the args tuple alone when there are no keyword arguments, else the list
    ``[args, kwargs]``; read it with :func:`load_args`.

    C pickle first; dill when it fails or when the blob names ``__main__``. ``name`` (the
    function's name) only improves the error message: an argument nothing can serialise raises
    SerializationError naming it ("argument 2 of fit(...)", "keyword 'data'").
    """
    if type(args) is not tuple:
        args = tuple(args)
    if not args and not kwargs:  # a call without arguments: always the same blob
        return (_NO_ARGS if signing.signer is None else signing.sign(ARGS, _NO_ARGS)), []
    payload = [args, kwargs] if kwargs else args  # the args tuple alone: the common, faster case
    try:
        blob, inputs = _c_pickle(payload)
    except Exception:
        blob = _MAIN  # use dill
    if _MAIN in blob:
        try:
            blob, inputs = _dill_pickle(payload)
        except Exception as exc:
            raise _argument_error(args, kwargs, name, exc) from exc
    if signing.signer is None:
        return blob, inputs
    return signing.sign(ARGS, blob), inputs


_NO_ARGS = pickle.dumps((), protocol=PROTOCOL)  # dump_args' blob of no arguments (as _c_pickle writes it)


def _argument_error(args: tuple[Any, ...], kwargs: dict[str, Any], name: str | None,
                    exc: Exception) -> SerializationError:
    """Find which argument, and which object inside it, cannot be serialised."""
    call = f"{name or 'the function'}(...)"
    labelled = [(f"argument {i + 1} of {call}", a) for i, a in enumerate(args)]
    labelled += [(f"keyword {shown(k)} of {call}", v) for k, v in kwargs.items()]
    for where, value in labelled:
        error = _dump_error(value)
        if isinstance(error, NotSendable):  # names the object refused, the first one met
            inside = "" if getattr(error, "obj", None) is value else f" (inside {_short(value, 40)})"
            return NotSendable(f"cannot serialise {where}{inside}: {error}")
        if error is not None:
            culprit, error = _culprit(value, error)
            inner = "" if culprit is value else f"; the object that fails is {_short(culprit)}"
            return SerializationError(f"cannot serialise {where}: {_short(value)}{inner} "
                                      f"({type(error).__name__}: {error})")
    return SerializationError(f"cannot serialise the arguments of {call}: "
                              f"{type(exc).__name__}: {exc}")


def _dump_error(value: Any) -> Exception | None:
    try:
        _dill_pickle(value)
        return None
    except Exception as exc:
        return exc


def _culprit(value: Any, error: Exception, depth: int = 20) -> tuple[Any, Exception]:
    """Descend into containers and object attributes to the innermost object that fails."""
    for _ in range(depth):
        if isinstance(value, dict):
            children = [*value.keys(), *value.values()]
        elif isinstance(value, (list, tuple, set, frozenset)):
            children = list(value)
        elif isinstance(getattr(value, "__dict__", None), dict):
            children = list(vars(value).values())
        else:
            break
        for child in children:
            child_error = _dump_error(child)
            if child_error is not None:
                value, error = child, child_error
                break
        else:
            break
    return value, error


def load_args(blob: bytes, inputs: Sequence[Any], host: str | None = None) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Load a :func:`dump_args` blob: reference ``i`` becomes ``inputs[i]`` with its path applied.

    A missing module or name raises :class:`WorkerImportError`; errors of the path itself
    (``t["missing"]``) propagate unchanged, as the task's failure; a bad signature raises
    SignatureMismatch before anything is unpickled."""
    if blob == _NO_ARGS and signing.signer is None:  # a call without arguments (as dump_args writes it)
        return (), {}
    payload = _load(blob, ARGS, inputs, host)
    if type(payload) is tuple:
        return payload, {}
    args, kwargs = payload
    return args, kwargs


_FAILED_MARK, _SEP = INPUT_FAILED.encode(), INPUT_SEP.encode()


def load_input(blob: bytes, host: str | None = None) -> Any:
    """An input's value for a task from what claim.lua sent: its result blob, or, for an allow-failed
    task's input that failed, a :class:`~forrestq.deferred.Failed` (``schema.INPUT_FAILED``, then the
    input's id, the id of the input that failed first and the length of its error blob, each ended by
    ``schema.INPUT_SEP``, then the error blob and the reason). Only a claim of an allow-failed task sends the
    marker, and no pickle (nor signed blob) starts with it."""
    if not blob.startswith(_FAILED_MARK):
        return loads(blob, host)
    task_id, upstream, size, rest = blob[len(_FAILED_MARK):].split(_SEP, 3)
    error, text = rest[:int(size)], rest[int(size):].decode(errors="replace")
    if upstream:
        kind = "UpstreamFailed"
    else:
        try:
            kind = type(loads(error, host)).__name__ if error else text.split(":", 1)[0]
        except Exception:  # noqa: BLE001 - an error class not importable here: its name from the reason
            kind = text.split(":", 1)[0]
    return Failed(task_id.decode(), text, kind, upstream.decode())


# ------------------------------------------------------------------------------------ exceptions


def dump_exception(exc: BaseException) -> bytes:
    """The pickled exception, or a :class:`RemoteError` with its type and message when the
    exception does not survive a round trip (custom ``__init__`` signatures often fail at load)."""
    try:
        blob = dumps(exc)
        if isinstance(loads(blob), BaseException):
            return blob
    except Exception:
        pass
    cls = type(exc)
    type_name = cls.__qualname__ if cls.__module__ == "builtins" else (
        f"{cls.__module__}.{cls.__qualname__}")
    try:
        message = str(exc)
    except Exception:
        message = "<str() of the exception failed>"
    blob = pickle.dumps(RemoteError(type_name, message), protocol=PROTOCOL)
    return blob if signing.signer is None else signing.sign(VALUE, blob)
