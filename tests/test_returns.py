"""Bank returns end to end: a bank payment, then its return file, leaves the cache and the
books (real hledger-web and webhook receiver on 127.0.0.1, both databases) as if the
payment had been reversed, exactly once; a bad file changes nothing; the next caller is
offered card only."""

from __future__ import annotations

import io
import json
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from flask import Flask
from sqlalchemy import delete, func, select

from connectors.accounting.base import ReversalPost
from connectors.accounting.hledger import reversal_code
from connectors.amounts import cents_to_decimal, cents_to_text
from ivr.accounts.importer import import_accounts
from ivr.cli import main
from ivr.models import (
    Account,
    ChangeNotice,
    OutboxEntry,
    Payment,
    PostingAttempt,
    ReturnsFile,
    Reversal,
    utcnow,
)
from ivr.money.posting import drain_once
from ivr.money.returns import apply_returns_file
from ivr.prompts.catalog import load_catalog
from ivr.simulator.demo import demo_file
from ivr.statuses import OutboxStatus, PaymentStatus
from ivr.web.app import get_config, get_database
from tests.conftest import OPEN_TIME, REPO, WEBHOOK_SECRET, call, make_app
from tests.flow import (
    AUTHORIZE,
    BANK,
    CHECKING,
    PAY,
    RECENT,
    SILENCE,
    YES,
    Line,
    demo_line,
)
from tests.servers.hledger import HledgerServer
from tests.servers.webhook import Receiver

SETTINGS = load_catalog(REPO / "prompts").settings.returns
ALEX = "4401001234"  # +15555550123, ZIP 60614, owes 123.45
HEADER = "confirmation_number,return_code,return_date,amount,trace_number,detail\n"
BANK_PAYMENT = [YES, "60614", PAY, BANK, CHECKING, AUTHORIZE, SILENCE]


def returns_file(*rows: str) -> bytes:
    """A returns file in the default layout."""
    return (HEADER + "".join(row + "\n" for row in rows)).encode()


def bank_payment(app: Flask) -> Payment:
    """Alex pays the balance from a checking account, through signed webhooks."""
    call(app, BANK_PAYMENT)
    with get_database(app).session() as db:
        payment = db.scalars(select(Payment).order_by(Payment.id.desc())).first()
        assert payment is not None and payment.method == "ach"
        db.expunge(payment)
        return payment


def drain(app: Flask, later: timedelta = timedelta(0)) -> None:
    accounting = app.extensions["ivr.money.accounting"]
    drain_once(get_database(app), accounting.connector, get_config(app), poster="test-worker",
               clock=lambda: utcnow() + later)


def apply(app: Flask, data: bytes, source: str = "returns.csv") -> list[str]:
    report = apply_returns_file(get_database(app), data, source, SETTINGS)
    return report.lines()


def account(app: Flask, number: str = ALEX) -> Account:
    with get_database(app).session() as db:
        found = db.scalars(select(Account).where(Account.account_number == number)).one()
        db.expunge(found)
        return found


def reversal_rows(app: Flask) -> list[tuple[Reversal, OutboxEntry]]:
    with get_database(app).session() as db:
        rows = db.execute(select(Reversal, OutboxEntry)
                          .join(OutboxEntry, OutboxEntry.reversal_id == Reversal.id)).all()
        for reversal, entry in rows:
            db.expunge(reversal)
            db.expunge(entry)
        return [(r, e) for r, e in rows]


RETURNED_ON = OPEN_TIME.date() + timedelta(days=2)


def r01(payment: Payment, day: date = RETURNED_ON) -> str:
    """The payment's R01 row."""
    return (f"{payment.confirmation_code},R01,{day.isoformat()},"
            f"{cents_to_text(payment.amount_cents)},091000019876543,insufficient funds")


def test_an_r01_return_reverses_a_bank_payment_in_hledger_once(
        database_url: str, hledger: HledgerServer) -> None:
    app = make_app(database_url, REPO / "prompts", accounting="hledger",
                   accounting_settings=hledger.settings())
    owed_before = account(app).balance_due_cents
    books_before = hledger.balance(ALEX)
    payment = bank_payment(app)
    drain(app)
    assert hledger.balance(ALEX) == books_before - cents_to_decimal(payment.amount_cents)
    assert account(app).balance_due_cents == owed_before - payment.amount_cents

    data = returns_file(r01(payment))
    lines = apply(app, data)
    assert lines[0].startswith("returns.csv: applied; 1 returns"), lines
    # The same file again, under any name, changes nothing.
    assert "already applied" in apply(app, data)[0]
    assert "already applied" in apply(app, data, "copy-of-returns.csv")[0]

    alex = account(app)
    assert alex.balance_due_cents == owed_before
    assert alex.ach_off_until == OPEN_TIME.date() + timedelta(days=2 + SETTINGS.bank_off_days)
    [(reversal, entry)] = reversal_rows(app)
    assert (reversal.kind, reversal.code, reversal.amount_cents) == (
        "return", "R01", payment.amount_cents)
    with get_database(app).session() as db:
        stored = db.get(Payment, payment.id)
        assert stored is not None and stored.status == PaymentStatus.RETURNED

    drain(app)
    code = reversal_code(reversal.idempotency_key)
    assert hledger.transactions_with_code(code) == 1
    assert hledger.balance(ALEX) == books_before
    # The worker killed after the post landed but before it was recorded: the row is
    # pending again once its claim expires, and the retry finds the transaction.
    with get_database(app).session() as db:
        row = db.get(OutboxEntry, entry.id)
        assert row is not None and row.status == OutboxStatus.POSTED
        row.status, row.receipt_id, row.claimed_by = OutboxStatus.PENDING, None, "dead-worker"
        row.claimed_until = utcnow() - timedelta(seconds=1)
    drain(app, timedelta(hours=1))
    assert hledger.transactions_with_code(code) == 1
    assert hledger.balance(ALEX) == books_before
    assert reversal_rows(app)[0][1].status == OutboxStatus.POSTED


def test_a_reversal_reaches_the_receiver_as_its_own_event(
        database_url: str, receiver: Receiver) -> None:
    app = make_app(database_url, REPO / "prompts", accounting="webhook",
                   accounting_settings=receiver.settings())
    payment = bank_payment(app)
    assert apply(app, returns_file(r01(payment)))[0].startswith("returns.csv: applied")
    drain(app)
    drain(app, timedelta(hours=1))
    [stored] = receiver.reversals()
    body = stored["reversal"]
    assert body["event"] == "reversal" and body["kind"] == "return"
    assert body["reversed_amount"] == "123.45" and "amount" not in body
    assert body["payment_idempotency_key"] == payment.idempotency_key
    assert body["return_code"] == "R01"
    assert [p["payment"]["idempotency_key"] for p in receiver.payments()] == [
        payment.idempotency_key]


def test_a_bad_file_changes_nothing_and_says_why(tmp_path: Path) -> None:
    app = make_app(f"sqlite:///{tmp_path / 'bad.sqlite3'}", REPO / "prompts")
    payment = bank_payment(app)
    owed = account(app).balance_due_cents
    good = r01(payment)
    for bad, why in (
            (good.replace(",R01,", ",R00,"), "is not a return code"),
            (good.replace(",R01,", ",X01,"), "is not a return code"),
            (good.replace("2026-", "2026/"), "is not a date"),
            (good.replace("123.45", "123.40"), "differs from payment"),
            (good.replace("123.45", "12x"), "is not an amount")):
        lines = apply(app, returns_file("NOT-OURS-1,R01,2026-12-03,10.00,,", good, bad))
        assert "REFUSED, nothing changed" in lines[0], lines
        assert any(why in line for line in lines), (why, lines)
    assert account(app).balance_due_cents == owed and account(app).ach_off_until is None
    with get_database(app).session() as db:
        assert db.scalar(select(func.count()).select_from(Reversal)) == 0
        assert db.scalar(select(func.count()).select_from(ReturnsFile)) == 0
        stored = db.get(Payment, payment.id)
        assert stored is not None and stored.status == PaymentStatus.PAID


def test_numbers_not_ours_are_listed_and_notices_recorded(tmp_path: Path) -> None:
    app = make_app(f"sqlite:///{tmp_path / 'noc.sqlite3'}", REPO / "prompts")
    payment = bank_payment(app)
    owed = account(app).balance_due_cents
    notice = r01(payment).replace(",R01,", ",C05,").replace("insufficient funds", "savings")
    lines = apply(app, returns_file("ELSEWHERE1,R02,2026-12-03,10.00,,", notice))
    assert lines[0].startswith("returns.csv: applied; 0 returns, 1 notices of change, 1 not "
                               "ours"), lines
    assert "not ours (no payment on this line has it): ELSEWHERE1" in lines
    assert account(app).balance_due_cents == owed
    with get_database(app).session() as db:
        [stored] = db.scalars(select(ChangeNotice)).all()
        assert (stored.payment_id, stored.code, stored.detail) == (payment.id, "C05", "savings")


def test_the_next_caller_is_offered_card_only_until_the_period_ends(tmp_path: Path) -> None:
    with demo_line(tmp_path) as line:
        payment = _ach_payment(line)
        report = apply_returns_file(line.database, returns_file(r01(payment)), "r.csv", SETTINGS)
        assert report.applied, report.lines()
        flow = line.call()
        flow.press(YES, "60614", PAY)
        assert flow.heard() == ["method.card_only_returned", "confirm.card"]
        # Nor is the returned payment read out among recent payments.
        flow = line.call()
        flow.press(YES, "60614", RECENT)
        amounts = [s.params.get("amount", "") for s in getattr(flow.steps[-1], "speech", ())
                   if s.prompt_id == "recent.payment"]
        assert "one hundred twenty-three dollars and forty-five cents" not in amounts, amounts
        # An account file that arrives meanwhile (the biller has the payment, not yet its
        # return) leaves the bank payments off, and the balance back up by the return.
        owed = _owed(line)
        paid_up = b"".join(line for line in io.BytesIO(demo_file(OPEN_TIME.date()))
                           if not line.startswith(b"TRAILER")).replace(b"123.45", b"0.00")
        imported = import_accounts(line.database, io.BytesIO(paid_up), "demo",
                                   pin_key="test-pin-key", as_of=OPEN_TIME + timedelta(hours=1))
        assert imported.applied
        assert _owed(line) == owed
        flow = line.call()
        flow.press(YES, "60614", PAY)
        assert flow.heard() == ["method.card_only_returned", "confirm.card"]
        later = Line(line.database, line.catalog, line.config,
                     OPEN_TIME + timedelta(days=3 + SETTINGS.bank_off_days))
        flow = later.call()
        flow.press(YES, "60614", PAY)
        assert flow.heard() == ["method.menu_pay"]


def _ach_payment(line: Line) -> Payment:
    """A posted bank payment of Alex's balance, as a call records it."""
    with line.database.session() as db:
        alex = db.scalars(select(Account).where(Account.account_number == ALEX)).one()
        payment = Payment(idempotency_key="key-ach-1", call_sid="CA" + "1" * 32,
                          confirmation_code="ACH0000001", account_id=alex.id,
                          account_number=ALEX, amount_cents=alex.balance_due_cents,
                          method="ach", bank_account_type="consumer-checking",
                          bank_last="89", paid_at=OPEN_TIME)
        db.add(payment)
        alex.balance_due_cents = 0
        db.flush()
        db.add(OutboxEntry(payment_id=payment.id, status=OutboxStatus.POSTED,
                           posted_at=OPEN_TIME, receipt_id="T-1"))
        db.expunge(payment)
        return payment


def _owed(line: Line) -> int:
    with line.database.session() as db:
        return db.scalars(select(Account.balance_due_cents)
                          .where(Account.account_number == ALEX)).one()


@pytest.mark.slow
def test_an_r01_return_reverses_a_bank_payment_in_tryton_once(
        database_url: str, tryton: object) -> None:
    server: Any = tryton
    app = make_app(database_url, REPO / "prompts", utcnow(), accounting="tryton",
                   accounting_settings=server.settings())
    books = server.receivable(ALEX)
    payment = bank_payment(app)
    assert server.receivable(ALEX) == books - cents_to_decimal(payment.amount_cents)
    day = utcnow().date()
    assert apply(app, returns_file(r01(payment, day)))[0].startswith("returns.csv: applied")
    drain(app)
    drain(app, timedelta(hours=1))
    assert server.receivable(ALEX) == books
    assert len(server.moves(f"IVR reversal {payment.confirmation_code} [%")) == 1
    assert "already applied" in apply(app, returns_file(r01(payment, day)))[0]
    drain(app, timedelta(hours=2))
    assert len(server.moves(f"IVR reversal {payment.confirmation_code} [%")) == 1


def test_reconcile_counts_reversals_and_exits_1_when_one_is_unexplained(
        sqlite_url: str, hledger: HledgerServer, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = hledger.settings()
    app = make_app(sqlite_url, REPO / "prompts", accounting="hledger",
                   accounting_settings=settings)
    payment = bank_payment(app)
    apply(app, returns_file(r01(payment)))
    zone = load_catalog(REPO / "prompts").settings.transfer.timezone
    [(reversal, _)] = reversal_rows(app)
    day = reversal.created_at.astimezone(zone).date().isoformat()
    monkeypatch.setenv("IVR_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("IVR_PIN_KEY", "test-pin-key")
    monkeypatch.delenv("IVR_TWILIO_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("IVR_PROMPTS_DIR", raising=False)
    queued = CliRunner().invoke(main, ["reconcile", "--date", day, "--json"])
    data = json.loads(queued.output)
    assert (data["reversed"], data["reversed_cents"], data["reversals_posted"]) == (1, 12345, 0)
    assert data["ok"] and [d["status"] for d in data["differences"]] == ["return R01: queued"]
    drain(app)
    posted = CliRunner().invoke(main, ["reconcile", "--date", day])
    assert posted.exit_code == 0, posted.output
    assert "reversed 1 ($123.45), 1 posted ($123.45)" in posted.output
    with get_database(app).session() as db:
        db.execute(delete(PostingAttempt))
        db.execute(delete(OutboxEntry).where(OutboxEntry.reversal_id.is_not(None)))
    gone = CliRunner().invoke(main, ["reconcile", "--date", day])
    assert gone.exit_code == 1
    assert "UNEXPLAINED" in gone.output and "this reversal would never be posted" in gone.output


def reversal_post_example() -> ReversalPost:
    """The reversal docs/connectors/webhook.md shows."""
    return ReversalPost(
        idempotency_key="5f0c2a9e-7d41-5b3e-a0c2-8e1f6d4b9a27", account_number=ALEX,
        kind="return", amount=Decimal("123.45"), currency="USD",
        effective_date=date(2026, 12, 3),
        recorded_at=datetime(2026, 12, 3, 15, 4, 5, 900000, tzinfo=UTC),
        payment_confirmation_number="Y8FNSRFILF",
        payment_idempotency_key="3c7d6a2e-1f0b-5e89-b4a1-0d2c9e8f7a61",
        payment_paid_at=datetime(2026, 12, 1, 15, 0, tzinfo=UTC), method="ach", code="R01",
        reason="insufficient funds")


def test_the_documented_reversal_is_what_the_connector_sends() -> None:
    from connectors.accounting.webhook import reversal_payload

    doc = (REPO / "docs" / "connectors" / "webhook.md").read_text(encoding="utf-8")
    section = doc[doc.index("## Reversals"):doc.index("## Balance lookups")]
    [body] = [line for line in section.splitlines() if line.startswith('{"account_number"')]
    sent = reversal_payload(reversal_post_example())
    assert json.loads(body) == sent
    assert json.dumps(sent, sort_keys=True, separators=(",", ":")) == body
    # Nothing a payments receiver could book as a payment.
    assert not {"amount", "paid_at", "method", "fee", "last4"} & sent.keys()


def test_a_processor_report_in_a_declared_layout_through_the_cli(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / 'cli.sqlite3'}"
    app = make_app(url, REPO / "prompts")
    payment = bank_payment(app)
    doc = (REPO / "docs" / "returns.md").read_text(encoding="utf-8")
    [layouts] = re.findall(r"```toml\n(.*?)```", doc, re.DOTALL)
    (tmp_path / "layouts.toml").write_text(layouts, encoding="utf-8")
    report = tmp_path / "acme.csv"
    report.write_text("Reference;Reason;Returned;Amount;Description\r\n"
                      f"{payment.confirmation_code};NSF;12/03/2026;($123.45);no funds\r\n",
                      encoding="utf-8")
    monkeypatch.setenv("IVR_DATABASE_URL", url)
    monkeypatch.setenv("IVR_PIN_KEY", "test-pin-key")
    monkeypatch.setenv("IVR_SYNC_LAYOUTS", str(tmp_path / "layouts.toml"))
    monkeypatch.delenv("IVR_TWILIO_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("IVR_PROMPTS_DIR", raising=False)
    wrong = CliRunner().invoke(main, ["returns", "import", str(report)])
    assert wrong.exit_code == 1 and "the header lacks confirmation_number" in wrong.output
    done = CliRunner().invoke(main, ["returns", "import", str(report), "--layout", "acmepay"])
    assert done.exit_code == 0, done.output
    assert "applied; 1 returns" in done.output
    again = CliRunner().invoke(main, ["returns", "import", str(report), "--layout", "acmepay"])
    assert again.exit_code == 0 and "already applied" in again.output
    unknown = CliRunner().invoke(main, ["returns", "import", str(report), "--layout", "nope"])
    assert unknown.exit_code != 0 and "unknown layout 'nope'" in unknown.output
    listed = json.loads(CliRunner().invoke(main, ["payments", "list", "--json"]).output)
    assert [(p["status"], p["return_code"], p["return_date"], p["reversed"])
            for p in listed] == [("returned", "R01", "2026-12-03", "123.45")]
    text = CliRunner().invoke(main, ["payments", "list"]).output
    assert "returned R01 2026-12-03 ($123.45 reversed)" in text
    outbox = json.loads(CliRunner().invoke(main, ["outbox", "list", "--json"]).output)
    assert {(row["kind"], row["amount"]) for row in outbox} == {
        ("payment", "123.45"), ("reversal", "123.45")}


def test_reversals_need_their_own_webhook_url() -> None:
    from connectors.accounting.base import PermanentError
    from connectors.accounting.webhook import WebhookConnector

    base = {"IVR_WEBHOOK_URL": "http://127.0.0.1:9/payments", "IVR_WEBHOOK_SECRET": WEBHOOK_SECRET}
    with pytest.raises(ValueError, match="IVR_WEBHOOK_REVERSALS_URL must differ"):
        WebhookConnector.from_settings({**base, "IVR_WEBHOOK_REVERSALS_URL":
                                        "http://127.0.0.1:9/payments/"})
    connector = WebhookConnector.from_settings(base)
    try:
        post = reversal_post_example()
        with pytest.raises(PermanentError, match="IVR_WEBHOOK_REVERSALS_URL is not set"):
            connector.post_reversal(post)
    finally:
        connector.close()


def test_the_same_file_applied_twice_at_once_returns_the_payment_once(
        database_url: str) -> None:
    app = make_app(database_url, REPO / "prompts")
    payment = bank_payment(app)
    owed = account(app).balance_due_cents
    data = returns_file(r01(payment))
    barrier = threading.Barrier(2)

    def one(name: str) -> list[str]:
        barrier.wait()
        return apply(app, data, name)

    with ThreadPoolExecutor(2) as pool:
        reports = list(pool.map(one, ["a.csv", "b.csv"]))
    assert sorted("already applied" in lines[0] for lines in reports) == [False, True], reports
    assert len(reversal_rows(app)) == 1
    assert account(app).balance_due_cents == owed + payment.amount_cents


def test_a_return_that_does_not_mean_the_account_is_closed_leaves_bank_payments_on(
        tmp_path: Path) -> None:
    with demo_line(tmp_path) as line:
        payment = _ach_payment(line)
        stopped = r01(payment).replace(",R01,", ",R08,")
        report = apply_returns_file(line.database, returns_file(stopped), "r.csv", SETTINGS)
        assert report.applied and report.returns == 1, report.lines()
        with line.database.session() as db:
            alex = db.scalars(select(Account).where(Account.account_number == ALEX)).one()
            assert alex.ach_off_until is None and alex.balance_due_cents == 12345
        flow = line.call()
        flow.press(YES, "60614", PAY)
        assert flow.heard() == ["method.menu_pay"]
