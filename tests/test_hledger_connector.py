"""The hledger connector against a real hledger-web 1.25 process on 127.0.0.1."""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import requests

from connectors.accounting.base import (
    AccountingConnector,
    PaymentPost,
    PermanentError,
    RetryableError,
)
from connectors.accounting.hledger import HledgerConnector, Posting, transaction_code, unbalanced_by
from connectors.accounting.hledger_journal import JournalStamp, filesystem_type, stampable
from connectors.accounting.state import MemoryStateStore
from tests.conftest import unavailable
from tests.servers.gate import Gate
from tests.servers.hledger import (
    CLEARING_ACCOUNT,
    FEE_ACCOUNT,
    HledgerServer,
    hledger_available,
    start_hledger,
)

PAID_AT = datetime(2026, 12, 1, 16, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HledgerServer]:
    """One hledger-web for the module (skipped locally when it is not installed)."""
    problem = hledger_available()
    if problem is not None:
        unavailable(problem)
    hledger = start_hledger(tmp_path_factory.mktemp("hledger"))
    try:
        yield hledger
    finally:
        hledger.stop()


@pytest.fixture
def live(server: HledgerServer) -> Iterator[HledgerServer]:
    """The server, brought back (same port, same journal) if a test left it down."""
    yield server
    server.resume()
    if not server.running:
        server.start()


@pytest.fixture
def connector(live: HledgerServer) -> Iterator[HledgerConnector]:
    """A connector configured from the server's IVR_HLEDGER_* settings."""
    conn = HledgerConnector.from_settings(live.settings())
    try:
        yield conn
    finally:
        conn.close()


def payment(account: str = "4401001234", amount: str = "50.00", fee: str = "2.95",
            **changes: Any) -> PaymentPost:
    """A fresh payment (new idempotency key each time)."""
    post = PaymentPost(idempotency_key=str(uuid.uuid4()), account_number=account,
                       amount=Decimal(amount), fee=Decimal(fee), currency="USD",
                       paid_at=PAID_AT, confirmation_number="PC" + uuid.uuid4().hex[:8],
                       method="card", last4="1111", card_brand="visa")
    return replace(post, **changes)


def server_transaction(server: HledgerServer, code: str) -> dict[str, Any]:
    """The transaction with ``code`` as the server reports it."""
    response = requests.get(f"{server.url}/transactions", timeout=5)
    response.raise_for_status()
    found = [t for t in response.json() if t["tcode"] == code]
    assert len(found) == 1, found
    return found[0]


def test_is_an_accounting_connector(connector: HledgerConnector) -> None:
    assert isinstance(connector, AccountingConnector)
    assert connector.name == "hledger"
    connector.health(timeout=2)


def test_payment_lowers_balance_and_credits_fee(live: HledgerServer,
                                                connector: HledgerConnector) -> None:
    before = live.balance("4401001234")
    fees = live.account_balance(FEE_ACCOUNT)
    clearing = live.account_balance(CLEARING_ACCOUNT)
    post = payment(amount="50.00", fee="2.95")

    result = connector.post_payment(post, timeout=5)

    assert result.receipt_id == post.idempotency_key
    assert not result.already_posted
    assert live.balance("4401001234") == before - Decimal("50.00")
    assert live.account_balance(FEE_ACCOUNT) == fees - Decimal("2.95")
    assert live.account_balance(CLEARING_ACCOUNT) == clearing + Decimal("52.95")
    txn = server_transaction(live, result.receipt_id)
    tags = dict(map(tuple, txn["ttags"]))
    assert tags == {"acct": "4401001234", "ivr_ref": post.idempotency_key,
                    "conf": post.confirmation_number}
    assert txn["tdescription"] == (f"IVR payment conf {post.confirmation_number} "
                                   "visa card ****1111")
    assert txn["tdate"] == "2026-12-01"
    assert live.transactions_with_code(result.receipt_id) == 1


def test_no_fee_means_no_fee_posting(live: HledgerServer, connector: HledgerConnector) -> None:
    fees = live.account_balance(FEE_ACCOUNT)
    post = payment(account="4401005678", amount="12.5", fee="0.00", method="ach",
                   card_brand=None, last4="6789")
    result = connector.post_payment(post, timeout=5)
    txn = server_transaction(live, result.receipt_id)
    assert [p["paccount"] for p in txn["tpostings"]] == [
        CLEARING_ACCOUNT, "receivables:customers:4401005678"]
    assert txn["tdescription"].endswith(" ach ****6789")
    assert live.account_balance(FEE_ACCOUNT) == fees


def test_same_payment_twice_posts_once(live: HledgerServer,
                                       connector: HledgerConnector) -> None:
    before = live.balance("4401001234")
    post = payment(amount="10.00", fee="1.00")
    first = connector.post_payment(post, timeout=5)
    second = connector.post_payment(post, timeout=5)
    # A second connector (another worker, or after a restart of ours) sees it too.
    other = HledgerConnector.from_settings(live.settings())
    try:
        third = other.post_payment(post, timeout=5)
    finally:
        other.close()
    assert not first.already_posted
    assert second.already_posted and third.already_posted
    assert first.receipt_id == second.receipt_id == third.receipt_id
    assert live.transactions_with_code(first.receipt_id) == 1
    assert live.balance("4401001234") == before - Decimal("10.00")


@pytest.mark.slow
def test_repost_right_after_posting_is_seen(live: HledgerServer,
                                            connector: HledgerConnector) -> None:
    # hledger-web reloads its journal by file mtime; writes landing within a clock tick of
    # a reload stayed invisible until the next write. Back-to-back posts must still dedupe.
    posts = [payment(amount="1.00", fee="0") for _ in range(8)]
    for post in posts:
        assert not connector.post_payment(post, timeout=5).already_posted
        assert connector.post_payment(post, timeout=5).already_posted
    for post in posts:
        assert live.transactions_with_code(post.idempotency_key) == 1


def test_unbalanced_transaction_is_never_sent(live: HledgerServer) -> None:
    class Buggy(HledgerConnector):
        def postings(self, payment: PaymentPost) -> list[Posting]:
            good = super().postings(payment)
            # A one-cent slip, as a bad fee split would make.
            return [Posting(good[0].account, good[0].amount + Decimal("0.01")), *good[1:]]

    journal = live.journal.read_bytes()
    mtime = live.journal.stat().st_mtime_ns
    buggy = Buggy.from_settings(live.settings())
    try:
        with pytest.raises(PermanentError, match="does not balance"):
            buggy.post_payment(payment(), timeout=5)
    finally:
        buggy.close()
    assert live.journal.read_bytes() == journal
    assert live.journal.stat().st_mtime_ns == mtime
    # The journal still parses: a restart succeeds (1.25 would refuse to start otherwise).
    live.restart()
    assert requests.get(f"{live.url}/version", timeout=5).json() == "1.25"


def test_balance_check_reads_the_wire_amounts() -> None:
    def amount(mantissa: int, places: int) -> dict[str, Any]:
        return {"acommodity": "USD",
                "aquantity": {"decimalMantissa": mantissa, "decimalPlaces": places}}

    balanced = {"tpostings": [{"pamount": [amount(5295, 2)]}, {"pamount": [amount(-50, 0)]},
                              {"pamount": [amount(-2950, 3)]}]}
    assert unbalanced_by(balanced) == {}
    off = {"tpostings": [{"pamount": [amount(5295, 2)]}, {"pamount": [amount(-5294, 2)]}]}
    assert unbalanced_by(off) == {"USD": Decimal("0.01")}
    inferred = {"tpostings": [{"pamount": [amount(100, 2)]}, {"pamount": []}]}
    assert unbalanced_by(inferred)


def test_unknown_customer_is_permanent(live: HledgerServer,
                                       connector: HledgerConnector) -> None:
    journal = live.journal.read_bytes()
    with pytest.raises(PermanentError, match="unknown customer"):
        connector.post_payment(payment(account="9999999999"), timeout=5)
    with pytest.raises(PermanentError, match="unknown customer"):
        connector.lookup_balance("9999999999", timeout=5)
    with pytest.raises(PermanentError, match="cannot name"):
        connector.post_payment(payment(account="44 01;x"), timeout=5)
    assert live.journal.read_bytes() == journal


def test_customer_added_to_journal_is_known_at_once(live: HledgerServer,
                                                    connector: HledgerConnector) -> None:
    # Fill the name cache first; a miss must re-read, never trust the cached list.
    connector.post_payment(payment(amount="1.00", fee="0"), timeout=5)
    live.append_journal("\naccount receivables:customers:4401007777\n")
    result = connector.post_payment(payment(account="4401007777", amount="5.00", fee="0"),
                                    timeout=5)
    assert live.balance("4401007777") == Decimal("-5.00")
    assert live.transactions_with_code(result.receipt_id) == 1


def test_invalid_payments_are_permanent(connector: HledgerConnector) -> None:
    for bad in (payment(amount="0"), payment(amount="-5.00"), payment(fee="-1.00"),
                payment(currency="EUR"), payment(amount="NaN")):
        with pytest.raises(PermanentError):
            connector.post_payment(bad, timeout=5)


def test_server_killed_is_retryable(live: HledgerServer) -> None:
    # Timeouts of 30 s: waiting on any of them instead of failing at once would show.
    connector = HledgerConnector.from_settings({
        **live.settings(), "IVR_ACCOUNTING_CONNECT_TIMEOUT": "30",
        "IVR_ACCOUNTING_READ_TIMEOUT": "30"})
    try:
        connector.health()  # a pooled connection to the old process
        live.kill()
        started = time.monotonic()
        with pytest.raises(RetryableError, match="connection failed"):
            connector.post_payment(payment())
        with pytest.raises(RetryableError):
            connector.lookup_balance("4401001234")
        with pytest.raises(RetryableError):
            connector.health()
        assert time.monotonic() - started < 10
        live.start()
        result = connector.post_payment(payment(amount="2.00"), timeout=5)
        assert live.transactions_with_code(result.receipt_id) == 1
    finally:
        connector.close()


@pytest.mark.slow
def test_server_paused_times_out_within_budget(live: HledgerServer,
                                               connector: HledgerConnector) -> None:
    post = payment(amount="3.00")
    live.pause()
    try:
        for call in (lambda: connector.post_payment(post, timeout=0.5),
                     lambda: connector.lookup_balance("4401001234", timeout=0.5)):
            started = time.monotonic()
            with pytest.raises(RetryableError, match="timed out"):
                call()
            # At least the budget; far less than the default timeouts (3 s connect, 8 s read)
            # it would wait without one.
            assert 0.4 < time.monotonic() - started < 3
    finally:
        live.resume()
    # Nothing was written while it stood still; the retry posts exactly once.
    assert live.transactions_with_code(post.idempotency_key) == 0
    assert not connector.post_payment(post, timeout=5).already_posted
    assert live.transactions_with_code(post.idempotency_key) == 1


def test_lookup_balance(live: HledgerServer, connector: HledgerConnector) -> None:
    # Accounts no other test pays into hold their opening bills.
    assert connector.lookup_balance("4401009012", timeout=5).balance_due == Decimal("-25.00")
    balance = connector.lookup_balance("4401003456", timeout=5)
    assert (balance.account_number, balance.balance_due) == ("4401003456", Decimal("76.20"))
    assert str(balance.balance_due) == "76.20"
    before = connector.lookup_balance("4401001234", timeout=5).balance_due
    assert before == live.balance("4401001234")
    connector.post_payment(payment(amount="0.45", fee="0"), timeout=5)
    assert connector.lookup_balance("4401001234", timeout=5).balance_due == before - \
        Decimal("0.45")


def test_declared_account_without_postings_has_zero_balance(
        live: HledgerServer, connector: HledgerConnector) -> None:
    live.append_journal("\naccount receivables:customers:4401008888\n")
    assert connector.lookup_balance("4401008888", timeout=5).balance_due == Decimal("0.00")


def test_restart_keeps_a_parseable_journal_with_the_posting(
        live: HledgerServer, connector: HledgerConnector) -> None:
    # Characters that mean something in journal text: ")" ends a code, ";" a description.
    post = payment(idempotency_key="key with ) and ; inside", confirmation_number="AB;C)D\n",
                   last4="12;4", card_brand="vi(sa")
    result = connector.post_payment(post, timeout=5)
    assert result.receipt_id == transaction_code(post.idempotency_key)
    assert result.receipt_id.startswith("ivr-")
    live.restart()
    assert live.transactions_with_code(result.receipt_id) == 1
    txn = server_transaction(live, result.receipt_id)
    assert txn["tdescription"] == "IVR payment conf ABCD visa card ****124"
    assert dict(map(tuple, txn["ttags"]))["conf"] == "ABCD"
    again = connector.post_payment(post, timeout=5)
    assert again.already_posted and again.receipt_id == result.receipt_id


def test_settings() -> None:
    with pytest.raises(ValueError, match="IVR_HLEDGER_URL"):
        HledgerConnector.from_settings({})
    with pytest.raises(ValueError, match="IVR_HLEDGER_URL"):
        HledgerConnector.from_settings({"IVR_HLEDGER_URL": "ftp://x"})
    base = {"IVR_HLEDGER_URL": "http://127.0.0.1:5051/"}
    with pytest.raises(ValueError, match="IVR_ACCOUNTING_READ_TIMEOUT"):
        HledgerConnector.from_settings({**base, "IVR_ACCOUNTING_READ_TIMEOUT": "0"})
    with pytest.raises(ValueError, match="IVR_HLEDGER_FEE_ACCOUNT"):
        HledgerConnector.from_settings({**base, "IVR_HLEDGER_FEE_ACCOUNT": "income; x"})
    with pytest.raises(ValueError, match="IVR_HLEDGER_COMMODITY"):
        HledgerConnector.from_settings({**base, "IVR_HLEDGER_COMMODITY": "US D"})
    with pytest.raises(ValueError, match="IVR_HLEDGER_TIMEZONE"):
        HledgerConnector.from_settings({**base, "IVR_HLEDGER_TIMEZONE": "Mars/Base"})
    conn = HledgerConnector.from_settings({**base, "IVR_HLEDGER_COMMODITY": "$",
                                           "IVR_HLEDGER_TIMEZONE": "America/Chicago"})
    try:
        assert conn.url == "http://127.0.0.1:5051"
        assert conn.receivable_account("4401001234") == "receivables:customers:4401001234"
        assert (conn.clearing_account, conn.fee_account) == (
            "assets:bank:clearing", "income:convenience-fees")
        assert conn.currency == "USD"
        # 20:30 in Chicago on Dec 1 is already Dec 2 in UTC: the biller's day counts.
        late = payment(paid_at=datetime(2026, 12, 2, 2, 30, tzinfo=UTC))
        assert conn.transaction(late)["tdate"] == "2026-12-01"
        wire = conn.transaction(payment(amount="50", fee="0"))["tpostings"][0]["pamount"][0]
        assert wire["aquantity"] == {"decimalMantissa": 5000, "decimalPlaces": 2}
        assert wire["acommodity"] == "$" and wire["astyle"]["ascommodityspaced"] is False
    finally:
        conn.close()


@pytest.mark.slow
def test_write_that_timed_out_but_landed_is_found_by_the_retry(live: HledgerServer) -> None:
    class StallsBeforeWriting(HledgerConnector):
        def _wait_after_read(self, deadline: Any) -> None:
            super()._wait_after_read(deadline)
            live.pause()  # the PUT is then queued by the kernel and answered too late

    post = payment(amount="4.00")
    stalling = StallsBeforeWriting.from_settings(live.settings())
    try:
        with pytest.raises(RetryableError, match="timed out"):
            stalling.post_payment(post, timeout=1.0)
    finally:
        live.resume()
        stalling.close()
    deadline = time.monotonic() + 30
    while live.transactions_with_code(post.idempotency_key) == 0:
        assert time.monotonic() < deadline, "the late PUT never landed"
        time.sleep(0.02)
    retry = HledgerConnector.from_settings(live.settings())
    try:
        result = retry.post_payment(post, timeout=5)
    finally:
        retry.close()
    assert result.already_posted
    assert live.transactions_with_code(post.idempotency_key) == 1


@pytest.mark.slow
def test_writers_at_once_are_retried_never_refused(live: HledgerServer) -> None:
    """Several workers writing at once: hledger-web 1.25 sometimes fails a request inside
    (a journal reload meeting an append) and answers 403. That is a retry, never a dead
    letter: every payment ends up in the journal exactly once."""
    import threading

    posts = [[payment(account="4401009012", amount="1.00", fee="0.00") for _ in range(12)]
             for _ in range(3)]
    refused: list[str] = []

    def worker(mine: list[PaymentPost]) -> None:
        connector = HledgerConnector.from_settings(live.settings())
        try:
            for post in mine:
                for _ in range(20):
                    try:
                        connector.post_payment(post, timeout=30)
                        break
                    except RetryableError:
                        continue  # what the worker does, after a backoff
                    except PermanentError as exc:
                        refused.append(str(exc))
                        break
        finally:
            connector.close()

    threads = [threading.Thread(target=worker, args=(mine,)) for mine in posts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert refused == []
    # The journal file is the record. (hledger-web's own view can lag it after writes that
    # land within one file-time tick of each other, until the next change: not checked here.)
    for mine in posts:
        for post in mine:
            assert live.transactions_with_code(transaction_code(post.idempotency_key)) == 1


def stamping(live: HledgerServer, journal: str | None = None, gap_ms: int = 1000
             ) -> HledgerConnector:
    """A connector that stamps ``journal`` (the server's own by default); a long reload gap,
    so a write that still waited for it would show."""
    return HledgerConnector.from_settings({
        **live.settings(), "IVR_HLEDGER_JOURNAL": journal or str(live.journal),
        "IVR_HLEDGER_RELOAD_GAP_MS": str(gap_ms)})


def first_attempt(account: str = "4401001234") -> PaymentPost:
    """A payment as the worker first sends it (no earlier attempt could have landed)."""
    return payment(account=account, amount="1.00", fee="0", may_exist=False)


def test_stamped_journal_shows_every_write_at_once(live: HledgerServer,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="connectors")
    connector = stamping(live)
    try:
        connector.post_payment(first_attempt(), timeout=5)  # proves the stamp: read and pause
        assert connector.journal is not None and connector.journal.trusted
        assert "writes go without the read and the reload gap" in caplog.text
        posts = [first_attempt() for _ in range(20)]
        started = time.monotonic()
        for post in posts:
            code = connector.post_payment(post, timeout=5).receipt_id
            # Seen by the very next read: written back to back, unstamped, about a third
            # of such writes stay unseen until a later one.
            server_transaction(live, code)
        # Neither a read nor the 1 s pause before any of them (they would take 20 s).
        assert time.monotonic() - started < 10
    finally:
        connector.close()
    for post in posts:
        assert live.transactions_with_code(transaction_code(post.idempotency_key)) == 1


def land_unseen(live: HledgerServer, body: dict[str, Any]) -> dict[str, Any]:
    """Write ``body`` straight to hledger-web and leave it as hledger-web may leave a write
    (stamped no later than its last reload): in the file, unseen by every read."""
    requests.put(f"{live.url}/add", json=body, timeout=5).raise_for_status()
    old = live.journal.stat()
    os.utime(live.journal, ns=(old.st_atime_ns, old.st_mtime_ns - 10_000_000_000))
    unseen = requests.get(f"{live.url}/transactions", timeout=5).json()
    assert body["tcode"] not in {t["tcode"] for t in unseen}
    return body


def test_retry_stamps_before_looking_for_an_earlier_write(live: HledgerServer) -> None:
    """An attempt wrote, then its process died before stamping: the retry must still find
    it, never post it twice."""
    connector = stamping(live)
    try:
        connector.post_payment(first_attempt(), timeout=5)
        post = payment(amount="3.00", fee="0")
        body = land_unseen(live, connector.transaction(post))
        retried = connector.post_payment(post, timeout=5)
    finally:
        connector.close()
    assert retried.already_posted
    assert live.transactions_with_code(body["tcode"]) == 1


def test_a_file_that_is_not_the_served_journal_is_never_trusted(
        live: HledgerServer, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    elsewhere = tmp_path / "copy.journal"
    elsewhere.write_text(live.journal.read_text(encoding="utf-8"), encoding="utf-8")
    connector = stamping(live, str(elsewhere), gap_ms=20)
    try:
        for post in [first_attempt() for _ in range(5)]:
            server_transaction(live, connector.post_payment(post, timeout=5).receipt_id)
        assert connector.journal is not None and not connector.journal.trusted
    finally:
        connector.close()
    assert "not the journal hledger-web serves" in caplog.text


def test_journal_setting_is_checked(tmp_path: Path) -> None:
    base = {"IVR_HLEDGER_URL": "http://127.0.0.1:5051/"}
    with pytest.raises(ValueError, match=r"IVR_HLEDGER_JOURNAL.*absolute"):
        HledgerConnector.from_settings({**base, "IVR_HLEDGER_JOURNAL": "biller.journal"})
    with pytest.raises(ValueError, match=r"IVR_HLEDGER_JOURNAL.*cannot read"):
        HledgerConnector.from_settings({**base, "IVR_HLEDGER_JOURNAL": str(tmp_path / "no")})
    with pytest.raises(ValueError, match=r"IVR_HLEDGER_JOURNAL.*not a file"):
        HledgerConnector.from_settings({**base, "IVR_HLEDGER_JOURNAL": str(tmp_path)})


def finding(live: HledgerServer, state: MemoryStateStore, gap_ms: int = 1000
            ) -> HledgerConnector:
    """A connector with the defaults (it finds the journal itself) and a long reload gap,
    so a write that still waited for it would show."""
    return HledgerConnector.from_settings(
        {**live.settings(), "IVR_HLEDGER_RELOAD_GAP_MS": str(gap_ms)}, state)


def test_default_connector_finds_the_journal_and_shows_every_write_at_once(
        live: HledgerServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="connectors")
    state = MemoryStateStore()
    connector = finding(live, state)
    try:
        connector.post_payment(first_attempt(), timeout=5)  # read, pause, then reads it back
        assert connector.journal is not None and connector.journal.trusted
        assert connector.journal.path == live.journal
        assert "named by hledger-web" in caplog.text
        # Kept for every process of the line: a retry elsewhere stamps it before looking.
        assert state.get("journal_path") == str(live.journal)
        posts = [first_attempt() for _ in range(20)]
        started = time.monotonic()
        for post in posts:
            server_transaction(live, connector.post_payment(post, timeout=5).receipt_id)
        assert time.monotonic() - started < 10  # no 1 s pause before any of them
    finally:
        connector.close()


class FoundMeanwhile(MemoryStateStore):
    """Another process records the same journal between this one's read and its write."""

    def __init__(self) -> None:
        super().__init__()
        self.raced = False

    def put(self, key: str, value: str, *, expected: str | None) -> bool:
        if key == "journal_path" and not self.raced:
            self.raced = True
            assert super().put(key, value, expected=expected)
        return super().put(key, value, expected=expected)


def test_two_processes_finding_the_journal_at_once_both_stamp_it(
        live: HledgerServer) -> None:
    """Two workers started together both find the journal with their first writes; the one
    whose record of it comes second must stamp too, or each of its writes waits for the
    gap, and one landing in that gap just as the other process stamps stays unseen."""
    state = FoundMeanwhile()
    connector = finding(live, state)
    try:
        connector.post_payment(first_attempt(), timeout=5)
        assert state.raced
        assert connector.journal is not None and connector.journal.trusted
        started = time.monotonic()
        server_transaction(live, connector.post_payment(first_attempt(), timeout=5).receipt_id)
        assert time.monotonic() - started < 1  # no 1 s reload gap before it
    finally:
        connector.close()


def test_a_retry_in_a_new_process_stamps_the_journal_another_one_found(
        live: HledgerServer) -> None:
    state = MemoryStateStore()
    first = finding(live, state)
    try:
        first.post_payment(first_attempt(), timeout=5)
    finally:
        first.close()
    # An attempt of a stamping process wrote, then the process died before its stamp.
    post = payment(amount="4.00", fee="0")
    retrying = finding(live, state)
    try:
        body = land_unseen(live, retrying.transaction(post))
        retried = retrying.post_payment(post, timeout=5)
    finally:
        retrying.close()
    assert retried.already_posted
    assert live.transactions_with_code(body["tcode"]) == 1


def test_journal_off_never_stamps(live: HledgerServer) -> None:
    state = MemoryStateStore()
    connector = HledgerConnector.from_settings(
        {**live.settings(), "IVR_HLEDGER_JOURNAL": "off", "IVR_HLEDGER_RELOAD_GAP_MS": "20"},
        state)
    try:
        for post in [first_attempt() for _ in range(3)]:
            server_transaction(live, connector.post_payment(post, timeout=5).receipt_id)
    finally:
        connector.close()
    assert connector.journal is None and state.get("journal_path") is None


def test_a_file_that_does_not_end_with_the_write_is_not_adopted(
        live: HledgerServer, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    connector = HledgerConnector.from_settings(live.settings())
    try:
        code = connector.post_payment(first_attempt(), timeout=5).receipt_id
    finally:
        connector.close()
    elsewhere = tmp_path / "copy.journal"
    elsewhere.write_text(live.journal.read_text(encoding="utf-8") + "\n; later\n" * 2000,
                         encoding="utf-8")
    assert not JournalStamp(elsewhere).adopt(code)
    assert "not the journal hledger-web writes to" in caplog.text
    assert JournalStamp(live.journal).adopt(code)


def test_two_processes_stamps_never_set_the_journal_back(tmp_path: Path) -> None:
    """One process reads the clock for its stamp and is held up (the GIL, the scheduler)
    while another stamps after its own write: the held stamp must not then set the mtime
    below the other's, or hledger-web's reload in between would keep that write unseen."""
    journal = tmp_path / "biller.journal"
    journal.write_text("; books\n", encoding="utf-8")
    read, held, go_on = [], threading.Event(), threading.Event()

    def held_clock() -> int:
        now = time.time_ns()
        read.append(now)
        held.set()
        go_on.wait(10)
        return now

    def clock() -> int:
        read.append(time.time_ns())
        return read[-1]

    slow = threading.Thread(target=JournalStamp(journal, held_clock).stamp)
    slow.start()
    assert held.wait(10)
    quick = threading.Thread(target=JournalStamp(journal, clock).stamp)
    quick.start()
    quick.join(0.5)  # unlocked, it would stamp now, while the other is held
    go_on.set()
    slow.join(10)
    quick.join(10)
    assert len(read) == 2
    assert journal.stat().st_mtime_ns >= max(read)


def _timed_stamps(tmp_path: Path) -> tuple[Path, JournalStamp, list[float]]:
    """A journal, its stamper, and the time of each stamp it makes (its clock's reads)."""
    journal = tmp_path / "biller.journal"
    journal.write_text("; books\n", encoding="utf-8")
    stamps: list[float] = []

    def clock() -> int:
        stamps.append(time.monotonic())
        return time.time_ns()

    return journal, JournalStamp(journal, clock), stamps


def _write_answered(journal: Path, stamp: JournalStamp, took_ms: int) -> None:
    """A write hledger-web took ``took_ms`` to answer, then its stamp."""
    size = journal.stat().st_size
    with journal.open("a", encoding="utf-8") as books:
        books.write("; a write\n")
    stamp.answered(took_ms * 1_000_000)
    stamp.after_write(size)


def test_a_burst_of_writes_is_stamped_again_once_its_reloads_are_over(tmp_path: Path) -> None:
    """hledger-web notes a reload's time after parsing: a reload that read the journal
    before a write and finished after its stamp would hide it. The last write of a burst is
    stamped again, twice hledger-web's slowest recent answer later."""
    journal, stamp, stamps = _timed_stamps(tmp_path)
    try:
        for took_ms in (3, 150, 2):
            _write_answered(journal, stamp, took_ms)
        last_write, burst = stamps[-1], journal.stat().st_mtime_ns
        assert stamp.again_after_ns() == 300_000_000  # the slowest of the last 16, twice
        deadline = time.monotonic() + 10
        while len(stamps) < 4 and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.5)
        assert len(stamps) == 4  # once again for the whole burst
        assert stamps[-1] - last_write >= 0.3
        assert journal.stat().st_mtime_ns > burst
    finally:
        stamp.close()


def test_closing_right_after_a_write_still_stamps_it_again(tmp_path: Path) -> None:
    """A worker told to stop just after its last write closes the connector: the stamp
    again is done then, when due, not dropped with the process (a reload that ran past the
    write's first stamp would keep it unseen by every read until some later write)."""
    journal, stamp, stamps = _timed_stamps(tmp_path)
    _write_answered(journal, stamp, 100)
    written, first = stamps[-1], journal.stat().st_mtime_ns
    stamp.close()
    assert len(stamps) == 2
    assert stamps[-1] - written >= 0.2  # twice the slowest answer after the write
    assert journal.stat().st_mtime_ns > first
    time.sleep(0.3)
    assert len(stamps) == 2  # and never again after closing


def test_how_long_until_a_stamp_again_is_bounded(tmp_path: Path) -> None:
    journal = tmp_path / "biller.journal"
    journal.write_text("; books\n", encoding="utf-8")
    stamp = JournalStamp(journal)

    def answered(took_ms: int) -> int:
        stamp.answered(took_ms * 1_000_000)
        return stamp.again_after_ns()

    assert stamp.again_after_ns() == 50_000_000
    assert answered(60_000) == 10_000_000_000
    assert all(answered(1) == 10_000_000_000 for _ in range(15))
    assert answered(30) == 60_000_000  # the slow one is no longer among the last 16


MOUNTS = """\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
30 22 0:40 / /srv/books rw,relatime shared:9 - nfs4 books:/export rw,vers=4.2
31 22 0:41 / /srv/my\\040books rw,relatime - tmpfs tmpfs rw
32 30 8:2 / /srv/books/local rw - xfs /dev/sdb1 rw
"""


def test_the_filesystem_of_a_journal_is_the_longest_mount_holding_it() -> None:
    assert filesystem_type(Path("/home/biller/main.journal"), MOUNTS) == "ext4"
    assert filesystem_type(Path("/srv/books/main.journal"), MOUNTS) == "nfs4"
    assert filesystem_type(Path("/srv/books/local/main.journal"), MOUNTS) == "xfs"
    assert filesystem_type(Path("/srv/my books/main.journal"), MOUNTS) == "tmpfs"
    assert filesystem_type(Path("/srv/booksy/main.journal"), MOUNTS) == "ext4"


def test_only_a_local_file_this_user_owns_is_stampable(live: HledgerServer,
                                                       tmp_path: Path) -> None:
    assert stampable(live.journal) is None
    assert "not found" in (stampable(tmp_path / "gone.journal") or "")
    assert stampable(tmp_path) == "not a file"
    assert "absolute" in (stampable(Path("main.journal")) or "")


# What hledger-web 1.25 answers in --serve-api mode when a request fails inside it (a journal
# reload meeting another writer's append), read or write alike.
BUSY = '"server-side UI is disabled due to --serve-api"'


@pytest.mark.parametrize("method, path", [("GET", "/version"), ("PUT", "/add"),
                                          ("GET", "/accounttransactions/"
                                                  "receivables:customers:4401001234")])
def test_hledger_web_busy_is_a_retry_on_any_request(live: HledgerServer, method: str,
                                                     path: str) -> None:
    """A busy answer is never a refusal: the payment is tried again and lands once."""
    post = payment(amount="3.00", may_exist=path.startswith("/accounttransactions"))
    with Gate(live.url) as gate:
        connector = HledgerConnector.from_settings(
            {**live.settings(), "IVR_HLEDGER_URL": gate.url, "IVR_HLEDGER_JOURNAL": "off"})
        try:
            gate.answer(method, path, 403, BUSY)
            with pytest.raises(RetryableError, match="busy"):
                connector.post_payment(post, timeout=10)
            assert f"{method} {path}" in gate.seen
            result = connector.post_payment(replace(post, may_exist=True), timeout=10)
        finally:
            connector.close()
    assert not result.already_posted
    assert live.transactions_with_code(post.idempotency_key) == 1
