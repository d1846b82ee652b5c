"""Progress as plain lines, for a console that is not a terminal.

rich's live progress bar draws nothing on a log file, a pipe or a cron job's mail until the
command ends, so a long run written to a log showed no progress at all. `LineProgress` takes
the part of `rich.progress.Progress`'s interface that the commands use (`add_task`, `update`,
a context manager) and prints one line per change of a task's description, and per change of
its count at most once every `interval_s` seconds; a task's first count, its last and any count
still unprinted when the command ends are always printed. A line reads
`<description>: <completed>/<total> <unit>, <fields>, ETA hh:mm:ss`; the ETA is the task's own
`eta` field where it has one, or else extrapolated from the task's rate so far.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rich.console import Console


@dataclass
class _Task:
    description: str
    total: float | None
    fields: dict[str, Any]
    started: float
    completed: float = 0.0
    printed: tuple | None = None
    printed_at: float = -float("inf")


class LineProgress:
    """A stand-in for `rich.progress.Progress` that writes plain lines to `console`."""

    def __init__(
        self,
        console: Console,
        unit: str = "",
        interval_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.console = console
        self.unit = unit
        self.interval_s = interval_s
        self.clock = clock
        self.tasks: list[_Task] = []

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        for task in self.tasks:
            if task.printed != _state(task):
                self._print(task)

    def add_task(self, description: str, total: float | None = None, **fields: Any) -> int:
        self.tasks.append(_Task(description, total, dict(fields), self.clock()))
        return len(self.tasks) - 1

    def update(
        self,
        task_id: int,
        *,
        completed: float | None = None,
        description: str | None = None,
        **fields: Any,
    ) -> None:
        task = self.tasks[task_id]
        renamed = description is not None and description != task.description
        if description is not None:
            task.description = description
        if completed is not None:
            task.completed = completed
        task.fields.update(fields)
        if task.printed == _state(task):
            return
        first = task.printed is None and task.completed > 0
        finished = task.total is not None and task.completed >= task.total
        due = self.clock() - task.printed_at >= self.interval_s
        if renamed or first or finished or due:
            self._print(task)

    def _print(self, task: _Task) -> None:
        now = self.clock()
        total = "?" if task.total is None else f"{task.total:g}"
        unit = task.fields.get("unit", self.unit)
        parts = [f"{task.description}: {task.completed:g}/{total}" + (f" {unit}" if unit else "")]
        parts += [
            f"{name} {value}"
            for name, value in task.fields.items()
            if name not in ("unit", "eta") and value != ""
        ]
        eta = task.fields.get("eta", _eta(task, now))
        if eta:
            parts.append(eta)
        self.console.print(", ".join(parts), highlight=False, markup=False, soft_wrap=True)
        task.printed = _state(task)
        task.printed_at = now


def _state(task: _Task) -> tuple:
    return (task.description, task.completed, tuple(sorted(task.fields.items(), key=str)))


def _eta(task: _Task, now: float) -> str:
    """`ETA hh:mm:ss` from the task's rate so far; '' before its first count and after its last."""
    if task.total is None or task.completed <= 0 or task.completed >= task.total:
        return ""
    return eta_text((now - task.started) / task.completed * (task.total - task.completed))


def eta_text(seconds: float) -> str:
    """`ETA hh:mm:ss`; the hours go past 24 rather than wrapping."""
    minutes, whole_seconds = divmod(max(0, round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"ETA {hours:02d}:{minutes:02d}:{whole_seconds:02d}"
