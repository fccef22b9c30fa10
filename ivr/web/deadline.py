"""A hard deadline on a request's database work, whatever the database does.

A server-side statement_timeout cannot help when the database server itself stops
answering, and libpq has no read timeout: a query on a frozen connection waits forever. So
the work runs in a thread of its own and the request waits for it no longer than the
deadline. Work that misses it is abandoned, not killed: it finishes (or fails) whenever the
database answers again, and is told so through the event it is given.
"""

from __future__ import annotations

import contextvars
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from typing import TypeVar, cast

T = TypeVar("T")
log = logging.getLogger(__name__)

# Concurrent work per process outside `ivr serve` (tests, `ivr call`, `ivr demo`).
DEFAULT_SLOTS = 4


class DeadlinePassed(Exception):
    """The work did not finish in time; the request must answer without it."""


class Deadlines:
    """Runs request work in a bounded set of threads, waiting no longer than the deadline.

    At most ``slots`` pieces of work run at once, abandoned ones still stuck on a frozen
    database included: threads cannot pile up, and a request queued behind stuck work gets
    its answer at the deadline too.
    """

    def __init__(self, deadline_ms: int, slots: int = DEFAULT_SLOTS) -> None:
        self.seconds = deadline_ms / 1000
        self._slots = threading.BoundedSemaphore(slots)
        # Threads kept for the next piece of work (starting one per webhook cost more than
        # the signature check). Never more than ``slots``: each runs one piece at a time and
        # a slot is held from submitting until the piece ends.
        self._queue: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._idle = 0
        self._threads = 0
        self._lock = threading.Lock()

    def _submit(self, piece: Callable[[], None]) -> None:
        with self._lock:
            if self._idle:
                self._idle -= 1
            else:
                self._threads += 1
                threading.Thread(target=self._serve, name="ivr-deadline", daemon=True).start()
        self._queue.put(piece)

    def _serve(self) -> None:
        while True:
            piece = self._queue.get()
            try:
                piece()  # reports its own outcome
            finally:
                with self._lock:
                    self._idle += 1
                self._slots.release()  # only now: the next piece finds this thread idle

    def run(self, work: Callable[[threading.Event], T], *, started: float,
            label: Mapping[str, object]) -> T:
        """``work(abandoned)`` with the current request context, by ``started`` + deadline.

        Raises DeadlinePassed when the deadline passes first; ``abandoned`` is then set, so
        the work can see, before it commits, that its answer will never be heard. ``label``
        names the work in the log line written when abandoned work ends.
        """
        remaining = started + self.seconds - time.monotonic()
        if remaining <= 0 or not self._slots.acquire(timeout=remaining):
            raise DeadlinePassed
        abandoned = threading.Event()
        # The request's context variables (Flask's request and app among them), seen by the
        # work as its own: cheaper than pushing a copy of the request context in the thread.
        context = contextvars.copy_context()
        # A lock the waiting request sleeps on and the work releases: one wake-up, where a
        # Future took a condition, its lock and a waiter list per webhook.
        done = threading.Lock()
        done.acquire()
        answer: list[tuple[bool, object]] = []

        def target() -> None:
            outcome = "finished"
            try:
                answer.append((True, context.run(work, abandoned)))
            except BaseException as exc:  # handed to the waiting request, or logged below
                outcome = f"failed: {type(exc).__name__}"
                answer.append((False, exc))
            finally:
                done.release()
                if abandoned.is_set():
                    log.warning("work finished after its deadline", extra={"fields": {
                        **label, "outcome": outcome,
                        "ms": round((time.monotonic() - started) * 1000, 1)}})

        self._submit(target)
        if not done.acquire(timeout=max(0.0, started + self.seconds - time.monotonic())):
            abandoned.set()
            raise DeadlinePassed
        ok, value = answer[0]
        if not ok:
            raise cast(BaseException, value)
        return cast(T, value)
