"""The issue's "done when", end to end: a caller with a disconnection notice who cannot pay
the balance makes an arrangement in one call, hears its terms and its number, and the biller
sees it exactly once: in its accounting system (each connector, real servers on 127.0.0.1),
in the next confirmation file (pushed over real sftp), and in the ops console."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from datetime import UTC, date, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from flask import Flask
from sqlalchemy import select

from connectors.accounting.hledger import arrangement_code
from ivr.accounts.sync import SyncConfig, push
from ivr.models import Arrangement, OutboxEntry, Payment, utcnow
from ivr.money.posting import drain_once
from ivr.prompts import speech
from ivr.statuses import OutboxStatus
from ivr.web.app import get_config, get_database
from tests.conftest import call, said_text, set_clock, unavailable
from tests.flow import CARD, SILENCE, YES, key
from tests.servers.hledger import HledgerServer, hledger_available, start_hledger
from tests.servers.sshd import SshdServer
from tests.servers.webhook import start_receiver
from tests.test_ops_helpers import ops_app, signed_in

JORDAN = "+15555550124"  # 4401005678, ZIP 60615, disconnection pending, 312.80 due
ACCOUNT = "4401005678"
CHICAGO = ZoneInfo("America/Chicago")
SECRET = "receiver-secret-0123456789abcdef"
# Main menu "more time", the instalment plan, agree, then the down payment by card.
PLAN_CALL = [YES, "60615", key("main_menu", "more_time"), key("arrange_menu", "instalments"),
             key("arrange_confirm", "agree"), CARD, SILENCE]

# How many times the accounting system holds an arrangement, by its idempotency key.
Seen = Callable[[Arrangement], int]



def line(database_url: str, tmp_path: Path, sshd: SshdServer,
         accounting: dict[str, str]) -> Flask:
    """The line as a biller runs it: an accounting system, file exchange and the console,
    on today's clock (Tryton books on real dates)."""
    # Noon in Chicago today: dates read out, and the day the confirmation file covers, do
    # not move under the test when it runs at midnight.
    now = utcnow().astimezone(CHICAGO).replace(hour=12, minute=0, second=0,
                                               microsecond=0).astimezone(UTC)
    app = ops_app(database_url, tmp_path, now, accounting=accounting["IVR_ACCOUNTING"],
                  accounting_settings=accounting,
                  sync_settings={"IVR_SYNC_OUTBOX_URL": sshd.url("outbox"), **sshd.settings()})
    set_clock(app, now)
    return app


def the_arrangement(app: Flask) -> Arrangement:
    with get_database(app).session() as db:
        [arrangement] = db.scalars(select(Arrangement)).all()
        db.expunge(arrangement)
        return arrangement


def make_arrangement_and_check_everywhere(app: Flask, seen: Seen, outbox: Path) -> None:
    result = call(app, PLAN_CALL, from_number=JORDAN)
    arrangement = the_arrangement(app)
    with get_database(app).session() as db:
        [down] = db.scalars(select(Payment)).all()
        entry = db.scalar(select(OutboxEntry).where(
            OutboxEntry.arrangement_id == arrangement.id))
        assert entry is not None
        status = entry.status
    # The caller heard the terms, the payment's number and the arrangement's number.
    text = result.said()
    assert said_text(app, "arrange.number", code=speech.spell(arrangement.confirmation_code)) \
        in text
    for instalment in arrangement_instalments(app, arrangement.id):
        assert said_text(app, "arrange.confirm_instalment", amount=money(instalment.amount_cents),
                         date=speech.date_words(instalment.due_date, "en-US",
                                                today(app))) in text
    assert down.purpose == "down_payment" and arrangement.down_payment_id == down.id
    # Told to the accounting system while the caller was on the line, once.
    assert status == OutboxStatus.POSTED
    assert seen(arrangement) == 1
    # A worker pass, and another after the claim would have expired, add nothing.
    accounting = app.extensions["ivr.money.accounting"]
    for later in (timedelta(0), timedelta(hours=2)):
        drain_once(get_database(app), accounting.connector, get_config(app), poster="worker",
                   clock=lambda later=later: app.extensions["ivr.clock"]() + later)
    assert seen(arrangement) == 1
    # The next confirmation files: the arrangement's rows in one file, once.
    config = SyncConfig.from_settings(get_config(app).sync_settings)
    tomorrow = app.extensions["ivr.clock"]() + timedelta(days=1)
    sent = push(get_database(app), config, CHICAGO, now=tomorrow)
    names = [s.arrangements.name for s in sent if s.arrangements]
    assert push(get_database(app), config, CHICAGO, now=tomorrow) == []  # nothing twice
    rows = confirmation_rows(outbox, names)
    assert {r["confirmation_number"] for r in rows} == {arrangement.confirmation_code}
    assert len(rows) == len(arrangement_instalments(app, arrangement.id))
    # The console lists it, masked.
    page = signed_in(app).get("/ops/arrangements").text
    assert page.count(arrangement.confirmation_code) == 1
    assert ACCOUNT not in page and "******5678" in page


def today(app: Flask) -> date:
    return app.extensions["ivr.clock"]().astimezone(CHICAGO).date()


def money(cents: int) -> str:
    return speech.money(cents, "en-US")


def arrangement_instalments(app: Flask, arrangement_id: int) -> list[Any]:
    with get_database(app).session() as db:
        arrangement = db.get(Arrangement, arrangement_id)
        assert arrangement is not None
        return list(arrangement.instalments)


def confirmation_rows(outbox: Path, names: list[str]) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []
    for name in names:
        text = (outbox / name).read_text(encoding="utf-8")
        rows += [r for r in csv.DictReader(io.StringIO(text))
                 if r["account_number"] != "TRAILER"]
    return rows


@pytest.mark.slow
def test_done_with_the_signed_webhook(database_url: str, tmp_path: Path,
                                      sshd: SshdServer) -> None:
    receiver = start_receiver(tmp_path / "receiver", SECRET)
    try:
        app = line(database_url, tmp_path, sshd, receiver.settings())

        def seen(arrangement: Arrangement) -> int:
            return sum(1 for a in receiver.arrangements()
                       if a["idempotency_key"] == arrangement.idempotency_key)

        make_arrangement_and_check_everywhere(app, seen, sshd.root / "outbox")
        # The receiver's payments endpoint got the down payment only, never the arrangement.
        assert len(receiver.payments()) == 1
    finally:
        receiver.stop()


@pytest.mark.slow
def test_done_with_hledger_web(database_url: str, tmp_path: Path, sshd: SshdServer) -> None:
    problem = hledger_available()
    if problem:
        unavailable(problem)
    hledger: HledgerServer = start_hledger(tmp_path / "hledger")
    try:
        app = line(database_url, tmp_path, sshd, hledger.settings())
        make_arrangement_and_check_everywhere(
            app, lambda a: hledger.transactions_with_code(arrangement_code(a.idempotency_key)),
            sshd.root / "outbox")
    finally:
        hledger.stop()



@pytest.mark.slow
def test_done_with_tryton(database_url: str, tmp_path: Path, sshd: SshdServer,
                          tryton: Any) -> None:
    app = line(database_url, tmp_path, sshd, tryton.settings())

    def seen(arrangement: Arrangement) -> int:
        return sum(1 for note in tryton.notes(ACCOUNT) if arrangement.idempotency_key in note)

    make_arrangement_and_check_everywhere(app, seen, sshd.root / "outbox")
