"""Which Redis to use, and a client that fails fast on the first call but rides out restarts later.

Why: a bad URL, a server that is down or a wrong password must be one readable line at the call
that made it (never a password echoed back, never a stack of retries), while a worker that is
already running should survive a short server restart without noticing. So :func:`connect`
validates the URL, PINGs once *without* retries, and only then hands back a client that retries
connection errors with a short exponential back-off.

Where the URL comes from (:func:`resolve_url`): the ``url`` argument, else ``$FORRESTQ_URL``, else
the embedded per-user server (:func:`forrestq.server.ensure_local_server`).

Past one server: ``redis+sentinel://[user:pw@]h1:p1,h2:p2/MASTER[/db]`` asks the Sentinels where
the primary is, before each new connection and again after a failover (redis-py's Sentinel pool:
the credentials are the data nodes'; the Sentinels are asked without). ``redis+cluster://[user:pw@]
h1:p1,h2:p2/`` gives a :class:`forrestq.cluster.ClusterClient`. ``rediss+...``: the same over TLS.
"""
from __future__ import annotations

import os
import re
from typing import Any
from urllib.parse import SplitResult, unquote, urlsplit

import redis
import redis.sentinel
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.connection import parse_url
from redis.retry import Retry

from .cluster import ClusterClient, Topology
from .errors import AuthFailed, ConfigError, ServerUnreachable

__all__ = ["resolve_url", "connect", "describe"]

SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
SCHEMES = ("redis", "rediss", "unix", *SENTINEL_SCHEMES, *CLUSTER_SCHEMES)
CONNECT_TIMEOUT = 5.0  # seconds, for connecting and for the first PING
SENTINEL_PORT = 26379


def ensure_local_server() -> str:
    """:func:`forrestq.server.ensure_local_server`, the server module imported only when no URL was
    given (a command or a worker with ``--url`` does not load it)."""
    from .server import ensure_local_server as ensure
    return ensure()


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
        client = _client(url, parts, options)
    except (ValueError, TypeError) as e:  # e.g. a bad query option
        raise ConfigError(_bad(url, _scrub(str(e), parts))) from None
    if check:
        _check(url, options)
    return client


def _client(url: str, parts: SplitResult, options: dict[str, Any]) -> redis.Redis:
    """The client a URL asks for: one server, a Sentinel-watched primary, or a cluster."""
    if parts.scheme not in SENTINEL_SCHEMES + CLUSTER_SCHEMES:
        return redis.Redis.from_url(url, **options)
    hosts, rest = _hosts(url, parts)
    if parts.scheme in CLUSTER_SCHEMES:
        return ClusterClient(Topology(hosts, {**_node_options(parts, "/0"), **options}), options.get("retry"))
    service, _, db = rest.partition("/")
    node = {**_node_options(parts, f"/{db or 0}"), **options}
    asking = {k: v for k, v in node.items() if k.startswith(("socket_", "ssl"))}
    sentinel = redis.sentinel.Sentinel(hosts, sentinel_kwargs=asking, **node)
    kind = _SentinelSSLConnection if node.get("ssl") else _SentinelConnection
    return sentinel.master_for(unquote(service), redis_class=redis.Redis, connection_class=kind, **node)


class _SentinelConnection(redis.sentinel.SentinelManagedConnection):  # type: ignore[misc]
    """redis-py's Sentinel connection asks where the primary is in ``connect()``; but a command sent
    on a dropped connection reconnects through ``connect_check_health`` (redis-py 8), to the address
    it had: after a failover, the old primary, now a read-only replica, for every retry. Ask there too."""

    def connect_check_health(self, check_health: bool = True, retry_socket_connect: bool = True) -> None:
        if not self._sock and self.connection_pool.is_master:
            self.host, self.port = self.connection_pool.get_master_address()
        super().connect_check_health(check_health, retry_socket_connect)


class _SentinelSSLConnection(_SentinelConnection, redis.SSLConnection):  # type: ignore[misc]
    pass


def _node_options(parts: SplitResult, path: str) -> dict[str, Any]:
    """What a URL says about the connections to its data nodes (credentials, TLS, query options),
    read by redis-py's own URL parser from the one-host URL the same URL would be."""
    base = "rediss" if parts.scheme.startswith("rediss") else "redis"
    userinfo = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    query = f"?{parts.query}" if parts.query else ""
    options = parse_url(f"{base}://{userinfo}localhost{path}{query}")
    for key in ("host", "port", "path", "connection_class"):
        options.pop(key, None)
    if base == "rediss":
        options["ssl"] = True
    return options


def _hosts(url: str, parts: SplitResult) -> tuple[list[tuple[str, int]], str]:
    """The host:port list and the path (without its first /) of a multi-host URL; ConfigError names
    the bad part."""
    default = SENTINEL_PORT if parts.scheme in SENTINEL_SCHEMES else 6379
    netloc = parts.netloc.rsplit("@", 1)[-1]
    hosts: list[tuple[str, int]] = []
    for item in filter(None, (h.strip() for h in netloc.split(","))):
        m = re.fullmatch(r"(\[[^\]]+\]|[^:\[\]]+)(?::(\d*))?", item)
        if m is None:
            raise ConfigError(_bad(url, f"'{item}' is not HOST:PORT"))
        port = int(m.group(2)) if m.group(2) else (0 if m.group(2) == "" else default)
        if not 0 < port < 65536:
            raise ConfigError(_bad(url, "the port must be a number from 1 to 65535"))
        hosts.append((m.group(1).strip("[]"), port))
    if not hosts:
        raise ConfigError(_bad(url, "missing host"))
    return hosts, parts.path[1:]


def describe(url: str) -> str:
    """Where url points, for messages: ``HOST:PORT``, ``unix:/path``, ``cluster H:P,H:P`` or
    ``sentinel H:P,H:P (MASTER)``; never the password."""
    try:
        parts = urlsplit(url)
        if parts.scheme in SENTINEL_SCHEMES + CLUSTER_SCHEMES:
            hosts = ",".join(f"{h}:{p}" for h, p in _hosts(url, parts)[0])
            if parts.scheme in CLUSTER_SCHEMES:
                return f"cluster {hosts}"
            return f"sentinel {hosts} ({unquote(parts.path[1:].split('/')[0])})"
        if parts.scheme == "unix":
            return f"unix:{unquote(parts.path)}"
        if parts.hostname:
            host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
            return f"{host}:{parts.port or 6379}"
    except (ValueError, ConfigError):
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
        raise ConfigError(_bad(url, f"{why}; use redis://HOST:PORT/DB, rediss://... (TLS), "
                                    "unix:///path/to/socket, redis+sentinel://HOST:PORT,.../MASTER "
                                    "or redis+cluster://HOST:PORT,.../"))
    if parts.scheme in SENTINEL_SCHEMES + CLUSTER_SCHEMES:
        _hosts(url, parts)
        path = parts.path.strip("/")
        if parts.scheme in CLUSTER_SCHEMES and path not in ("", "0"):
            raise ConfigError(_bad(url, f"a cluster has only database 0, not '/{path}'"))
        if parts.scheme in SENTINEL_SCHEMES:
            service, _, db = path.partition("/")
            if not service:
                raise ConfigError(_bad(url, "missing the master name (redis+sentinel://HOST:PORT/MASTER)"))
            if db and not db.isdigit():
                raise ConfigError(_bad(url, f"the database must be a number (/MASTER/0), not '/{db}'"))
        return parts
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
    probe = _client(url, urlsplit(url), {**options, "retry": Retry(NoBackoff(), 0), "socket_timeout": timeout,
                                         "health_check_interval": 0})
    try:
        probe.ping()
        _check_mode(url, where, probe)
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
        if "cluster support disabled" in str(e):
            raise ConfigError(f"bad Redis URL {mask(url)}: the server at {where} is not a cluster node "
                              "(use redis://HOST:PORT/0)") from None
        if "DB index" in str(e):  # the URL names a database the server does not have: a bad URL
            raise ConfigError(f"bad Redis URL {mask(url)}: the server at {where} says {e} "
                              "(the number after the last / picks the database)") from None
        raise ServerUnreachable(f"Redis at {where} answered PING with an error: {e}") from None
    finally:
        probe.close()


def _check_mode(url: str, where: str, probe: redis.Redis) -> None:
    """A one-server URL that names a cluster node works until the first key of another node's slots:
    say so now. (A user without INFO rights is not stopped here.)"""
    if urlsplit(url).scheme in CLUSTER_SCHEMES:
        return
    try:
        enabled = str(probe.info("cluster").get("cluster_enabled", 0)) == "1"
    except redis.ResponseError:
        return
    if enabled:
        raise ConfigError(f"bad Redis URL {mask(url)}: the server at {where} is a cluster node; use "
                          f"redis+cluster://{where}/ (or rediss+cluster://)")


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
