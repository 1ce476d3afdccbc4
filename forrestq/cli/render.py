"""Everything the commands print: rich views (status, task table, one task's detail, tracebacks)
and the JSON shapes, apart from the commands that gather the data.

User text prints literally. Metadata, queue, function and host names, ids, reasons, output and
tracebacks are user data: each goes into a :class:`rich.text.Text` (see :func:`literal`), which
rich never parses for markup or emoji codes, so ``x:b:c``, ``[link=http://x]docs[/link]`` or
``ratio [/red] 3`` show as typed and never break a table. Terminal control characters in user
text (ESC, CSI, OSC hyperlinks, ``\\r``, DEL ...) show as visible escapes such as ``\\x1b``
(:func:`escape_controls`): a task cannot clear the screen or hide links. Styling here is done with
``Text`` styles, never with markup strings, and the consoles are created with markup and emoji codes off
(:func:`make_console`), so that nothing printed here is read as markup.

Consoles: colour is off when stdout is not a terminal or ``NO_COLOR`` is set (rich does both).

Narrow terminals: the status tables (:class:`Fitted`) leave out their least important columns to
fit the width and say which; they never cut a number (``167…``) and fold user text onto more lines
rather than cutting it.
"""
from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, Group, JustifyMethod, RenderableType, RenderResult
from rich.table import Table
from rich.text import Text

from .. import schema
from ..environment import difference_line
from ..errors import escape_controls
from ..stats import SAMPLES
from ..status import UNFINISHED, human_age, human_bytes, human_duration, json_value, short_error, short_repr

if TYPE_CHECKING:  # names of annotations only; the views of one task import rich's Panel, Syntax, Pretty inside
    from rich.pretty import Pretty
    from rich.syntax import Syntax

    from ..environment import Environment
    from ..events import Event
    from ..stats import FunctionStats
    from ..task import Task

__all__ = ["make_console", "escape_controls", "literal", "when", "state_style", "print_json", "print_json_line",
           "metadata_text", "metadata_json", "Col", "Fitted", "render_status", "task_json", "tasks_view", "show_json",
           "task_detail", "traceback_view", "value_view", "event_line", "stats_view", "environment_text",
           "progress_text"]

History = Sequence[tuple[float, str, str]]

PIPED_WIDTH = 160  # columns of a console that is not a terminal (unless $COLUMNS says otherwise)

_STATE_STYLES = {"done": "green", "failed": "red", "running": "cyan", "ready": "yellow",
                 "waiting": "magenta", "lost": "red", "stopping": "yellow", "refusing": "red"}
NAME_MIN = 24  # columns a name column (queue, host) keeps before its names fold onto more lines
ERROR_WIDTH = 120  # characters of a failure reason in the task listing (two lines of its column)
UNSERVED_SHOWN = 5  # queues named one per line under the status table when no worker serves them
ENV_DIFFS_SHOWN = 5  # lines naming what differs between the live workers' environments
HOSTS_SHOWN = 3  # hosts named per function in `forrestq stats`


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
    """User data as a rich Text: printed exactly as given (no markup, no emoji codes), its control
    characters as visible escapes (:func:`escape_controls`)."""
    return Text(escape_controls(str(value)), style=style)


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


def metadata_json(task: Task, width: int = 200) -> Any:
    """A task's metadata for ``--json``: the value itself when it is JSON (see
    :func:`forrestq.status.json_value`), else its repr cut to ``width``; never raises."""
    try:
        md = task.metadata
    except Exception as e:  # any unpickling failure (a class not importable here)
        return f"<could not load: {type(e).__name__}>"
    return md if json_value(md) else short_repr(md, width)


# ----------------------------------------------------------------------------------- fitted tables


@dataclass(frozen=True)
class Col:
    """A column of a :class:`Fitted` table: ``priority`` 1 is left out last; ``wrap``: its text
    may wrap onto more lines at its spaces (never inside a word), and ``keep`` columns of it are kept
    before other columns are left out (names: a long one folds); a column that does not wrap keeps
    its full width."""

    header: str
    priority: int
    justify: JustifyMethod = "right"
    style: str = ""
    wrap: bool = False
    keep: int = 0


def _width(text: Text | str) -> int:
    return max((cell_len(line) for line in str(text).split("\n")), default=0)


def _longest_word(text: Text | str) -> int:
    return max((cell_len(word) for word in str(text).split()), default=0)


def _fit(natural: list[int], minimum: list[int], cols: Sequence[Col], width: int) -> dict[int, int]:
    """The columns kept (index -> width) so that the table fits ``width``: the least important are
    left out until the kept ones fit, the text columns (widest first) giving way down to ``minimum``."""
    keep = list(range(len(cols)))
    while True:
        excess = sum(natural[i] for i in keep) + 3 * len(keep) + 1 - width  # borders and padding
        give = sum(natural[i] - minimum[i] for i in keep if cols[i].wrap)
        if excess <= give or len(keep) == 1:
            widths = {i: natural[i] for i in keep}
            while excess > 0:
                shrinkable = [i for i in keep if cols[i].wrap and widths[i] > minimum[i]]
                if not shrinkable:
                    break
                widths[max(shrinkable, key=lambda i: widths[i])] -= 1
                excess -= 1
            return widths
        keep.remove(max(keep, key=lambda i: cols[i].priority))


class Fitted:
    """A table that fits the console's width by leaving out its least important columns (named in a
    line under it), never by cutting a number; text columns fold onto more lines."""

    def __init__(self, title: str, cols: Sequence[Col], rows: Sequence[Sequence[Text]], caption: str = "") -> None:
        self.title, self.cols, self.rows, self.caption = title, list(cols), [list(r) for r in rows], caption

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        natural = [max([_width(c.header)] + [_width(row[i]) for row in self.rows]) for i, c in enumerate(self.cols)]
        minimum = [min(n, max([min(n, c.keep), _longest_word(c.header)] + [_longest_word(row[i]) for row in self.rows]))
                   if c.wrap else n for i, (n, c) in enumerate(zip(natural, self.cols))]
        widths = _fit(natural, minimum, self.cols, options.max_width)
        table = Table(title=self.title, title_justify="left", title_style="bold", caption=self.caption or None,
                      caption_justify="left", caption_style="dim")
        for i in sorted(widths):
            c = self.cols[i]
            table.add_column(c.header, justify=c.justify, style=c.style, width=widths[i], no_wrap=not c.wrap,
                             overflow="fold")
        for row in self.rows:
            table.add_row(*(row[i] for i in sorted(widths)))
        yield table
        left_out = [c.header for i, c in enumerate(self.cols) if i not in widths]
        if left_out:
            yield Text(f"left out to fit {options.max_width} columns: {', '.join(left_out)} "
                       "(a wider terminal, or --json, shows them)", style="dim")


# ------------------------------------------------------------------------------------------- status

# (new columns go last: scripts that read the table by position keep working)
_QUEUE_COLS = (Col("queue", 1, "left", "bold", wrap=True, keep=NAME_MIN), Col("waiting", 8, style="magenta"),
               Col("ready", 2, style="yellow"), Col("running", 3, style="cyan"), Col("done", 5, style="green"),
               Col("failed", 4, style="red"), Col("done/min", 9), Col("failed/min", 10), Col("workers", 7),
               Col("scheduled", 6, "left", wrap=True))
_WORKER_COLS = (Col("host", 1, "left", wrap=True, keep=NAME_MIN), Col("pid", 2), Col("queues", 5, "left", wrap=True),
                Col("busy", 4), Col("done", 8), Col("failed", 9), Col("memory", 7), Col("heartbeat", 6),
                Col("state", 3, "left", wrap=True))
_NODES_CAPTION = ("waiting to failed count DAG nodes (one per deferred call); "
                  "scheduled: the tasks users scheduled (roots), open, done and failed")
_RUNNING_COLS = (Col("queue", 2, "left", "bold", wrap=True, keep=NAME_MIN), Col("task", 1, "left"),
                 Col("function", 4, "left", wrap=True), Col("host", 5, "left", wrap=True),
                 Col("progress", 3, "left"), Col("message", 6, "left", wrap=True), Col("reported", 7))


def progress_text(progress: dict[str, Any] | None) -> str:
    """``5/10 (50%)``, or ``5`` without a total, or "-": a task's reported progress (the message apart)."""
    if not progress:
        return "-"
    done, total = progress.get("done"), progress.get("total")
    if not total:
        return f"{done:g}" if isinstance(done, (int, float)) else str(done)
    return f"{done:g}/{total:g} ({100 * min(1.0, done / total):.0f}%)"


def _running_rows(queues: dict[str, dict[str, Any]], now: float | None) -> list[list[Text]]:
    """One row per running task with progress (status shows the first of each queue): the message literally."""
    rows = []
    for name, c in queues.items():
        for t in c.get("running_tasks", []):
            p = t["progress"]
            age = None if now is None or p.get("at") is None else max(0.0, now - p["at"])
            rows.append([literal(name), literal(t["id"]), literal(t["function"]), literal(t["host"] or "-"),
                         Text(progress_text(p)), literal(p.get("message") or ""),
                         Text(human_age(age) if age is not None else "-")])
    return rows


def _roots_text(roots: dict[str, int]) -> Text:
    parts = [f"{roots[k]:,} {label}" for k, label in (("unfinished", "open"), ("done", "done"), ("failed", "failed"))
             if roots.get(k)]
    total = sum(roots.get(k, 0) for k in ("unfinished", "done", "failed"))
    if len(parts) == 1:  # all of them open, done or failed
        return Text(parts[0])
    return Text(f"{total:,}" + (f" ({', '.join(parts)})" if parts else ""))


def _queue_row(name: str, c: dict[str, Any], unserved: bool) -> list[Text]:
    ready = f"{c['ready']:,}" + (f" (+{c['scheduled']:,} scheduled)" if c.get("scheduled") else "")
    workers = Text("no worker", style="bold red") if unserved else Text(f"{c.get('workers', 0):,}")
    return [literal(name), Text(f"{c['waiting']:,}"), Text(ready),
            *(Text(f"{c[s]:,}") for s in ("running", "done", "failed")),
            Text(f"{c['done_per_min']:g}"), Text(f"{c['failed_per_min']:g}"), workers, _roots_text(c.get("roots", {}))]


def _worker_row(w: dict[str, Any]) -> list[Text]:
    lost = w["state"] == "lost"
    state = literal(w["state"], style=state_style(w["state"]))
    return [literal(w["host"]), Text(str(w["pid"] or "-")), literal(",".join(w["queues"]) or "-"),
            Text("-" if lost else f"{w['busy']}/{w['procs']}"),
            Text("-" if lost else f"{w['done']:,}"), Text("-" if lost else f"{w['failed']:,}"),
            Text("-" if lost else human_bytes(w["rss"])), Text(human_age(w["age"])), state]


def _time_lines(queues: dict[str, dict[str, Any]], now: float | None) -> list[Text]:
    """When each queue's first scheduled task is due, and one line per periodic schedule (name, timing,
    next due, function; user text literally): ``scheduled`` tasks are not in the ready count."""
    lines = []
    now = time.time() if now is None else now
    for name, c in queues.items():
        if c.get("scheduled") and c.get("next_due") is not None:
            lines.append(Text.assemble(("scheduled: ", "bold"), "queue ", literal(name), f": {c['scheduled']:,} "
                                       f"task(s) wait for their time, the first due in "
                                       f"{human_duration(max(0.0, c['next_due'] - now))}"))
        if c.get("levels"):
            lines.append(Text.assemble(("priorities: ", "bold"), "queue ", literal(name), ": levels ",
                                       ", ".join(map(str, c["levels"])), " and 0 (higher levels are claimed first)"))
        if c.get("expiring"):
            lines.append(Text.assemble(("expiry: ", "bold"), "queue ", literal(name), f": {c['expiring']:,} finished "
                                       "root(s) with a result TTL, the next deleted in "
                                       f"{human_duration(max(0.0, (c['next_expiry'] or now) - now))}"))
        for p in c.get("periodic", []):
            timing = f"every {p['every']:g} s" if p["every"] is not None else f"cron {p['cron']} ({p['tz'] or 'UTC'})"
            due = "paused" if p["paused"] or p["next_due"] is None else \
                f"next in {human_duration(max(0.0, p['next_due'] - now))}"
            lines.append(Text.assemble(("periodic: ", "bold"), "queue ", literal(name), " ", literal(p["name"]), ": ",
                                       literal(timing), f", {due}, ", literal(p["function"]),
                                       f", {p['runs']:,} run(s)"))
    return lines


def _unserved_lines(queues: dict[str, dict[str, Any]], unserved: Sequence[str]) -> list[Text]:
    """One warning line per queue that has unfinished tasks and no live worker serving it."""
    lines = []
    for name in unserved[:UNSERVED_SHOWN]:
        n = sum(queues[name][s] for s in UNFINISHED)
        what = f"{n:,} unfinished task(s)" if n else "periodic schedules (a worker makes their ticks)"
        lines.append(Text.assemble(("warning: ", "bold red"), "queue ", literal(name),
                                   f" has {what} and no live worker serves it; start one: ",
                                   ("forrestq worker --queue ", "bold"), literal(name, style="bold")))
    if len(unserved) > UNSERVED_SHOWN:
        lines.append(Text(f"warning: and {len(unserved) - UNSERVED_SHOWN} more queue(s) with unfinished tasks "
                          "and no live worker (forrestq status --json: unserved)", style="bold red"))
    return lines


def _unfit_lines(queues: dict[str, dict[str, Any]]) -> list[Text]:
    """One warning line per request of ready tasks that no live worker has the resources for
    ("3 ready tasks need gpu=4; no live worker has it", the request literally)."""
    lines = []
    for name, c in queues.items():
        for u in c.get("unfit", []):
            lines.append(Text.assemble(("warning: ", "bold red"), "queue ", literal(name), ": ",
                                       f"{u['tasks']:,} ready task" + (" needs " if u["tasks"] == 1 else "s need "),
                                       literal(u["need"]), "; no live worker has it"))
    return lines


def limit_text(lim: dict[str, Any]) -> str:
    """One limit key's use: "2/4 running, 3 waiting, 7 starts in the last 1 s (at most 10)"."""
    parts = []
    if lim["limit"] is not None:
        parts.append(f"{lim['in_use']}/{lim['limit']} running")
    if lim["rate"] is not None:
        starts, per = lim["rate"]
        parts.append(f"{lim['starts']} starts in the last {per:g} s (at most {starts})")
    if lim["waiting"]:
        parts.append(f"{lim['waiting']} waiting")
    return ", ".join(parts)


def _limit_lines(queues: dict[str, dict[str, Any]]) -> list[Text]:
    """One line per limit key of each queue (``forrestq limit set``/``Queue.set_rate``), keys literally."""
    return [Text.assemble(("limit ", "bold"), literal(lim["key"]), " on queue ", literal(name), ": ", limit_text(lim))
            for name, c in queues.items() for lim in c.get("limits", [])]


def _refusing_lines(workers: Sequence[dict[str, Any]]) -> list[Text]:
    """Why each refusing worker stopped claiming tasks, as it said it (literally)."""
    return [Text.assemble(("refusing: ", "bold red"), "worker on ", literal(w["host"]), f" (pid {w['pid']}) ",
                          "claims no tasks: ", literal(w["refusing"])) for w in workers if w.get("refusing")]


def _environment_lines(diffs: Sequence[dict[str, Any]]) -> list[Text]:
    """What differs between the live workers' environments, one line per distribution or property
    (``environments differ: host-a numpy==1.26.4, host-b numpy==2.0.1``), literally."""
    lines = [Text.assemble(("environments differ: ", "bold yellow"), literal(difference_line(d)))
             for d in diffs[:ENV_DIFFS_SHOWN]]
    if len(diffs) > ENV_DIFFS_SHOWN:
        lines.append(Text(f"environments differ: and {len(diffs) - ENV_DIFFS_SHOWN} more "
                          "(forrestq status --json: environments)", style="bold yellow"))
    return lines


def render_status(data: dict[str, Any], where: str = "") -> Group:
    """The rich renderable of ``forrestq status`` for the data of :func:`forrestq.status.gather`."""
    head = Text.assemble(("forrestq status", "bold"), literal(f"  {where}  " if where else "  "),
                         (when(data.get("time")), "dim"))
    parts: list[RenderableType] = [head]
    queues, unserved = data["queues"], data.get("unserved", [])
    if queues:
        rows = [_queue_row(name, c, name in unserved) for name, c in queues.items()]
        parts.append(Fitted("queues", _QUEUE_COLS, rows, caption=_NODES_CAPTION))
        parts += _time_lines(queues, data.get("time"))
        parts += _unserved_lines(queues, unserved)
        parts += _unfit_lines(queues)
        parts += _limit_lines(queues)
        running = _running_rows(queues, data.get("time"))
        if running:
            parts.append(Fitted("running, with progress", _RUNNING_COLS, running))
    else:
        parts.append(Text("no queues yet: schedule tasks with Queue(name).schedule(...)", style="dim"))
    if data["workers"]:
        parts.append(Fitted("workers", _WORKER_COLS, [_worker_row(w) for w in data["workers"]]))
        parts += _refusing_lines(data["workers"])
        parts += _environment_lines(data.get("environments", []))
    else:
        parts.append(Text("no workers: start one with `forrestq worker --procs N --queue Q`", style="dim"))
    return Group(*parts)


# -------------------------------------------------------------------------------------------- tasks


def task_json(task: Task, width: int = 200) -> dict[str, Any]:
    """One task of ``forrestq tasks --json`` (and the base of ``show --json``); metadata as JSON
    where it is JSON (:func:`metadata_json`; else a repr cut to ``width``)."""
    return {"id": task.id, "queue": task.queue, "state": task.state, "function": task.name,
            "metadata": metadata_json(task, width), "runtime": task.runtime, "host": task.host,
            "attempts": task.attempts, "reason": task.reason, "upstream": task.upstream,
            "created": task.created, "started": task.started, "finished": task.finished,
            "cpu_time": task.cpu_time, "peak_rss": task.peak_rss, "pid": task.pid, "worker": task.worker or None,
            "progress": task.progress, "due": task.due, "periodic": task.periodic, "result_ttl": task.result_ttl,
            "limits": task.limits, "priority": task.priority}


def _task_table(found: Sequence[Task], show_queue: bool, with_progress: bool = False) -> Table:
    table = Table()
    table.add_column("id", no_wrap=True, min_width=13)
    if show_queue:
        table.add_column("queue")
    table.add_column("state")
    table.add_column("function")
    table.add_column("metadata", max_width=40)
    table.add_column("runtime", justify="right")
    table.add_column("host")
    table.add_column("error", overflow="fold", max_width=ERROR_WIDTH // 2)
    if with_progress:
        table.add_column("progress", overflow="fold", max_width=40)
    with_due = any(t.state == schema.SCHEDULED and t.due is not None for t in found)  # delay=, at= (issue 16)
    if with_due:
        table.add_column("due")
    for t in found:
        row: list[Text | str] = [literal(t.id)]
        if show_queue:
            row.append(literal(t.queue))
        row += [literal(t.state, style=state_style(t.state)), literal(t.name), literal(metadata_text(t)),
                human_duration(t.runtime), literal(t.host or "-"),
                literal(short_error(t.reason, ERROR_WIDTH), style="red")]
        if with_progress:
            message = (t.progress or {}).get("message") or ""
            row.append(literal(progress_text(t.progress) + (f"  {message}" if message else "")))
        if with_due:
            row.append(when(t.due) if t.state == schema.SCHEDULED and t.due is not None else "-")
        table.add_row(*row)
    return table


def tasks_view(found: Sequence[Task], queue: str | None, state: str | None, partial: bool) -> Group:
    """``forrestq tasks``: the table of ``found`` (with a queue column unless ``queue`` is given),
    or a line saying there are none; a note when the search for ``state`` stopped early."""
    if not found:
        return Group(literal(f"no {state + ' ' if state else ''}tasks" + (f" in queue {queue!r}" if queue else "")))
    with_progress = state == schema.RUNNING or any(t.progress for t in found)  # a progress column
    parts: list[RenderableType] = [_task_table(found, show_queue=queue is None, with_progress=with_progress)]
    if partial:
        parts.append(literal(f"the search for {state} tasks ran out of time before it read every unfinished "
                             "task: there may be more", style="dim"))
    return Group(*parts)


# --------------------------------------------------------------------------------------------- show


def show_json(task: Task, call: str, history: History, output_lines: Sequence[str],
              env: Environment | None = None) -> dict[str, Any]:
    """``forrestq show --json`` (``environment``: the fingerprint's id, python, forrestq, platform; no
    distribution list: ``fq:env:<id>`` holds it)."""
    environment = None if env is None else {k: v for k, v in env.as_json().items() if k != "distributions"}
    return {**task_json(task, 400), "call": call, "inputs": task.inputs, "environment": environment,
            "history": [{"time": t, "state": s, "host": h} for t, s, h in history],
            "output": "\n".join(output_lines), "traceback": task.traceback, "stack": task.stack}


def _ttl_line(task: Task) -> str:
    """A root's result TTL for ``show``: how long its finished record is kept, and until about when."""
    kept = f"{human_duration(task.result_ttl)} after it finished"
    if task.finished is None or task.result_ttl is None:
        return kept
    return f"{kept} (deleted about {when(task.finished + task.result_ttl)})"


def _detail_rows(task: Task, call: str, history: History, metadata: str,
                 environment: str = "") -> list[tuple[str, Text | str]]:
    lost = f" (last lost on {task.lost_on})" if task.lost_on else ""
    rows: list[tuple[str, Text | str]] = [
        ("task", literal(f"{task.id}  (queue {task.queue}{', root' if task.root else ''})")),
        ("call", literal(call)),
        ("state", literal(task.state, style=state_style(task.state))),
        ("attempts", literal(f"{task.attempts}{lost}")),
        ("host", literal(task.host or "-")),
        ("created", when(task.created)),
        *([("due", literal(f"{when(task.due)}  (not before; server clock)"))] if task.due is not None else []),
        ("started", when(task.started)),
        ("finished", when(task.finished)),
        *([("result ttl", _ttl_line(task))] if task.result_ttl is not None else []),
        *([("priority", f"{task.priority} (of 0..9: higher first)")] if task.priority else []),
        ("runtime", human_duration(task.runtime)),
        ("progress", literal(_progress_line(task.progress))),
        ("resources", literal(resources_text(task))),
        ("environment", literal(environment or "-")),
        ("metadata", literal(metadata))]
    if task.key:
        rows.append(("key", literal(task.key)))
    if task.limits:
        rows.append(("limits", literal(", ".join(task.limits) + "  (forrestq limit list)")))
    if task.periodic:
        rows.append(("periodic", literal(f"{task.periodic}  (forrestq periodic list)")))
    rows.append(("inputs", literal(", ".join(task.inputs) or "-")))
    if task.upstream:
        rows.append(("upstream", literal(f"{task.upstream}  (forrestq show {task.upstream})")))
    if task.reason:
        rows.append(("reason", literal(task.reason, style="red")))
    if history:
        rows.append(("history", literal("\n".join(f"{when(t)}  {s}{'  on ' + h if h else ''}"
                                                  for t, s, h in history))))
    return rows


def _progress_line(progress: dict[str, Any] | None) -> str:
    """``5/10 (50%)  step 5  (reported 2026-01-01 10:00:00)``: the show row of a task's progress."""
    if not progress:
        return "-"
    message = progress.get("message") or ""
    return progress_text(progress) + (f"  {message}" if message else "") + \
        (f"  (reported {when(progress['at'])})" if progress.get("at") else "")


def resources_text(task: Task) -> str:
    """``CPU 1.2 s, peak 310 MiB, pid 4242 on worker W``: what the last attempt used, where known."""
    parts = []
    if task.cpu_time is not None:
        parts.append(f"CPU {human_duration(task.cpu_time)}")
    if task.peak_rss:
        parts.append(f"peak {task.peak_rss / (1 << 20):,.0f} MiB")
    if task.pid:
        parts.append(f"pid {task.pid}" + (f" of worker {task.worker}" if task.worker else ""))
    return ", ".join(parts) or "-"


def traceback_view(text: str) -> Syntax:
    """A Python traceback, highlighted as such (never read as markup; control characters escaped)."""
    from rich.syntax import Syntax
    return Syntax(escape_controls(text.rstrip()), "pytb", theme="ansi_dark", word_wrap=True)


def task_detail(task: Task, call: str, history: History, metadata: str, output_lines: Sequence[str],
                environment: str = "") -> Group:
    """``forrestq show``: a grid of the task's fields (``environment``: the line of
    :func:`environment_text`), then the tail of its output and its traceback, each in a panel."""
    from rich.panel import Panel
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    for label, value in _detail_rows(task, call, history, metadata, environment):
        grid.add_row(label, value)
    parts: list[RenderableType] = [grid]
    if output_lines:
        total = len(task.output.splitlines())
        title = f"output (last {len(output_lines)} of {total} lines)" if total > len(output_lines) else "output"
        parts.append(Panel(literal("\n".join(output_lines)), title=title, title_align="left", expand=False))
    if task.traceback:
        parts.append(Panel(traceback_view(task.traceback), title="traceback", title_align="left",
                           border_style="red", expand=False))
    if task.stack:
        parts.append(Panel(literal(task.stack.rstrip()), title="stack at death", title_align="left",
                           border_style="red", expand=False))
    return Group(*parts)


def value_view(value: Any) -> Pretty:
    """A task's return value (``forrestq run``), pretty-printed."""
    from rich.pretty import Pretty
    return Pretty(value)


# ------------------------------------------------------------------------------------ events


_TIMED = (schema.EVENT_DONE, schema.EVENT_FAILED, schema.EVENT_RETRIED)  # kinds whose runtime is shown


def event_line(ev: Event) -> str:
    """One event as one log line: local time, kind, task, then what the kind carries; user text
    (function names, hosts, reasons) literal, its control characters and newlines escaped, so that
    one event is always one line of the log."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ev.time)) + f".{int(ev.time * 1000) % 1000:03d}"
    parts = [stamp, f"{ev.kind:<9}", ev.task]
    if ev.name:
        parts.append(ev.name)
    if ev.host:
        parts.append(f"on {ev.host}")
    if ev.attempt:
        parts.append(f"(attempt {ev.attempt})")
    if ev.runtime is not None and ev.kind in _TIMED:
        parts.append(f"after {human_duration(ev.runtime)}")
    line = " ".join(parts)
    if ev.reason:
        line += f": {ev.reason}"
    if ev.delay is not None:
        line += f"; again in {human_duration(ev.delay)}"
    return escape_controls(line).replace("\n", "\\n")


# ------------------------------------------------------------------------------------------- stats

_STATS_COLS = (Col("queue", 2, "left", "bold", wrap=True, keep=NAME_MIN), Col("function", 1, "left", wrap=True,
                                                                              keep=NAME_MIN),
               Col("runs", 3), Col("failed", 4, style="red"), Col("p50 runtime", 5), Col("p95 runtime", 6),
               Col("p95 peak memory", 7), Col("hosts", 8, "left", wrap=True))


def _hosts_text(hosts: dict[str, int]) -> Text:
    shown = [f"{host or '?'} ({n:,})" for host, n in list(hosts.items())[:HOSTS_SHOWN]]
    more = f" +{len(hosts) - HOSTS_SHOWN} more" if len(hosts) > HOSTS_SHOWN else ""
    return literal(", ".join(shown) + more or "-")


def _stats_row(st: FunctionStats) -> list[Text]:
    return [literal(st.queue), literal(st.name), Text(f"{st.runs:,}"), Text(f"{st.failed_pct:.1f} %"),
            Text(human_duration(st.p50_runtime)), Text(human_duration(st.p95_runtime)),
            Text(human_bytes(st.p95_peak_rss) if st.p95_peak_rss else "-"), _hosts_text(st.hosts)]


def stats_view(found: Sequence[FunctionStats], queue: str | None) -> RenderableType:
    """``forrestq stats``: one row per queue and function; a line when no task has ended yet."""
    if not found:
        return literal("no task has ended yet" + (f" in queue {queue!r}" if queue else ""))
    return Fitted("functions", _STATS_COLS, [_stats_row(st) for st in found],
                  caption=f"runs and failed: every end since the queue began; runtimes, peak memory and hosts: "
                          f"the last {SAMPLES:,} measured runs of each function")


def environment_text(env: Environment | None, worker: str) -> str:
    """``forrestq show``'s environment line: the fingerprint's id, Python, forrestq and platform."""
    if env is not None:
        return env.summary()
    return "-" if not worker else f"not known (worker {worker} stored none, or it expired)"
