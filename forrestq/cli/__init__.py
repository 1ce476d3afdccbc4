"""The ``forrestq`` command line: thin commands over the library (typer + rich).

Conventions: every command takes ``--url`` (default ``$FORRESTQ_URL``, else the embedded local
server); listings take ``--json`` for scripts; colour is off when stdout is not a terminal or
``NO_COLOR`` is set (rich does both). Errors of forrestq (bad input, unknown queue or task, server
unreachable, wrong password) are one line on stderr, ``forrestq: <message>``, and a distinct exit
code (below); ``-v`` shows the traceback as well.

The package: this module holds the typer ``app``, the error -> exit code mapping and :func:`main`;
the commands live by concern in :mod:`.work` (worker, server), :mod:`.inspect` (status, tasks,
show, events), :mod:`.manage` (requeue, run, clean, cancel), :mod:`.dashboard` (dashboard,
metrics) and :mod:`.slurm` (launch slurm); everything they print is built in
:mod:`.render`; :mod:`.common` holds the exit codes and options they share.
"""
from __future__ import annotations

import re
import sys
import traceback
from typing import Any

import redis
import typer

from ..errors import AuthFailed, ConfigError, ForrestqError, ServerUnreachable, UnknownQueue, UnknownTask
from ..version import __version__
from . import dashboard, inspect, limits, manage, periodic, slurm, work
from .common import (
    EXIT_AUTH,
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_UNKNOWN,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    STATE,
    Command,
    PlainHelp,
)
from .render import render_status
from .work import parse_size

__all__ = ["app", "main", "exit_code", "parse_size", "render_status", "EXIT_OK", "EXIT_FAILURE", "EXIT_USAGE",
           "EXIT_UNREACHABLE", "EXIT_AUTH", "EXIT_UNKNOWN"]

# the errors a command ends with as one line (a connection lost mid-command, and a command the
# Redis user's ACL does not allow, included)
REPORTED = (ForrestqError, redis.ConnectionError, redis.TimeoutError, redis.exceptions.NoPermissionError)

_EXIT_CODES: tuple[tuple[type[BaseException], int], ...] = (
    (ServerUnreachable, EXIT_UNREACHABLE), (AuthFailed, EXIT_AUTH), (UnknownQueue, EXIT_UNKNOWN),
    (UnknownTask, EXIT_UNKNOWN), (ConfigError, EXIT_USAGE),
    (redis.ConnectionError, EXIT_UNREACHABLE), (redis.TimeoutError, EXIT_UNREACHABLE),
    (redis.AuthenticationError, EXIT_AUTH), (redis.exceptions.NoPermissionError, EXIT_AUTH))

# what a refused permission was about -> what the user's ACL must allow
_ACL_HINTS = (("key", "forrestq's keys, fq:*"), ("command", "the commands forrestq uses"),
              ("channel", "forrestq's channels"))
MESSAGE_LIMIT = 400  # characters of an error line (a message may echo a long input)


def exit_code(error: BaseException) -> int:
    """The exit code for an error that ends a command."""
    return next((c for t, c in _EXIT_CODES if isinstance(error, t)), EXIT_FAILURE)


def _no_permission(error: redis.exceptions.NoPermissionError) -> str:
    """'NOPERM No permissions to access a key (HGETALL fq:{q}:counts)' and what the ACL must allow."""
    text = str(error)
    command, sep, said = text.partition(" of pipeline caused error: ")
    if sep:  # redis-py names the pipelined command: 'Command # 1 (HGETALL fq:{q}:counts)'
        text = f"{said} ({command.split('(', 1)[-1].rstrip(')')})"
    allow = next((what for word, what in _ACL_HINTS if word in said or word in text), "what forrestq needs")
    return f"Redis refused: NOPERM {text} (the Redis user's ACL must allow {allow})"


def _message(error: BaseException) -> str:
    """The one line that reports ``error``: its first line (the rest is for ``-v``), cut to
    :data:`MESSAGE_LIMIT` characters."""
    if isinstance(error, ForrestqError):
        text = str(error)
    elif isinstance(error, redis.exceptions.NoPermissionError):
        text = _no_permission(error)
    elif isinstance(error, (redis.ConnectionError, redis.TimeoutError)):
        text = f"lost the connection to Redis: {error}"
    else:
        text = f"{type(error).__name__}: {error}"
    lines = text.strip().splitlines() or [type(error).__name__]
    line = lines[0] + (" (more with -v)" if len(lines) > 1 else "")
    return line if len(line) <= MESSAGE_LIMIT else line[:MESSAGE_LIMIT - 3] + "..."


class _Group(PlainHelp):
    """Turns forrestq errors (and a connection lost mid-command) into one line on stderr and the
    exit code of :func:`exit_code`, also under typer's CliRunner. With ``-v`` the error propagates
    and its traceback is shown."""

    def invoke(self, ctx: Any) -> Any:  # a click Context (typer vendors click privately)
        try:
            return super().invoke(ctx)
        except REPORTED as e:
            if id(e) in STATE.passthrough or STATE.verbose:
                raise
            print(f"forrestq: {_message(e)}", file=sys.stderr, flush=True)
            raise typer.Exit(exit_code(e)) from None


app = typer.Typer(cls=_Group, add_completion=False, no_args_is_help=True, rich_markup_mode="rich",
                  pretty_exceptions_show_locals=False)  # locals may hold a URL with a password


def _version(value: bool) -> None:
    if value:
        print(f"forrestq {__version__}")
        raise typer.Exit(EXIT_OK)


@app.callback(epilog="Exit codes: 0 ok, 1 failure reported by the command, 2 bad usage, "
                     "3 server unreachable, 4 authentication or permission refused, 5 unknown queue or task.")
def _root(verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="Show tracebacks of errors."),
          version: bool = typer.Option(False, "--version", is_eager=True, callback=_version,
                                       help="Print the version and exit.")) -> None:
    """forrestq: a Redis worker pool for slow, crashy Python work.

    Every command takes [bold]--url[/bold]; without it, [bold]$FORRESTQ_URL[/bold], else the embedded local server.
    [bold]forrestq COMMAND --help[/bold] shows a command's options and examples.

    Examples:
      [bold]forrestq worker --procs 8 --queue fits[/bold]     run tasks of queue fits on 8 cores
      [bold]forrestq status[/bold]                            queues, their tasks and the live workers
      [bold]forrestq tasks --state failed[/bold]              the failed tasks, with their errors
      [bold]forrestq show TASK_ID[/bold]                      everything about one task
      [bold]forrestq events -q fits --follow[/bold]           the tasks' history, as it happens
      [bold]forrestq requeue --failed[/bold]                  run the failed tasks again
    """
    STATE.verbose = verbose  # runs first in every invocation: resets what an earlier one set


# the commands, in the order of --help
# (show: with the task's dashboard URL when a dashboard runs, issue 19)
for _command in (work.worker, inspect.status, inspect.tasks, dashboard.show, inspect.events, inspect.stats, work.server,
                 manage.requeue, manage.run, manage.clean, manage.cancel, dashboard.dashboard):
    app.command(cls=Command)(_command)
app.command("metrics", cls=Command)(dashboard.metrics_command)  # the Prometheus exporter alone (issue 19)
app.add_typer(periodic.app, name="periodic")  # forrestq periodic list|pause|resume|remove (issue 16)
app.add_typer(limits.app, name="limit")  # forrestq limit set|rate|rm|list (issue 16)
app.add_typer(slurm.app, name="launch")  # forrestq launch slurm [status|stop] (issue 21)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app, turning forrestq errors into one line on stderr and an exit code
    (the commands already do; this also covers errors raised outside them). With ``-v`` the
    traceback is printed first; the exit code stays the same."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        app(args=args, prog_name="forrestq")
    except REPORTED as e:
        if id(e) in STATE.passthrough:  # run --raise: the task's own exception, with its traceback
            raise
        if STATE.verbose or any(re.fullmatch(r"-v+|--verbose", a) for a in args):
            traceback.print_exception(type(e), e, e.__traceback__)
        print(f"forrestq: {_message(e)}", file=sys.stderr)
        sys.exit(exit_code(e))
