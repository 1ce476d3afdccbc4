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

A command's module is imported only when that command runs (or shows its help): :data:`COMMANDS`
names them, and ``forrestq --help`` lists them from it without importing any (issue 18: every
process of the command line starts with only what its command uses; so does redis-py, imported by
the commands that talk to Redis, not by this module).
"""
from __future__ import annotations

import re
import sys
import traceback
from collections.abc import Iterator, MutableMapping
from importlib import import_module
from typing import TYPE_CHECKING, Any

import typer

from ..errors import AuthFailed, ConfigError, ForrestqError, ServerUnreachable, UnknownQueue, UnknownTask
from ..version import __version__
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

if TYPE_CHECKING:
    import redis

    from .render import render_status
    from .work import parse_size

__all__ = ["app", "main", "exit_code", "parse_size", "render_status", "EXIT_OK", "EXIT_FAILURE", "EXIT_USAGE",
           "EXIT_UNREACHABLE", "EXIT_AUTH", "EXIT_UNKNOWN"]


def reported() -> tuple[type[BaseException], ...]:
    """The errors a command ends with as one line (a connection lost mid-command, and a command the
    Redis user's ACL does not allow, included). redis-py's only once it is imported: before, no
    Redis error can have been raised (and ``forrestq --help`` does not import it)."""
    redis = sys.modules.get("redis")
    if redis is None:
        return (ForrestqError,)
    return (ForrestqError, redis.ConnectionError, redis.TimeoutError, redis.exceptions.NoPermissionError)


def _exit_codes() -> tuple[tuple[type[BaseException], int], ...]:
    import redis
    return ((ServerUnreachable, EXIT_UNREACHABLE), (AuthFailed, EXIT_AUTH), (UnknownQueue, EXIT_UNKNOWN),
            (UnknownTask, EXIT_UNKNOWN), (ConfigError, EXIT_USAGE),
            (redis.ConnectionError, EXIT_UNREACHABLE), (redis.TimeoutError, EXIT_UNREACHABLE),
            (redis.AuthenticationError, EXIT_AUTH), (redis.exceptions.NoPermissionError, EXIT_AUTH))


# what a refused permission was about -> what the user's ACL must allow
_ACL_HINTS = (("key", "forrestq's keys, fq:*"), ("command", "the commands forrestq uses"),
              ("channel", "forrestq's channels"))
MESSAGE_LIMIT = 400  # characters of an error line (a message may echo a long input)


def exit_code(error: BaseException) -> int:
    """The exit code for an error that ends a command."""
    return next((c for t, c in _exit_codes() if isinstance(error, t)), EXIT_FAILURE)


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
    import redis  # an error is being reported: the rare path

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


# The commands, in the order of --help: name -> (module of this package, attribute: a command's
# function, or the typer app of a group of commands), and the first paragraph of its help, which
# ``forrestq --help`` lists without importing the module (tests/test_startup_imports.py checks that
# it is the command's own). A command's module is imported when the command runs or shows its help.
# (show: with the task's dashboard URL when a dashboard runs, issue 19; metrics: the Prometheus
# exporter alone, issue 19; periodic list|pause|resume|remove and limit set|rate|rm|list, issue 16;
# launch slurm [status|stop], issue 21)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "worker": ("work", "worker", "Run tasks of the queues (--queue; default: [bold]default[/bold]) in N child "
                                 "processes until SIGTERM/SIGINT."),
    "status": ("inspect", "status", "Tasks per state and per minute for each queue, and the live workers."),
    "tasks": ("inspect", "tasks", "List tasks: id, state, function, metadata, runtime, host and the error in one "
                                  "line."),
    "show": ("dashboard", "show", "Everything about one task: call, state history, attempts, host, runtime, "
                                  "metadata, output, traceback."),
    "events": ("inspect", "events", "The history of a queue's tasks, one line per event, oldest first."),
    "stats": ("inspect", "stats", "Per function: runs, failed %, p50/p95 runtime, p95 peak memory and the hosts "
                                  "that ran it."),
    "server": ("work", "server", "Run the embedded Redis-compatible server in the foreground until Ctrl-C."),
    "requeue": ("manage", "requeue", "Put failed tasks back on their queue, with the dependents that failed "
                                     "because of them."),
    "run": ("manage", "run", "Run one task in this terminal with its real inputs from Redis, to debug it by hand."),
    "clean": ("manage", "clean", "Delete tasks; asks first unless [bold]--yes[/bold]. Running tasks are never "
                                 "deleted."),
    "cancel": ("manage", "cancel", "Cancel tasks: queued ones are removed, running ones killed; they end failed "
                                   'with reason "cancelled".'),
    "dashboard": ("dashboard", "dashboard", "A web dashboard: queues, workers, tasks, failures, one task's page; "
                                            "actions; /metrics."),
    "metrics": ("dashboard", "metrics_command", "Serve Prometheus metrics of every queue and worker on /metrics, "
                                                "without the dashboard."),
    "periodic": ("periodic", "app", "Periodic schedules (Queue.every / Queue.cron): list, pause, resume, remove."),
    "limit": ("limits", "app", "Concurrency and rate limits by key (schedule(..., limits=[KEY])): set, rate, rm, "
                               "list."),
    "launch": ("slurm", "app", "Start workers through a batch scheduler: [bold]forrestq launch slurm[/bold]."),
}


def load_command(name: str) -> Any:
    """The click command (or group) ``name`` of :data:`COMMANDS`, built by typer from its module, as
    the root app would have built it had the command been registered on it."""
    module, attr, _ = COMMANDS[name]
    target = getattr(import_module(f".{module}", __name__), attr)
    holder = typer.Typer(add_completion=False, rich_markup_mode="rich")
    if isinstance(target, typer.Typer):
        holder.add_typer(target, name=name)
    else:
        holder.command(name, cls=Command)(target)
    holder.callback()(lambda: None)  # a group, always: the command is one of its commands
    return typer.main.get_group(holder).commands[name]


class _Commands(MutableMapping[str, Any]):
    """The root group's commands: every name of :data:`COMMANDS` (listing them imports nothing), a
    command built by :func:`load_command` when it is looked up. While the root's help is formatted
    (``listing``), a command not loaded yet stands in as its name and its first help paragraph."""

    def __init__(self, loaded: dict[str, Any]) -> None:
        self.loaded = loaded
        self.listing = False

    def __getitem__(self, name: str) -> Any:
        if name not in self.loaded:
            if name not in COMMANDS:
                raise KeyError(name)
            if self.listing:
                return Command(name, help=COMMANDS[name][2], rich_markup_mode="rich")
            self.loaded[name] = load_command(name)
        return self.loaded[name]

    def __setitem__(self, name: str, command: Any) -> None:
        self.loaded[name] = command

    def __delitem__(self, name: str) -> None:
        del self.loaded[name]

    def __iter__(self) -> Iterator[str]:
        return iter({**dict.fromkeys(COMMANDS), **self.loaded})

    def __len__(self) -> int:
        return len({*COMMANDS, *self.loaded})


class _Group(PlainHelp):
    """The root group: its commands are loaded when used (:class:`_Commands`). Turns forrestq errors
    (and a connection lost mid-command) into one line on stderr and the exit code of
    :func:`exit_code`, also under typer's CliRunner. With ``-v`` the error propagates and its
    traceback is shown."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.commands = _Commands(dict(self.commands))

    def list_commands(self, ctx: Any) -> list[str]:
        return list(self.commands)  # the names: typer's own would build every command

    def format_help(self, ctx: Any, formatter: Any) -> None:
        commands = self.commands
        assert isinstance(commands, _Commands)
        commands.listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            commands.listing = False

    def invoke(self, ctx: Any) -> Any:  # a click Context (typer vendors click privately)
        try:
            return super().invoke(ctx)
        except Exception as e:
            if not isinstance(e, reported()) or id(e) in STATE.passthrough or STATE.verbose:
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


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app, turning forrestq errors into one line on stderr and an exit code
    (the commands already do; this also covers errors raised outside them). With ``-v`` the
    traceback is printed first; the exit code stays the same."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        app(args=args, prog_name="forrestq")
    except Exception as e:
        if not isinstance(e, reported()):
            raise
        if id(e) in STATE.passthrough:  # run --raise: the task's own exception, with its traceback
            raise
        if STATE.verbose or any(re.fullmatch(r"-v+|--verbose", a) for a in args):
            traceback.print_exception(type(e), e, e.__traceback__)
        print(f"forrestq: {_message(e)}", file=sys.stderr)
        sys.exit(exit_code(e))


def __getattr__(name: str) -> Any:
    """``parse_size`` and ``render_status``, re-exported from their modules when first asked for."""
    if name == "parse_size":
        from .work import parse_size
        return parse_size
    if name == "render_status":
        from .render import render_status
        return render_status
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
