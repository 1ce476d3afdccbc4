"""Which Redis to use, and a client that fails fast on the first call but rides out restarts later.

Why: a bad URL, a server that is down or a wrong password must be one readable line at the call
that made it (never a password echoed back, never a stack of retries), while a worker that is
already running should survive a short server restart without noticing. So :func:`connect`
validates the URL, PINGs once *without* retries, and only then hands back a client that retries
connection errors with a short exponential back-off.

Where the URL comes from (:func:`resolve_url`): the ``url`` argument, else ``$FORRESTQ_URL``, else
the embedded per-user server (:func:`forrestq.server.ensure_local_server`).
"""
from __future__ import annotations

import os
import re
from typing import Any
from urllib.parse import SplitResult, unquote, urlsplit

import redis
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.retry import Retry

from .errors import AuthFailed, ConfigError, ServerUnreachable
from .server import ensure_local_server

__all__ = ["resolve_url", "connect", "describe"]

SCHEMES = ("redis", "rediss", "unix")
CONNECT_TIMEOUT = 5.0  # seconds, for connecting and for the first PING


def resolve_url(url: str | None = None) -> str:
    """The Redis URL to use: ``url`` if given, else ``$FORRESTQ_URL``, else the URL of the
    embedded local server (started if needed)."""
    if url:
        return url
    env = os.environ.get("FORRESTQ_URL", "").strip()
    return env or ensure_local_server()


def connect(url: str | None = None, *, check: bool = True, **kwargs: Any) -> redis.Redis:
    """A ``redis.Redis`` for url (see :func:`resolve_url`), bytes responses.

    Raises ConfigError for a malformed URL; with ``check``, PINGs once without retries and raises
    ServerUnreachable or AuthFailed (one line, no chained errors). The returned client retries
    connection errors and timeouts (10 times, exponential back-off capped at 2 s). ``kwargs`` go
    to ``redis.Redis.from_url`` and override these defaults.
    """
    url = resolve_url(url)
    parts = _validate(url)
    options: dict[str, Any] = {
        "decode_responses": False,
        "socket_connect_timeout": CONNECT_TIMEOUT,
        "health_check_interval": 30,
        "retry": Retry(ExponentialBackoff(cap=2, base=0.05), 10,
                       supported_errors=(redis.ConnectionError, redis.TimeoutError)),
        **kwargs,
    }
    try:
        client = redis.Redis.from_url(url, **options)
    except (ValueError, TypeError) as e:  # e.g. a bad query option
        raise ConfigError(_bad(url, _scrub(str(e), parts))) from None
    if check:
        _check(url, options)
    return client


def describe(url: str) -> str:
    """Where url points, for messages: ``HOST:PORT`` or ``unix:/path``; never the password."""
    try:
        parts = urlsplit(url)
        if parts.scheme == "unix":
            return f"unix:{unquote(parts.path)}"
        if parts.hostname:
            host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
            return f"{host}:{parts.port or 6379}"
    except ValueError:
        pass
    return mask(url)


def mask(url: str) -> str:
    """url with everything that may be a password replaced by ``***``.

    Everything before the last ``@`` is credentials; ``user:pass`` keeps the user name.
    Works on URLs too broken to parse (those are the ones that end up in error messages).
    """
    if "@" not in url:
        return url
    head, tail = url.rsplit("@", 1)
    scheme, sep, userinfo = head.partition("://")
    if not sep:
        return f"***@{tail}"
    user = userinfo.split(":", 1)[0] if ":" in userinfo else ""
    return f"{scheme}://{user}:***@{tail}" if user or ":" in userinfo else f"{scheme}://***@{tail}"


def _bad(url: str, why: str) -> str:
    return f"bad Redis URL '{mask(url)}': {why}"


def _scrub(text: str, parts: SplitResult | None) -> str:
    """Remove a password from a message that came from elsewhere (redis-py, the server)."""
    secret = parts.password if parts is not None else None
    for s in filter(None, {secret, unquote(secret or "")}):
        text = text.replace(s, "***")
    return text


def _validate(url: str) -> SplitResult:
    """Parse url, or raise ConfigError saying what is wrong with it."""
    if not isinstance(url, str) or not url.strip():
        raise ConfigError("bad Redis URL: it is empty (set FORRESTQ_URL, e.g. redis://host:6379/0)")
    try:
        parts = urlsplit(url)
    except ValueError as e:
        raise ConfigError(_bad(url, str(e))) from None
    if parts.scheme not in SCHEMES:
        why = f"unknown scheme '{parts.scheme}:'" if parts.scheme else "no scheme"
        raise ConfigError(_bad(url, f"{why}; use redis://HOST:PORT/DB, rediss://... (TLS) "
                                    "or unix:///path/to/socket"))
    if parts.scheme == "unix":
        if not parts.path:
            raise ConfigError(_bad(url, "missing the socket path (unix:///path/to/socket)"))
        return parts
    if not parts.hostname:
        raise ConfigError(_bad(url, "missing host"))
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0 or re.search(r":\s*$", parts.netloc):
        raise ConfigError(_bad(url, "the port must be a number from 1 to 65535"))
    db = parts.path.strip("/")
    if db and not db.isdigit():
        raise ConfigError(_bad(url, f"the database must be a number (/0), not '/{db}'"))
    return parts


def _check(url: str, options: dict[str, Any]) -> None:
    """PING once, no retries; translate failures into one line, raised from None."""
    where = describe(url)
    timeout = options.get("socket_connect_timeout") or CONNECT_TIMEOUT
    probe = redis.Redis.from_url(url, **{**options, "retry": Retry(NoBackoff(), 0),
                                         "socket_timeout": timeout, "health_check_interval": 0})
    try:
        probe.ping()
    except redis.AuthenticationError as e:
        raise AuthFailed(_auth_message(where, url, str(e))) from None
    except redis.exceptions.NoPermissionError as e:
        raise AuthFailed(f"Redis at {where} refused access: {e}") from None
    except redis.BusyLoadingError:
        raise ServerUnreachable(f"cannot reach Redis at {where}: it is still loading its data; "
                                "try again in a moment") from None
    except (redis.TimeoutError, TimeoutError):
        raise ServerUnreachable(f"cannot reach Redis at {where}: timed out after {timeout:g} s") from None
    except redis.InvalidResponse:
        raise ServerUnreachable(f"cannot reach Redis at {where}: something answered that is not "
                                "a Redis server") from None
    except (redis.ConnectionError, OSError) as e:
        raise ServerUnreachable(f"cannot reach Redis at {where}: {_reason(e)}") from None
    except redis.ResponseError as e:
        if "DB index" in str(e):  # the URL names a database the server does not have: a bad URL
            raise ConfigError(f"bad Redis URL {mask(url)}: the server at {where} says {e} "
                              "(the number after the last / picks the database)") from None
        raise ServerUnreachable(f"Redis at {where} answered PING with an error: {e}") from None
    finally:
        probe.close()


def _reason(error: BaseException) -> str:
    """'Error 111 connecting to h:1. Connection refused.' -> 'connection refused'."""
    text = re.sub(r"^Error -?\d+ connecting to \S+\.\s+", "", str(error)).strip().rstrip(".")
    if "Name or service not known" in text or "nodename nor servname" in text:
        text = "unknown host"
    return (text[:1].lower() + text[1:]) or type(error).__name__


def _auth_message(where: str, url: str, server_says: str) -> str:
    parts = urlsplit(url)
    if (parts.password is None and parts.username is None) or "NOAUTH" in server_says:
        return (f"Redis at {where} requires a password: put it in the URL, "
                "redis://:PASSWORD@HOST:PORT/0")
    if "without any password configured" in server_says or "no password is set" in server_says:
        return f"Redis at {where} refused the password: it has no password set; remove it from the URL"
    user = f" for user '{parts.username}'" if parts.username else ""
    return f"Redis at {where} refused the password{user} ({_scrub(server_says, parts)})"
