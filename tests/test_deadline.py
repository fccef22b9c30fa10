"""The webhook deadline's watchdog: work runs in the request's thread, and another thread
answers for it when the deadline passes (ivr/web/deadline.py)."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from ivr.web.deadline import DeadlinePassed, Deadlines, work_slots


class Answers:
    """A rescue that records when and from which thread it answered."""

    def __init__(self) -> None:
        self.at: list[float] = []
        self.threads: list[int] = []

    def __call__(self) -> None:
        self.at.append(time.monotonic())
        self.threads.append(threading.get_ident())


def test_work_in_time_runs_in_the_request_thread_and_nobody_else_answers() -> None:
    deadlines = Deadlines(500, slots=2)
    rescue = Answers()
    ran_in: list[int] = []

    def work(abandoned: threading.Event) -> str:
        ran_in.append(threading.get_ident())
        return "twiml"

    for _ in range(3):
        assert deadlines.run(work, started=time.monotonic(), label={}, rescue=rescue) == "twiml"
    assert ran_in == [threading.get_ident()] * 3
    time.sleep(0.7)  # past every deadline: the watchdog must have forgotten the work
    assert rescue.at == []


def test_stuck_work_is_answered_for_at_the_deadline_and_told_when_it_ends(
        caplog: pytest.LogCaptureFixture) -> None:
    deadlines = Deadlines(300, slots=2)
    rescue = Answers()
    seen_abandoned: list[bool] = []

    def stuck(abandoned: threading.Event) -> str:
        time.sleep(0.8)  # a frozen database answering at last
        seen_abandoned.append(abandoned.is_set())
        return "late twiml"

    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="ivr.web.deadline"), \
            pytest.raises(DeadlinePassed) as passed:
        deadlines.run(stuck, started=started, label={"route": "step:verify"}, rescue=rescue)
    # The caller was answered once, by another thread, on time (within the watchdog's poll)...
    assert len(rescue.at) == 1
    assert rescue.threads != [threading.get_ident()]
    assert 0.3 <= rescue.at[0] - started < 0.3 + 0.2
    # ... and the work, ending later, knew its answer would not be heard, and says so.
    assert passed.value.answered
    assert seen_abandoned == [True]
    late = [getattr(r, "fields", {}) for r in caplog.records
            if r.getMessage() == "work finished after its deadline"]
    assert [(f["route"], f["outcome"]) for f in late] == [("step:verify", "finished")]


def test_a_late_failure_is_reported_as_answered_not_raised() -> None:
    deadlines = Deadlines(200, slots=1)
    rescue = Answers()

    def fails_late(abandoned: threading.Event) -> None:
        time.sleep(0.5)
        raise RuntimeError("connection lost")

    with pytest.raises(DeadlinePassed) as passed:
        deadlines.run(fails_late, started=time.monotonic(), label={}, rescue=rescue)
    assert passed.value.answered
    assert len(rescue.at) == 1


def test_an_error_in_time_is_the_request_s_own() -> None:
    deadlines = Deadlines(500, slots=1)

    def fails(abandoned: threading.Event) -> None:
        raise ValueError("bad digits")

    with pytest.raises(ValueError, match="bad digits"):
        deadlines.run(fails, started=time.monotonic(), label={}, rescue=Answers())
    # The slot came back: the next piece runs at once.
    assert deadlines.run(lambda _a: 1, started=time.monotonic(), label={}, rescue=Answers()) == 1


def test_while_stuck_work_holds_every_slot_a_new_webhook_gets_the_deadline() -> None:
    deadlines = Deadlines(300, slots=1)
    release = threading.Event()
    rescue = Answers()

    def held(abandoned: threading.Event) -> None:
        release.wait(5)

    def first_webhook() -> None:
        with pytest.raises(DeadlinePassed):
            deadlines.run(held, started=time.monotonic(), label={}, rescue=rescue)

    stuck = threading.Thread(target=first_webhook)
    stuck.start()
    time.sleep(0.05)
    started = time.monotonic()
    with pytest.raises(DeadlinePassed) as passed:
        deadlines.run(lambda _a: 1, started=started, label={}, rescue=Answers())
    # Not answered for: this request thread was free to answer it itself, at the deadline.
    assert not passed.value.answered
    assert 0.25 <= time.monotonic() - started < 0.5
    release.set()
    stuck.join(5)
    assert len(rescue.at) == 1


def test_a_quarter_of_the_request_threads_stay_free_of_work() -> None:
    assert [work_slots(n) for n in (1, 2, 4, 8, 16)] == [1, 1, 3, 6, 12]
