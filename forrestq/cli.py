"""The ``forrestq`` command line: thin commands over the library (typer + rich)."""
from __future__ import annotations

import os
import re
import sys
from typing import List, Optional

import typer

from .errors import ForrestqError

# exit codes (distinct per kind of failure, for scripts)
EXIT_OK = 0
EXIT_FAILURE = 1  # a command ran and reports failure (e.g. run --raise of a failing task)
EXIT_USAGE = 2  # bad option or argument (typer's own code for usage errors)
EXIT_UNREACHABLE = 3
EXIT_AUTH = 4
EXIT_UNKNOWN = 5  # unknown queue or task

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode="rich",
                  help="forrestq: a Redis worker pool for slow, crashy Python work.")



@app.callback()
def _root() -> None:
    """forrestq: a Redis worker pool for slow, crashy Python work."""


URL = typer.Option(None, "--url", envvar="FORRESTQ_URL",
                   help="Redis URL; default: $FORRESTQ_URL, else the embedded local server.")

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$", re.I)


def parse_size(text: str) -> int:
    """'2G', '512M', '1.5GiB', '1000000' -> bytes."""
    from .errors import ConfigError

    m = _SIZE.match(str(text))
    if not m:
        raise ConfigError(f"bad size {text!r}: use a number with an optional unit, e.g. 2G or 512M")
    return int(float(m.group(1)) * 1024 ** " kmgt".index((m.group(2) or " ").lower()))


@app.command()
def worker(
    procs: int = typer.Option(os.cpu_count() or 1, "--procs", "-p", help="Child processes running tasks."),
    queue: List[str] = typer.Option(["default"], "--queue", "-q", help="Queue to serve (repeatable; first has priority)."),
    url: Optional[str] = URL,
    autokill: float = typer.Option(0, help="Kill a task's process group after this many seconds (0 = never)."),
    max_memory: Optional[str] = typer.Option(None, help="Address-space limit per child, e.g. 2G."),
    lease: float = typer.Option(30, help="Seconds a claim lives without a heartbeat."),
    grace: float = typer.Option(30, help="On SIGTERM/SIGINT, seconds running tasks may finish."),
    max_tasks_per_child: int = typer.Option(0, help="Replace a child after this many tasks (0 = never)."),
    max_child_rss: Optional[str] = typer.Option(None, help="Replace a child that grew past this RSS, e.g. 1G."),
    logfile: Optional[str] = typer.Option(None, help="Append every task's output here, tagged with its id."),
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="More output."),
    quiet: bool = typer.Option(False, "--quiet", help="Log nothing per task."),
) -> None:
    """Run tasks of QUEUE(s) in PROCS child processes until SIGTERM/SIGINT.

    Example: [bold]forrestq worker --procs 8 --queue fits[/bold]
    """
    from .connection import describe, resolve_url
    from .worker import Worker, WorkerConfig

    cfg = WorkerConfig(url=url, queues=list(queue), procs=procs, lease=lease, autokill=autokill,
                       max_memory=parse_size(max_memory) if max_memory else 0, grace=grace,
                       max_tasks_per_child=max_tasks_per_child,
                       max_child_rss=parse_size(max_child_rss) if max_child_rss else 0,
                       logfile=logfile, verbose=-1 if quiet else verbose)
    w = Worker(cfg)
    if not quiet:
        print(f"forrestq worker {w.id}: host {cfg.host}, pid {os.getpid()}, {cfg.procs} procs, "
              f"queues {', '.join(cfg.queues)}, server {describe(resolve_url(url))}", file=sys.stderr, flush=True)
    raise typer.Exit(w.run())


def main() -> None:
    """Entry point: run the app, turning forrestq errors into one line on stderr and an exit code."""
    from .errors import AuthFailed, ConfigError, ServerUnreachable, UnknownQueue, UnknownTask

    try:
        app()
    except ForrestqError as e:
        code = {ServerUnreachable: EXIT_UNREACHABLE, AuthFailed: EXIT_AUTH, UnknownQueue: EXIT_UNKNOWN,
                UnknownTask: EXIT_UNKNOWN, ConfigError: EXIT_USAGE}
        print(f"forrestq: {e}", file=sys.stderr)
        if "-v" in sys.argv or "--verbose" in sys.argv:
            raise
        sys.exit(next((c for t, c in code.items() if isinstance(e, t)), EXIT_FAILURE))
