"""The progress bar of `ivr accounts import` and `ivr sync pull|push`: drawn on a terminal
(a real pseudo-terminal here), and nothing of it when output goes to a file or a pipe."""

from __future__ import annotations

import fcntl
import io
import json
import logging
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO
from zoneinfo import ZoneInfo

import pytest
from flask import Flask
from sqlalchemy import select as query

from ivr.accounts.sync import SyncConfig, interval_containing, push
from ivr.cli.progress import terminal_progress
from ivr.logs import JsonFormatter
from ivr.models import Account, Payment, utcnow
from ivr.progress import Progress
from ivr.simulator.demo import demo_file, demo_rows
from ivr.web.app import get_config, get_database
from tests.conftest import OPEN_TIME, REPO, make_app

# The demo file's accounts (the same whatever the day).
DEMO_COUNT = len(demo_rows(utcnow().date()))

CHICAGO = ZoneInfo("America/Chicago")  # the shipped prompts' transfer time zone
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
BAR = "━"  # what rich draws a bar with


def plain(raw: bytes) -> str:
    """Terminal output without its escape sequences."""
    return ANSI.sub("", raw.decode("utf-8", "replace"))


def screen_of(raw: bytes) -> list[str]:
    """The lines a terminal shows at the end: what the bar redrew or erased is gone. Knows
    the moves rich makes (carriage return, line feed, cursor up, erase line); colours and
    the cursor's visibility are dropped; a line wider than the terminal stays one line."""
    rows, y, x = [""], 0, 0
    for piece in re.split(r"(\x1b\[[0-9;?]*[A-Za-z]|\r\n|\r|\n)", raw.decode("utf-8")):
        if piece == "\r":
            x = 0
        elif piece in ("\n", "\r\n"):
            y, x = y + 1, 0
            rows.extend([""] * (y + 1 - len(rows)))
        elif piece.startswith("\x1b[") and piece.endswith("A"):
            y = max(0, y - int(piece[2:-1] or 1))
        elif piece.startswith("\x1b[") and piece.endswith("K"):
            rows[y] = rows[y][:x]
        elif not piece.startswith("\x1b["):
            rows[y] = rows[y][:x] + piece + rows[y][x + len(piece):]
            x += len(piece)
    return [row.rstrip() for row in rows if row.strip()]


def set_width(fd: int, columns: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))


class Terminal:
    """A pseudo-terminal whose screen output is collected as it comes."""

    def __init__(self) -> None:
        self.master, self.slave = pty.openpty()
        set_width(self.slave, 160)
        self._raw = bytearray()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:  # EIO: every writer has closed the terminal
                return
            if not data:
                return
            self._raw.extend(data)

    def output(self) -> bytes:
        return bytes(self._raw)

    def wait_for(self, *texts: str) -> None:
        """Until the screen has shown all of ``texts`` (the bar redraws ten times a second)."""
        deadline = time.monotonic() + 20
        while not all(t in plain(self.output()) for t in texts):
            assert time.monotonic() < deadline, f"never drawn: {texts}\n{plain(self.output())}"
            time.sleep(0.02)

    def close(self) -> None:
        """Once every writer is closed: the reader has read all there was."""
        os.close(self.slave)
        self._reader.join(timeout=10)
        os.close(self.master)


@contextmanager
def terminal() -> Iterator[tuple[Terminal, IO[str]]]:
    """A pseudo-terminal and a text stream onto it; read the screen after the block."""
    screen = Terminal()
    stream = open(os.dup(screen.slave), "w", encoding="utf-8")  # noqa: SIM115 - closed below
    try:
        yield screen, stream
    finally:
        stream.close()
        screen.close()


# --- the bar itself -------------------------------------------------------------------------

def test_off_a_terminal_the_job_gets_no_callback_and_nothing_is_written() -> None:
    sink = io.StringIO()
    with terminal_progress("import accounts.csv", stream=sink) as progress:
        assert progress is None
    assert sink.getvalue() == ""


def test_on_a_terminal_rows_rejected_rate_and_time_left_show_and_log_lines_stay_whole(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "160")  # whatever terminal pytest itself runs in
    log = logging.getLogger("ivr.test_progress")
    with terminal() as (screen, stream):
        handler = logging.StreamHandler(stream)
        handler.setFormatter(JsonFormatter())
        log.addHandler(handler)
        log.propagate = False
        record = {"file": "accounts.csv", "note": "x" * 300}  # far wider than the terminal
        try:
            with terminal_progress("import accounts.csv", stream=stream) as progress:
                assert progress is not None
                for done in (0, 2_000, 4_000):
                    progress(Progress("checking", done, 10_000, rows=done // 10,
                                      rejected=done // 2_000))
                screen.wait_for("checking", "400 rows · 2 rejected", "rows/s", "left")
                log.warning("halfway", extra={"fields": record})
                progress(Progress("checking", 10_000, 10_000, rows=1_000, rejected=3))
                progress(Progress("loading", 10_000, 10_000, rows=997, rejected=3))
        finally:
            log.removeHandler(handler)
            log.propagate = True
    drawn = screen_of(screen.output())
    # The label, the log record whole on a line of its own, then each phase as it ended.
    assert drawn[0] == "import accounts.csv"
    logged = json.loads(drawn[1])
    assert logged["msg"] == "halfway" and logged["note"] == record["note"]
    assert drawn[2].startswith("checking ") and drawn[3].startswith("loading ")
    assert "100% 1,000 rows · 3 rejected · " in drawn[2] and "took" in drawn[2]
    assert "100% 997 rows · 3 rejected · took" in drawn[3]
    assert len(drawn) == 4


def test_a_job_that_never_reports_still_ends_with_a_full_bar(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "160")
    with terminal() as (screen, stream), terminal_progress("sync pull", stream) as progress:
        assert progress is not None
    drawn = screen_of(screen.output())
    assert drawn[0] == "sync pull"
    assert BAR in drawn[-1] and "100%" in drawn[-1]


# --- what the jobs report -------------------------------------------------------------------

def add_payments(app: Flask, day: datetime, count: int) -> None:
    with get_database(app).session() as db:
        account = db.scalar(query(Account).where(Account.account_number == "4401001234"))
        assert account is not None
        for n in range(count):
            db.add(Payment(idempotency_key=f"key-{n}", call_sid=f"CA{n}",
                           confirmation_code=f"P{n:07d}", account_id=account.id,
                           account_number=account.account_number, amount_cents=100,
                           fee_cents=0, method="card", card_brand="visa", card_last4="1111",
                           paid_at=day + timedelta(seconds=n)))


def test_push_reports_the_rows_it_writes(sqlite_url: str, tmp_path: Path) -> None:
    outbox = tmp_path / "out"
    outbox.mkdir()
    app = make_app(sqlite_url, REPO / "prompts",
                   sync_settings={"IVR_SYNC_OUTBOX_URL": f"file://{outbox}"})
    nov30 = interval_containing(datetime(2026, 11, 30, 12, tzinfo=CHICAGO), 1440, CHICAGO)
    add_payments(app, nov30.start, 2_500)
    seen: list[Progress] = []
    [sent] = push(get_database(app), SyncConfig.from_settings(get_config(app).sync_settings),
                  CHICAGO, interval=nov30, now=OPEN_TIME, progress=seen.append)
    assert sent.count == 2_500
    assert {p.phase for p in seen} == {"writing payments_20261130.csv"}
    assert [(p.done, p.total, p.rows) for p in seen] == [
        (0, 2_500, 0), (1_000, 2_500, 1_000), (2_000, 2_500, 2_000), (2_500, 2_500, 2_500)]


# --- the commands, end to end ---------------------------------------------------------------

IVR = [sys.executable, "-c", "from ivr.cli import main; main()"]


@pytest.fixture
def env(sqlite_url: str, tmp_path: Path) -> dict[str, str]:
    """The environment of an `ivr` process on a migrated database with the demo accounts,
    an inbox and an outbox folder."""
    for folder in ("in", "out"):
        (tmp_path / folder).mkdir()
    settings = {"IVR_DATABASE_URL": sqlite_url, "IVR_PIN_KEY": "test-pin-key",
                "IVR_LOG_LEVEL": "INFO", "IVR_SYNC_INBOX_URL": f"file://{tmp_path / 'in'}",
                "IVR_SYNC_OUTBOX_URL": f"file://{tmp_path / 'out'}"}
    make_app(sqlite_url, REPO / "prompts")
    (tmp_path / "accounts.csv").write_bytes(demo_file(OPEN_TIME.date()))
    (tmp_path / "in" / "accounts.csv").write_bytes(demo_file(OPEN_TIME.date()))
    keep = {k: v for k, v in os.environ.items()
            if not k.startswith("IVR_") and k not in {"COLUMNS", "LINES"}}
    return {**keep, **settings, "TERM": "xterm-256color"}


def a_past_day(sqlite_url: str, count: int) -> str:
    """A local day already over (the command uses the real clock) with ``count`` payments."""
    past = (utcnow() - timedelta(days=3)).astimezone(CHICAGO).date()
    app = make_app(sqlite_url, REPO / "prompts")
    add_payments(app, datetime.combine(past, datetime.min.time(), CHICAGO), count)
    return past.isoformat()


def on_a_terminal(args: list[str], env: dict[str, str], cwd: Path) -> tuple[int, bytes]:
    """Run `ivr ARGS` with its output on a pseudo-terminal; its exit code and the screen."""
    screen = Terminal()
    process = subprocess.Popen(IVR + args, stdin=subprocess.DEVNULL, stdout=screen.slave,  # noqa: S603
                               stderr=screen.slave, env=env, cwd=cwd)
    code = process.wait(timeout=120)
    screen.close()
    return code, screen.output()


@pytest.mark.slow
def test_off_a_terminal_the_commands_print_their_report_and_nothing_else(
        env: dict[str, str], sqlite_url: str, tmp_path: Path) -> None:
    day = a_past_day(sqlite_url, 3)
    for args, report in (
            (["accounts", "import", "accounts.csv"],
             f"accounts.csv: applied; {DEMO_COUNT} accounts, 0 rejected lines\n"),
            (["sync", "pull"], f"accounts.csv: applied ({DEMO_COUNT} accounts, 0 rejected)\n"),
            (["sync", "push", "--interval", day],
             f"payments_{day.replace('-', '')}.csv: 3 payments, $3.00\n")):
        # As under CI, which often asks for colour: still not a terminal, so still no bar.
        done = subprocess.run(IVR + args, capture_output=True, cwd=tmp_path,  # noqa: S603
                              env={**env, "FORCE_COLOR": "1", "TTY_COMPATIBLE": "1"},
                              timeout=120, check=False)
        assert done.returncode == 0, done.stderr
        assert done.stdout.decode() == report
        for line in done.stderr.decode().splitlines():  # log lines only, one per line
            assert json.loads(line)["level"]
        assert b"\r" not in done.stderr and b"\x1b" not in done.stderr
        assert BAR.encode() not in done.stderr + done.stdout


@pytest.mark.slow
@pytest.mark.parametrize(("args", "label", "report"), [
    (["accounts", "import", "accounts.csv"], "import accounts.csv",
     f"accounts.csv: applied; {DEMO_COUNT} accounts, 0 rejected lines"),
    (["sync", "pull"], "sync pull", f"accounts.csv: applied ({DEMO_COUNT} accounts, 0 rejected)"),
])
def test_an_import_on_a_terminal_shows_its_bar_then_its_report(
        env: dict[str, str], tmp_path: Path, args: list[str], label: str, report: str) -> None:
    code, raw = on_a_terminal(args, env, tmp_path)
    assert code == 0, plain(raw)
    drawn = screen_of(raw)
    # What holds however often the import calls back: the label, the bar, then the report.
    assert drawn[0] == label
    assert BAR in drawn[-2]
    assert drawn[-1] == report
    # The import's log record came through whole while the bar was up.
    assert "account import" in [json.loads(line)["msg"] for line in drawn[1:-1]
                                if line.startswith("{")]


@pytest.mark.slow
def test_push_on_a_terminal_shows_the_rows_written(
        env: dict[str, str], sqlite_url: str, tmp_path: Path) -> None:
    day = a_past_day(sqlite_url, 2_500)
    code, raw = on_a_terminal(["sync", "push", "--interval", day], env, tmp_path)
    assert code == 0, plain(raw)
    drawn = screen_of(raw)
    name = f"payments_{day.replace('-', '')}.csv"
    assert drawn[0] == "sync push"
    assert json.loads(drawn[1])["msg"] == "pushed file"  # logged while the bar was up
    assert drawn[2].startswith(f"writing {name} {BAR}")
    assert "100% 2,500 rows · 0 rejected" in drawn[2]
    assert drawn[3:] == [f"{name}: 2500 payments, $2500.00"]
