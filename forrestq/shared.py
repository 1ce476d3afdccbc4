"""Big shared inputs: store an object once, pass a small reference to every task.

``ref = put(q, big_array)`` pickles the object, stores the bytes once under its sha256
(``fq:{q}:blob:<sha>``, SET NX: putting the same object again writes nothing) and returns a
:class:`Shared` reference of a few dozen bytes. Pass the reference as (part of) a task's arguments:
when the worker child unpickles the arguments, the reference turns into the object itself, loaded
from Redis once per child process and cached there (an LRU bounded by
``$FORRESTQ_SHARED_CACHE_MB``, default 4096 MB of pickled size). The task function never sees the
reference, only the object. A NumPy array loaded this way is made read-only: the same copy serves
every task of the child, so writing into it would leak between tasks (``arr.copy()`` to modify).

Objects over 64 MiB of pickle are stored in parts (``fq:{q}:blob:<sha>:<i>``) under a small head at
``fq:{q}:blob:<sha>``, so no single command carries more than 64 MiB. Blobs live as long as the
queue's keys (``Queue.clean(all=True)`` removes them) or until ``ref.delete()``.

Which Redis the loader reads: the client given to :func:`set_client` (a worker child calls it at
start), else the client of a Queue of that name used in this process (``put``, debug mode), else
``$FORRESTQ_URL``, else the URL the reference was made with (its password is never stored in the
reference).
"""
from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from . import codec
from .connection import connect
from .core import QueueCore
from .schema import QueueKeys

__all__ = ["Shared", "put", "set_client", "register_queue", "load_count"]

PART = 64 << 20
_PARTS_MAGIC = b"\x00fq-parts:"  # a pickle never starts with a NUL byte

_lock = threading.RLock()
_cache: OrderedDict[tuple[str, str], tuple[Any, int]] = OrderedDict()
_cache_bytes = 0
_client: Any = None
_prefix_of: Callable[[str], str] | None = None
_queue_clients: dict[str, Any] = {}
_url_clients: dict[str, Any] = {}
load_count = 0  # objects loaded from Redis by this process (not cache hits), for tests and stats


def _blob_key(queue: str, sha: str) -> str:
    if _prefix_of is not None:
        return f"{_prefix_of(queue)}blob:{sha}"
    return QueueKeys(queue).blob(sha)


def set_client(client: Any, queue_prefix_lookup: Callable[[str], str] | None = None) -> None:
    """The hook a worker child calls at start: shared inputs load through ``client``.
    ``queue_prefix_lookup`` maps a queue name to its key prefix (default ``fq:{name}:``)."""
    global _client, _prefix_of
    with _lock:
        _client = client
        _prefix_of = queue_prefix_lookup


def register_queue(q: QueueCore) -> None:
    """Let references of ``q``'s name load through ``q``'s client in this process."""
    with _lock:
        _queue_clients.setdefault(q.name, q.r)


def _after_fork() -> None:
    # a forked child gets its own connections; the cache (read-only objects) may be kept
    global _lock
    _lock = threading.RLock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


def _strip_password(url: str) -> str:
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            auth, hostport = netloc.rsplit("@", 1)
            user = auth.split(":", 1)[0]
            netloc = f"{user}@{hostport}" if user else hostport
        query = urlencode([(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
                           if k.lower() != "password"])
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    except ValueError:
        return ""


def _client_for(queue: str, url: str) -> Any:
    if _client is not None:
        return _client
    if queue in _queue_clients:
        return _queue_clients[queue]
    target = os.environ.get("FORRESTQ_URL", "").strip() or url
    if not target:
        raise LookupError(f"no Redis to load shared object of queue {queue!r} from: set FORRESTQ_URL")
    client = _url_clients.get(target)
    if client is None:
        client = _url_clients[target] = connect(target)
    return client


def _read(client: Any, key: str) -> bytes | None:
    head = client.get(key)
    if head is None or not head.startswith(_PARTS_MAGIC):
        return head
    n = int(head[len(_PARTS_MAGIC):])
    pipe = client.pipeline(transaction=False)
    for i in range(n):
        pipe.get(f"{key}:{i}")
    parts = pipe.execute()
    if any(p is None for p in parts):
        return None
    return b"".join(parts)


def _cache_limit() -> int:
    try:
        return int(float(os.environ.get("FORRESTQ_SHARED_CACHE_MB", "4096")) * (1 << 20))
    except ValueError:
        return 4096 << 20


def _read_only(obj: Any) -> Any:
    if type(obj).__module__ == "numpy" and type(obj).__name__ == "ndarray":
        try:
            obj.setflags(write=False)
        except ValueError:
            pass
    return obj


def _load(queue: str, sha: str, url: str = "") -> Any:
    """Unpickling a :class:`Shared` calls this: the object, from this process's cache or Redis."""
    global _cache_bytes, load_count
    with _lock:
        hit = _cache.get((queue, sha))
        if hit is not None:
            _cache.move_to_end((queue, sha))
            return hit[0]
        client = _client_for(queue, url)
        blob = _read(client, _blob_key(queue, sha))
        if blob is None:
            raise LookupError(f"shared object {sha[:12]} of queue {queue!r} is missing from Redis "
                              "(deleted, or the queue was cleaned)")
        obj = _read_only(codec.loads(blob))
        load_count += 1
        _cache[(queue, sha)] = (obj, len(blob))
        _cache_bytes += len(blob)
        limit = _cache_limit()
        while _cache_bytes > limit and len(_cache) > 1:
            _, (_, size) = _cache.popitem(last=False)
            _cache_bytes -= size
        return obj


def clear_cache() -> None:
    global _cache_bytes
    with _lock:
        _cache.clear()
        _cache_bytes = 0


class Shared:
    """A reference to an object stored once in Redis; it unpickles into the object itself.

    ``.value`` gives the object here (loaded once, cached); ``.size`` is its pickled size in bytes;
    ``.delete()`` removes the stored bytes (tasks not yet run that need it will fail)."""

    __slots__ = ("queue", "sha", "size", "url")

    def __init__(self, queue: str, sha: str, size: int, url: str = "") -> None:
        self.queue, self.sha, self.size, self.url = queue, sha, size, url

    def __reduce__(self) -> tuple[Any, ...]:
        return (_load, (self.queue, self.sha, self.url))

    @property
    def value(self) -> Any:
        return _load(self.queue, self.sha, self.url)

    def delete(self) -> None:
        client = _client_for(self.queue, self.url)
        key = _blob_key(self.queue, self.sha)
        head = client.get(key)
        keys = [key]
        if head is not None and head.startswith(_PARTS_MAGIC):
            keys += [f"{key}:{i}" for i in range(int(head[len(_PARTS_MAGIC):]))]
        client.delete(*keys)
        with _lock:
            _cache.pop((self.queue, self.sha), None)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Shared) and (self.queue, self.sha) == (other.queue, other.sha)

    def __hash__(self) -> int:
        return hash((self.queue, self.sha))

    def __repr__(self) -> str:
        return f"<Shared {self.sha[:12]} of queue {self.queue!r}, {self.size:,} bytes>"


def put(q: QueueCore, obj: Any) -> Shared:
    """Store ``obj`` once in ``q``'s Redis (content-addressed) and return its :class:`Shared`
    reference. Storing the same content again transfers and writes nothing."""
    if isinstance(obj, Shared):
        return obj
    blob = codec.dumps(obj)
    sha = hashlib.sha256(blob).hexdigest()
    key = q.keys.blob(sha)
    register_queue(q)
    if not q.r.exists(key):
        if len(blob) <= PART:
            q.r.set(key, blob, nx=True)
        else:
            view = memoryview(blob)
            n = (len(blob) + PART - 1) // PART
            for i in range(n):  # one part per command: no single command carries everything
                q.r.set(f"{key}:{i}", view[i * PART:(i + 1) * PART].tobytes(), nx=True)
            q.r.set(key, _PARTS_MAGIC + str(n).encode(), nx=True)
    return Shared(q.name, sha, len(blob), _strip_password(q.url))
