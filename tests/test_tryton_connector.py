"""The Tryton connector against a real Tryton 8.2 server on 127.0.0.1 (see tests/servers)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from connectors.accounting.base import PaymentPost, PermanentError, PostResult, RetryableError
from connectors.accounting.tryton import TrytonConnector
from tests.conftest import unavailable
from tests.servers.tryton import (
    IVR_PASSWORD,
    IVR_USER,
    TrytonServer,
    TrytonUnavailable,
    start_tryton,
)

pytestmark = pytest.mark.slow

# Short, so the test of an expired session only waits this long; the connector logs in
# again when the pay wizard refuses a stale session, as it must with Tryton's 300 s too.
SESSION_TIMEOUT = 2


@pytest.fixture(scope="module")
def tryton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrytonServer]:
    """A seeded Tryton for this module (skipped where it cannot run, except under CI)."""
    try:
        server = start_tryton(tmp_path_factory.mktemp("tryton"),
                              session_timeout=SESSION_TIMEOUT)
    except TrytonUnavailable as exc:
        unavailable(f"Tryton 8.2 could not be installed or started: {exc}")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def connector(tryton: TrytonServer) -> Iterator[TrytonConnector]:
    """A connector logged in as the admin user."""
    if not tryton.running:
        tryton.start()  # a test that stopped the server failed before restarting it
    conn = TrytonConnector.from_settings(tryton.settings())
    try:
        yield conn
    finally:
        conn.close()


def payment(account: str, amount: str, key: str | None = None) -> PaymentPost:
    """A card payment of ``amount`` with a fresh key unless one is given."""
    key = key or f"pay-{uuid.uuid4()}"
    return PaymentPost(
        idempotency_key=key, account_number=account, amount=Decimal(amount),
        fee=Decimal("2.50"), currency="USD", paid_at=datetime.now(UTC),
        confirmation_number=f"C{key[-8:].upper()}", method="card", last4="4242",
        card_brand="visa")


def test_health(connector: TrytonConnector) -> None:
    connector.health(timeout=5)


def test_settings_name_what_is_missing() -> None:
    settings = {"IVR_TRYTON_URL": "http://127.0.0.1:1", "IVR_TRYTON_DATABASE": "biller",
                "IVR_TRYTON_USER": "admin"}
    with pytest.raises(ValueError, match="IVR_TRYTON_PASSWORD"):
        TrytonConnector.from_settings(settings)
    with pytest.raises(ValueError, match="IVR_ACCOUNTING_READ_TIMEOUT"):
        TrytonConnector.from_settings({**settings, "IVR_TRYTON_PASSWORD": "x",
                                       "IVR_ACCOUNTING_READ_TIMEOUT": "soon"})


def test_full_payment_pays_the_invoice(tryton: TrytonServer,
                                       connector: TrytonConnector) -> None:
    assert tryton.invoice_amounts("4401001234") == [Decimal("123.45")]
    result = connector.post_payment(payment("4401001234", "123.45"))
    assert result.receipt_id and not result.already_posted
    assert tryton.invoice_amounts("4401001234") == [Decimal("0.00")]
    assert connector.lookup_balance("4401001234").balance_due == Decimal("0.00")


def test_partial_payment_keeps_the_rest_open(tryton: TrytonServer,
                                             connector: TrytonConnector) -> None:
    connector.post_payment(payment("4401003456", "26.20"))
    assert tryton.invoice_amounts("4401003456") == [Decimal("50.00")]


def test_payment_spanning_two_invoices_pays_the_older_first(
        tryton: TrytonServer, connector: TrytonConnector) -> None:
    assert tryton.invoice_amounts("4401005678") == [Decimal("187.50"), Decimal("125.30")]
    result = connector.post_payment(payment("4401005678", "200.00"))
    assert tryton.invoice_amounts("4401005678") == [Decimal("0.00"), Decimal("112.80")]
    assert len(result.receipt_id.split(",")) == 2  # one move per invoice


def test_lookup_balance_matches_the_invoices(tryton: TrytonServer,
                                             connector: TrytonConnector) -> None:
    for account in ("4401005678", "4401003456", "TEST-CRASH"):
        balance = connector.lookup_balance(account, timeout=2)
        assert balance.account_number == account
        assert balance.balance_due == sum(tryton.invoice_amounts(account), Decimal(0))


def test_the_same_payment_twice_posts_once(tryton: TrytonServer,
                                           connector: TrytonConnector) -> None:
    # LIKE wildcards in the key must not match other payments' moves.
    post = payment("TEST-TWICE", "20.00", key=f"key_50%_{uuid.uuid4()}")
    first = connector.post_payment(post)
    assert tryton.invoice_amounts("TEST-TWICE") == [Decimal("30.00")]
    second = connector.post_payment(post)
    assert second.already_posted and second.receipt_id == first.receipt_id
    # A new connector (a restarted worker) finds it too.
    with TrytonConnector.from_settings(tryton.settings()) as fresh:
        assert fresh.post_payment(post).already_posted
    assert tryton.invoice_amounts("TEST-TWICE") == [Decimal("30.00")]
    assert len(tryton.moves(f"%[{post.idempotency_key}]")) == 1


def test_overpayment_pays_everything_and_leaves_a_credit(
        tryton: TrytonServer, connector: TrytonConnector) -> None:
    connector.post_payment(payment("TEST-OVERPAY", "45.00"))
    assert tryton.invoice_amounts("TEST-OVERPAY") == [Decimal("0.00")]
    assert tryton.receivable("TEST-OVERPAY") == Decimal("-15.00")
    assert connector.lookup_balance("TEST-OVERPAY").balance_due == Decimal("-15.00")


def test_payment_without_open_invoices_is_a_credit_on_account(
        tryton: TrytonServer, connector: TrytonConnector) -> None:
    post = payment("4401009012", "25.00")
    result = connector.post_payment(post)
    assert tryton.receivable("4401009012") == Decimal("-25.00")
    assert connector.post_payment(post) == PostResult(result.receipt_id, already_posted=True)


def test_draft_left_by_a_crash_is_posted_on_retry(
        tryton: TrytonServer, connector: TrytonConnector,
        monkeypatch: pytest.MonkeyPatch) -> None:
    post = payment("4401009012", "7.00")
    before = tryton.receivable("4401009012")
    real = TrytonConnector._call

    def crash_before_posting(self: TrytonConnector, method: str, *args: Any,
                             **kwargs: Any) -> Any:
        if method == "model.account.move.post":
            raise RetryableError("tryton", "worker crashed")
        return real(self, method, *args, **kwargs)

    monkeypatch.setattr(TrytonConnector, "_call", crash_before_posting)
    with pytest.raises(RetryableError):
        connector.post_payment(post)
    monkeypatch.undo()
    assert [move["state"] for move in tryton.moves(f"%[{post.idempotency_key}]")] == ["draft"]
    # Tryton's balances include lines of draft moves already.
    assert tryton.receivable("4401009012") == before - Decimal("7.00")

    assert connector.post_payment(post).already_posted
    assert [move["state"] for move in tryton.moves(f"%[{post.idempotency_key}]")] == ["posted"]
    assert tryton.receivable("4401009012") == before - Decimal("7.00")


def test_half_applied_payment_is_completed_not_doubled(
        tryton: TrytonServer, connector: TrytonConnector,
        monkeypatch: pytest.MonkeyPatch) -> None:
    post = payment("TEST-CRASH", "70.00")
    real = TrytonConnector._pay_invoice
    calls = []

    def crash_after_first(self: TrytonConnector, *args: object, **kwargs: object) -> None:
        real(self, *args, **kwargs)  # type: ignore[arg-type]
        calls.append(1)
        # The first invoice's payment landed, then the worker died (or the answer was lost).
        raise RetryableError("tryton", "worker crashed")

    monkeypatch.setattr(TrytonConnector, "_pay_invoice", crash_after_first)
    with pytest.raises(RetryableError):
        connector.post_payment(post)
    monkeypatch.undo()
    assert calls == [1]
    assert tryton.invoice_amounts("TEST-CRASH") == [Decimal("0.00"), Decimal("60.00")]

    resumed = connector.post_payment(post)
    assert not resumed.already_posted and len(resumed.receipt_id.split(",")) == 2
    assert tryton.invoice_amounts("TEST-CRASH") == [Decimal("0.00"), Decimal("30.00")]
    again = connector.post_payment(post)
    assert again.already_posted and again.receipt_id == resumed.receipt_id
    assert tryton.invoice_amounts("TEST-CRASH") == [Decimal("0.00"), Decimal("30.00")]


def test_unknown_account_is_permanent(connector: TrytonConnector) -> None:
    with pytest.raises(PermanentError, match="no customer"):
        connector.post_payment(payment("9999999999", "10.00"))
    with pytest.raises(PermanentError, match="no customer"):
        connector.lookup_balance("9999999999")


def test_invalid_payments_are_permanent(tryton: TrytonServer,
                                        connector: TrytonConnector) -> None:
    with pytest.raises(PermanentError, match="EUR"):
        connector.post_payment(replace(payment("TEST-OUTAGE", "10.00"), currency="EUR"))
    with pytest.raises(PermanentError, match="decimals"):
        connector.post_payment(payment("TEST-OUTAGE", "10.001"))
    assert tryton.invoice_amounts("TEST-OUTAGE") == [Decimal("100.00")]


def test_wrong_password_is_retryable(tryton: TrytonServer) -> None:
    settings = {**tryton.settings(), "IVR_TRYTON_PASSWORD": "wrong"}
    with TrytonConnector.from_settings(settings) as conn, \
            pytest.raises(RetryableError, match="refused"):
        conn.health(timeout=5)


def test_accounting_group_user_can_post(tryton: TrytonServer) -> None:
    with TrytonConnector.from_settings(tryton.settings(IVR_USER, IVR_PASSWORD)) as conn:
        conn.health()
        conn.post_payment(payment("TEST-USER", "10.00"))
        assert conn.lookup_balance("TEST-USER").balance_due == Decimal("90.00")
    assert tryton.invoice_amounts("TEST-USER") == [Decimal("90.00")]


def test_expired_session_logs_in_again(tryton: TrytonServer, connector: TrytonConnector,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    connector.health()
    logins = []
    real = TrytonConnector._login

    def spy(self: TrytonConnector, budget: Any) -> str:
        logins.append(1)
        return real(self, budget)

    monkeypatch.setattr(TrytonConnector, "_login", spy)
    time.sleep(SESSION_TIMEOUT + 0.5)
    # The pay wizard wants a "fresh" session; Tryton deletes the stale one and answers 401.
    connector.post_payment(payment("TEST-SESSION", "10.00"))
    assert logins == [1]
    assert tryton.invoice_amounts("TEST-SESSION") == [Decimal("90.00")]


def test_read_timeout_is_retryable(tryton: TrytonServer, connector: TrytonConnector) -> None:
    connector.health()
    with pytest.raises(RetryableError):
        connector.lookup_balance("4401005678", timeout=0.001)
    tryton.pause()
    try:
        started = time.monotonic()
        with pytest.raises(RetryableError, match="timed out"):
            connector.lookup_balance("4401005678", timeout=0.5)
        with pytest.raises(RetryableError):
            connector.post_payment(payment("TEST-OUTAGE", "10.00"), timeout=0.5)
        # Two 0.5 s budgets; without them each call would wait the default 8 s read timeout.
        assert time.monotonic() - started < 6
    finally:
        tryton.resume()
    connector.health(timeout=5)


def test_stopped_server_is_retryable_then_posts_once(tryton: TrytonServer) -> None:
    post = payment("TEST-OUTAGE", "25.00")
    # Timeouts of 30 s: waiting on them instead of failing at once would show.
    connector = TrytonConnector.from_settings({
        **tryton.settings(), "IVR_ACCOUNTING_CONNECT_TIMEOUT": "30",
        "IVR_ACCOUNTING_READ_TIMEOUT": "30"})
    try:
        connector.health()
        tryton.kill()
        try:
            started = time.monotonic()
            with pytest.raises(RetryableError, match="connection"):
                connector.post_payment(post)
            with pytest.raises(RetryableError):
                connector.health()
            assert time.monotonic() - started < 10  # refused at once, no waiting on timeouts
        finally:
            tryton.restart()
        assert not connector.post_payment(post).already_posted
        assert connector.post_payment(post).already_posted
    finally:
        connector.close()
    assert tryton.invoice_amounts("TEST-OUTAGE") == [Decimal("75.00")]
