"""How a long job (an import, a pull, a push) tells a person watching it how far it has got.

The job calls a ``ProgressCallback`` now and then with a ``Progress``; the command line draws
it on a terminal and passes nothing otherwise (cron, CI), so jobs never know about terminals.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Progress:
    """What a job has done so far.

    ``done`` and ``total`` are in the job's own unit (bytes of a file read, rows written);
    ``total`` is None when it is not known in advance. ``rows`` and ``rejected`` count
    records so far; ``phase`` says what is being done ("checking", "loading", "writing").
    """

    phase: str
    done: int
    total: int | None = None
    rows: int = 0
    rejected: int = 0


ProgressCallback = Callable[[Progress], None]
