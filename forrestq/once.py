"""Exactly-once keys across processes and machines (the habits of run-once users).

``for key in iterate(q, keys, lease=60):`` can run in many processes on many machines at once: each
key's body runs in one process at a time, keys whose body completed are skipped for good (a
persistent record per key and version), and a key whose process died is claimable again once its
lease expires.

Two kinds of claim:

* ``lease=S`` (the default, 60 s): a background thread renews the lease every S/3 while the process
  lives, so only a dead (or cut off) process loses its key, S seconds after it stopped renewing;
* ``timeout=S`` (run-once's ``timeout``): never renewed. A body that runs past S seconds loses the key:
  another process may claim and run it, and this process can no longer confirm it.

Fencing: a key is confirmed (done), failed or released only by the claim whose token its lease still
holds. A holder whose lease ended confirms nothing: ``notify_success`` raises :class:`LeaseLost`, the
implicit confirmations (the loop, the decorator, a ``with`` block) warn with ``LeaseLostWarning``.

How the loop learns what the body did (a ``for`` loop never tells its generator that the body raised):

* ``confirm="next"`` (default): the loop asking for key ``i + 1`` (or ending) confirms key ``i``;
  ``confirm="explicit"``: only ``notify_success`` confirms, and a key the body left unsettled goes
  back to free when the loop moves on (run-once's iterator, where keys a body skipped stay to do);
* the generator closed while a key is held (an exception leaving the loop, or ``break``: a generator
  cannot tell them apart) records the key ``failed``, claimable again at once. Call ``notify_success``
  before ``break`` if that body did complete;
* ``notify_success`` / ``notify_failure`` inside the body settle the key at once;
* the process exits with a key held (an unhandled exception at top level, ``sys.exit``): an ``atexit``
  hook records it failed; SIGKILL, a crash or a lost host: the lease expires (``expired``).

Failed and expired keys are claimable by any later claim (run-once: "start over"); ``retries=N`` makes
the loop itself try a key that failed or expired during this loop up to N more times. With
``wait=True`` (the default) a pass is followed by passes over the keys other processes held, until
each is done or taken here. ``at_most_every=S``: a key done less than S seconds ago is skipped, an
older one runs again (run-once's ``at_most_every`` rate limit). Records, listing and counts:
:mod:`forrestq.once_keys`. Keys are any ``str`` (UTF-8, non-ASCII welcome) or ``int`` (stored as
``str(k)``; the loop yields the original objects).
"""
from __future__ import annotations

import atexit
import enum
import functools
import os
import random
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from . import log as logs
from . import once_keys as records
from . import ops
from .core import QueueCore
from .errors import ConfigError, LeaseLost, LeaseLostWarning, NotClaimed, shown
from .lease import Lease, Renewer, new_token
from .once_keys import (
    HOST,
    KeyRecord,
    check_seconds,
    check_version,
    counts,
    done_keys,
    forget_keys,
    key_str,
    once_keys,
    status,
)
from .schema import DONE, EXPIRED, FAILED, ONCE_BUSY, ONCE_DONE, ONCE_FREE

__all__ = ["Status", "KeyClaim", "KeyRecord", "NotClaimed", "LeaseLost", "LeaseLostWarning", "iterate", "once",
           "try_claim", "notify_success", "notify_failure", "mark_done", "status", "counts", "done_keys", "once_keys",
           "forget_keys"]

log = logs.get("once")

CONFIRMS = ("next", "explicit")


class Status(enum.Enum):
    """What a ``once``-wrapped call did (run-once's values)."""

    COMPUTE_OK = 1  # ran here and completed: the key is done
    COMPUTE_ERROR = 2  # ran here and raised: the key is failed (the value is the exception)
    SKIP_OK = 3  # done before (by any process): not run
    SKIP_IN_PROGRESS = 4  # another process holds the key right now: not run


def lease_key(q: QueueCore, key: str, version: int = 0) -> str:
    return q.keys.once_lease(version, key)


# ------------------------------------------------------------------------------------------ terms


@dataclass(frozen=True)
class Terms:
    """How keys are claimed: for ``ms`` milliseconds, ``renewed`` or not, ``every_ms`` (0: done is done)."""

    ms: int
    renewed: bool
    every_ms: int

    @property
    def seconds(self) -> float:
        return self.ms / 1000


def terms(lease: float | None, timeout: float | None, at_most_every: float | None = None) -> Terms:
    """Check the claim options: ``lease`` (renewed) or ``timeout`` (not renewed), not both."""
    if lease is not None and timeout is not None:
        raise ConfigError("give lease= (renewed while this process lives) or timeout= (never renewed), not both")
    why = " (a claim that never expires would leave a dead process's key claimed forever)"
    if timeout is not None:
        ms, renewed = check_seconds("timeout", timeout, why), False
    else:
        ms, renewed = check_seconds("lease", 60 if lease is None else lease, why), True
    every = 0 if at_most_every is None else check_seconds("at_most_every", at_most_every)
    return Terms(ms, renewed, every)


# -------------------------------------------------------------------------------- claims held here


def _new_token() -> str:
    return f"{new_token()} {HOST} {os.getpid()}"


Ident = tuple[str, str, int, str]  # (url, queue, version, key)


class _KeyLease(Lease):
    """A key's lease; each renewal also moves the lease end its record shows (once_renew.lua)."""

    __slots__ = ("record",)

    def __init__(self, q: QueueCore, version: int, key: str, token: str, ms: int) -> None:
        super().__init__(q.scripts, q.keys, q.keys.once_lease(version, key), token, ms,
                         on_lost=lambda _: log.warning("once: the lease of %r was lost while its body runs here", key))
        self.record = q.keys.once_record(version, key)

    def renew(self) -> bool:
        kept = ops.once_renew(self.scripts, self.keys, ops.OnceRenewArgs(self.ms, [(self.key, self.record,
                                                                                    self.token)]))[0]
        if not kept and not self.lost:
            self.lost = True
            if self.on_lost is not None:
                self.on_lost(self)
        return kept


class _Claim:
    """One key held by this process; a ``lease=`` claim is renewed by the process's renewer until settled."""

    __slots__ = ("q", "key", "version", "lease", "renewed", "ident", "settled")

    def __init__(self, q: QueueCore, key: str, version: int, token: str, t: Terms) -> None:
        self.q, self.key, self.version, self.renewed = q, key, version, t.renewed
        self.settled = False  # taken out of the registry to be settled
        self.lease = _KeyLease(q, version, key, token, t.ms)
        self.ident: Ident = (q.url, q.name, version, key)

    @property
    def token(self) -> str:
        return self.lease.token

    def args(self, outcome: str = FAILED, reason: str = "") -> ops.OnceArgs:
        return ops.OnceArgs(self.version, self.key, self.token, outcome, reason)


class _Registry:
    """The claims this process holds (by ident), their ``lease=`` leases renewed by one :class:`Renewer`."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.claims: dict[Ident, _Claim] = {}
        self.renewer = Renewer("forrestq-once-renew")
        self.renewer.errors = lambda lease, exc: log.warning("once: could not renew a lease: %s", exc)

    def add(self, claim: _Claim) -> None:
        with self.lock:
            stale = self.claims.get(claim.ident)  # a claim here whose lease ended: the key was claimed again
            self.claims[claim.ident] = claim
        if stale is not None:
            self.renewer.remove(stale.lease)
        if claim.renewed:
            self.renewer.add(claim.lease)

    def pop(self, ident: Ident, token: str | None = None) -> _Claim | None:
        with self.lock:
            claim = self.claims.get(ident)
            if claim is None or (token is not None and claim.token != token):
                return None
            del self.claims[ident]
            claim.settled = True
        self.renewer.remove(claim.lease)
        return claim

    def release_all(self) -> None:
        with self.lock:
            claims = list(self.claims.values())
            self.claims.clear()
        for claim in claims:
            self.renewer.remove(claim.lease)
            try:
                ops.once_release(claim.q.scripts, claim.q.keys,
                                 claim.args(FAILED, "the process exited while the body ran"))
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


def _claim(q: QueueCore, version: int, t: Terms, candidates: list[str]) -> tuple[_Claim | None, ops.OnceClaimed]:
    """Claim the first claimable candidate (registered here, renewed if ``lease=``)."""
    token = _new_token()
    got = ops.once_claim(q.scripts, q.keys, ops.OnceClaimArgs(version, token, t.ms, candidates, t.renewed,
                                                              t.every_ms, HOST, os.getpid()))
    if not got.index:
        return None, got
    claim = _Claim(q, candidates[got.index - 1], version, token, t)
    _registry.add(claim)
    return claim, got


_LOST = {0: "and another process completed it", 2: "so it is expired", 3: "and another process holds it now"}


def _confirm(claim: _Claim, explicit: bool) -> int:
    """Confirm a claim. One whose lease ended is not confirmed (fencing): ``explicit``, it raises
    LeaseLost (ValueError "completed more than once" if another process completed the key), else it
    warns (LeaseLostWarning)."""
    code = ops.once_confirm(claim.q.scripts, claim.q.keys, claim.args())
    if code in _LOST:
        what = "lease" if claim.renewed else f"timeout ({claim.lease.ms / 1000:g} s)"
        message = (f"once key {claim.key!r}: its {what} ended before the body finished here, {_LOST[code]}; "
                   "it was not marked done here" + ("" if code == 0 else " (it may run again elsewhere)"))
        if explicit and code == 0:
            raise ValueError(f"completed more than once: {message}")
        if explicit:
            raise LeaseLost(message)
        warnings.warn(message, LeaseLostWarning, stacklevel=4)
    return code


def _settle(ident: Ident, token: str, outcome: str, reason: str = "") -> bool:
    """Settle a claim still registered here as DONE (implicitly: a lost lease warns), FAILED or
    ONCE_FREE; False if it was settled already (notify_success / notify_failure in the body)."""
    claim = _registry.pop(ident, token)
    if claim is None:
        return False
    if outcome == DONE:
        _confirm(claim, explicit=False)
    else:
        ops.once_release(claim.q.scripts, claim.q.keys, claim.args(outcome, reason))
    return True


def _reason(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# ------------------------------------------------------------------------------------ the iterator


@dataclass(frozen=True)
class _Loop:
    version: int
    terms: Terms
    wait: bool
    batch: int
    pause: float
    explicit: bool
    retries: int


def iterate(q: QueueCore, keys: Iterable[Any], lease: float | None = None, version: int = 0, *,
            timeout: float | None = None, wait: bool = True, confirm: str = "next", retries: int = 0,
            at_most_every: float | None = None, shuffle: bool = False, seed: int | None = None, batch: int = 64,
            poll: float | None = None) -> Iterator[Any]:
    """Yield the keys whose body should run in this process: each key runs in one process globally.

    ``lease``: seconds a claim lives without renewal (renewed every lease/3 while this process lives;
    default 60). ``timeout``: instead, seconds the claim lives, never renewed (a longer body loses the
    key). ``version``: a namespace; bump it to compute every key again. ``wait``: after a pass, go over
    the keys other processes held until each is done (default), else stop after one pass (run-once's
    behaviour). ``confirm``: "next" (asking for the next key confirms this one) or "explicit" (only
    ``notify_success`` does; an unsettled key goes back to free). ``retries``: times this loop tries
    again a key that failed or expired during it. ``at_most_every``: seconds; a key done less long
    ago is skipped, an older one runs again. ``shuffle``/``seed``: visit the keys in random order.
    ``poll``: seconds between passes (default a tenth of the claim, between 0.05 and 1 s).
    Everything is validated before anything is claimed (TypeError for a key neither str nor int).
    """
    t = terms(lease, timeout, at_most_every)
    version = check_version(version)
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
        raise ConfigError(f"batch must be a positive integer, not {shown(batch)}")
    if confirm not in CONFIRMS:
        raise ConfigError(f"confirm must be one of {', '.join(CONFIRMS)}, not {shown(confirm)}")
    if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
        raise ConfigError(f"retries must be a non-negative integer, not {shown(retries)}")
    items = [(k, key_str(k)) for k in keys]
    if shuffle:
        random.Random(seed).shuffle(items)
    pause = poll if poll is not None else min(max(t.seconds / 10, 0.05), 1.0)
    return _iterate(q, items, _Loop(version, t, wait, batch, pause, confirm == "explicit", retries))


def _iterate(q: QueueCore, items: list[tuple[Any, str]], loop: _Loop) -> Iterator[Any]:
    held: tuple[Ident, str] | None = None
    tried: dict[str, int] = {}
    pending = items
    try:
        while pending:
            busy: list[tuple[Any, str]] = []
            again: list[tuple[Any, str]] = []
            i = 0
            while i < len(pending):
                chunk = pending[i:i + loop.batch]
                claim, got = _claim(q, loop.version, loop.terms, [s for _, s in chunk])
                busy.extend(chunk[j] for j, c in enumerate(got.letters) if c == ONCE_BUSY)
                i += len(got.letters)
                if claim is None:
                    continue
                item = chunk[got.index - 1]
                held = (claim.ident, claim.token)
                yield item[0]
                held = None  # the loop asked for the next key: the body completed
                _settle(claim.ident, claim.token, ONCE_FREE if loop.explicit else DONE)
                if loop.retries and _retry(q, item[1], loop, tried):
                    again.append(item)
            pending = (busy if loop.wait else []) + again
            if pending:
                time.sleep(loop.pause)
    finally:
        if held is not None:  # closed (exception or break) or thrown into while a key was held
            _settle(held[0], held[1], FAILED, "the loop stopped in its body (an exception or break)")


def _retry(q: QueueCore, skey: str, loop: _Loop, tried: dict[str, int]) -> bool:
    """Whether a key whose body just ran here ended failed or expired and has retries left."""
    if status(q, skey, loop.version) not in (FAILED, EXPIRED) or tried.get(skey, 0) >= loop.retries:
        return False
    tried[skey] = tried.get(skey, 0) + 1
    return True


# ----------------------------------------------------------------------- one key, outside a loop


class KeyClaim:
    """The outcome of :func:`try_claim`: truthy when the claim succeeded (this process held the key).

    Use it as a context manager, ``with q.try_claim(key) as held: if held: ...``: a block that ends
    normally confirms the key (done), one that raises records it failed (the exception propagates).
    Or settle it by hand: :meth:`done`, :meth:`fail`, :meth:`release`. ``skipped`` says why it was not
    claimed: ``"done"`` or ``"running"`` (another process holds it); "" when held."""

    def __init__(self, key: Any, claim: _Claim | None, skipped: str) -> None:
        self.key, self._claim, self.skipped = key, claim, skipped

    @property
    def held(self) -> bool:
        return self._claim is not None

    def __bool__(self) -> bool:
        return self.held

    def __repr__(self) -> str:
        return f"KeyClaim({self.key!r}, {'held' if self.held else 'skipped: ' + self.skipped})"

    def _take(self) -> _Claim:
        """This claim, out of the registry (if a newer claim of the key here has not replaced it)."""
        claim = self._claim
        if claim is None or claim.settled:
            raise NotClaimed(f"once key {shown(self.key)} is not held by this claim (not claimed, or settled)")
        _registry.pop(claim.ident, claim.token)
        claim.settled = True
        return claim

    def done(self) -> None:
        """Mark the key done now. Raises :class:`LeaseLost` if its lease ended first (not marked)."""
        _confirm(self._take(), explicit=True)

    def fail(self, reason: str = "failed") -> bool:
        """Record the key failed now (claimable again); False if its lease had ended (nothing changed)."""
        claim = self._take()
        return ops.once_release(claim.q.scripts, claim.q.keys, claim.args(FAILED, str(reason)))

    def release(self) -> bool:
        """Give the key back free now, as if never claimed; False if its lease had ended."""
        claim = self._take()
        return ops.once_release(claim.q.scripts, claim.q.keys, claim.args(ONCE_FREE))

    def __enter__(self) -> KeyClaim:
        return self

    def __exit__(self, et: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._claim is None or self._claim.settled:
            return  # not held, or settled in the block
        claim = self._take()
        if exc is None:
            _confirm(claim, explicit=False)
        else:
            ops.once_release(claim.q.scripts, claim.q.keys, claim.args(FAILED, _reason(exc)))


def try_claim(q: QueueCore, key: Any, lease: float | None = None, version: int = 0, *,
              timeout: float | None = None, at_most_every: float | None = None) -> KeyClaim:
    """Claim one key now if it is claimable (free, failed, expired, or done longer than
    ``at_most_every`` ago): a :class:`KeyClaim`, truthy when held. ``lease``/``timeout`` as in
    :func:`iterate`. A held claim stays held (a ``lease=`` one renewed) until it is settled."""
    t, version, skey = terms(lease, timeout, at_most_every), check_version(version), key_str(key)
    claim, got = _claim(q, version, t, [skey])
    return KeyClaim(key, claim, "" if claim else ("done" if got.letters == ONCE_DONE else "running"))


# ---------------------------------------------------------------------------- explicit settlement


def _ident(q: QueueCore, key: Any, version: int) -> Ident:
    return (q.url, q.name, check_version(version), key_str(key))


def notify_success(q: QueueCore, key: Any, version: int = 0) -> None:
    """Mark a key this process holds as done for good, now. Raises ``ValueError`` if the key was
    already completed (a duplicate completion), :class:`LeaseLost` if its lease ended before (not
    marked done), ``NotClaimed`` if this process does not hold it."""
    ident = _ident(q, key, version)
    claim = _registry.pop(ident)
    if claim is None:
        if status(q, ident[3], ident[2]) == DONE:
            raise ValueError(f"completed more than once: {shown(key)}")
        raise NotClaimed(f"once key {shown(key)} (version {ident[2]}) is not held by this process")
    _confirm(claim, explicit=True)


def notify_failure(q: QueueCore, key: Any, version: int = 0, reason: str = "notify_failure") -> bool:
    """Record a key this process holds as failed, now: claimable again at once by any process. Only
    this process's own claim is settled (never another's, never a done key). Returns whether it did."""
    claim = _registry.pop(_ident(q, key, version))
    if claim is None:
        return False
    return ops.once_release(claim.q.scripts, claim.q.keys, claim.args(FAILED, str(reason)))


def mark_done(q: QueueCore, key: Any, version: int = 0) -> bool:
    """Record ``key`` done without running it: True if it was not done, False if it was. A key this
    process holds is confirmed through its claim; one another process holds raises ``KeyBusy``
    (nothing changed). See :func:`forrestq.once_keys.mark_done`."""
    if _ident(q, key, version) in _registry.claims:
        notify_success(q, key, version)
        return True
    return records.mark_done(q, key, version)


# ------------------------------------------------------------------------------------ the decorator


def once(q: QueueCore, key: Any, lease: float | None = None, version: int = 0, *, timeout: float | None = None,
         at_most_every: float | None = None,
         suppress_exception: bool = True) -> Callable[[Callable[..., Any]], Callable[..., tuple[Status, Any]]]:
    """Decorator: the wrapped call runs only if ``key`` is claimable (neither done nor held elsewhere)
    and returns ``(Status, value)``: ``(COMPUTE_OK, return value)``, ``(SKIP_OK, None)``,
    ``(SKIP_IN_PROGRESS, None)``, or ``(COMPUTE_ERROR, the exception)`` when the call raised (the key
    is recorded failed, claimable again; with ``suppress_exception=False`` the exception propagates).
    KeyboardInterrupt and SystemExit always propagate (after the key is recorded failed).
    ``lease``/``timeout``/``at_most_every`` as in :func:`iterate`."""
    t, version, skey = terms(lease, timeout, at_most_every), check_version(version), key_str(key)

    def decorate(fn: Callable[..., Any]) -> Callable[..., tuple[Status, Any]]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> tuple[Status, Any]:
            claim, got = _claim(q, version, t, [skey])
            if claim is None:
                return (Status.SKIP_OK if got.letters == ONCE_DONE else Status.SKIP_IN_PROGRESS), None
            try:
                value = fn(*args, **kwargs)
            except BaseException as exc:
                _settle(claim.ident, claim.token, FAILED, _reason(exc))
                if suppress_exception and isinstance(exc, Exception):
                    log.error("once key %r: %s: %s (failed)", skey, type(exc).__name__, exc)
                    return Status.COMPUTE_ERROR, exc
                raise
            _settle(claim.ident, claim.token, DONE)
            return Status.COMPUTE_OK, value

        return wrapper

    return decorate

