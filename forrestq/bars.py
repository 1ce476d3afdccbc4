"""Progress bars (rich) for loops over finished tasks (``results``, ``map``): done, failed, total, rate,
and a note while nothing finishes (e.g. "no live worker serves queue 'x'").

User text (queue and function names, the note) is shown literally, never read as rich markup.

Both bars count the running tasks' reported progress too (:func:`forrestq.progress`): a task
half-way counts 0.5 (:func:`counted`), so a run of a few long tasks does not sit at 0 % for an hour.
The caller reads the shares (:class:`forrestq.reading.RunningShares`) and hands them to
:meth:`running`; a task that finishes stops counting as a share (it counts whole)."""
from __future__ import annotations

import sys
import time
from types import ModuleType
from typing import TYPE_CHECKING, Any

from .errors import ConfigError, shown

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID


def _rich() -> ModuleType:
    """``rich.progress``, imported when a bar is first drawn: rich is the costliest import of the
    package, and a worker (and every run without a bar) never needs it."""
    import rich.progress

    return rich.progress


def counted(finished: int, shares: dict[str, float], total: int | None = None) -> float:
    """What a bar shows as completed: the finished tasks plus the fraction done of each running one
    (``shares``: task id -> 0..1), never more than ``total`` (when known)."""
    n = finished + sum(min(1.0, max(0.0, share)) for share in shares.values())
    return n if total is None else min(float(total), n)


class ResultsProgress:
    """A bar over a queue's root tasks; total = yielded + still unfinished. Disabled = does nothing.

    ``transient=True`` removes the bar when the loop ends (for bars nested under an outer loop)."""

    def __init__(self, name: str, enabled: bool = True, transient: bool = False) -> None:
        self.enabled = enabled
        self.done = self.failed = 0
        self.shares: dict[str, float] = {}  # running task id -> fraction done (see counted())
        if enabled:
            rp = _rich()
            self.progress = rp.Progress(
                rp.TextColumn("{task.description}", style="bold", markup=False), rp.BarColumn(),
                rp.MofNCompleteColumn(),
                rp.TextColumn("[green]{task.fields[done]} done [red]{task.fields[failed]} failed"),
                rp.TextColumn("{task.fields[speed_text]}"), rp.TimeElapsedColumn(),
                rp.TextColumn("{task.fields[note]}", markup=False, style="yellow"), transient=transient)
            self.bar = self.progress.add_task(name, total=None, done=0, failed=0, speed_text="", note="")

    def __enter__(self) -> ResultsProgress:
        if self.enabled:
            self.progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.enabled:
            self.progress.stop()

    def update(self, finished: int, unfinished: int) -> None:
        if self.enabled:
            self.progress.update(self.bar, total=finished + unfinished)

    def note(self, text: str) -> None:
        """Show ``text`` (literally) after the bar; "" clears it."""
        if self.enabled:
            self.progress.update(self.bar, note=text)

    def running(self, shares: dict[str, float] | None) -> None:
        """The fraction done of each running task (None: no news: the last shares stay)."""
        if self.enabled and shares is not None:
            self.shares = shares
            total = self.progress.tasks[0].total
            self.progress.update(self.bar, completed=counted(self.done + self.failed, shares, total))

    def advance(self, task: Any) -> None:
        if not self.enabled:
            return
        if task.state == "done":
            self.done += 1
        else:
            self.failed += 1
        self.shares.pop(getattr(task, "id", ""), None)
        t = self.progress.tasks[0]
        speed = f"{t.speed:,.0f}/s" if t.speed else ""
        total = max(t.total or 0, self.done + self.failed)
        self.progress.update(self.bar, completed=counted(self.done + self.failed, self.shares, total), total=total,
                             done=self.done, failed=self.failed, speed_text=speed)


class MapProgress:
    """A rich bar for one map: done, failed, total, rate and time left.

    ``progress``: ``True`` (own bar), ``False`` (none), or a running ``rich.progress.Progress`` to add
    a row to (nesting under an outer loop's bar). ``transient=True`` removes the bar (or the row)
    when the map ends, like tqdm's ``leave=False``; nested rich bars also work without sharing one
    ``Progress``: a transient inner bar under ``rich.progress.track`` is fine."""

    def __init__(self, progress: Any, total: int, description: str, transient: bool = False) -> None:
        self.total = total
        self.done = self.failed = 0
        self.shares: dict[str, float] = {}  # running task id -> fraction done (see counted())
        self.transient = transient
        self.own = progress is True
        self.progress: Progress | None
        if progress is True:
            rp = _rich()
            self.progress = rp.Progress(
                rp.TextColumn("{task.description}", style="bold", markup=False), rp.BarColumn(),
                rp.MofNCompleteColumn(),
                rp.TextColumn("[green]{task.fields[done]} done[/] [red]{task.fields[failed]} failed[/]"),
                rp.TextColumn("{task.fields[rate]}"), rp.TimeElapsedColumn(), rp.TimeRemainingColumn(),
                rp.TextColumn("{task.fields[note]}", markup=False, style="yellow"), transient=transient)
        elif "rich.progress" in sys.modules and isinstance(progress, sys.modules["rich.progress"].Progress):
            self.progress = progress
        elif progress in (False, None):
            self.progress = None
        else:
            raise ConfigError(f"progress must be True, False or a rich.progress.Progress, not {shown(progress)}")
        self.row: TaskID | None = None
        self.description = description
        self.t0 = time.monotonic()

    def __enter__(self) -> MapProgress:
        if self.progress is not None:
            if self.own:
                self.progress.start()
            self.row = self.progress.add_task(self.description, total=self.total, done=0, failed=0, rate="",
                                              note="")
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.progress is None:
            return
        if self.own:
            self.progress.stop()
        elif self.transient and self.row is not None:
            self.progress.remove_task(self.row)

    def note(self, text: str) -> None:
        """Show ``text`` (literally) after the bar; "" clears it."""
        if self.progress is not None and self.row is not None:
            self.progress.update(self.row, note=text)

    def running(self, shares: dict[str, float] | None) -> None:
        """The fraction done of each running task of this map (None: no news: the last shares stay)."""
        if shares is not None and self.progress is not None and self.row is not None:
            self.shares = shares
            self.progress.update(self.row, completed=counted(self.done + self.failed, shares, self.total))

    def advance(self, ok: int, failed: int, task_id: str = "") -> None:
        self.done += ok
        self.failed += failed
        self.shares.pop(task_id, None)
        if self.progress is None or self.row is None:
            return
        n = self.done + self.failed
        elapsed = time.monotonic() - self.t0
        rate = f"{n / elapsed:,.1f}/s" if elapsed > 0 and n else ""
        self.progress.update(self.row, completed=counted(n, self.shares, self.total), done=self.done,
                             failed=self.failed, rate=rate)
