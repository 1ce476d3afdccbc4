"""``forrestq limit set|rate|rm|list``: concurrency and rate limits by key of a queue (issue 16,
``Queue.set_limit``/``set_rate``). Keys are user text: shown literally."""
from __future__ import annotations

import typer
from rich.table import Table

from .. import limits as lim_mod
from ..limits import listing, remove, set_limit, set_rate
from ..schema import QueueKeys
from ..status import resolve_queues
from .common import JSON, URL, VERBOSE, Command, PlainHelp, client, queue_option, set_verbose
from .render import limit_text, literal, make_console, print_json

__all__ = ["app"]

app = typer.Typer(cls=PlainHelp, no_args_is_help=True, rich_markup_mode="rich",
                  help="Concurrency and rate limits by key (schedule(..., limits=[KEY])): set, rate, rm, list.")
_KEY = typer.Argument(..., metavar="KEY", help="The limit key (schedule(..., limits=[KEY])).")
_QUEUE = queue_option("The queue (default: default).")


@app.command("set", cls=Command)
def set_(key: str = _KEY, most: int = typer.Argument(..., metavar="N", help="Tasks holding KEY that may run at once."),
         queue: str | None = _QUEUE, url: str | None = URL, verbose: int = VERBOSE) -> None:
    """At most N tasks holding KEY run at once, across every worker and host.

    Example: [bold]forrestq limit set nfs 4 -q fits[/bold]
    """
    set_verbose(verbose)
    name = queue or "default"
    set_limit(client(url), QueueKeys(name), key, most)
    make_console().print(literal(f"limit {key} of queue {name}: at most {most} running at once"))


@app.command("rate", cls=Command)
def rate(key: str = _KEY, starts: int = typer.Argument(..., metavar="N", help="Starts allowed per window."),
         per: float = typer.Option(1.0, "--per", metavar="S", help="The window, in seconds."),
         queue: str | None = _QUEUE, url: str | None = URL, verbose: int = VERBOSE) -> None:
    """At most N tasks holding KEY start per S seconds, across every worker and host.

    Example: [bold]forrestq limit rate api 10 --per 1 -q fits[/bold]
    """
    set_verbose(verbose)
    name = queue or "default"
    set_rate(client(url), QueueKeys(name), key, starts, per)
    make_console().print(literal(f"rate {key} of queue {name}: at most {starts} starts per {per:g} s"))


@app.command("rm", cls=Command)
def rm(key: str = _KEY, queue: str | None = _QUEUE, url: str | None = URL, verbose: int = VERBOSE) -> None:
    """Drop KEY's limit and rate (its tasks then start unconstrained); an unknown KEY exits 5."""
    set_verbose(verbose)
    name = queue or "default"
    remove(client(url), QueueKeys(name), key)
    make_console().print(literal(f"removed limit {key} of queue {name}"))


@app.command("list", cls=Command)
def list_(queue: str | None = queue_option("Only this queue (default: every queue)."), as_json: bool = JSON,
          url: str | None = URL, verbose: int = VERBOSE) -> None:
    """Each limit key: its limit and rate, holders running now, recent starts, tasks waiting for it."""
    set_verbose(verbose)
    r = client(url)
    found = [(q, as_json_row) for q in ([queue] if queue else resolve_queues(r, None))
             for as_json_row in (lim_mod.as_json(lim) for lim in listing(r, QueueKeys(q)))]
    if as_json:
        print_json([{"queue": q, **row} for q, row in found])
    elif not found:
        print("no limit or rate" + (f" in queue {queue!r}" if queue else ""))
    else:
        table = Table(title="limits", title_justify="left")
        for col in ("queue", "key", "limit", "rate", "now"):
            table.add_column(col)
        for q, row in found:
            rate_text = f"{row['rate'][0]}/{row['rate'][1]:g} s" if row["rate"] else ""
            table.add_row(literal(q), literal(row["key"]), str(row["limit"] or ""), rate_text, limit_text(row))
        make_console().print(table)
