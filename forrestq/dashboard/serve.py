"""Running the dashboard: uvicorn in the foreground, and its URL kept in Redis while it runs.

The URL is ``fq:dashboard`` (:data:`forrestq.schema.DASHBOARD`), set with a TTL of
:data:`forrestq.schema.DASHBOARD_TTL` seconds and renewed every :data:`RENEW_EVERY` seconds by a
thread (after a FLUSHALL it is back within that), so a dashboard that died stops being named within
half a minute; ``forrestq show`` prints the task's page
there (:func:`known_url`, :func:`task_url`). On a clean stop the key is deleted if it is still ours.

Starlette and uvicorn are imported by :func:`run` only: every other command of the CLI imports this
module (for ``show``) and should not pay for them.
"""
from __future__ import annotations

import signal
import threading

import redis

from .. import schema
from ..connection import connect
from .config import DashboardConfig, task_url

__all__ = ["DashboardConfig", "run", "known_url", "task_url", "register", "RENEW_EVERY"]

RENEW_EVERY = 3.0  # seconds between two SETs of fq:dashboard (one SET: nothing to save on)


def known_url(r: redis.Redis) -> str | None:
    """The URL of a running dashboard (one that renewed ``fq:dashboard`` lately), or None."""
    value = r.get(schema.DASHBOARD)
    return value.decode(errors="replace") if value else None


def register(r: redis.Redis, base: str, stop: threading.Event) -> None:
    """Keep ``fq:dashboard`` naming ``base`` until ``stop`` is set; then delete it if still ours.
    Redis away: tried again at the next renewal."""
    while True:
        try:
            r.set(schema.DASHBOARD, base, ex=schema.DASHBOARD_TTL)
        except redis.RedisError:
            pass
        if stop.wait(RENEW_EVERY):
            break
    try:
        if r.get(schema.DASHBOARD) == base.encode():
            r.delete(schema.DASHBOARD)
    except redis.RedisError:
        pass


def _leave(signum: int, frame: object) -> None:
    raise SystemExit(0)


def run(cfg: DashboardConfig) -> None:
    """Serve the dashboard until SIGINT/SIGTERM. uvicorn's handlers stop it gracefully, then raise
    the signal again with the handlers it found: ours, which end the process through ``finally``
    (the URL key deleted) with exit code 0."""
    import uvicorn  # deferred: an expensive optional dependency only this command needs

    from .app import create_app  # deferred with it: Starlette and Jinja2

    r = connect(cfg.url)
    stop = threading.Event()
    keeper = threading.Thread(target=register, args=(r, cfg.base_url(), stop), name="fq-dashboard-url", daemon=True)
    keeper.start()
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, _leave)
    try:
        uvicorn.run(create_app(cfg, r), host=cfg.bind, port=cfg.port, log_level="warning", access_log=False,
                    server_header=False, timeout_graceful_shutdown=5)
    finally:
        stop.set()
        keeper.join(5)
