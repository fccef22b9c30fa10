"""A hard deadline on a request's database work, whatever the database does.

A server-side statement_timeout cannot help when the database server itself stops
answering, and libpq has no read timeout: a query on a frozen connection waits forever; nor
can anything interrupt SQLite waiting on a stalled disk. So the request must be answered at
the deadline by a thread that is not the one doing the work. Two ways:

- the request gives a ``rescue``, a way to answer its client without returning (under
  `ivr serve`, writing on the client's socket: ivr/web/late_answer.py): the work runs in the
  request's own thread, and a watchdog thread answers for it at the deadline. No hand-off:
  handing every webhook to another thread and back cost 0.15-0.2 ms of a 2.4 ms webhook,
  served (the two threads take turns on the GIL, on two cores);
- without one (Flask's test client, the development server, /healthz), the work runs in a
  pooled thread and the request waits for it no longer than the deadline.

Work that misses the deadline is abandoned, not killed: it finishes (or fails) whenever the
database answers again, and is told so through the event it is given.
"""

from __future__ import annotations

import contextvars
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Mapping
from typing import TypeVar, cast

T = TypeVar("T")
log = logging.getLogger(__name__)

# Concurrent work per process outside `ivr serve` (tests, `ivr call`, `ivr demo`).
DEFAULT_SLOTS = 4


def work_slots(threads: int) -> int:
    """Pieces of work at once for ``threads`` request threads: a quarter of them (at least
    one) kept free of work, so that while a frozen database holds the rest, stuck in their
    own work, some thread is left to tell new callers so."""
    return max(1, threads - max(1, threads // 4))


class DeadlinePassed(Exception):
    """The work did not finish in time; the request must answer without it.

    ``answered``: the rescue already answered the client (whatever the request returns now
    is never delivered).
    """

    def __init__(self, answered: bool = False) -> None:
        super().__init__("answered at the deadline" if answered else "deadline passed")
        self.answered = answered


class _Watch:
    """Work running in its request's thread, and who answers for it."""

    __slots__ = ("abandoned", "at", "ended", "lock", "rescue")

    def __init__(self, at: float, abandoned: threading.Event, rescue: Callable[[], None]) -> None:
        self.at = at
        self.abandoned = abandoned
        self.rescue = rescue
        # Held by the watchdog while it answers, so the work cannot end half-way through it.
        self.lock = threading.Lock()
        self.ended = False  # the watchdog answered for it if ``abandoned`` is set


class _Watchdog:
    """One thread per process that answers, at their deadline, for work still running.

    It looks every ``POLL`` seconds rather than being woken per piece of work: starting a
    watch costs a dict insert, never a wake-up. The deadline is honoured to within ``POLL``.
    """

    POLL = 0.05

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._watches: dict[int, _Watch] = {}
        self._pid = 0  # the thread is started in the process that watches (after a fork)

    def watch(self, at: float, abandoned: threading.Event, rescue: Callable[[], None]) -> _Watch:
        watch = _Watch(at, abandoned, rescue)
        with self._lock:
            self._watches[id(watch)] = watch
            if self._pid != os.getpid():
                self._pid = os.getpid()
                threading.Thread(target=self._run, name="ivr-watchdog", daemon=True).start()
        return watch

    def end(self, watch: _Watch) -> bool:
        """The work ended: True if in time, False if the watchdog answered for it."""
        with self._lock:
            self._watches.pop(id(watch), None)
        with watch.lock:
            watch.ended = True
            return not watch.abandoned.is_set()

    def _run(self) -> None:
        while True:
            time.sleep(self.POLL)
            now = time.monotonic()
            with self._lock:
                due = [w for w in self._watches.values() if w.at <= now]
            for watch in due:
                with watch.lock:
                    if watch.ended:
                        continue
                    watch.abandoned.set()
                    try:
                        watch.rescue()
                    except Exception:  # the client went away, say: nothing left to answer
                        log.exception("answering at the deadline failed")
                with self._lock:
                    self._watches.pop(id(watch), None)


class Deadlines:
    """Runs request work in a bounded set of threads, waiting no longer than the deadline.

    At most ``slots`` pieces of work run at once, abandoned ones still stuck on a frozen
    database included: threads cannot pile up, and a request queued behind stuck work gets
    its answer at the deadline too.
    """

    def __init__(self, deadline_ms: int, slots: int = DEFAULT_SLOTS) -> None:
        self.seconds = deadline_ms / 1000
        self._slots = threading.BoundedSemaphore(slots)
        self._watchdog = _Watchdog()
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
            label: Mapping[str, object], rescue: Callable[[], None] | None = None) -> T:
        """``work(abandoned)`` with the current request context, by ``started`` + deadline.

        Raises DeadlinePassed when the deadline passes first; ``abandoned`` is then set, so
        the work can see, before it commits, that its answer will never be heard. ``label``
        names the work in the log line written when abandoned work ends. With ``rescue``
        the work runs in this thread, and ``rescue()`` answers the client from another at
        the deadline; DeadlinePassed(answered=True) then comes when the work ends.
        """
        remaining = started + self.seconds - time.monotonic()
        if remaining <= 0 or not self._slots.acquire(timeout=remaining):
            raise DeadlinePassed
        abandoned = threading.Event()
        if rescue is not None:
            return self._run_here(work, abandoned, started, label, rescue)
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

    def _run_here(self, work: Callable[[threading.Event], T], abandoned: threading.Event,
                  started: float, label: Mapping[str, object], rescue: Callable[[], None]) -> T:
        """The work in this thread, the watchdog ready to answer for it; holds a slot."""
        watch = self._watchdog.watch(started + self.seconds, abandoned, rescue)
        outcome = "finished"
        try:
            return work(abandoned)
        except BaseException as exc:
            outcome = f"failed: {type(exc).__name__}"
            raise
        finally:
            self._slots.release()
            if not self._watchdog.end(watch):
                log.warning("work finished after its deadline", extra={"fields": {
                    **label, "outcome": outcome,
                    "ms": round((time.monotonic() - started) * 1000, 1)}})
                # The client has its answer; whatever this request returns is not heard.
                raise DeadlinePassed(answered=True)
