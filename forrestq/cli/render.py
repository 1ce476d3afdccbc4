"""Everything the commands print: rich views (status, task table, one task's detail, tracebacks)
and the JSON shapes, apart from the commands that gather the data.

User text prints literally. Metadata, queue, function and host names, ids, reasons, output and
tracebacks are user data: each goes into a :class:`rich.text.Text` (see :func:`literal`), which
rich never parses for markup or emoji codes, so ``x:b:c``, ``[link=http://x]docs[/link]`` or
``ratio [/red] 3`` show as typed and never break a table. Styling here is done with ``Text``
styles, never with markup strings, and the consoles are created with markup and emoji codes off
(:func:`make_console`), so that nothing printed here is read as markup.

Consoles: colour is off when stdout is not a terminal or ``NO_COLOR`` is set (rich does both).
"""
from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.panel import Panel
from rich.pretty import Pretty
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from ..status import human_age, human_bytes, human_duration, short_repr
from ..task import Task

__all__ = ["make_console", "literal", "when", "state_style", "print_json", "print_json_line", "metadata_text",
           "render_status", "task_json", "tasks_view", "show_json", "task_detail", "traceback_view", "value_view"]

History = Sequence[tuple[float, str, str]]

PIPED_WIDTH = 160  # columns of a console that is not a terminal (unless $COLUMNS says otherwise)

_STATE_STYLES = {"done": "green", "failed": "red", "running": "cyan", "ready": "yellow",
                 "waiting": "magenta", "lost": "red", "stopping": "yellow"}


def make_console(stderr: bool = False) -> Console:
    """A rich console on stdout (or stderr), created per call so that it writes wherever
    sys.stdout points now. Markup and emoji codes are off: strings print as they are. Not a
    terminal: no colour and, unless $COLUMNS says otherwise, 160 columns so that piped tables keep
    whole lines."""
    out = Console(stderr=stderr, markup=False, emoji=False)
    if not out.is_terminal and "COLUMNS" not in os.environ:
        out = Console(stderr=stderr, markup=False, emoji=False, width=PIPED_WIDTH)
    return out


def literal(value: object, style: str = "") -> Text:
    """User data as a rich Text: printed exactly as given (no markup, no emoji codes)."""
    return Text(str(value), style=style)


def when(t: float | None) -> str:
    """A timestamp as local ``YYYY-MM-DD HH:MM:SS``; ``-`` for none."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "-"


def state_style(state: str) -> str:
    """The colour of a task or worker state."""
    return _STATE_STYLES.get(state, "")


def print_json(data: Any) -> None:
    """``--json`` output: indented, anything not JSON-native as its ``str``."""
    print(json.dumps(data, indent=2, default=str), flush=True)


def print_json_line(data: Any) -> None:
    """One JSON object on one line (``status --watch --json``)."""
    print(json.dumps(data, default=str), flush=True)


def metadata_text(task: Task, width: int = 40) -> str:
    """A task's metadata as a one-line repr cut to ``width``; never raises."""
    try:
        md = task.metadata
    except Exception as e:  # any unpickling failure (a class not importable here)
        return f"<could not load: {type(e).__name__}>"
    return "" if md is None else short_repr(md, width)


# ------------------------------------------------------------------------------------------- status


def _queue_table(queues: dict[str, dict[str, Any]]) -> Table:
    table = Table(title="queues", title_justify="left", title_style="bold")
    table.add_column("queue", style="bold")
    for col, style in (("waiting", "magenta"), ("ready", "yellow"), ("running", "cyan"),
                       ("done", "green"), ("failed", "red")):
        table.add_column(col, justify="right", style=style)
    table.add_column("done/min", justify="right")
    table.add_column("failed/min", justify="right")
    for name, c in queues.items():
        ready = f"{c['ready']:,}" + (f" ({c['retrying']:,} retrying)" if c.get("retrying") else "")
        table.add_row(literal(name), f"{c['waiting']:,}", ready,
                      *(f"{c[s]:,}" for s in ("running", "done", "failed")),
                      f"{c['done_per_min']:g}", f"{c['failed_per_min']:g}")
    return table


def _worker_table(workers: Sequence[dict[str, Any]]) -> Table:
    table = Table(title="workers", title_justify="left", title_style="bold")
    for col in ("host", "pid", "queues", "busy", "done", "failed", "memory", "heartbeat", "state"):
        table.add_column(col, justify="left" if col in ("host", "queues", "state") else "right")
    for w in workers:
        lost = w["state"] == "lost"
        table.add_row(literal(w["host"]), str(w["pid"] or "-"), literal(",".join(w["queues"]) or "-"),
                      "-" if lost else f"{w['busy']}/{w['procs']}",
                      "-" if lost else f"{w['done']:,}", "-" if lost else f"{w['failed']:,}",
                      "-" if lost else human_bytes(w["rss"]), human_age(w["age"]),
                      literal(w["state"], style=state_style(w["state"])))
    return table


def render_status(data: dict[str, Any], where: str = "") -> Group:
    """The rich renderable of ``forrestq status`` for the data of :func:`forrestq.status.gather`."""
    head = Text.assemble(("forrestq status", "bold"), f"  {where}  " if where else "  ",
                         (when(data.get("time")), "dim"))
    parts: list[RenderableType] = [head]
    if data["queues"]:
        parts.append(_queue_table(data["queues"]))
    else:
        parts.append(Text("no queues yet: schedule tasks with Queue(name).schedule(...)", style="dim"))
    if data["workers"]:
        parts.append(_worker_table(data["workers"]))
    else:
        parts.append(Text("no workers: start one with `forrestq worker --procs N --queue Q`", style="dim"))
    return Group(*parts)


# -------------------------------------------------------------------------------------------- tasks


def task_json(task: Task) -> dict[str, Any]:
    """One task of ``forrestq tasks --json`` (and the base of ``show --json``)."""
    return {"id": task.id, "queue": task.queue, "state": task.state, "function": task.name,
            "metadata": metadata_text(task, 200), "runtime": task.runtime, "host": task.host,
            "attempts": task.attempts, "reason": task.reason, "upstream": task.upstream,
            "created": task.created, "started": task.started, "finished": task.finished}


def _task_table(found: Sequence[Task], show_queue: bool) -> Table:
    table = Table()
    table.add_column("id", no_wrap=True, min_width=13)
    if show_queue:
        table.add_column("queue")
    table.add_column("state")
    table.add_column("function")
    table.add_column("metadata", max_width=40)
    table.add_column("runtime", justify="right")
    table.add_column("host")
    table.add_column("error", overflow="ellipsis", no_wrap=True, max_width=60)
    for t in found:
        row: list[Text | str] = [literal(t.id)]
        if show_queue:
            row.append(literal(t.queue))
        row += [literal(t.state, style=state_style(t.state)), literal(t.name), literal(metadata_text(t)),
                human_duration(t.runtime), literal(t.host or "-"),
                literal(t.reason.splitlines()[0] if t.reason else "", style="red")]
        table.add_row(*row)
    return table


def tasks_view(found: Sequence[Task], queue: str | None, state: str | None, partial: bool) -> Group:
    """``forrestq tasks``: the table of ``found`` (with a queue column unless ``queue`` is given),
    or a line saying there are none; a note when the search for ``state`` stopped early."""
    if not found:
        return Group(literal(f"no {state + ' ' if state else ''}tasks" + (f" in queue {queue!r}" if queue else "")))
    parts: list[RenderableType] = [_task_table(found, show_queue=queue is None)]
    if partial:
        parts.append(literal(f"only the oldest unfinished tasks were searched for state {state!r}", style="dim"))
    return Group(*parts)


# --------------------------------------------------------------------------------------------- show


def show_json(task: Task, call: str, history: History, metadata: str, output_lines: Sequence[str]) -> dict[str, Any]:
    """``forrestq show --json``."""
    return {**task_json(task), "metadata": metadata, "call": call, "inputs": task.inputs,
            "history": [{"time": t, "state": s, "host": h} for t, s, h in history],
            "output": "\n".join(output_lines), "traceback": task.traceback}


def _detail_rows(task: Task, call: str, history: History, metadata: str) -> list[tuple[str, Text | str]]:
    lost = f" (last lost on {task.lost_on})" if task.lost_on else ""
    rows: list[tuple[str, Text | str]] = [
        ("task", literal(f"{task.id}  (queue {task.queue}{', root' if task.root else ''})")),
        ("call", literal(call)),
        ("state", literal(task.state, style=state_style(task.state))),
        ("attempts", literal(f"{task.attempts}{lost}")),
        ("host", literal(task.host or "-")),
        ("created", when(task.created)),
        ("started", when(task.started)),
        ("finished", when(task.finished)),
        ("runtime", human_duration(task.runtime)),
        ("metadata", literal(metadata))]
    if task.key:
        rows.append(("key", literal(task.key)))
    rows.append(("inputs", literal(", ".join(task.inputs) or "-")))
    if task.upstream:
        rows.append(("upstream", literal(f"{task.upstream}  (forrestq show {task.upstream})")))
    if task.reason:
        rows.append(("reason", literal(task.reason, style="red")))
    if history:
        rows.append(("history", literal("\n".join(f"{when(t)}  {s}{'  on ' + h if h else ''}"
                                                  for t, s, h in history))))
    return rows


def traceback_view(text: str) -> Syntax:
    """A Python traceback, highlighted as such (never read as markup)."""
    return Syntax(text.rstrip(), "pytb", theme="ansi_dark", word_wrap=True)


def task_detail(task: Task, call: str, history: History, metadata: str, output_lines: Sequence[str]) -> Group:
    """``forrestq show``: a grid of the task's fields, then the tail of its output and its
    traceback, each in a panel."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    for label, value in _detail_rows(task, call, history, metadata):
        grid.add_row(label, value)
    parts: list[RenderableType] = [grid]
    if output_lines:
        total = len(task.output.splitlines())
        title = f"output (last {len(output_lines)} of {total} lines)" if total > len(output_lines) else "output"
        parts.append(Panel(literal("\n".join(output_lines)), title=title, title_align="left", expand=False))
    if task.traceback:
        parts.append(Panel(traceback_view(task.traceback), title="traceback", title_align="left",
                           border_style="red", expand=False))
    return Group(*parts)


def value_view(value: Any) -> Pretty:
    """A task's return value (``forrestq run``), pretty-printed."""
    return Pretty(value)
