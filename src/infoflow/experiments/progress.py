"""Progress of a run's prompts: a live bar on a terminal; elsewhere (a log file, a pipe, a batch job's output)
a plain line on stderr at the start, every ``LOG_EVERY_S`` seconds and at the end: prompts done of the total,
time elapsed, rate and time left."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

LOG_EVERY_S = 30.0


def progress_bar(enabled: bool) -> Progress | LogProgress:
    """Progress shown on stderr: a rich bar on a terminal, plain log lines elsewhere, nothing unless ``enabled``."""
    console = Console(stderr=True)
    if enabled and not console.is_terminal:
        return LogProgress()
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("prompts"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
        disable=not enabled,
    )


@dataclass
class LoggedTask:
    description: str
    total: int
    done: int
    started: float  # clock at the start
    done_at_start: int  # prompts done before (a resumed run): not part of the rate
    logged: float  # clock at the last line

    def line(self, now: float) -> str:
        """``label: done/total prompts (percent), elapsed[, rate, eta]``."""
        percent = f" ({self.done / self.total:.0%})" if self.total else ""
        elapsed = now - self.started
        text = f"{self.description}: {self.done}/{self.total} prompts{percent}, {clock_time(elapsed)} elapsed"
        new = self.done - self.done_at_start
        if new > 0 and elapsed > 0:
            rate = new / elapsed  # prompts per second in this process
            text += f", {rate:.3g} prompts/s, eta {clock_time((self.total - self.done) / rate)}"
        return text


def clock_time(seconds: float) -> str:
    """0:01:05 for 65.3 s."""
    return str(timedelta(seconds=round(seconds)))


class LogProgress:
    """The part of rich's ``Progress`` the runner uses, as plain lines on stderr (read when a line is written)."""

    def __init__(self, every: float | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.every = LOG_EVERY_S if every is None else every
        self.clock = clock
        self.tasks: list[LoggedTask] = []

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        return None

    def add_task(self, description: str, total: float | None = None, completed: float = 0) -> int:
        now = self.clock()
        task = LoggedTask(description, int(total or 0), int(completed), now, int(completed), now)
        self.tasks.append(task)
        self._log(task, now)
        return len(self.tasks) - 1

    def advance(self, task_id: int, advance: float = 1) -> None:
        task = self.tasks[task_id]
        task.done += int(advance)
        now = self.clock()
        if task.done >= task.total or now - task.logged >= self.every:
            self._log(task, now)

    def _log(self, task: LoggedTask, now: float) -> None:
        task.logged = now
        print(task.line(now), file=sys.stderr, flush=True)
