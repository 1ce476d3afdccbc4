"""Progress bars (rich) for loops over finished tasks: done, failed, total and rate."""
from __future__ import annotations

from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class ResultsProgress:
    """A bar over a queue's root tasks; total = yielded + still unfinished. Disabled = does nothing.

    ``transient=True`` removes the bar when the loop ends (for bars nested under an outer loop)."""

    def __init__(self, queue: Any, enabled: bool = True, transient: bool = False) -> None:
        self.enabled = enabled
        self.done = self.failed = 0
        if enabled:
            self.progress = Progress(
                TextColumn(f"[bold]{queue.name}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("[green]{task.fields[done]} done [red]{task.fields[failed]} failed"),
                TextColumn("{task.fields[speed_text]}"), TimeElapsedColumn(), transient=transient)
            self.bar = self.progress.add_task(queue.name, total=None, done=0, failed=0, speed_text="")

    def __enter__(self) -> "ResultsProgress":
        if self.enabled:
            self.progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.enabled:
            self.progress.stop()

    def update(self, finished: int, unfinished: int) -> None:
        if self.enabled:
            self.progress.update(self.bar, total=finished + unfinished)

    def advance(self, task: Any) -> None:
        if not self.enabled:
            return
        if task.state == "done":
            self.done += 1
        else:
            self.failed += 1
        t = self.progress.tasks[0]
        speed = f"{t.speed:,.0f}/s" if t.speed else ""
        total = max(t.total or 0, self.done + self.failed)
        self.progress.update(self.bar, advance=1, total=total, done=self.done, failed=self.failed,
                             speed_text=speed)
