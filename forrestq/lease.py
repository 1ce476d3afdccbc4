"""Token-fenced leases, and the one thread that renews them inside a process.

A lease is a Redis string whose value is the holder's random token, set with an expiry (PX) when
something is claimed: a task by a worker child (claim.lua), an exactly-once key (once_claim.lua),
a task run in debug mode. Whoever holds the token renews it (renew.lua: PEXPIRE only if the value
is still the token) and ends it; a holder that dies stops renewing, the lease expires, and the
thing becomes claimable again. Completion scripts compare the token, so a stale holder can never
overwrite a newer one.

Who renews: a worker renews its children's task leases from the supervising process, in one
renew.lua call per queue per heartbeat (:func:`renew`), never from the process running user code.
Inside one process (exactly-once keys, debug mode), a :class:`Renewer` daemon thread renews every
:class:`Lease` added to it every ``ms / 3``; the user's code runs on the main thread meanwhile.
"""
from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

from . import ops
from .schema import QueueKeys


class Lease:
    """One token-owned lease key, renewed every ``ms / 3`` while held (see :class:`Renewer`).

    ``lost`` turns True when a renewal finds the key gone or owned by another token;
    ``on_lost`` (if given) is called once then, from the renewer thread."""

    __slots__ = ("scripts", "keys", "key", "token", "ms", "next_renew", "lost", "on_lost")

    def __init__(self, scripts: ops.Scripts, keys: QueueKeys, key: str, token: str, ms: int,
                 on_lost: Callable[[Lease], None] | None = None) -> None:
        self.scripts, self.keys, self.key, self.token, self.ms = scripts, keys, key, token, ms
        self.next_renew = time.monotonic() + ms / 3000
        self.lost = False
        self.on_lost = on_lost

    def renew(self) -> bool:
        """Extend the lease now; False if it is no longer ours. Redis errors propagate."""
        kept = renew(self.scripts, self.keys, self.ms, [(self.key, self.token)])[0]
        if not kept and not self.lost:
            self.lost = True
            if self.on_lost is not None:
                self.on_lost(self)
        return kept


def renew(scripts: ops.Scripts, k: QueueKeys, ms: int, leases: list[tuple[str, str]]) -> list[bool]:
    """Extend many ``(key, token)`` leases of one queue by ``ms`` in one call; per lease, whether it
    was still held."""
    return ops.renew(scripts, k, ops.RenewArgs(ms, leases)) if leases else []


class Renewer:
    """A daemon thread that renews the leases added to it until they are removed. A failed renewal
    (Redis away) is tried again soon: the lease may well survive a short outage."""

    def __init__(self, name: str = "forrestq-renew") -> None:
        self.name = name
        self._lock = threading.Condition()
        self._leases: dict[int, Lease] = {}
        self._thread: threading.Thread | None = None
        self.errors: Callable[[Lease, Exception], None] = lambda lease, exc: None

    def add(self, lease: Lease) -> Lease:
        with self._lock:
            self._leases[id(lease)] = lease
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
            self._lock.notify()
        return lease

    def remove(self, lease: Lease) -> None:
        with self._lock:
            self._leases.pop(id(lease), None)

    def held(self) -> list[Lease]:
        with self._lock:
            return list(self._leases.values())

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._leases:
                    self._lock.wait()
                now = time.monotonic()
                due = [lease for lease in self._leases.values() if lease.next_renew <= now]
                if not due:
                    self._lock.wait(min(lease.next_renew for lease in self._leases.values()) - now)
                    continue
            for lease in due:
                self._renew(lease)

    def _renew(self, lease: Lease) -> None:
        try:
            lease.renew()
        except Exception as exc:  # noqa: BLE001 - Redis away: try again soon
            lease.next_renew = time.monotonic() + min(1.0, lease.ms / 6000)
            self.errors(lease, exc)
            return
        lease.next_renew = time.monotonic() + lease.ms / 3000

    def after_fork(self) -> None:
        """In a forked child: hold none of the parent's leases (the parent renews them), no thread."""
        self._lock = threading.Condition()
        self._leases = {}
        self._thread = None


def new_token() -> str:
    """A fencing token: random, unique per claim."""
    return os.urandom(8).hex()
