"""Exactly-once keys across processes and machines (the habits of run-once users).

``for key in iterate(q, keys, lease=60):`` can run in many processes on many machines at once: each
key's body runs in exactly one process at a time, keys whose body completed are skipped for good
(a persistent per-version set in Redis), and a key whose process died is claimable again once its
lease expires. A live process renews its leases in a background thread, so only a dead (or cut off)
process loses its key.

How the generator learns what the loop body did (a ``for`` loop never tells its generator that the
body raised):

* the loop asks for key ``i + 1`` (or reaches the end)  -> key ``i``'s body completed: it is confirmed
  (added to the done set) before the next key is claimed;
* the generator is closed while key ``i`` is held  -> key ``i`` is released at once. In CPython this
  happens as the exception leaves the loop (the loop drops its iterator), and also on ``break``: a
  generator cannot tell ``break`` from an exception, so ``break`` releases the current key too. Call
  ``notify_success(q, key)`` before ``break`` if that body did complete;
* ``notify_success`` / ``notify_failure`` inside the body settle the key at once; the generator
  then leaves it alone.
* the process exits with a key still held (an unhandled exception at top level, ``sys.exit``): an
  ``atexit`` hook releases it; SIGKILL, a crash or a lost host: the lease expires.

A pass skips keys held by other processes; with ``wait=True`` (the default) the loop then goes over
those keys again until each is done, or is free and taken here, so a key whose process died is re-run
by a survivor after its lease expires, and the loop ends only when every key is done. A key that
this process itself released (its body raised) is not retried by this loop.

Keys (per queue ``q`` and version ``v``): ``fq:{q}:once:<v>:done`` (set of completed keys) and
``fq:{q}:once:<v>:lease:<key>`` (string, the owner token, PX). Keys are any ``str`` (UTF-8, non-ASCII
welcome) or ``int`` (stored as ``str(k)``; the loop yields the original objects).
"""
from __future__ import annotations

import atexit
import enum
import functools
import os
import random
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from . import log as logs
from . import ops
from .core import QueueCore
from .errors import ConfigError, LeaseLostWarning, NotClaimed, shown
from .lease import Lease, Renewer, new_token
from .schema import glob_escape

__all__ = ["Status", "NotClaimed", "LeaseLostWarning", "iterate", "once", "notify_success", "notify_failure",
           "status", "counts", "done_keys"]

log = logs.get("once")


class Status(enum.Enum):
    """What a ``once``-wrapped call did (run-once's values)."""

    COMPUTE_OK = 1  # ran here and completed: the key is done
    COMPUTE_ERROR = 2  # ran here and raised: the key was released (the value is the exception)
    SKIP_OK = 3  # done before (by any process): not run
    SKIP_IN_PROGRESS = 4  # another process holds the key right now: not run


def done_key(q: QueueCore, version: int = 0) -> str:
    return q.keys.once_done(version)


def lease_key(q: QueueCore, key: str, version: int = 0) -> str:
    return q.keys.once_lease(version, key)


# ------------------------------------------------------------------------------------- validation


def _check_lease(lease: float) -> int:
    if isinstance(lease, bool) or not isinstance(lease, (int, float)) or not lease > 0:
        raise ConfigError(f"lease must be a positive number of seconds, not {shown(lease)} (a lease that "
                          "never expires would leave a dead process's key claimed forever)")
    return max(1, int(lease * 1000))


def _check_version(version: int) -> int:
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise ConfigError(f"version must be a non-negative integer, not {shown(version)}")
    return version


def _key_str(key: Any) -> str:
    if isinstance(key, bool) or not isinstance(key, (str, int)):
        raise TypeError(f"a once key must be a str or an int, not {type(key).__name__}: {shown(key)}")
    s = key if isinstance(key, str) else str(key)
    if not s:
        raise ConfigError("a once key must not be empty")
    try:
        s.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ConfigError(f"once key {shown(key)} is not valid UTF-8 text: {exc}") from None
    return s


# -------------------------------------------------------------------------------- claims held here


_HOST = socket.gethostname()


def _new_token() -> str:
    return f"{new_token()} {_HOST} {os.getpid()}"


Ident = tuple[str, str, int, str]  # (url, queue, version, key)


class _Claim:
    """One key held by this process; its lease is renewed by the process's renewer until settled."""

    __slots__ = ("q", "key", "version", "lease", "ident")

    def __init__(self, q: QueueCore, key: str, version: int, token: str, lease_ms: int) -> None:
        self.q, self.key, self.version = q, key, version
        self.lease = Lease(q.scripts, q.keys, lease_key(q, key, version), token, lease_ms,
                           on_lost=lambda _: log.warning("once: the lease of %r was lost while its body "
                                                         "runs here", key))
        self.ident: Ident = (q.url, q.name, version, key)

    @property
    def token(self) -> str:
        return self.lease.token

    def args(self) -> ops.OnceArgs:
        return ops.OnceArgs(self.version, self.key, self.token)


class _Registry:
    """The claims this process holds (by ident), their leases renewed by one :class:`Renewer`."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.claims: dict[Ident, _Claim] = {}
        self.renewer = Renewer("forrestq-once-renew")
        self.renewer.errors = lambda lease, exc: log.warning("once: could not renew a lease: %s", exc)

    def add(self, claim: _Claim) -> None:
        with self.lock:
            self.claims[claim.ident] = claim
        self.renewer.add(claim.lease)

    def pop(self, ident: Ident, token: str | None = None) -> _Claim | None:
        with self.lock:
            claim = self.claims.get(ident)
            if claim is None or (token is not None and claim.token != token):
                return None
            del self.claims[ident]
        self.renewer.remove(claim.lease)
        return claim

    def release_all(self) -> None:
        with self.lock:
            claims = list(self.claims.values())
            self.claims.clear()
        for claim in claims:
            self.renewer.remove(claim.lease)
            try:
                ops.once_release(claim.q.scripts, claim.q.keys, claim.args())
            except Exception:  # noqa: BLE001 - leaving: the lease will expire anyway
                pass

    def after_fork(self) -> None:
        # the child holds none of its parent's claims (the parent's thread renews them), and no thread
        self.lock = threading.Lock()
        self.claims = {}
        self.renewer.after_fork()


_registry = _Registry()
atexit.register(_registry.release_all)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_registry.after_fork)


def _confirm(claim: _Claim) -> int:
    code = ops.once_confirm(claim.q.scripts, claim.q.keys, claim.args())
    if code == 3 or (code == 2 and claim.lease.lost):
        warnings.warn(f"once key {claim.key!r}: the lease expired while its body ran here"
                      + (" and another process holds it now; the body may run twice" if code == 3 else ""),
                      LeaseLostWarning, stacklevel=3)
    return code


def _release(claim: _Claim) -> bool:
    return ops.once_release(claim.q.scripts, claim.q.keys, claim.args())


def _settle(ident: Ident, token: str, success: bool) -> None:
    claim = _registry.pop(ident, token)
    if claim is None:
        return  # settled in the body already (notify_success / notify_failure)
    if success:
        _confirm(claim)
    else:
        _release(claim)


# ------------------------------------------------------------------------------------ the iterator


def iterate(q: QueueCore, keys: Iterable[Any], lease: float = 60, version: int = 0, *, wait: bool = True,
            shuffle: bool = False, seed: int | None = None, batch: int = 64,
            poll: float | None = None) -> Iterator[Any]:
    """Yield the keys whose body should run in this process: each key runs in one process globally.

    ``lease``: seconds a claim lives without renewal (renewed every lease/3 while the body runs).
    ``version``: a namespace; bump it to compute every key again. ``wait``: after a pass, go over the
    keys other processes held until each is done (default), else stop after one pass (run-once's
    behaviour). ``shuffle``/``seed``: visit the keys in random order (spreads contention).
    ``poll``: seconds between passes (default lease/10, between 0.05 and 1 s).
    Keys are validated before anything is claimed (TypeError for a key that is neither str nor int).
    """
    lease_ms = _check_lease(lease)
    version = _check_version(version)
    if not isinstance(batch, int) or batch < 1:
        raise ConfigError(f"batch must be a positive integer, not {shown(batch)}")
    items = [(k, _key_str(k)) for k in keys]
    if shuffle:
        random.Random(seed).shuffle(items)
    pause = poll if poll is not None else min(max(lease / 10, 0.05), 1.0)
    return _iterate(q, items, lease_ms, version, wait, batch, pause)


def _iterate(q: QueueCore, items: list[tuple[Any, str]], lease_ms: int, version: int, wait: bool,
             batch: int, pause: float) -> Iterator[Any]:
    held: tuple[Ident, str] | None = None
    pending = items
    try:
        while pending:
            busy: list[tuple[Any, str]] = []
            i = 0
            while i < len(pending):
                chunk = pending[i:i + batch]
                token = _new_token()
                got = ops.once_claim(q.scripts, q.keys,
                                     ops.OnceClaimArgs(version, token, lease_ms, [s for _, s in chunk]))
                busy.extend(chunk[j] for j, c in enumerate(got.letters) if c == "b")
                i += len(got.letters)
                if got.index:
                    orig, skey = chunk[got.index - 1]
                    claim = _Claim(q, skey, version, token, lease_ms)
                    _registry.add(claim)
                    held = (claim.ident, token)
                    yield orig
                    # the loop asked for the next key: the body completed
                    held = None
                    _settle(claim.ident, token, success=True)
            if not wait or not busy:
                return
            pending = busy
            time.sleep(pause)
    finally:
        if held is not None:  # closed (exception or break) or thrown into while a key was held
            _settle(held[0], held[1], success=False)


# ---------------------------------------------------------------------------- explicit settlement


def _ident(q: QueueCore, key: Any, version: int) -> Ident:
    return (q.url, q.name, _check_version(version), _key_str(key))


def notify_success(q: QueueCore, key: Any, version: int = 0) -> None:
    """Mark a key this process holds as done for good, now. Raises ``ValueError`` if the key was
    already completed (a duplicate completion) and ``NotClaimed`` if this process does not hold it."""
    ident = _ident(q, key, version)
    claim = _registry.pop(ident)
    if claim is None:
        if q.r.sismember(done_key(q, ident[2]), ident[3]):
            raise ValueError(f"completed more than once: {shown(key)}")
        raise NotClaimed(f"once key {shown(key)} (version {ident[2]}) is not held by this process")
    if _confirm(claim) == 0:
        raise ValueError(f"completed more than once: {shown(key)}")


def notify_failure(q: QueueCore, key: Any, version: int = 0) -> bool:
    """Give a key this process holds back at once, so any process may claim it again. Only this
    process's own claim is released (never another's, never a done key). Returns whether it did."""
    claim = _registry.pop(_ident(q, key, version))
    return _release(claim) if claim is not None else False


# ------------------------------------------------------------------------------------ the decorator


def once(q: QueueCore, key: Any, lease: float = 60, version: int = 0, *,
         suppress_exception: bool = True) -> Callable[[Callable[..., Any]], Callable[..., tuple[Status, Any]]]:
    """Decorator: the wrapped call runs only if ``key`` is neither done nor held elsewhere, and
    returns ``(Status, value)``: ``(COMPUTE_OK, return value)``, ``(SKIP_OK, None)``,
    ``(SKIP_IN_PROGRESS, None)``, or ``(COMPUTE_ERROR, the exception)`` when the call raised (the key
    is released at once; with ``suppress_exception=False`` the exception propagates instead).
    KeyboardInterrupt and SystemExit always propagate (after the release)."""
    lease_ms = _check_lease(lease)
    version = _check_version(version)
    skey = _key_str(key)

    def decorate(fn: Callable[..., Any]) -> Callable[..., tuple[Status, Any]]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> tuple[Status, Any]:
            token = _new_token()
            letter = ops.once_claim(q.scripts, q.keys, ops.OnceClaimArgs(version, token, lease_ms, [skey])).letters
            if letter == "d":
                return Status.SKIP_OK, None
            if letter == "b":
                return Status.SKIP_IN_PROGRESS, None
            claim = _Claim(q, skey, version, token, lease_ms)
            _registry.add(claim)
            try:
                value = fn(*args, **kwargs)
            except BaseException as exc:
                _settle(claim.ident, token, success=False)
                if suppress_exception and isinstance(exc, Exception):
                    log.error("once key %r: %s: %s (released)", skey, type(exc).__name__, exc)
                    return Status.COMPUTE_ERROR, exc
                raise
            _settle(claim.ident, token, success=True)
            return Status.COMPUTE_OK, value

        return wrapper

    return decorate


# ---------------------------------------------------------------------------------------- queries


def status(q: QueueCore, key: Any, version: int = 0) -> str:
    """``"done"``, ``"running"`` (a lease holds it) or ``"free"``."""
    version = _check_version(version)
    skey = _key_str(key)
    pipe = q.r.pipeline(transaction=False)
    pipe.sismember(done_key(q, version), skey)
    pipe.exists(lease_key(q, skey, version))
    done, running = pipe.execute()
    return "done" if done else "running" if running else "free"


def done_keys(q: QueueCore, version: int = 0) -> set[str]:
    """Every key completed under ``version`` (str form)."""
    return {k.decode() for k in q.r.smembers(done_key(q, _check_version(version)))}


def counts(q: QueueCore, version: int = 0) -> dict[str, int]:
    """``{"done": completed keys, "running": keys held by a live lease}`` for ``version``."""
    version = _check_version(version)
    pattern = glob_escape(q.keys.once_lease(version)) + "*"
    running = sum(1 for _ in q.r.scan_iter(match=pattern, count=1000))
    return {"done": int(q.r.scard(done_key(q, version))), "running": running}
