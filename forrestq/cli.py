"""The ``forrestq`` command line: thin commands over the library (typer + rich).

Conventions: every command takes ``--url`` (default ``$FORRESTQ_URL``, else the embedded local
server); listings take ``--json`` for scripts; colour is off when stdout is not a terminal or
``NO_COLOR`` is set (rich does both). Errors of forrestq (bad input, unknown queue or task, server
unreachable, wrong password) are one line on stderr, ``forrestq: <message>``, and a distinct exit
code (below); ``-v`` shows the traceback as well.
"""
from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, List, Optional

import typer
from typer.core import TyperGroup

from .errors import ForrestqError

# exit codes (distinct per kind of failure, for scripts)
EXIT_OK = 0
EXIT_FAILURE = 1  # a command ran and reports failure (e.g. run --raise of a failing task)
EXIT_USAGE = 2  # bad option or argument (typer's own code for usage errors)
EXIT_UNREACHABLE = 3
EXIT_AUTH = 4
EXIT_UNKNOWN = 5  # unknown queue or task

_verbose = 0  # set by -v (root or command): errors show their traceback
_passthrough: set[int] = set()  # ids of exceptions a command re-raises on purpose (run --raise)


def exit_code(error: BaseException) -> int:
    """The exit code for an error that ends a command."""
    import redis

    from .errors import AuthFailed, ConfigError, ServerUnreachable, UnknownQueue, UnknownTask

    codes = ((ServerUnreachable, EXIT_UNREACHABLE), (AuthFailed, EXIT_AUTH), (UnknownQueue, EXIT_UNKNOWN),
             (UnknownTask, EXIT_UNKNOWN), (ConfigError, EXIT_USAGE),
             (redis.ConnectionError, EXIT_UNREACHABLE), (redis.TimeoutError, EXIT_UNREACHABLE),
             (redis.AuthenticationError, EXIT_AUTH))
    return next((c for t, c in codes if isinstance(error, t)), EXIT_FAILURE)


def _message(error: BaseException) -> str:
    import redis

    if isinstance(error, ForrestqError):
        return str(error)
    if isinstance(error, (redis.ConnectionError, redis.TimeoutError)):
        return f"lost the connection to Redis: {error}"
    return f"{type(error).__name__}: {error}"


class _Group(TyperGroup):
    """Turns forrestq errors (and a connection lost mid-command) into one line on stderr and the
    exit code of :func:`exit_code`, also under typer's CliRunner. With ``-v`` the error propagates
    and its traceback is shown."""

    def invoke(self, ctx: Any) -> Any:
        import redis

        try:
            return super().invoke(ctx)
        except (ForrestqError, redis.ConnectionError, redis.TimeoutError) as e:
            if id(e) in _passthrough or _verbose:
                raise
            print(f"forrestq: {_message(e)}", file=sys.stderr, flush=True)
            raise typer.Exit(exit_code(e)) from None


app = typer.Typer(cls=_Group, add_completion=False, no_args_is_help=True, rich_markup_mode="rich",
                  pretty_exceptions_show_locals=False,  # locals may hold a URL with a password
                  help="forrestq: a Redis worker pool for slow, crashy Python work.")


def _set_verbose(level: int) -> None:
    global _verbose
    _verbose = max(_verbose, level or 0)


@app.callback(epilog="Exit codes: 0 ok, 1 failure reported by the command, 2 bad usage, "
                     "3 server unreachable, 4 wrong password, 5 unknown queue or task.")
def _root(verbose: int = typer.Option(0, "--verbose", "-v", count=True,
                                      help="Show tracebacks of errors.")) -> None:
    """forrestq: a Redis worker pool for slow, crashy Python work.

    Every command takes [bold]--url[/bold]; without it, [bold]$FORRESTQ_URL[/bold], else the embedded local server.
    """
    global _verbose
    _verbose = verbose  # runs first in every invocation: resets what an earlier one set


URL = typer.Option(None, "--url", envvar="FORRESTQ_URL", show_envvar=True,
                   help="Redis URL; default: $FORRESTQ_URL, else the embedded local server.")
VERBOSE = typer.Option(0, "--verbose", "-v", count=True, help="Show tracebacks of errors.")
JSON = typer.Option(False, "--json", help="Print JSON for scripts instead of tables.")
QUEUE = typer.Option(None, "--queue", "-q", help="Only this queue (default: every queue).")

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$", re.I)


def parse_size(text: str) -> int:
    """'2G', '512M', '1.5GiB', '1000000' -> bytes."""
    from .errors import ConfigError

    m = _SIZE.match(str(text))
    if not m:
        raise ConfigError(f"bad size {text!r}: use a number with an optional unit, e.g. 2G or 512M")
    return int(float(m.group(1)) * 1024 ** " kmgt".index((m.group(2) or " ").lower()))


# ------------------------------------------------------------------------------------------ helpers


def _console(stderr: bool = False) -> Any:
    """A rich console on stdout (or stderr), created per call so that it writes wherever sys.stdout
    points now. Not a terminal: no colour and, unless $COLUMNS says otherwise, 160 columns so that
    piped tables keep whole lines."""
    from rich.console import Console

    console = Console(stderr=stderr)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(stderr=stderr, width=160)
    return console


def _client(url: Optional[str]) -> Any:
    from .connection import connect

    return connect(url)


def _where(url: Optional[str]) -> str:
    from .connection import describe, resolve_url

    return describe(resolve_url(url))


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str), flush=True)


def _when(t: Optional[float]) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "-"


def _metadata_text(task: Any, width: int = 40) -> str:
    from .status import short_repr

    try:
        md = task.metadata
    except Exception as e:  # a class not importable here
        return f"<could not load: {type(e).__name__}>"
    return "" if md is None else short_repr(md, width)


def _state_style(state: str) -> str:
    return {"done": "green", "failed": "red", "running": "cyan", "ready": "yellow",
            "waiting": "magenta", "lost": "red", "stopping": "yellow"}.get(state, "")


def _queues_for_ids(r: Any, ids: List[str], queue: Optional[str]) -> dict[str, List[str]]:
    """Group task ids by the queue holding them; UnknownTask for any id not found (before anything
    is changed)."""
    from .status import find_task

    out: dict[str, List[str]] = {}
    for task_id in ids:
        out.setdefault(find_task(r, task_id, queue), []).append(task_id)
    return out


# ------------------------------------------------------------------------------------------- worker


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
    async_concurrency: int = typer.Option(1, help="Coroutine (IO-bound) tasks one child runs at once."),
    secret_file: Optional[str] = typer.Option(None, help="File holding the secret that signs payloads "
                                              "(as $FORRESTQ_SECRET_FILE)."),
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="More output."),
    quiet: bool = typer.Option(False, "--quiet", help="Log nothing per task."),
) -> None:
    """Run tasks of QUEUE(s) in PROCS child processes until SIGTERM/SIGINT.

    Prints one startup line (host, pid, procs, queues, server) and one line per finished task.

    Example: [bold]forrestq worker --procs 8 --queue fits --autokill 600 --max-memory 4G[/bold]
    """
    from .connection import describe, resolve_url
    from .errors import ConfigError
    from .worker import Worker, WorkerConfig

    _set_verbose(verbose)
    if autokill < 0:
        raise ConfigError(f"--autokill must be 0 (never) or a positive number of seconds, not {autokill:g}")
    if grace < 0:
        raise ConfigError(f"--grace must be 0 or more seconds, not {grace:g}")
    if max_tasks_per_child < 0:
        raise ConfigError(f"--max-tasks-per-child must be 0 (never) or more, not {max_tasks_per_child}")
    if secret_file is not None:
        from . import signing

        os.environ.pop("FORRESTQ_SECRET", None)
        os.environ["FORRESTQ_SECRET_FILE"] = secret_file  # children inherit it
        signing.use_environment()
    cfg = WorkerConfig(url=url, queues=list(queue), procs=procs, lease=lease, autokill=autokill,
                       max_memory=parse_size(max_memory) if max_memory else 0, grace=grace,
                       max_tasks_per_child=max_tasks_per_child,
                       max_child_rss=parse_size(max_child_rss) if max_child_rss else 0,
                       logfile=logfile, verbose=-1 if quiet else verbose,
                       async_concurrency=async_concurrency)
    w = Worker(cfg)
    if not quiet:
        from . import signing

        print(f"forrestq worker {w.id}: host {cfg.host}, pid {os.getpid()}, {cfg.procs} procs, "
              f"queues {', '.join(cfg.queues)}, server {describe(resolve_url(url))}, payloads "
              f"{'signed' if signing.check() else 'unsigned'}", file=sys.stderr, flush=True)
    raise typer.Exit(w.run())


# ------------------------------------------------------------------------------------------- status


def render_status(data: dict[str, Any], where: str = "") -> Any:
    """The rich renderable of ``forrestq status`` for the data of :func:`forrestq.status.gather`."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    from .status import human_age, human_bytes

    head = Text.assemble(("forrestq status", "bold"), f"  {where}  " if where else "  ",
                         (_when(data.get("time")), "dim"))
    parts: list[Any] = [head]
    queues = data["queues"]
    if queues:
        qt = Table(title="queues", title_justify="left", title_style="bold")
        qt.add_column("queue", style="bold")
        for col, style in (("waiting", "magenta"), ("ready", "yellow"), ("running", "cyan"),
                           ("done", "green"), ("failed", "red")):
            qt.add_column(col, justify="right", style=style)
        qt.add_column("done/min", justify="right")
        qt.add_column("failed/min", justify="right")
        for name, c in queues.items():
            ready = f"{c['ready']:,}" + (f" ({c['retrying']:,} retrying)" if c.get("retrying") else "")
            qt.add_row(name, f"{c['waiting']:,}", ready,
                       *(f"{c[s]:,}" for s in ("running", "done", "failed")),
                       f"{c['done_per_min']:g}", f"{c['failed_per_min']:g}")
        parts.append(qt)
    else:
        parts.append(Text("no queues yet: schedule tasks with Queue(name).schedule(...)", style="dim"))
    workers = data["workers"]
    if workers:
        wt = Table(title="workers", title_justify="left", title_style="bold")
        for col, justify in (("host", "left"), ("pid", "right"), ("queues", "left"), ("busy", "right"),
                             ("done", "right"), ("failed", "right"), ("memory", "right"),
                             ("heartbeat", "right"), ("state", "left")):
            wt.add_column(col, justify=justify)  # type: ignore[arg-type]
        for w in workers:
            lost = w["state"] == "lost"
            wt.add_row(w["host"], str(w["pid"] or "-"), ",".join(w["queues"]) or "-",
                       "-" if lost else f"{w['busy']}/{w['procs']}",
                       "-" if lost else f"{w['done']:,}", "-" if lost else f"{w['failed']:,}",
                       "-" if lost else human_bytes(w["rss"]), human_age(w["age"]),
                       Text(w["state"], style=_state_style(w["state"])))
        parts.append(wt)
    else:
        parts.append(Text("no workers: start one with `forrestq worker --procs N --queue Q`", style="dim"))
    return Group(*parts)


@app.command()
def status(
    queue: Optional[str] = QUEUE,
    watch: bool = typer.Option(False, "--watch", "-w", help="Refresh in place until Ctrl-C."),
    interval: float = typer.Option(2.0, "--interval", "-n", help="Seconds between refreshes with --watch."),
    count: int = typer.Option(0, "--count", help="With --watch, stop after this many refreshes (0 = until Ctrl-C)."),
    as_json: bool = JSON,
    url: Optional[str] = URL,
    verbose: int = VERBOSE,
) -> None:
    """Tasks per state and per minute for each queue, and the live workers.

    Counts come from counters, so this answers at once with millions of tasks. Workers whose
    heartbeat stopped are shown as [red]lost[/red], and dropped after 5 minutes.

    Examples: [bold]forrestq status[/bold], [bold]forrestq status -q fits --watch[/bold],
    [bold]forrestq status --json | jq .queues.fits.failed[/bold]
    """
    from .errors import ConfigError
    from .status import gather

    _set_verbose(verbose)
    if interval <= 0:
        raise ConfigError(f"--interval must be a positive number of seconds, not {interval:g}")
    if count < 0:
        raise ConfigError(f"--count must be 0 (until Ctrl-C) or more, not {count}")
    r = _client(url)
    where = _where(url)
    data = gather(r, queue)
    if not watch:
        if as_json:
            _print_json(data)
        else:
            _console().print(render_status(data, where))
        return
    shown = 0
    try:
        if as_json:  # one JSON object per line, for scripts that follow a queue
            while True:
                print(json.dumps(data, default=str), flush=True)
                shown += 1
                if count and shown >= count:
                    return
                time.sleep(interval)
                data = gather(r, queue)
        from rich.live import Live

        with Live(render_status(data, where), console=_console(), auto_refresh=False) as live:
            shown = 1
            while not count or shown < count:
                time.sleep(interval)
                data = gather(r, queue)
                live.update(render_status(data, where), refresh=True)
                shown += 1
    except KeyboardInterrupt:
        pass


# -------------------------------------------------------------------------------------------- tasks


def _task_json(task: Any) -> dict[str, Any]:
    return {"id": task.id, "queue": task.queue, "state": task.state, "function": task.name,
            "metadata": _metadata_text(task, 200), "runtime": task.runtime, "host": task.host,
            "attempts": task.attempts, "reason": task.reason, "upstream": task.upstream,
            "created": task.created, "started": task.started, "finished": task.finished}


@app.command()
def tasks(
    queue: Optional[str] = QUEUE,
    state: Optional[str] = typer.Option(None, "--state", "-s",
                                        help="waiting, ready, running, done or failed (default: all)."),
    limit: int = typer.Option(20, "--limit", "-n", help="Show at most this many tasks."),
    as_json: bool = JSON,
    url: Optional[str] = URL,
    verbose: int = VERBOSE,
) -> None:
    """List tasks: id, state, function, metadata, runtime, host and the error in one line.

    Unfinished tasks come oldest first, done and failed ones most recent first.

    Examples: [bold]forrestq tasks --state failed[/bold], [bold]forrestq tasks -q fits -s running --json[/bold]
    """
    from rich.table import Table
    from rich.text import Text

    from .errors import ConfigError
    from .status import LISTED_STATES, human_duration, list_tasks, resolve_queues

    _set_verbose(verbose)
    if state is not None and state not in LISTED_STATES:
        raise ConfigError(f"bad --state {state!r}: use one of {', '.join(LISTED_STATES)}")
    if limit < 0:
        raise ConfigError(f"--limit must be 0 or more, not {limit}")
    r = _client(url)
    found: list[Any] = []
    partial = False
    for name in resolve_queues(r, queue):
        got, more = list_tasks(r, name, state, limit - len(found))
        found += got
        partial |= more
        if len(found) >= limit:
            break
    if as_json:
        _print_json([_task_json(t) for t in found])
        return
    console = _console()
    if not found:
        console.print(f"no {state + ' ' if state else ''}tasks" + (f" in queue {queue!r}" if queue else ""))
        return
    table = Table()
    table.add_column("id", no_wrap=True, min_width=13)
    if queue is None:
        table.add_column("queue")
    table.add_column("state")
    table.add_column("function")
    table.add_column("metadata", max_width=40)
    table.add_column("runtime", justify="right")
    table.add_column("host")
    table.add_column("error", overflow="ellipsis", no_wrap=True, max_width=60)
    for t in found:
        row = [t.id] + ([t.queue] if queue is None else [])
        row += [Text(t.state, style=_state_style(t.state)), t.name, _metadata_text(t),
                human_duration(t.runtime), t.host or "-", Text(t.reason.splitlines()[0] if t.reason else "",
                                                               style="red")]
        table.add_row(*row)
    console.print(table)
    if partial:
        console.print(f"[dim]only the oldest unfinished tasks were searched for state {state!r}[/dim]")


# --------------------------------------------------------------------------------------------- show


@app.command()
def show(
    task_id: str = typer.Argument(..., help="The task's id (from `forrestq tasks`, or TaskRef.id)."),
    queue: Optional[str] = typer.Option(None, "--queue", "-q", help="The task's queue (default: search every queue)."),
    lines: int = typer.Option(40, "--lines", "-n", help="Lines of captured output to show."),
    as_json: bool = JSON,
    url: Optional[str] = URL,
    verbose: int = VERBOSE,
) -> None:
    """Everything about one task: call, state history, attempts, host, runtime, metadata, output, traceback.

    Example: [bold]forrestq show n3q3jdvrdssa0[/bold]
    """
    from rich.panel import Panel
    from rich.syntax import Syntax
    from rich.table import Table
    from rich.text import Text

    from .queue import Queue
    from .status import find_task, human_duration, short_repr, summarize_call, task_history

    _set_verbose(verbose)
    r = _client(url)
    name = find_task(r, task_id, queue)
    task = Queue(name, url).get(task_id)
    call = summarize_call(r, task)
    history = task_history(task)
    try:
        metadata = short_repr(task.metadata, 400)
    except Exception as e:
        metadata = f"<could not load: {type(e).__name__}: {e}>"
    output_lines = task.output.splitlines()[-lines:] if lines > 0 else []
    if as_json:
        _print_json({**_task_json(task), "metadata": metadata, "call": call, "inputs": task.inputs,
                     "history": [{"time": t, "state": s, "host": h} for t, s, h in history],
                     "output": "\n".join(output_lines), "traceback": task.traceback})
        return
    console = _console()
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row("task", f"{task.id}  (queue {task.queue}{', root' if task.root else ''})")
    grid.add_row("call", Text(call))
    grid.add_row("state", Text(task.state, style=_state_style(task.state)))
    grid.add_row("attempts", str(task.attempts) + (f" (last lost on {task.lost_on})" if task.lost_on else ""))
    grid.add_row("host", task.host or "-")
    grid.add_row("created", _when(task.created))
    grid.add_row("started", _when(task.started))
    grid.add_row("finished", _when(task.finished))
    grid.add_row("runtime", human_duration(task.runtime))
    grid.add_row("metadata", Text(metadata))
    if task.key:
        grid.add_row("key", task.key)
    grid.add_row("inputs", ", ".join(task.inputs) or "-")
    if task.upstream:
        grid.add_row("upstream", f"{task.upstream}  (forrestq show {task.upstream})")
    if task.reason:
        grid.add_row("reason", Text(task.reason, style="red"))
    if history:
        grid.add_row("history", "\n".join(f"{_when(t)}  {s}{'  on ' + h if h else ''}" for t, s, h in history))
    console.print(grid)
    if output_lines:
        total = len(task.output.splitlines())
        title = f"output (last {len(output_lines)} of {total} lines)" if total > len(output_lines) else "output"
        console.print(Panel(Text("\n".join(output_lines)), title=title, title_align="left", expand=False))
    if task.traceback:
        console.print(Panel(Syntax(task.traceback.rstrip(), "pytb", theme="ansi_dark", word_wrap=True),
                            title="traceback", title_align="left", border_style="red", expand=False))


# ------------------------------------------------------------------------------------------- server


@app.command()
def server(
    port: int = typer.Option(6379, "--port", help="TCP port to listen on."),
    bind: str = typer.Option("127.0.0.1", "--bind", help="Address to listen on; 0.0.0.0 for other machines (needs a password)."),
    password_file: Optional[Path] = typer.Option(None, "--password-file", help="File holding the password (first line)."),
    data: Optional[Path] = typer.Option(None, "--data", help="Data directory (default: DATA_DIR/server-PORT)."),
    stop: bool = typer.Option(False, "--stop", help="Stop the background server the library started on demand."),
    info: bool = typer.Option(False, "--info", help="Say where the background server runs and keeps its data."),
    as_json: bool = typer.Option(False, "--json", help="With --info or --stop: print JSON."),
    verbose: int = VERBOSE,
) -> None:
    """Run the embedded Redis-compatible server in the foreground until Ctrl-C.

    Prints the [bold]FORRESTQ_URL[/bold] other machines should use. Listening beyond localhost needs a password.

    Examples: [bold]forrestq server --bind 0.0.0.0 --password-file ~/.forrestq-pass[/bold],
    [bold]forrestq server --info[/bold], [bold]forrestq server --stop[/bold]
    """
    from .connection import mask
    from .errors import ConfigError
    from .server import data_dir, local_server_info, serve_foreground, stop_local_server

    _set_verbose(verbose)
    if stop and info:
        raise ConfigError("--stop and --info do not go together")
    if stop:
        stopped = stop_local_server()
        if as_json:
            _print_json({"stopped": stopped, "data_dir": str(data_dir())})
        else:
            print("stopped the local server" if stopped else f"no local server was running (data in {data_dir()})")
        return
    if info:
        record = local_server_info()
        if record is not None:
            record = {**record, "url": mask(record["url"])}
        if as_json:
            _print_json(record or {"running": False, "data_dir": str(data_dir())})
        elif record is None:
            print(f"no local server was started yet; it will keep its data in {data_dir()}")
        else:
            state = "running" if record["running"] else "not running"
            print(f"local server: {state}, pid {record['pid']}, url {record['url']}\n"
                  f"data in {record['data_dir']}\nlog {record['log']}\nbinary {record.get('binary', '-')}")
        return
    if not 1 <= port <= 65535:
        raise ConfigError(f"--port must be from 1 to 65535, not {port}")
    password = None
    if password_file is not None:
        try:
            password = password_file.expanduser().read_text().splitlines()[0].strip()
        except (OSError, IndexError) as e:
            why = "it is empty" if isinstance(e, IndexError) else (e.strerror or str(e))
            raise ConfigError(f"cannot read the password from {password_file}: {why}") from None
        if not password:
            raise ConfigError(f"cannot read the password from {password_file}: its first line is empty")
    raise typer.Exit(serve_foreground(port=port, bind=bind, password=password, data=data))


# ------------------------------------------------------------------------------------------ requeue


@app.command()
def requeue(
    failed: bool = typer.Option(False, "--failed", help="Requeue failed tasks (required: only those can be)."),
    queue: Optional[str] = QUEUE,
    ids: Optional[List[str]] = typer.Option(None, "--id", help="Only this task (repeatable)."),
    error_type: Optional[str] = typer.Option(None, "--error-type", help="Only tasks that failed with this exception type, e.g. MemoryError."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Say what would be requeued; change nothing."),
    as_json: bool = JSON,
    url: Optional[str] = URL,
    verbose: int = VERBOSE,
) -> None:
    """Put failed tasks back on their queue, with the dependents that failed because of them.

    Examples: [bold]forrestq requeue --failed[/bold], [bold]forrestq requeue --failed -q fits --error-type MemoryError --dry-run[/bold]
    """
    from .errors import ConfigError
    from .queue import Queue
    from .status import resolve_queues

    _set_verbose(verbose)
    if not failed:
        raise ConfigError("say what to requeue: --failed (only failed tasks can be requeued)")
    r = _client(url)
    if ids:
        plan: dict[str, Optional[List[str]]] = dict(_queues_for_ids(r, list(ids), queue))
    else:
        plan = {name: None for name in resolve_queues(r, queue)}
    done: dict[str, List[str]] = {}
    for name, only in plan.items():
        done[name] = list(Queue(name, url).requeue_failed(ids=only, error_type=error_type, dry_run=dry_run))
    total = sum(len(v) for v in done.values())
    if as_json:
        _print_json({"dry_run": dry_run, "count": total, "queues": done})
        return
    verb = "would requeue" if dry_run else "requeued"
    detail = ", ".join(f"{len(v)} in {k}" for k, v in done.items() if v)
    print(f"{verb} {total} task(s)" + (f" ({detail})" if detail else ""))


# ---------------------------------------------------------------------------------------------- run


@app.command()
def run(
    task_id: str = typer.Argument(..., help="The task to run here."),
    queue: Optional[str] = typer.Option(None, "--queue", "-q", help="The task's queue (default: search every queue)."),
    raise_: bool = typer.Option(False, "--raise", "-r", help="Re-raise the task's exception here (exit non-zero with its traceback)."),
    pdb: bool = typer.Option(False, "--pdb", help="Start pdb post-mortem where the task failed."),
    record: bool = typer.Option(False, "--record", help="Record the outcome as the task's result (default: change nothing)."),
    url: Optional[str] = URL,
    verbose: int = VERBOSE,
) -> None:
    """Run one task in this terminal with its real inputs from Redis, to debug it by hand.

    Its recorded state does not change unless [bold]--record[/bold] is given. Prints the return value,
    or the traceback (exit code 1).

    Examples: [bold]forrestq run n3q3jdvrdssa0 --pdb[/bold], [bold]forrestq run n3q3jdvrdssa0 --raise[/bold]
    """
    from rich.pretty import Pretty

    from .errors import ConfigError
    from .queue import Queue
    from .status import find_task

    _set_verbose(verbose)
    if raise_ and pdb:
        raise ConfigError("--raise and --pdb do not go together")
    r = _client(url)
    name = find_task(r, task_id, queue)
    outcome = Queue(name, url).run_here(task_id, record=record)
    exc = getattr(outcome, "errorvalue", None)
    if exc is None:
        _console().print(Pretty(getattr(outcome, "returnvalue", None)))
        return
    if raise_:
        _passthrough.add(id(exc))
        raise exc
    tb_text = getattr(outcome, "traceback", "") or ""
    if not tb_text:
        import traceback

        tb_text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    err = _console(stderr=True)
    from rich.syntax import Syntax

    err.print(Syntax(tb_text.rstrip(), "pytb", theme="ansi_dark", word_wrap=True))
    if pdb:
        import pdb as pdb_module

        if exc.__traceback__ is None:
            err.print("forrestq: the exception has no traceback to debug")
        else:
            pdb_module.post_mortem(exc.__traceback__)
    raise typer.Exit(EXIT_FAILURE)


# -------------------------------------------------------------------------------------------- clean


@app.command()
def clean(
    queue: Optional[str] = QUEUE,
    done: bool = typer.Option(False, "--done", help="Delete done tasks."),
    failed: bool = typer.Option(False, "--failed", help="Delete failed tasks."),
    all_: bool = typer.Option(False, "--all", help="Delete every task that is not running (the queue's backlog too)."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    as_json: bool = JSON,
    url: Optional[str] = URL,
    verbose: int = VERBOSE,
) -> None:
    """Delete tasks; asks first unless [bold]--yes[/bold]. Running tasks are never deleted.

    Examples: [bold]forrestq clean --done --yes[/bold], [bold]forrestq clean -q fits --all[/bold]
    """
    from .errors import ConfigError
    from .queue import Queue
    from .status import queue_status, resolve_queues

    _set_verbose(verbose)
    if not (done or failed or all_):
        raise ConfigError("say what to delete: --done, --failed or --all")
    r = _client(url)
    names = resolve_queues(r, queue)
    counts = queue_status(r, names)
    states = ("waiting", "ready", "done", "failed") if all_ else tuple(
        s for s, on in (("done", done), ("failed", failed)) if on)
    planned = sum(c[s] for c in counts.values() for s in states)
    what = "every task that is not running" if all_ else " and ".join(f"{s} tasks" for s in states)
    where = f"queue {queue}" if queue else f"{len(names)} queue(s)"
    if not yes and planned:
        typer.confirm(f"delete {what} ({planned:,}) from {where}?", abort=True, err=True)
    deleted = {name: int(Queue(name, url).clean(done=done, failed=failed, all=all_)) for name in names}
    total = sum(deleted.values())
    if as_json:
        _print_json({"deleted": total, "queues": deleted})
    else:
        print(f"deleted {total:,} task(s) from {where}")


# ------------------------------------------------------------------------------------------- cancel


@app.command()
def cancel(
    task_ids: Optional[List[str]] = typer.Argument(None, help="Tasks to cancel."),
    queue: Optional[str] = typer.Option(None, "--queue", "-q", help="The tasks' queue (needed with --all)."),
    all_: bool = typer.Option(False, "--all", help="Cancel every unfinished task of --queue."),
    as_json: bool = JSON,
    url: Optional[str] = URL,
    verbose: int = VERBOSE,
) -> None:
    """Cancel tasks: queued ones are removed, running ones killed; they end failed with reason "cancelled".

    Examples: [bold]forrestq cancel n3q3jdvrdssa0[/bold], [bold]forrestq cancel -q fits --all[/bold]
    """
    from .errors import ConfigError
    from .queue import Queue

    _set_verbose(verbose)
    if all_ and task_ids:
        raise ConfigError("give task ids or --all, not both")
    if all_ and not queue:
        raise ConfigError("--all needs --queue: say which queue to cancel")
    if not all_ and not task_ids:
        raise ConfigError("say what to cancel: task ids, or --queue Q --all")
    r = _client(url)
    if all_:
        from .status import resolve_queues

        resolve_queues(r, queue)
        cancelled = {queue: list(Queue(queue, url).cancel(all=True))}  # type: ignore[arg-type]
    else:
        plan = _queues_for_ids(r, list(task_ids or []), queue)
        cancelled = {name: list(Queue(name, url).cancel(ids=only)) for name, only in plan.items()}
    total = sum(len(v) for v in cancelled.values())
    if as_json:
        _print_json({"cancelled": total, "queues": cancelled})
    else:
        print(f"cancelled {total} task(s)")


# --------------------------------------------------------------------------------------------- main


def main(argv: Optional[List[str]] = None) -> None:
    """Entry point: run the app, turning forrestq errors into one line on stderr and an exit code
    (the commands already do; this also covers errors raised outside them). With ``-v`` the
    traceback is printed first; the exit code stays the same."""
    import traceback

    import redis

    args = list(sys.argv[1:] if argv is None else argv)
    try:
        app(args=args, prog_name="forrestq")
    except (ForrestqError, redis.ConnectionError, redis.TimeoutError) as e:
        if id(e) in _passthrough:  # run --raise: the task's own exception, with its traceback
            raise
        if _verbose or any(re.fullmatch(r"-v+|--verbose", a) for a in args):
            traceback.print_exception(type(e), e, e.__traceback__)
        print(f"forrestq: {_message(e)}", file=sys.stderr)
        sys.exit(exit_code(e))
