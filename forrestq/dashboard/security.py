"""Who may use the dashboard, and proof that an action came from its own page.

* Binding: loopback by default; an address beyond loopback (``0.0.0.0``, ``::``, a LAN address, a
  name that resolves to one) is refused without a token (:func:`check_bind`). Every 127.x address
  and ``::1`` are loopback: only this machine reaches them.
* The token (``--token-file``): every request must carry it, as the ``fq_auth`` cookie the login page
  sets (a digest of the token, HttpOnly, SameSite=Strict) or as ``Authorization: Bearer TOKEN`` (a
  Prometheus scrape). Without it: 401 and the login page (:class:`Guard`).
* Without a token (loopback), a request must name this machine in its ``Host`` header (a loopback
  address, ``localhost``, the bind address, the ``--public-url`` host): a page of another site whose
  name was rebound to 127.0.0.1 (DNS rebinding) gets 403, so it can neither read pages nor act.
* CSRF: actions are POSTs whose form carries ``csrf``, the value of the ``fq_csrf`` cookie (random,
  set on the first page; SameSite=Strict): another site can neither read nor set it, so it cannot
  make a visitor's browser post an action (double-submit cookie). A POST whose ``Origin`` is another
  host is refused as well.
"""
from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import socket
from collections.abc import Awaitable, Callable, MutableMapping
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from ..errors import ConfigError, DashboardRefused

__all__ = ["AUTH_COOKIE", "CSRF_COOKIE", "check_bind", "is_loopback", "read_token", "digest", "Guard",
           "new_csrf", "csrf_ok", "cookies"]

AUTH_COOKIE = "fq_auth"
CSRF_COOKIE = "fq_csrf"
OPEN_PATHS = ("/login", "/static/")  # reachable without the token (the login page and its style)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def is_loopback(bind: str) -> bool:
    """Whether every address ``bind`` stands for is a loopback one (``localhost``, 127.x, ``::1``);
    a name that does not resolve is not."""
    try:
        return ipaddress.ip_address(bind.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        found = {info[4][0] for info in socket.getaddrinfo(bind, None)}
    except (socket.gaierror, UnicodeError):
        return False
    return bool(found) and all(ipaddress.ip_address(str(a).split("%", 1)[0]).is_loopback for a in found)


def check_bind(bind: str, token: str | None) -> None:
    """Refuse (DashboardRefused, one line) to listen beyond loopback without a token."""
    if not is_loopback(bind) and not token:
        raise DashboardRefused(f"refusing to serve the dashboard on {bind}, beyond loopback, without a token: "
                               f"give --token-file FILE (every request must then carry it), or --bind 127.0.0.1")


def read_token(path: Path) -> str:
    """The token in the first line of ``path`` (at least 16 characters)."""
    try:
        token = path.read_text().splitlines()[0].strip() if path.read_text().strip() else ""
    except OSError as e:
        raise ConfigError(f"cannot read --token-file {path}: {e.strerror or e}") from None
    if len(token) < 16:
        raise ConfigError(f"--token-file {path}: the token must be at least 16 characters "
                          f"(e.g. `openssl rand -hex 16 > {path}`)")
    return token


def digest(token: str) -> str:
    """What the auth cookie holds: a digest of the token (the token itself never sits in a cookie)."""
    return hashlib.sha256(b"forrestq-dashboard:" + token.encode()).hexdigest()


def cookies(scope: Scope) -> dict[str, str]:
    """The request's cookies."""
    jar: SimpleCookie = SimpleCookie()
    for name, value in scope.get("headers", []):
        if name == b"cookie":
            try:
                jar.load(value.decode("latin-1"))
            except Exception:  # noqa: BLE001 - a malformed cookie header: as if it had none
                pass
    return {k: m.value for k, m in jar.items()}


def _header(scope: Scope, name: bytes) -> str:
    return next((v.decode("latin-1") for k, v in scope.get("headers", []) if k == name), "")


def authorized(scope: Scope, token: str) -> bool:
    """Whether the request carries the token (cookie digest or bearer header)."""
    bearer = _header(scope, b"authorization")
    if bearer.startswith("Bearer ") and hmac.compare_digest(bearer[7:].strip().encode(), token.encode()):
        return True
    return hmac.compare_digest(cookies(scope).get(AUTH_COOKIE, "").encode(), digest(token).encode())


def login_ok(body: bytes, token: str) -> bool:
    """Whether a login form's ``token`` field is the token."""
    given = parse_qs(body.decode(errors="replace")).get("token", [""])[0].strip()
    return hmac.compare_digest(given.encode(), token.encode())


def new_csrf() -> str:
    return secrets.token_urlsafe(24)


def csrf_ok(scope: Scope, form: dict[str, str]) -> bool:
    """Whether an action's form carries the CSRF cookie's value, and no other site's Origin."""
    origin = _header(scope, b"origin")
    host = _header(scope, b"host")
    if origin and origin != "null" and origin.split("://", 1)[-1] != host:
        return False
    expected = cookies(scope).get(CSRF_COOKIE, "")
    return bool(expected) and hmac.compare_digest(form.get("csrf", "").encode(), expected.encode())


def host_ok(scope: Scope, names: frozenset[str]) -> bool:
    """Whether the request's Host names this machine: a loopback address or one of ``names``."""
    host = _header(scope, b"host").strip().lower()
    name = host[1:].split("]", 1)[0] if host.startswith("[") else host.rsplit(":", 1)[0] if host.count(":") == 1 \
        else host
    if name in names or name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


async def _refuse(send: Send, status: int, body: bytes, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/html; charset=utf-8"),
                            (b"content-length", str(len(body)).encode()), *(extra or [])]})
    await send({"type": "http.response.body", "body": body})


class Guard:
    """ASGI middleware: with a token, every request but the login page's needs it (else 401 and the
    login page, ``login_page(next_path)``); without one, the Host must name this machine (``names``:
    the bind address and the public URL's host besides the loopback ones; else 403)."""

    def __init__(self, app: ASGIApp, token: str | None, login_page: Callable[[str], bytes],
                 names: frozenset[str] = frozenset()) -> None:
        self.app = app
        self.token = token
        self.login_page = login_page
        self.names = frozenset(n.lower().strip("[]") for n in names)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http":
            await self.app(scope, receive, send)
        elif self.token is None:
            if host_ok(scope, self.names):
                await self.app(scope, receive, send)
            else:
                await _refuse(send, 403, b"refused: this dashboard answers to its own address only (Host header)")
        elif path.startswith(OPEN_PATHS) or authorized(scope, self.token):
            await self.app(scope, receive, send)
        else:
            await _refuse(send, 401, self.login_page(path), [(b"www-authenticate", b'Bearer realm="forrestq"')])
