"""The web commands (issue 19): ``forrestq dashboard`` (pages, actions, ``/metrics``) and ``forrestq
metrics`` (the Prometheus exporter alone), and ``forrestq show`` with the task's dashboard URL."""
from __future__ import annotations

import functools
import signal
import threading
from pathlib import Path
from typing import Any

import typer

from ..connection import describe, resolve_url
from ..dashboard.config import DashboardConfig, task_url
from ..dashboard.security import check_bind, read_token
from ..dashboard.serve import known_url, run
from ..errors import ConfigError
from ..status import find_task
from .common import URL, VERBOSE, client, set_verbose
from .inspect import show as show_task

__all__ = ["dashboard", "metrics_command", "show"]

_BIND = typer.Option("127.0.0.1", "--bind", metavar="ADDR",
                     help="Address to listen on; beyond loopback (0.0.0.0, a LAN address) needs --token-file.")

def _check_port(port: int) -> int:
    if not 1 <= port <= 65535:
        raise ConfigError(f"--port must be from 1 to 65535, not {port}")
    return port

def dashboard(
    url: str | None = URL,
    bind: str = _BIND,
    port: int = typer.Option(8765, "--port", metavar="PORT", help="TCP port to listen on."),
    read_only: bool = typer.Option(False, "--read-only", help="No actions: no requeue, cancel, rerun, clean, stop."),
    token_file: Path | None = typer.Option(None, "--token-file", metavar="FILE",
                                           help="File holding the access token (first line): every request needs "
                                                "it (a login page sets a cookie; or 'Authorization: Bearer TOKEN')."),
    public_url: str | None = typer.Option(None, "--public-url", metavar="URL",
                                          help="The address people open (what `forrestq show` prints); default: "
                                               "http://BIND:PORT (this host's name for 0.0.0.0)."),
    verbose: int = VERBOSE,
) -> None:
    """A web dashboard: queues, workers, tasks, failures, one task's page; actions; /metrics.

    Pages update themselves every 2 s. Beyond loopback it refuses to start without [bold]--token-file[/bold].

    Examples: [bold]forrestq dashboard[/bold] (then open http://127.0.0.1:8765),
    [bold]forrestq dashboard --bind 0.0.0.0 --token-file ~/.forrestq-dashboard-token --read-only[/bold]
    """
    set_verbose(verbose)
    token = read_token(token_file) if token_file is not None else None
    check_bind(bind, token)  # before anything listens or connects
    cfg = DashboardConfig(url=resolve_url(url), bind=bind, port=_check_port(port), read_only=read_only,
                          token=token, public_url=public_url)
    client(cfg.url)  # unreachable or refused: one line and its exit code now
    print(f"forrestq dashboard on {cfg.base_url()} (Redis {describe(cfg.url)}"
          f"{', read-only' if read_only else ''}{', token required' if token else ''}); Ctrl-C stops it", flush=True)
    run(cfg)

def metrics_command(
    url: str | None = URL,
    port: int = typer.Option(9808, "--port", metavar="PORT", help="TCP port to serve /metrics on."),
    bind: str = typer.Option("127.0.0.1", "--bind", metavar="ADDR", help="Address to listen on."),
    verbose: int = VERBOSE,
) -> None:
    """Serve Prometheus metrics of every queue and worker on /metrics, without the dashboard.

    Reads counters only at each scrape (no scan of the tasks). Example: [bold]forrestq metrics --port 9808[/bold]
    """
    from .. import metrics  # deferred: prometheus_client costs every other command 0.1 s to import

    set_verbose(verbose)
    r = client(url)
    stop = threading.Event()
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, lambda *_: stop.set())
    print(f"forrestq metrics on http://{bind}:{_check_port(port)}/metrics (Redis {describe(resolve_url(url))}); "
          "Ctrl-C stops it", flush=True)
    metrics.serve(r, port, bind, stop)

@functools.wraps(show_task)
def show(**options: Any) -> None:
    """``forrestq show`` as :func:`forrestq.cli.inspect.show` prints it, then, when a dashboard runs
    (it keeps its URL in ``fq:dashboard``), the task's page there (not with ``--json``)."""
    show_task(**options)
    if options.get("as_json"):
        return
    r = client(options.get("url"))
    base = known_url(r)
    if base:
        queue = find_task(r, options["task_id"], options.get("queue"))
        print(f"dashboard: {task_url(base, queue, options['task_id'])}")
