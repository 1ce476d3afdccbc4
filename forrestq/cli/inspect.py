"""The commands that only read: ``forrestq status``, ``forrestq tasks``, ``forrestq show``,
``forrestq events`` and ``forrestq stats``.

Each gathers plain data with :mod:`forrestq.status` (and :class:`forrestq.Queue` for one task) and
hands it to :mod:`forrestq.cli.render` or prints it as JSON.
"""
from __future__ import annotations

import os
import re
import sys
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

import typer

from .. import schema
from ..errors import ConfigError
from ..schema import QueueKeys
from ..status import (
    LISTED_STATES,
    find_task,
    gather,
    list_tasks_of,
    resolve_queues,
    short_repr,
    summarize_call,
    task_history,
)
from .common import JSON, QUEUE, URL, VERBOSE, client, queue_option, set_verbose, where
from .render import (
    environment_text,
    event_line,
    make_console,
    print_json,
    print_json_line,
    render_status,
    show_json,
    stats_view,
    task_detail,
    task_json,
    tasks_view,
)

if TYPE_CHECKING:
    import redis

    from ..task import Task

__all__ = ["events", "show", "stats", "status", "tasks"]

# The commands import what only they use (the queue facade, events, rich's Live) inside: a command
# imports its own needs, not every command's (forrestq status is started often, by scripts too).

# ------------------------------------------------------------------------------------------- status


def _watch_json(r: redis.Redis, queue: str | None, data: dict[str, Any], interval: float, count: int) -> None:
    """One JSON object per line, for scripts that follow a queue."""
    shown = 0
    while True:
        print_json_line(data)
        shown += 1
        if count and shown >= count:
            return
        time.sleep(interval)
        data = gather(r, queue)


def _watch_live(r: redis.Redis, queue: str | None, data: dict[str, Any], interval: float, count: int,
                server: str) -> None:
    """The status view, refreshed in place."""
    from rich.live import Live

    with Live(render_status(data, server), console=make_console(), auto_refresh=False) as live:
        shown = 1
        while not count or shown < count:
            time.sleep(interval)
            data = gather(r, queue)
            live.update(render_status(data, server), refresh=True)
            shown += 1


def status(
    queue: str | None = QUEUE,
    watch: bool = typer.Option(False, "--watch", "-w", help="Refresh in place until Ctrl-C."),
    interval: float = typer.Option(2.0, "--interval", "-n", metavar="SECONDS",
                                   help="Seconds between refreshes with --watch."),
    count: int = typer.Option(0, "--count", metavar="N",
                              help="With --watch, stop after this many refreshes (0 = until Ctrl-C)."),
    as_json: bool = JSON,
    url: str | None = URL,
    verbose: int = VERBOSE,
) -> None:
    """Tasks per state and per minute for each queue, and the live workers.

    Counts come from counters, so this answers at once with millions of tasks. The state columns
    count DAG nodes (one per deferred call), [bold]scheduled[/bold] the tasks users scheduled (roots).
    A queue with unfinished tasks and no live worker serving it is flagged. Workers whose heartbeat
    stopped are shown as [red]lost[/red], and dropped after 5 minutes; a worker that stopped claiming
    (its secret differs) as [red]refusing[/red], with its reason.

    Examples: [bold]forrestq status[/bold], [bold]forrestq status -q fits --watch[/bold],
    [bold]forrestq status --json | jq .queues.fits.failed[/bold]
    """
    set_verbose(verbose)
    if interval <= 0:
        raise ConfigError(f"--interval must be a positive number of seconds, not {interval:g}")
    if count < 0:
        raise ConfigError(f"--count must be 0 (until Ctrl-C) or more, not {count}")
    r = client(url)
    server = where(url)
    data = gather(r, queue)
    if not watch:
        if as_json:
            print_json(data)
        else:
            make_console().print(render_status(data, server))
        return
    try:
        if as_json:
            _watch_json(r, queue, data, interval, count)
        else:
            _watch_live(r, queue, data, interval, count, server)
    except KeyboardInterrupt:
        pass


# -------------------------------------------------------------------------------------------- tasks


def tasks(
    queue: str | None = QUEUE,
    state: str | None = typer.Option(None, "--state", "-s", metavar="STATE",
                                     help="waiting, scheduled, ready, running, done or failed (default: all)."),
    limit: int = typer.Option(20, "--limit", "-n", metavar="N", help="Show at most this many tasks."),
    as_json: bool = JSON,
    url: str | None = URL,
    verbose: int = VERBOSE,
) -> None:
    """List tasks: id, state, function, metadata, runtime, host and the error in one line.

    Unfinished tasks come oldest first, done and failed ones most recent first.

    Examples: [bold]forrestq tasks --state failed[/bold], [bold]forrestq tasks -q fits -s running --json[/bold]
    """
    set_verbose(verbose)
    if state is not None and state not in LISTED_STATES:
        raise ConfigError(f"bad --state {state!r}: use one of {', '.join(LISTED_STATES)}")
    if limit < 0:
        raise ConfigError(f"--limit must be 0 or more, not {limit}")
    r = client(url)
    found, partial = list_tasks_of(r, resolve_queues(r, queue), state, limit)
    if as_json:
        print_json([task_json(t) for t in found])
    else:
        make_console().print(tasks_view(found, queue, state, partial))


# --------------------------------------------------------------------------------------------- show


def _metadata(task: Task) -> str:
    try:
        return short_repr(task.metadata, 400)
    except Exception as e:  # any unpickling failure (a class not importable here)
        return f"<could not load: {type(e).__name__}: {e}>"


def show(
    task_id: str = typer.Argument(..., help="The task's id (from `forrestq tasks`, or TaskRef.id)."),
    queue: str | None = queue_option("The task's queue (default: search every queue)."),
    lines: int = typer.Option(40, "--lines", "-n", metavar="N", help="Lines of captured output to show."),
    as_json: bool = JSON,
    url: str | None = URL,
    verbose: int = VERBOSE,
) -> None:
    """Everything about one task: call, state history, attempts, host, runtime, metadata, output, traceback.

    Example: [bold]forrestq show n3q3jdvrdssa0[/bold]
    """
    from .. import environment
    from ..queue import Queue

    set_verbose(verbose)
    r = client(url)
    task = Queue(find_task(r, task_id, queue), url).get(task_id)
    if task.state == schema.SCHEDULED:  # its due time: a retry's backoff is only in the delayed zset
        task.due = r.zscore(QueueKeys(task.queue).delayed, task.id) or task.due
    call = summarize_call(r, task)
    history = task_history(task)
    metadata = _metadata(task)
    output_lines = task.output.splitlines()[-lines:] if lines > 0 else []
    env = environment.of_worker(r, task.worker)
    if as_json:
        print_json(show_json(task, call, history, output_lines, env))
    else:
        make_console().print(task_detail(task, call, history, metadata, output_lines,
                                         environment_text(env, task.worker)))


# -------------------------------------------------------------------------------------------- stats


def stats(
    queue: str | None = QUEUE,
    as_json: bool = JSON,
    url: str | None = URL,
    verbose: int = VERBOSE,
) -> None:
    """Per function: runs, failed %, p50/p95 runtime, p95 peak memory and the hosts that ran it.

    Kept as tasks end (no scan of the tasks; they survive [bold]forrestq clean --done[/bold]).
    Runs and failed count every end since the queue began; the runtimes, peak memory and hosts are
    over the last 1,000 measured runs of each function.

    Examples: [bold]forrestq stats[/bold], [bold]forrestq stats -q fits --json[/bold]
    """
    from ..stats import read as read_stats

    set_verbose(verbose)
    r = client(url)
    found = [st for name in resolve_queues(r, queue) for st in read_stats(r, QueueKeys(name)).values()]
    if as_json:
        print_json([st.as_json() for st in found])
    else:
        make_console().print(stats_view(found, queue))


# ------------------------------------------------------------------------------------------- events

_AGO = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration_value(text: str, option: str) -> float:
    """A duration such as ``30m``, ``2h``, ``7d`` or ``90s`` (the units of ``--since``) in seconds;
    ConfigError (exit 2) otherwise."""
    ago = _AGO.fullmatch(text)
    if not ago:
        raise ConfigError(f"bad {option} {text!r}: use a number and a unit, like 90s, 30m, 2h or 7d")
    return float(ago.group(1)) * _UNIT[ago.group(2)]


def since_value(text: str | None) -> Any:
    """``--since``: ``10m``/``2h``/``30s``/``1d`` ago, ``now``, an event id (``--json``'s ``id``) or
    an ISO date and time, as :func:`forrestq.events.start_id` takes it."""
    if text is None:
        return None
    ago = _AGO.fullmatch(text)
    if ago:
        return time.time() - float(ago.group(1)) * _UNIT[ago.group(2)]
    if text == "now" or re.fullmatch(r"\d+(-\d+)?", text):
        return text
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"bad --since {text!r}: use 10m, 2h, 1d, now, an event id or an ISO time "
                          "(2026-12-01T13:50)") from None


def _say(text: str) -> None:
    print(f"forrestq: {text}", file=sys.stderr, flush=True)


def events(
    queue: str = queue_option("The queue (default: default)."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Go on with new events as they happen."),
    since: str | None = typer.Option(None, "--since", metavar="WHEN",
                                     help="Only events after this: 10m, 2h, 1d ago, now, an event id or an ISO time."),
    timeout: float | None = typer.Option(None, "--timeout", metavar="SECONDS",
                                         help="With --follow, stop after this many seconds without an event."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per event and line."),
    url: str | None = URL,
    verbose: int = VERBOSE,
) -> None:
    """The history of a queue's tasks, one line per event, oldest first.

    Kinds: scheduled, started, done, failed, retried, lost, released, requeued, cancelled; with the
    host, the attempt and the reason. [bold]--follow[/bold] then waits for new ones.

    Examples: [bold]forrestq events -q fits[/bold], [bold]forrestq events -q fits -f >> fits.log[/bold],
    [bold]forrestq events --since 1h --json | jq -c 'select(.kind == "failed")'[/bold]
    """
    from .. import events as event_stream
    from ..queue import Queue

    set_verbose(verbose)
    name = queue or "default"
    r = client(url)
    start = since_value(since)
    if timeout is not None and timeout < 0:
        raise ConfigError(f"--timeout must be 0 or more seconds, not {timeout:g}")
    if not follow:
        resolve_queues(r, name)  # UnknownQueue (exit 5) for a queue never scheduled
    q = Queue(name, url)
    if not event_stream.cap(r, q.keys):
        _say(f"queue {name!r} keeps no events: they are opt-in, Queue({name!r}, events=True) turns them on")
    elif follow and not r.sismember(schema.QUEUES, name):
        _say(f"queue {name!r} was never scheduled; waiting for its events")
    try:
        for ev in q.events(since=start, follow=follow, timeout=timeout):
            if as_json:
                print_json_line(ev.as_json())
            else:
                print(event_line(ev), flush=True)
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:  # forrestq events | head: the reader left
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
