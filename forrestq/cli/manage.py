"""The commands that change tasks: ``requeue``, ``clean`` and ``cancel``, and ``run`` (one task in
this terminal, to debug it). Each checks every id it was given before it changes anything."""
from __future__ import annotations

import pdb as pdb_module
import traceback

import typer
from rich.console import Console

from ..errors import ConfigError
from ..queue import Queue
from ..status import find_task, queue_status, queues_of, resolve_queues
from .common import EXIT_FAILURE, JSON, QUEUE, STATE, URL, VERBOSE, client, set_verbose
from .render import make_console, print_json, traceback_view, value_view

__all__ = ["cancel", "clean", "requeue", "run"]

_IDS = typer.Option(None, "--id", help="Only this task (repeatable).")
_TASK_IDS = typer.Argument(None, help="Tasks to cancel.")

# ------------------------------------------------------------------------------------------ requeue


def requeue(
    failed: bool = typer.Option(False, "--failed", help="Requeue failed tasks (required: only those can be)."),
    queue: str | None = QUEUE,
    ids: list[str] | None = _IDS,
    error_type: str | None = typer.Option(None, "--error-type",
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
    if ids:
        plan: dict[str, list[str] | None] = dict(queues_of(r, list(ids), queue))
    else:
        plan = {name: None for name in resolve_queues(r, queue)}
    done = {name: list(Queue(name, url).requeue_failed(ids=only, error_type=error_type, dry_run=dry_run))
            for name, only in plan.items()}
    total = sum(len(v) for v in done.values())
    if as_json:
        print_json({"dry_run": dry_run, "count": total, "queues": done})
        return
    verb = "would requeue" if dry_run else "requeued"
    detail = ", ".join(f"{len(v)} in {k}" for k, v in done.items() if v)
    print(f"{verb} {total} task(s)" + (f" ({detail})" if detail else ""))


# ---------------------------------------------------------------------------------------------- run


def _post_mortem(exc: BaseException, err: Console) -> None:
    if exc.__traceback__ is None:
        err.print("forrestq: the exception has no traceback to debug")
    else:
        pdb_module.post_mortem(exc.__traceback__)


def run(
    task_id: str = typer.Argument(..., help="The task to run here."),
    queue: str | None = typer.Option(None, "--queue", "-q", help="The task's queue (default: search every queue)."),
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
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    as_json: bool = JSON,
    url: str | None = URL,
    verbose: int = VERBOSE,
) -> None:
    """Delete tasks; asks first unless [bold]--yes[/bold]. Running tasks are never deleted.

    Examples: [bold]forrestq clean --done --yes[/bold], [bold]forrestq clean -q fits --all[/bold]
    """
    set_verbose(verbose)
    if not (done or failed or all_):
        raise ConfigError("say what to delete: --done, --failed or --all")
    r = client(url)
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
        print_json({"deleted": total, "queues": deleted})
    else:
        print(f"deleted {total:,} task(s) from {where}")


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
    queue: str | None = typer.Option(None, "--queue", "-q", help="The tasks' queue (needed with --all)."),
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
    if all_ and queue is not None:
        resolve_queues(r, queue)
        cancelled = {queue: list(Queue(queue, url).cancel(all=True))}
    else:
        plan = queues_of(r, list(task_ids or []), queue)
        cancelled = {name: list(Queue(name, url).cancel(ids=only)) for name, only in plan.items()}
    total = sum(len(v) for v in cancelled.values())
    if as_json:
        print_json({"cancelled": total, "queues": cancelled})
    else:
        print(f"cancelled {total} task(s)")
