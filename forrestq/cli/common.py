"""What every command shares: the exit codes, the common options, the verbosity of error reports
and the Redis client of a command.

The exit codes live here, below the command modules, so that a command (``run``) can name one
without importing the package that registers it; :mod:`forrestq.cli` re-exports them.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import redis
import typer

from ..connection import connect, describe, resolve_url

__all__ = ["EXIT_OK", "EXIT_FAILURE", "EXIT_USAGE", "EXIT_UNREACHABLE", "EXIT_AUTH", "EXIT_UNKNOWN", "STATE",
           "set_verbose", "URL", "VERBOSE", "JSON", "QUEUE", "client", "where"]

# exit codes (distinct per kind of failure, for scripts)
EXIT_OK = 0
EXIT_FAILURE = 1  # a command ran and reports failure (e.g. run --raise of a failing task)
EXIT_USAGE = 2  # bad option or argument (typer's own code for usage errors)
EXIT_UNREACHABLE = 3
EXIT_AUTH = 4
EXIT_UNKNOWN = 5  # unknown queue or task


@dataclass
class State:
    """What one invocation decided about error reports. ``verbose``: the highest ``-v`` count given
    (root or command); errors then show their traceback. ``passthrough``: ids of exceptions a
    command re-raises on purpose (``run --raise``), never turned into one line."""

    verbose: int = 0
    passthrough: set[int] = field(default_factory=set)


STATE = State()


def set_verbose(level: int) -> None:
    """Raise the verbosity of error reports to ``level`` (a command's own ``-v`` count)."""
    STATE.verbose = max(STATE.verbose, level or 0)


URL = typer.Option(None, "--url", envvar="FORRESTQ_URL", show_envvar=True,
                   help="Redis URL; default: $FORRESTQ_URL, else the embedded local server.")
VERBOSE = typer.Option(0, "--verbose", "-v", count=True, help="Show tracebacks of errors.")
JSON = typer.Option(False, "--json", help="Print JSON for scripts instead of tables.")
QUEUE = typer.Option(None, "--queue", "-q", help="Only this queue (default: every queue).")


def client(url: str | None) -> redis.Redis:
    """A checked client on ``url`` (see :func:`forrestq.connection.connect`)."""
    return connect(url)


def where(url: str | None) -> str:
    """The server a command talks to, for headings (no password)."""
    return describe(resolve_url(url))
