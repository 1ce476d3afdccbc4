"""What every command shares: the exit codes, the common options, the verbosity of error reports
and the Redis client of a command.

The exit codes live here, below the command modules, so that a command (``run``) can name one
without importing the package that registers it; :mod:`forrestq.cli` re-exports them.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup

from ..errors import as_permission_error, is_permission_error
from ..schema import check_name

if TYPE_CHECKING:  # redis-py: imported by the commands that talk to Redis, not by --help
    import redis

__all__ = ["EXIT_OK", "EXIT_FAILURE", "EXIT_USAGE", "EXIT_UNREACHABLE", "EXIT_AUTH", "EXIT_UNKNOWN", "STATE",
           "set_verbose", "URL", "VERBOSE", "JSON", "QUEUE", "queue_option", "queue_name", "queue_names",
           "PlainHelp", "Command", "client", "where"]

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


# ------------------------------------------------------------------------------------------ options


def queue_name(value: str | None) -> str | None:
    """A ``--queue`` value checked like the library checks a queue name (ConfigError: exit 2)."""
    return None if value is None else check_name(value)


def queue_names(values: list[str] | None) -> list[str] | None:
    """Every value of a repeatable ``--queue``, checked as :func:`queue_name`."""
    for value in values or []:
        check_name(value)
    return values


def queue_option(help: str) -> Any:
    """A ``--queue NAME`` (``-q``) option, checked as the library checks queue names."""
    return typer.Option(None, "--queue", "-q", metavar="NAME", callback=queue_name, help=help)


URL = typer.Option(None, "--url", envvar="FORRESTQ_URL", show_envvar=True, metavar="URL",
                   help="Redis URL; default: $FORRESTQ_URL, else the embedded local server.")
VERBOSE = typer.Option(0, "--verbose", "-v", count=True, help="Show tracebacks of errors.")
JSON = typer.Option(False, "--json", help="Print JSON for scripts instead of tables.")
QUEUE = queue_option("Only this queue (default: every queue).")


# --------------------------------------------------------------------------------------------- help


class _Argument(TyperArgument):
    """An argument whose help shows its name only (``TASK_ID``), not typer's ``<str>``."""

    def display_type_rich(self, ctx: Any) -> str | None:
        return None


def _plain(params: list[Any]) -> list[Any]:
    """typer shows every parameter's Python type (``--json <bool>``, ``-v <int>``, ``--queue
    <list[str]>``), which reads as if ``--json true`` were the syntax. Here flags and counts show
    nothing, options a plain metavar (``--queue NAME``; the upper-cased name unless one was given),
    arguments their upper-cased name."""
    for p in params:
        if isinstance(p, TyperArgument):
            p.metavar = p.metavar or (p.name or "").upper()
            p.__class__ = _Argument
        elif getattr(p, "is_flag", False) or getattr(p, "count", False):
            p.metavar = ""
        elif p.metavar is None:
            p.metavar = (p.name or "").upper()
    return params


class PlainHelp(TyperGroup):
    """The root group's help as :func:`_plain` shows it."""

    def get_params(self, ctx: Any) -> list[Any]:  # a click Context (typer vendors click privately)
        return _plain(super().get_params(ctx))


class Command(TyperCommand):
    """Every command's help as :func:`_plain` shows it. A command the Redis user's ACL refuses inside
    one of forrestq's scripts (a plain ResponseError) leaves it as the NoPermissionError of a refused
    command: one line on stderr and EXIT_AUTH, like a refusal outside a script."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _plain(super().get_params(ctx))

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except Exception as e:
            redis = sys.modules.get("redis")  # a Redis error comes from redis-py, imported by then
            if redis is None or not isinstance(e, redis.ResponseError) or id(e) in STATE.passthrough \
                    or isinstance(e, redis.exceptions.NoPermissionError) \
                    or not is_permission_error(e):  # run --raise: the task's own exception
                raise
            raise as_permission_error(e) from None


def client(url: str | None) -> redis.Redis:
    """A checked client on ``url`` (see :func:`forrestq.connection.connect`)."""
    from ..connection import connect
    return connect(url)


def where(url: str | None) -> str:
    """The server a command talks to, for headings (no password)."""
    from ..connection import describe, resolve_url
    return describe(resolve_url(url))
