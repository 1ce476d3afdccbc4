"""The commands that change tasks: ``requeue``, ``clean`` and ``cancel``, and ``run`` (one task in
this terminal, to debug it). Each checks every id it was given before it changes anything, and says
why nothing happened to a task it was given but left alone (``--json``: ``skipped``), or why it
found nothing to do at all (``--json``: ``reason``)."""
from __future__ import annotations

import pdb as pdb_module
import sys
import traceback
from collections.abc import Callable

import redis
import typer
from rich.console import Console

from ..errors import ConfigError
from ..producer import error_type as error_type_of
from ..queue import Queue
from ..status import find_task, queue_status, queues_of, records, resolve_queues, why_not_cancelled, why_not_requeued
from ..task import Task
from .common import EXIT_FAILURE, JSON, QUEUE, STATE, URL, VERBOSE, client, queue_option, set_verbose
from .inspect import duration_value
from .render import make_console, print_json, traceback_view, value_view

__all__ = ["cancel", "clean", "requeue", "run"]

_IDS = typer.Option(None, "--id", metavar="ID", help="Only this task (repeatable).")
_TASK_IDS = typer.Argument(None, metavar="TASK_ID...", help="Tasks to cancel.")


def _skipped(r: redis.Redis, plan: dict[str, list[str]], changed: dict[str, list[str]],
             why: Callable[[Task], str]) -> list[dict[str, str]]:
    """The ids of ``plan`` (queue -> ids given) that are not in ``changed``, each with its state and
    ``why(task)``: what a person reads for a task the command left alone."""
    out: list[dict[str, str]] = []
    for name, ids in plan.items():
        kept = set(changed.get(name, []))
        left = [i for i in dict.fromkeys(ids) if i not in kept]
        out += [{"id": t.id, "queue": name, "state": t.state, "reason": why(t)} for t in records(r, name, left)]
    return out


def _report(summary: str, skipped: list[dict[str, str]], reason: str | None) -> None:
    """The summary line, then one line per task left alone, or why there was nothing to do."""
    print(summary)
    for s in skipped:
        print(s["reason"])
    if reason:
        print(reason)


# ------------------------------------------------------------------------------------------ requeue


def requeue(
    failed: bool = typer.Option(False, "--failed", help="Requeue failed tasks (required: only those can be)."),
    queue: str | None = QUEUE,
    ids: list[str] | None = _IDS,
    error_type: str | None = typer.Option(None, "--error-type", metavar="NAME",
                                          help="Only tasks that failed with this exception type, e.g. MemoryError."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Say what would be requeued; change nothing."),
    as_json: bool = JSON,
    url: str | None = URL,
    verbose: int = VERBOSE,
) -> None:
    """Put failed tasks back on their queue, with the dependents that failed because of them.

    Examples: [bold]forrestq requeue --failed[/bold],
    [bold]forrestq requeue --failed -q fits --error-type MemoryError --dry-run[/bold]
    """
    set_verbose(verbose)
    if not failed:
        raise ConfigError("say what to requeue: --failed (only failed tasks can be requeued)")
    r = client(url)
    given = queues_of(r, list(ids), queue) if ids else {}
    plan: dict[str, list[str] | None] = dict(given) if ids else {name: None for name in resolve_queues(r, queue)}
    done = {name: list(Queue(name, url).requeue_failed(ids=only, error_type=error_type, dry_run=dry_run))
            for name, only in plan.items()}
    total = sum(len(v) for v in done.values())
    skipped = _skipped(r, given, done, lambda t: why_not_requeued(t, error_type, error_type_of(t)))
    reason = None if total or ids else _nothing_to_requeue(r, list(plan), error_type)
    if as_json:
        print_json({"dry_run": dry_run, "count": total, "queues": done, "skipped": skipped, "reason": reason})
        return
    verb = "would requeue" if dry_run else "requeued"
    detail = ", ".join(f"{len(v)} in {k}" for k, v in done.items() if v)
    _report(f"{verb} {total} task(s)" + (f" ({detail})" if detail else ""), skipped, reason)


def _nothing_to_requeue(r: redis.Redis, names: list[str], error_type: str | None) -> str:
    """Why a requeue of whole queues found nothing (from the counters)."""
    failed = sum(c["failed"] for c in queue_status(r, names).values())
    where = f"queue {names[0]!r}" if len(names) == 1 else f"{len(names)} queue(s)"
    if not failed:
        return f"nothing to requeue: no task of {where} is failed"
    return (f"nothing to requeue: none of the {failed:,} failed task(s) of {where} failed with {error_type} "
            "(forrestq tasks --state failed shows their errors)")


# ---------------------------------------------------------------------------------------------- run


def _post_mortem(exc: BaseException, err: Console) -> None:
    if exc.__traceback__ is None:
        err.print("forrestq: the exception has no traceback to debug")
    else:
        pdb_module.post_mortem(exc.__traceback__)


def run(
    task_id: str = typer.Argument(..., help="The task to run here."),
    queue: str | None = queue_option("The task's queue (default: search every queue)."),
    raise_: bool = typer.Option(False, "--raise", "-r",
                                help="Re-raise the task's exception here (exit non-zero with its traceback)."),
    pdb: bool = typer.Option(False, "--pdb", help="Start pdb post-mortem where the task failed."),
    record: bool = typer.Option(False, "--record",
                                help="Record the outcome as the task's result (default: change nothing)."),
    url: str | None = URL,
    verbose: int = VERBOSE,
) -> None:
    """Run one task in this terminal with its real inputs from Redis, to debug it by hand.

    Its recorded state does not change unless [bold]--record[/bold] is given. Prints the return value,
    or the traceback (exit code 1).

    Examples: [bold]forrestq run n3q3jdvrdssa0 --pdb[/bold], [bold]forrestq run n3q3jdvrdssa0 --raise[/bold]
    """
    set_verbose(verbose)
    if raise_ and pdb:
        raise ConfigError("--raise and --pdb do not go together")
    r = client(url)
    outcome = Queue(find_task(r, task_id, queue), url).run_here(task_id, record=record)
    exc = getattr(outcome, "errorvalue", None)
    if exc is None:
        make_console().print(value_view(getattr(outcome, "returnvalue", None)))
        return
    if raise_:
        STATE.passthrough.add(id(exc))
        raise exc
    tb_text = getattr(outcome, "traceback", "") or ""
    if not tb_text:
        tb_text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    err = make_console(stderr=True)
    err.print(traceback_view(tb_text))
    if pdb:
        _post_mortem(exc, err)
    raise typer.Exit(EXIT_FAILURE)


# -------------------------------------------------------------------------------------------- clean


def clean(
    queue: str | None = QUEUE,
    done: bool = typer.Option(False, "--done", help="Delete done tasks."),
    failed: bool = typer.Option(False, "--failed", help="Delete failed tasks."),
    all_: bool = typer.Option(False, "--all", help="Delete every task that is not running (the queue's backlog too)."),
    older_than: str | None = typer.Option(None, "--older-than", metavar="AGE",
                                          help="Only finished tasks that finished longer ago (30m, 2h, 7d); "
                                               "done and failed ones unless --done or --failed says which."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    as_json: bool = JSON,
    url: str | None = URL,
    verbose: int = VERBOSE,
) -> None:
    """Delete tasks; asks first unless [bold]--yes[/bold]. Running tasks are never deleted.

    Examples: [bold]forrestq clean --done --yes[/bold], [bold]forrestq clean -q fits --all[/bold],
    [bold]forrestq clean --older-than 7d --yes[/bold]
    """
    set_verbose(verbose)
    age = None if older_than is None else duration_value(older_than, "--older-than")
    if age is not None and all_:
        raise ConfigError("--older-than deletes finished tasks only: it does not go with --all")
    if age is not None and not (done or failed):
        done = failed = True
    if not (done or failed or all_):
        raise ConfigError("say what to delete: --done, --failed, --all or --older-than")
    r = client(url)
    names = resolve_queues(r, queue)
    counts = queue_status(r, names)
    states = ("waiting", "scheduled", "ready", "done", "failed") if all_ else tuple(
        s for s, on in (("done", done), ("failed", failed)) if on)
    planned = sum(c[s] for c in counts.values() for s in states)
    what = "every task that is not running" if all_ else " and ".join(f"{s} tasks" for s in states)
    if age is not None:
        what += f" finished over {older_than} ago"  # planned: an upper bound (the counters know no times)
    where = f"queue {queue}" if queue else f"{len(names)} queue(s)"
    if not yes and planned and not _confirmed(f"delete {what} ({planned:,}) from {where}?"):
        if as_json:
            print_json({"deleted": 0, "queues": {name: 0 for name in names}})
        else:
            print("nothing deleted")
        return
    deleted = {name: int(Queue(name, url).clean(done=done, failed=failed, all=all_, older_than=age))
               for name in names}
    total = sum(deleted.values())
    if as_json:
        print_json({"deleted": total, "queues": deleted})
    else:
        print(f"deleted {total:,} task(s) from {where}")


def _confirmed(question: str) -> bool:
    """Ask on stderr; an answer of no is False. No answer at all (stdin closed, Ctrl-C) ends the
    command: one line, exit 1, nothing deleted."""
    try:
        return typer.confirm(question, err=True)
    except typer.Abort:
        print("\nforrestq: no answer: nothing deleted (pass --yes to delete without asking)", file=sys.stderr)
        raise typer.Exit(EXIT_FAILURE) from None


# ------------------------------------------------------------------------------------------- cancel


def _check_cancel(task_ids: list[str] | None, queue: str | None, all_: bool) -> None:
    if all_ and task_ids:
        raise ConfigError("give task ids or --all, not both")
    if all_ and not queue:
        raise ConfigError("--all needs --queue: say which queue to cancel")
    if not all_ and not task_ids:
        raise ConfigError("say what to cancel: task ids, or --queue Q --all")


def cancel(
    task_ids: list[str] | None = _TASK_IDS,
    queue: str | None = queue_option("The tasks' queue (needed with --all)."),
    all_: bool = typer.Option(False, "--all", help="Cancel every unfinished task of --queue."),
    as_json: bool = JSON,
    url: str | None = URL,
    verbose: int = VERBOSE,
) -> None:
    """Cancel tasks: queued ones are removed, running ones killed; they end failed with reason "cancelled".

    Examples: [bold]forrestq cancel n3q3jdvrdssa0[/bold], [bold]forrestq cancel -q fits --all[/bold]
    """
    set_verbose(verbose)
    _check_cancel(task_ids, queue, all_)
    r = client(url)
    plan: dict[str, list[str]] = {}
    if all_ and queue is not None:
        resolve_queues(r, queue)
        cancelled = {queue: list(Queue(queue, url).cancel(all=True))}
    else:
        plan = queues_of(r, list(task_ids or []), queue)
        cancelled = {name: list(Queue(name, url).cancel(ids=only)) for name, only in plan.items()}
    total = sum(len(v) for v in cancelled.values())
    skipped = _skipped(r, plan, cancelled, why_not_cancelled)
    reason = f"nothing to cancel: queue {queue!r} has no unfinished task" if all_ and not total else None
    if as_json:
        print_json({"cancelled": total, "queues": cancelled, "skipped": skipped, "reason": reason})
    else:
        _report(f"cancelled {total} task(s)", skipped, reason)
