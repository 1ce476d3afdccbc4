"""The dashboard's Starlette application: pages, actions, ``/metrics`` and the shipped static files.

Why Starlette (with uvicorn and Jinja2): a small, widely used and actively kept ASGI toolkit with no
ORM or settings layer to carry; sync endpoints run in its thread pool, so the (blocking) redis-py
reads stay simple; Jinja2 escapes every value by default (autoescape on); uvicorn is the server
Starlette is developed against, and installs from PyPI without a compiler.

Every page is a Jinja2 template extending ``base.html``; its ``main`` block alone is what the page's
script fetches every ``refresh_ms`` to update itself (``X-Fragment: 1``), so live updates go through
the same escaping as the page. Responses carry a Content-Security-Policy that allows scripts and
styles from this server only (no inline script can run, whatever a task's metadata holds).
"""
from __future__ import annotations

import time
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlencode, urlsplit

import redis
from jinja2 import Environment, PackageLoader
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from .. import environment, metrics, schema, status
from ..errors import ConfigError, ForrestqError
from ..queue import Queue
from . import actions, data, pictures, security
from .config import DashboardConfig, task_url

__all__ = ["create_app"]

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none'; "
       "base-uri 'none'; frame-ancestors 'none'; form-action 'self'")
SECURITY_HEADERS = {"content-security-policy": CSP, "x-content-type-options": "nosniff",
                    "referrer-policy": "same-origin", "x-frame-options": "DENY", "cache-control": "no-store"}


def _when(ts: float | None) -> str:
    return "-" if ts is None else datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def templates() -> Environment:
    """The templates, autoescaped, with the formatting filters of ``forrestq status``."""
    env = Environment(loader=PackageLoader("forrestq.dashboard", "templates"), autoescape=True,
                      trim_blocks=True, lstrip_blocks=True)
    env.filters.update(bytes=status.human_bytes, duration=status.human_duration, age=status.human_age,
                       when=_when, short_error=status.short_error, short=status.short_repr)
    env.globals.update(task_url=partial(task_url, ""), quote=partial(quote, safe=""), states=schema.STATES,
                       list_states=data.LIST_STATES, chart=pictures.chart, dag_picture=pictures.dag_picture,
                       difference_line=environment.difference_line)
    macros = env.get_template("macros.html").module  # globals: a page's main block alone sees them too
    env.globals.update(action=macros.action, state=macros.state)  # type: ignore[attr-defined]
    return env


class Dashboard:
    """The endpoints, over one Redis client and one template environment."""

    def __init__(self, cfg: DashboardConfig, r: redis.Redis) -> None:
        self.cfg = cfg
        self.r = r
        self.env = templates()
        self.queues: dict[str, Queue] = {}

    def queue(self, name: str) -> Queue:
        if name not in self.queues:
            self.queues[name] = Queue(name, self.cfg.url)
        return self.queues[name]

    # --- responses ---------------------------------------------------------------------------
    def page(self, request: Request, name: str, status_code: int = 200, **ctx: Any) -> Response:
        """A page, or only its ``main`` block for the page's own live updates."""
        csrf = security.cookies(request.scope).get(security.CSRF_COOKIE) or security.new_csrf()
        ctx.update(cfg=self.cfg, csrf=csrf, msg=request.query_params.get("msg", ""), path=request.url.path,
                   now=time.time(), query=str(request.url.query))
        tmpl = self.env.get_template(name)
        if request.headers.get("x-fragment"):
            html = "".join(tmpl.blocks["main"](tmpl.new_context(ctx)))
        else:
            html = tmpl.render(ctx)
        response = HTMLResponse(html, status_code, headers=SECURITY_HEADERS)
        response.set_cookie(security.CSRF_COOKIE, csrf, httponly=True, samesite="strict", path="/")
        return response

    async def redis_error(self, request: Request, exc: Exception) -> Response:
        """Redis unreachable, or refusing a command (a Redis user's ACL): one line, 503, not a traceback."""
        what = "Redis refused" if isinstance(exc, redis.exceptions.NoPermissionError) else "Redis is unreachable"
        text = f"{what}: {status.short_error(str(exc), 300)}"
        if isinstance(exc, ForrestqError):
            text = status.short_error(str(exc), 300)
        return HTMLResponse(self.env.get_template("error.html").render(text=text, cfg=self.cfg, path=request.url.path),
                            503, headers=SECURITY_HEADERS)

    def login_body(self, next_path: str, failed: bool = False) -> bytes:
        return self.env.get_template("login.html").render(next=next_path, failed=failed, cfg=self.cfg).encode()

    # --- pages -------------------------------------------------------------------------------
    def overview(self, request: Request) -> Response:
        return self.page(request, "overview.html", **data.overview(self.r))

    def tasks(self, request: Request) -> Response:
        p = request.query_params
        names = status.queue_names(self.r)
        queue = p.get("queue") or (names[0] if names else "")
        state = p.get("state") or schema.FAILED
        state = state if state in data.LIST_STATES else schema.FAILED
        try:
            start = max(0, int(p.get("start", "0") or 0))
        except ValueError:
            start = 0
        f = data.Filter(queue, state, p.get("function", ""), p.get("host", ""), p.get("error", ""),
                        p.get("text", ""), p.get("roots") == "1", start)
        listing = data.list_page(self.r, f) if queue in names else data.Listing([], None, 0, 0)
        keep = {k: v for k, v in p.items() if k != "start"}
        return self.page(request, "tasks.html", f=f, names=names, listing=listing,
                         next_query=urlencode({**keep, "start": listing.next_start}) if listing.next_start else "",
                         first_query=urlencode(keep), metadata_text=data.metadata_text)

    def task(self, request: Request) -> Response:
        queue, _, task_id = request.path_params["rest"].rpartition("/")
        try:
            got = data.task_page(self.r, schema.check_name(queue), task_id) if task_id else None
        except ConfigError:
            got = None
        if got is None:
            return self.page(request, "missing.html", 404, queue=queue, task_id=task_id)
        return self.page(request, "task.html", queue=queue, **got)

    def failures(self, request: Request) -> Response:
        names = status.queue_names(self.r)
        queue = request.query_params.get("queue") or (names[0] if names else "")
        groups, looked = data.failure_groups(self.r, queue) if queue in names else ([], 0)
        return self.page(request, "failures.html", names=names, queue=queue, groups=groups, looked=looked,
                         limit=data.FAILURES_SCAN)

    def metrics(self, request: Request) -> Response:
        body = metrics.exposition(metrics.registry(self.r))
        return Response(body, headers={"content-type": metrics.CONTENT_TYPE, "cache-control": "no-store"})

    # --- forms -------------------------------------------------------------------------------
    async def action(self, request: Request) -> Response:
        name = request.path_params["name"]
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode(errors="replace")).items()}
        if self.cfg.read_only or name not in actions.ACTIONS:
            return PlainTextResponse("no such action (the dashboard may be read-only)", 404)
        if not security.csrf_ok(request.scope, form):
            return PlainTextResponse("refused: the form's CSRF token is missing or wrong (reload the page)", 403)
        line = await run_in_threadpool(actions.run, self.r, self.queue, name, form)
        back = form.get("next", "/")
        back = back if back.startswith("/") and not back.startswith("//") else "/"
        return RedirectResponse(f"{back}{'&' if '?' in back else '?'}{urlencode({'msg': line})}", 303)

    async def login(self, request: Request) -> Response:
        next_path = request.query_params.get("next", "/")
        next_path = next_path if next_path.startswith("/") and not next_path.startswith("//") else "/"
        if request.method == "GET" or self.cfg.token is None:
            return HTMLResponse(self.login_body(next_path), headers=SECURITY_HEADERS)
        if not security.login_ok(await request.body(), self.cfg.token):
            return HTMLResponse(self.login_body(next_path, failed=True), 401, headers=SECURITY_HEADERS)
        response = RedirectResponse(next_path, 303)
        response.set_cookie(security.AUTH_COOKIE, security.digest(self.cfg.token), httponly=True, samesite="strict",
                            path="/")
        return response


def create_app(cfg: DashboardConfig, r: redis.Redis) -> Any:
    """The ASGI application of ``forrestq dashboard`` (the token guard around Starlette)."""
    d = Dashboard(cfg, r)
    routes = [Route("/", d.overview), Route("/tasks", d.tasks), Route("/task/{rest:path}", d.task),
              Route("/failures", d.failures), Route("/metrics", d.metrics),
              Route("/login", d.login, methods=["GET", "POST"]),
              Route("/action/{name}", d.action, methods=["POST"]),
              Mount("/static", StaticFiles(directory=Path(__file__).parent / "static"), name="static")]
    app = Starlette(routes=routes, exception_handlers={redis.RedisError: d.redis_error, ForrestqError: d.redis_error})
    names = frozenset({cfg.bind, urlsplit(cfg.base_url()).hostname or ""})
    return security.Guard(app, cfg.token, lambda path: d.login_body(path), names)
