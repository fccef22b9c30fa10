"""The progress bar of `ivr accounts import`, `ivr sync pull` and `ivr sync push`.

Drawn on stderr, and only when stderr is a terminal: under cron or CI (stderr a file or a
pipe) the job gets no callback and not one character of the bar is written. While the bar
is up, log lines and anything else written to the terminal are printed above it, whole and
one per line; a phase that ends (a file checked, a file loaded) stays above as one line.
"""

from __future__ import annotations

import io
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

from rich.console import Console
from rich.progress import BarColumn, ProgressColumn, Task, TaskProgressColumn
from rich.progress import Progress as Bar
from rich.table import Column
from rich.text import Text

from ivr.progress import Progress, ProgressCallback


def _is_terminal(stream: IO[str]) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) and os.environ.get("TERM", "") != "dumb"


class _Phase(ProgressColumn):
    """The phase, cut short (…) on a terminal too narrow for it, the bar and the counts."""

    def __init__(self, console: Console) -> None:
        super().__init__()
        self._console = console

    def get_table_column(self) -> Column:
        room = self._console.width - 70  # a bar of 8, "100%", long counts, the gaps
        return Column(no_wrap=True, overflow="ellipsis", max_width=max(room, 12))

    def render(self, task: Task) -> Text:
        return Text(task.description, no_wrap=True, overflow="ellipsis")


class _Counts(ProgressColumn):
    """``12,345 rows · 3 rejected · 4,100 rows/s · 0:07 left`` (blank until the job says)."""

    def render(self, task: Task) -> Text:
        rows = task.fields.get("rows")
        if rows is None:
            return Text("")
        parts = [f"{rows:,} rows", f"{task.fields['rejected']:,} rejected"]
        # Rows a second since the phase began; none over the first moment, when it is noise.
        seconds = (task.stop_time or task.get_time()) - task.fields["since"]
        if seconds >= 0.5:
            parts.append(f"{(rows - task.fields['first']) / seconds:,.0f} rows/s")
        if task.finished or task.stop_time is not None:
            took = task.finished_time if task.finished else task.elapsed
            parts.append(f"took {_clock(took or 0)}")
        elif task.time_remaining is not None:
            parts.append(f"{_clock(task.time_remaining)} left")
        return Text(" · ".join(parts))


def _clock(seconds: float) -> str:
    """``0:07``, ``12:30``, ``1:05:00``."""
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class _Above(io.TextIOBase):
    """A text stream that prints each whole line above the bar (a partial line waits)."""

    def __init__(self, console: Console) -> None:
        self._console = console
        self._partial = ""

    def write(self, text: str) -> int:
        *lines, self._partial = (self._partial + text).split("\n")
        for line in lines:
            self._console.out(line, highlight=False)
        return len(text)

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return True

    def close_line(self) -> None:
        if self._partial:
            self.write("\n")


@contextmanager
def _lines_above(console: Console, terminal: IO[str]) -> Iterator[None]:
    """Send log handlers and sys.stdout/sys.stderr that write to the terminal through
    ``console`` for the block, so their lines land above the bar instead of through it."""
    above = _Above(console)
    handlers = [h for logger in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
                if isinstance(logger, logging.Logger) for h in logger.handlers
                if isinstance(h, logging.StreamHandler) and h.stream is terminal]
    saved_out, saved_err = sys.stdout, sys.stderr
    for handler in handlers:
        handler.setStream(above)
    if sys.stderr is terminal:
        sys.stderr = above
    if sys.stdout is terminal or _is_terminal(sys.stdout):
        sys.stdout = above
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved_out, saved_err
        for handler in handlers:
            handler.setStream(terminal)
        above.close_line()


@contextmanager
def terminal_progress(label: str, stream: IO[str] | None = None
                      ) -> Iterator[ProgressCallback | None]:
    """A callback that draws the job's progress on ``stream`` (stderr) under a ``label``
    line, or None when that is not a terminal. Each phase gets its own line; a job that
    never calls the callback shows a bar that fills when the block ends."""
    terminal = stream or sys.stderr
    if not _is_terminal(terminal):
        yield None
        return
    console = Console(file=terminal, force_terminal=True, highlight=False)
    bar = Bar(_Phase(console),
              BarColumn(bar_width=None, table_column=Column(ratio=1, min_width=8)),
              TaskProgressColumn(), _Counts(table_column=Column(no_wrap=True)),
              console=console, expand=True, redirect_stdout=False, redirect_stderr=False)
    task = bar.add_task("working", total=None, rows=None)
    phase: str | None = None

    def draw(progress: Progress) -> None:
        nonlocal task, phase
        if progress.phase != phase:
            if phase is not None:  # the phase that ended stays above, as it last stood
                bar.stop_task(task)
                bar.refresh()
                console.print(bar.make_tasks_table([bar.tasks[-1]]))
                bar.update(task, visible=False)
                task = bar.add_task(progress.phase)
            else:  # the job's first word: its time starts now, not at the label
                bar.reset(task)
            phase = progress.phase  # the rate counts from here: the rows then, and when
            bar.update(task, first=progress.rows, since=bar.get_time())
        bar.update(task, description=phase, total=progress.total, completed=progress.done,
                   rows=progress.rows, rejected=progress.rejected)

    console.print(Text(label, style="bold"))
    with bar, _lines_above(console, terminal):
        yield draw
        current = bar.tasks[-1]
        if current.total is None:  # nothing said how much there was: it is all done now
            bar.update(task, total=current.completed or 1, completed=current.completed or 1)
        bar.stop_task(task)
