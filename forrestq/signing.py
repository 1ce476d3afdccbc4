"""Signed payloads: an HMAC-SHA256 on every blob forrestq serialises, checked before unpickling.

Why: a worker unpickles what it reads from Redis, and unpickling runs code, so whoever can write to
a queue's keys can make every worker run anything. With a secret shared by the producers and the
workers, a blob that was not written by a holder of the secret is refused *before* a single byte of
it is unpickled: the task fails with "could not load task payload: SignatureMismatch: signature
mismatch: ..." and nothing runs.

Where the secret comes from, read on first use (or at :func:`check`): ``$FORRESTQ_SECRET``, or
``$FORRESTQ_SECRET_FILE`` (a path; the CLI's ``--secret-file``), never both. Surrounding whitespace
(the newline ``echo`` leaves in a file) is ignored; an empty secret is a ConfigError, as are an
unreadable file and both variables set. A program can also call :func:`set_secret`.

Format of a signed blob: ``b"FQS1" + HMAC-SHA256(kind key, data) + data`` (36 bytes of header).
The MAC key differs per kind of blob (derived from the secret), so a signed blob of one kind is
refused where another kind is expected: a result cannot be passed off as a task's arguments, nor
arguments as a function:

=========  ==============================================  ===========================
kind       blobs                                           written by / read by
=========  ==============================================  ===========================
``fn``     task functions (``fq:{q}:fn:<sha1>``)           dump_fn / load_fn
``args``   task arguments (field ``a`` of a task)          dump_args / load_args
``value``  results, exceptions, metadata, retry policies,  dumps, dump_exception /
           shared objects                                  loads
=========  ==============================================  ===========================

Without a secret nothing is signed and nothing is checked (the fast path costs one ``if``), but a
*signed* blob is still refused, with "signature mismatch: ... came signed, but this process has no
secret ...": a process without the secret cannot check it, and loading it unchecked would hide a
misconfigured worker. So producers, workers, and every process that reads results (``forrestq
show``, ``Queue.results``) need the same secret.

What the secret does not do: it does not encrypt (anyone who can read Redis can read the
payloads: use Redis AUTH/ACLs and TLS for that); it does not stop someone who can write to Redis
from deleting or reordering tasks, or from replaying a blob that was signed for another task (the
same function with other signed arguments); and it protects nothing if the secret leaks.
"""
from __future__ import annotations

import hashlib
import hmac
import os
from typing import Any

from .errors import ConfigError, SignatureMismatch

__all__ = ["MAGIC", "HEADER", "FN", "ARGS", "VALUE", "Signer", "is_signed", "secret_from_env",
           "set_secret", "use_environment", "check", "current", "sign", "fingerprint", "NO_SECRET"]

MAGIC = b"FQS1"
HEADER = len(MAGIC) + 32  # magic + SHA-256 MAC
ENV_SECRET = "FORRESTQ_SECRET"
ENV_SECRET_FILE = "FORRESTQ_SECRET_FILE"
NO_SECRET = "none"  # the fingerprint of "no secret"

# kinds of blob, each with its own MAC key
FN, ARGS, VALUE = 0, 1, 2
_KIND_NAMES = ("fn", "args", "value")
_WHAT = ("the task's function", "the task's arguments", "the stored value")


class Signer:
    """Signs and checks blobs with the keys derived from one secret (the secret itself is not kept).

    The MAC is HMAC-SHA256 (RFC 2104) computed from SHA-256 states precomputed over the padded
    key (``K ^ ipad`` and ``K ^ opad``), which are copied per blob: the same bytes as
    ``hmac.digest(key, data, "sha256")`` at less than half its cost on small blobs."""

    __slots__ = ("_pads", "fingerprint")

    def __init__(self, secret: str | bytes) -> None:
        key = _as_bytes(secret).strip()
        if not key:
            raise ConfigError("the payload secret is empty: use a long random string "
                              "(e.g. `openssl rand -hex 32`), or no secret at all")
        pads = []
        for name in _KIND_NAMES:
            kind_key = hmac.digest(key, b"forrestq payload v1: " + name.encode(), "sha256")
            block = kind_key.ljust(64, b"\0")  # 32-byte key, SHA-256 block of 64 bytes
            pads.append((hashlib.sha256(bytes(b ^ 0x36 for b in block)),
                         hashlib.sha256(bytes(b ^ 0x5C for b in block))))
        self._pads = tuple(pads)
        # what hosts compare (`forrestq worker`'s startup line, `forrestq status`): a key derived for
        # this purpose only, hashed, cut to 32 bits; it tells secrets apart and reveals nothing a
        # signed blob in Redis would not (both can be checked against a guessed secret)
        self.fingerprint = hashlib.sha256(hmac.digest(key, b"forrestq fingerprint v1", "sha256")).hexdigest()[:8]

    def mac(self, kind: int, data: Any) -> bytes:
        """HMAC-SHA256 of ``data`` (bytes-like) under the key of ``kind``."""
        inner, outer = self._pads[kind]
        inner = inner.copy()
        inner.update(data)
        outer = outer.copy()
        outer.update(inner.digest())
        return outer.digest()

    def sign(self, kind: int, blob: bytes) -> bytes:
        return b"".join((MAGIC, self.mac(kind, blob), blob))

    def verify(self, kind: int, blob: Any) -> None:
        """Return if ``blob`` carries a valid MAC of this kind; raise SignatureMismatch otherwise.
        The data starts at offset :data:`HEADER`."""
        if not is_signed(blob):
            raise SignatureMismatch(
                f"signature mismatch: {_WHAT[kind]} came unsigned, and this process has a secret: it "
                "loads signed payloads only (the writer had no secret, or is not one of yours)")
        mac = self.mac(kind, memoryview(blob)[HEADER:])
        if not hmac.compare_digest(mac, bytes(blob[len(MAGIC):HEADER])):
            raise SignatureMismatch(
                f"signature mismatch: {_WHAT[kind]} came with a bad signature (signed with another "
                "secret, changed since, or signed as another kind of payload)")

    def __repr__(self) -> str:
        return "<Signer>"


def is_signed(blob: Any) -> bool:
    """Whether ``blob`` looks signed (magic and room for a MAC; the MAC is not checked)."""
    if type(blob) is bytes:
        return blob.startswith(MAGIC) and len(blob) >= HEADER
    return (isinstance(blob, (bytearray, memoryview)) and len(blob) >= HEADER
            and bytes(blob[:len(MAGIC)]) == MAGIC)


def unsigned_but_signed(kind: int) -> SignatureMismatch:
    """The error for a signed blob met by a process without a secret."""
    return SignatureMismatch(
        f"signature mismatch: {_WHAT[kind]} came signed, but this process has no secret to check "
        f"it (set ${ENV_SECRET} or ${ENV_SECRET_FILE} to the producers' secret)")


def _as_bytes(secret: str | bytes) -> bytes:
    if isinstance(secret, str):
        return secret.encode("utf-8", "surrogateescape")
    if isinstance(secret, (bytes, bytearray, memoryview)):
        return bytes(secret)
    raise ConfigError(f"the payload secret must be a str or bytes, not {type(secret).__name__}")


def secret_from_env(environ: Any = None) -> bytes | None:
    """The secret configured by ``$FORRESTQ_SECRET`` or ``$FORRESTQ_SECRET_FILE``, None if neither
    is set. ConfigError: both set, an unreadable file, an empty secret."""
    env = os.environ if environ is None else environ
    value, path = env.get(ENV_SECRET), env.get(ENV_SECRET_FILE)
    if value is not None and path is not None:
        raise ConfigError(f"both ${ENV_SECRET} and ${ENV_SECRET_FILE} are set: set only one")
    if path is not None:
        if not path.strip():
            raise ConfigError(f"${ENV_SECRET_FILE} is set but empty: give the path of the secret file")
        try:
            with open(os.path.expanduser(path), "rb") as f:
                secret = f.read().strip()
        except OSError as e:
            raise ConfigError(f"cannot read the secret file ${ENV_SECRET_FILE}={path!r}: "
                              f"{e.strerror or e}") from None
        if not secret:
            raise ConfigError(f"the secret file {path!r} (${ENV_SECRET_FILE}) is empty")
        return secret
    if value is not None:
        secret = _as_bytes(value).strip()
        if not secret:
            raise ConfigError(f"${ENV_SECRET} is set but empty: set it to a long random string "
                              f"(e.g. `openssl rand -hex 32`), or unset it to run without signing")
        return secret
    return None


def signer_from_env(environ: Any = None) -> Signer | None:
    secret = secret_from_env(environ)
    return None if secret is None else Signer(secret)


# --- the process's configuration ------------------------------------------------------------------

UNRESOLVED = object()  # the environment is read at the first dump or load
# None: no secret (blobs are plain pickles: codec's hot path tests ``signing.signer is None``);
# a Signer; or UNRESOLVED
signer: Any = UNRESOLVED
generation = 0  # bumped whenever the signer changes: codec drops blobs signed under the old one


def current() -> Signer | None:
    """The signer in use, reading the environment the first time (ConfigError if it is bad; it is
    read again at the next call then)."""
    if signer is UNRESOLVED:
        _use(signer_from_env())
    return signer


def _use(new: Any) -> None:
    global signer, generation
    if new is not signer:
        signer = new
        generation += 1


def sign(kind: int, blob: bytes) -> bytes:
    """``blob`` signed if a secret is configured, else ``blob`` itself."""
    s = current()
    return blob if s is None else s.sign(kind, blob)


def set_secret(secret: str | bytes | None) -> None:
    """Sign and check every payload of this process with ``secret`` from now on (None: no signing),
    whatever the environment says. Raises ConfigError for an empty secret."""
    _use(None if secret is None else Signer(secret))


def use_environment() -> None:
    """Forget :func:`set_secret` (or an earlier reading): the environment is read again at the next
    use."""
    _use(UNRESOLVED)


def fingerprint() -> str:
    """A short fingerprint of the secret in use (8 hex digits; never the secret), or "none" without
    one. Processes with the same secret show the same fingerprint; different secrets show different
    ones (but for a chance of one in four billion)."""
    s = current()
    return NO_SECRET if s is None else s.fingerprint


def check() -> bool:
    """Read the configuration now (if not read yet) so that a bad one fails here, as a ConfigError,
    rather than at the first payload. True if payloads are signed."""
    return current() is not None
