"""``forrestq periodic list|pause|resume|remove``: the periodic schedules ``Queue.every``/``Queue.cron`` keep
in Redis (issue 16). Names, functions and cron expressions are user text: shown literally."""
from __future__ import annotations

import time
from typing import Any

import typer
from rich.table import Table

from ..errors import UnknownSchedule
from ..periodic import Periodic, check_schedule_name, listing, pause, remove, resume
from ..queue import Queue
from ..schema import QueueKeys
from ..status import human_duration, periodic_row, resolve_queues
from .common import JSON, URL, VERBOSE, Command, PlainHelp, client, queue_option, set_verbose
from .render import literal, make_console, print_json, when

__all__ = ["app", "periodic_json", "periodic_table"]

app = typer.Typer(cls=PlainHelp, no_args_is_help=True, rich_markup_mode="rich",
                  help="Periodic schedules (Queue.every / Queue.cron): list, pause, resume, remove.")
_NAME = typer.Argument(..., metavar="NAME", help="The schedule's key (every(..., key=NAME)).")
_QUEUE = queue_option("The schedule's queue (default: the one queue holding NAME).")


def timing(p: Periodic) -> str:
    """``every 30 s`` or ``cron 0 3 * * * (Europe/Paris)``."""
    if p.every is not None:
        return f"every {p.every:g} s"
    return f"cron {p.cron}" + (f" ({p.tz})" if p.tz else " (UTC)")


def periodic_json(queue: str, p: Periodic) -> dict[str, Any]:
    return {"queue": queue, **periodic_row(p)}


def periodic_table(found: list[tuple[str, Periodic]], now: float) -> Table:
    """One row per schedule: queue, name, timing, next due (and in how long), function, runs, last task."""
    table = Table(title="periodic schedules", title_justify="left")
    for col in ("queue", "name", "timing", "next due", "function", "runs", "last task"):
        table.add_column(col)
    for queue, p in found:
        due = "paused" if p.paused or p.next_due is None else \
            f"{when(p.next_due)} (in {human_duration(max(0.0, p.next_due - now))})"
        table.add_row(literal(queue), literal(p.name), literal(timing(p)), literal(due), literal(p.function),
                      str(p.runs), literal(p.last_task or "-"))
    return table


def _holder(url: str | None, name: str, queue: str | None) -> Queue:
    """The queue holding schedule ``name`` (only ``queue`` if given): UnknownSchedule (exit 5) if none."""
    check_schedule_name(name)
    r = client(url)
    names = resolve_queues(r, queue)
    for q in names:
        if r.exists(QueueKeys(q).schedule(name)):
            return Queue(q, url)
    where = f"queue {queue!r}" if queue else f"any of {len(names)} queue(s)"
    raise UnknownSchedule(f"no periodic schedule {name!r} in {where} (forrestq periodic list shows them)")


@app.command("list", cls=Command)
def list_(queue: str | None = queue_option("Only this queue (default: every queue)."), as_json: bool = JSON,
          url: str | None = URL, verbose: int = VERBOSE) -> None:
    """The periodic schedules: timing, next due time, function, runs so far, last task.

    Example: [bold]forrestq periodic list -q fits[/bold]
    """
    set_verbose(verbose)
    r = client(url)
    found = [(q, p) for q in resolve_queues(r, queue) for p in listing(r, QueueKeys(q))]
    if as_json:
        print_json([periodic_json(q, p) for q, p in found])
    elif not found:
        print("no periodic schedule" + (f" in queue {queue!r}" if queue else ""))
    else:
        make_console().print(periodic_table(found, time.time()))


def _change(action: str, name: str, queue: str | None, url: str | None, as_json: bool) -> None:
    q = _holder(url, name, queue)
    if action == "remove":
        remove(q.core, name)
        p = None
    else:
        p = (pause if action == "pause" else resume)(q.core, name)
    if as_json:
        print_json({"queue": q.name, "name": name, "action": action,
                    "schedule": periodic_json(q.name, p) if p else None})
    else:
        done = {"pause": "paused", "resume": "resumed", "remove": "removed"}[action]
        make_console().print(literal(f"{done} periodic schedule {name} of queue {q.name}"))


@app.command("pause", cls=Command)
def pause_(name: str = _NAME, queue: str | None = _QUEUE, as_json: bool = JSON, url: str | None = URL,
           verbose: int = VERBOSE) -> None:
    """Make no more tasks for schedule NAME until it is resumed."""
    set_verbose(verbose)
    _change("pause", name, queue, url, as_json)


@app.command("resume", cls=Command)
def resume_(name: str = _NAME, queue: str | None = _QUEUE, as_json: bool = JSON, url: str | None = URL,
            verbose: int = VERBOSE) -> None:
    """Make tasks for schedule NAME again, from its first due time after now (missed ticks are skipped)."""
    set_verbose(verbose)
    _change("resume", name, queue, url, as_json)


@app.command("remove", cls=Command)
def remove_(name: str = _NAME, queue: str | None = _QUEUE, as_json: bool = JSON, url: str | None = URL,
            verbose: int = VERBOSE) -> None:
    """Delete schedule NAME (the tasks it made stay)."""
    set_verbose(verbose)
    _change("remove", name, queue, url, as_json)
