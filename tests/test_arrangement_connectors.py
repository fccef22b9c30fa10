"""Each connector records a payment arrangement as a note that moves no money, once per key,
against the real systems on 127.0.0.1 (the outbox side is in test_arrangement_posting.py)."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import closing
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from connectors.accounting.base import ArrangementPost, PermanentError, RetryableError
from connectors.accounting.hledger import HledgerConnector, arrangement_code
from connectors.accounting.webhook import WebhookConnector, sign, verify
from tests.conftest import unavailable
from tests.servers.hledger import HledgerServer, hledger_available, start_hledger
from tests.servers.webhook import Receiver, start_receiver

SECRET = "test-webhook-secret-0123456789"

ARRANGEMENT = ArrangementPost(
    idempotency_key="arr-key-0001",
    account_number="4401005678",
    confirmation_number="A7K3P9Q2",
    kind="instalments",
    balance=Decimal("312.80"),
    down_payment=Decimal("78.20"),
    down_payment_confirmation="IVR-7K3P9Q",
    instalments=((date(2026, 12, 31), Decimal("117.30")), (date(2027, 1, 30), Decimal("117.30"))),
    # 09:04:05.5 in Chicago is 15:04:05 UTC.
    created_at=datetime(2026, 12, 1, 9, 4, 5, 500000, tzinfo=timezone(timedelta(hours=-6))),
    status="active",
)
# What docs/connectors/webhook.md says the arrangements endpoint gets for ARRANGEMENT.
CONTRACT_JSON = {
    "event": "arrangement",
    "account_number": "4401005678",
    "confirmation_number": "A7K3P9Q2",
    "kind": "instalments",
    "status": "active",
    "currency": "USD",
    "balance": "312.80",
    "down_payment": "78.20",
    "down_payment_confirmation": "IVR-7K3P9Q",
    "instalments": [{"due_date": "2026-12-31", "amount": "117.30"},
                    {"due_date": "2027-01-30", "amount": "117.30"}],
    "created_at": "2026-12-01T15:04:05Z",
    "idempotency_key": "arr-key-0001",
}
EXTENSION = replace(ARRANGEMENT, idempotency_key="arr-key-0002", confirmation_number="B2C3D4E5",
                    kind="extension", down_payment=Decimal("0.00"),
                    down_payment_confirmation=None,
                    instalments=((date(2026, 12, 15), Decimal("312.80")),))


def fresh(arrangement: ArrangementPost = ARRANGEMENT, **changes: Any) -> ArrangementPost:
    """The arrangement under a key of its own (servers shared by a module keep old ones)."""
    return replace(arrangement, idempotency_key=f"arr-{uuid.uuid4()}", **changes)


def test_terms_in_plain_words() -> None:
    lines = ARRANGEMENT.summary_lines()
    assert lines[0].startswith("Payment arrangement A7K3P9Q2 made by phone (instalments")
    assert "Balance covered: USD 312.80" in lines
    assert "Down payment: USD 78.20 (payment confirmation IVR-7K3P9Q, posted as a payment)" \
        in lines
    assert "Due 2026-12-31: USD 117.30" in lines and "Due 2027-01-30: USD 117.30" in lines
    assert lines[-1] == "Made 2026-12-01 15:04 UTC. A promise to pay: no amount was posted."
    assert not any("Down payment" in line for line in EXTENSION.summary_lines())


# --- webhook -------------------------------------------------------------------------------

class _Capture(BaseHTTPRequestHandler):
    """Records each request and answers 201 with a receipt."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        server: Any = self.server
        body = self.rfile.read(int(self.headers["Content-Length"]))
        server.seen.append((self.path, dict(self.headers), body))
        answer = b'{"receipt_id": "A-1"}'
        self.send_response(201)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def capture() -> Iterator[Any]:
    server: Any = ThreadingHTTPServer(("127.0.0.1", 0), _Capture)
    server.seen = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_arrangement_on_the_wire(capture: Any) -> None:
    base = f"http://127.0.0.1:{capture.server_address[1]}"
    with closing(WebhookConnector(f"{base}/payments", SECRET,
                                  arrangements_url=f"{base}/arrangements")) as connector:
        before = int(time.time())
        assert connector.post_arrangement(ARRANGEMENT).receipt_id == "A-1"
        after = int(time.time())
    [(path, headers, body)] = capture.seen
    assert path == "/arrangements"
    assert body == json.dumps(CONTRACT_JSON, sort_keys=True, separators=(",", ":")).encode()
    # Nothing a payments receiver could read as a payment.
    assert not {"amount", "paid_at", "method", "fee", "last4"} & json.loads(body).keys()
    assert headers["X-IVR-Event"] == "arrangement"
    assert headers["Idempotency-Key"] == "arr-key-0001"
    signature = headers["X-IVR-Signature"]
    t = int(signature.split(",")[0].removeprefix("t="))
    assert before <= t <= after and signature == sign(SECRET, body, t)
    assert verify(SECRET, body, signature, now=after)


def test_payment_requests_carry_no_event_header(capture: Any) -> None:
    from tests.test_webhook_connector import PAYMENT

    base = f"http://127.0.0.1:{capture.server_address[1]}"
    with closing(WebhookConnector(f"{base}/payments", SECRET,
                                  arrangements_url=f"{base}/arrangements")) as connector:
        connector.post_payment(PAYMENT)
    [(path, headers, body)] = capture.seen
    assert path == "/payments" and "X-IVR-Event" not in headers
    assert "event" not in json.loads(body)


GOOD = {"IVR_WEBHOOK_URL": "https://billing.example.com/payments",
        "IVR_WEBHOOK_SECRET": SECRET}


@pytest.mark.parametrize("value", [
    "billing.example.com/arrangements", "ftp://billing.example.com/a", "https:///a",
    "https://billing.example.com/a b", "https://billing.example.com:99999/a",
    "https://billing.example.com/payments",  # the payments URL itself
    "https://billing.example.com/payments/",
])
def test_bad_arrangements_url_names_the_variable(value: str) -> None:
    with pytest.raises(ValueError, match="IVR_WEBHOOK_ARRANGEMENTS_URL"):
        WebhookConnector.from_settings({**GOOD, "IVR_WEBHOOK_ARRANGEMENTS_URL": value})


def test_arrangements_url_is_optional() -> None:
    connector = WebhookConnector.from_settings({**GOOD, "IVR_WEBHOOK_ARRANGEMENTS_URL": " "})
    assert connector.arrangements_url is None
    with closing(connector), pytest.raises(PermanentError,
                                           match="IVR_WEBHOOK_ARRANGEMENTS_URL is not set"):
        connector.post_arrangement(ARRANGEMENT)
    url = "https://billing.example.com/arrangements"
    with closing(WebhookConnector.from_settings(
            {**GOOD, "IVR_WEBHOOK_ARRANGEMENTS_URL": url})) as connector:
        assert connector.arrangements_url == url


def test_unsendable_arrangements_are_permanent_without_a_request() -> None:
    with closing(WebhookConnector("http://127.0.0.1:9/p", SECRET,
                                  arrangements_url="http://127.0.0.1:9/a")) as connector:
        for bad in (replace(ARRANGEMENT, balance=Decimal("1.005")),
                    replace(ARRANGEMENT, instalments=((date(2027, 1, 1), Decimal("NaN")),)),
                    replace(ARRANGEMENT, created_at=datetime(2026, 12, 1))):  # noqa: DTZ001
            with pytest.raises(PermanentError):
                connector.post_arrangement(bad)


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    rcv = start_receiver(tmp_path / "receiver", SECRET)
    try:
        yield rcv
    finally:
        rcv.stop()


def test_receiver_stores_arrangements_apart_once(receiver: Receiver) -> None:
    with closing(WebhookConnector.from_settings(receiver.settings())) as connector:
        first = connector.post_arrangement(ARRANGEMENT)
        again = connector.post_arrangement(ARRANGEMENT)
        with pytest.raises(PermanentError, match="422"):
            connector.post_arrangement(replace(ARRANGEMENT, status="broken"))
        connector.post_arrangement(EXTENSION)
    assert first.receipt_id.startswith("A-") and not first.already_posted
    assert again == replace(first, already_posted=True)
    stored = receiver.arrangements()
    assert [row["arrangement"] for row in stored] == [
        CONTRACT_JSON, {**json.loads(json.dumps(CONTRACT_JSON)), **{
            "idempotency_key": "arr-key-0002", "confirmation_number": "B2C3D4E5",
            "kind": "extension", "down_payment": "0.00", "down_payment_confirmation": None,
            "instalments": [{"due_date": "2026-12-15", "amount": "312.80"}]}}]
    assert receiver.payments() == []


def test_receiver_never_takes_one_for_the_other(receiver: Receiver) -> None:
    from tests.test_webhook_connector import CONTRACT_JSON as PAYMENT_JSON

    def post(url: str, data: dict[str, Any], event: str | None = None) -> tuple[int, Any]:
        body = json.dumps(data).encode()
        headers = {"Content-Type": "application/json",
                   "Idempotency-Key": str(data.get("idempotency_key")),
                   "X-IVR-Signature": sign(SECRET, body, int(time.time()))}
        if event:
            headers["X-IVR-Event"] = event
        response = requests.post(url, data=body, headers=headers, timeout=5)
        return response.status_code, response.json()

    # An arrangement posted to the payments endpoint, even with a payment's fields added.
    as_payment = {**CONTRACT_JSON, **{k: PAYMENT_JSON[k] for k in (
        "amount", "paid_at", "method", "fee", "last4")}}
    assert post(receiver.url, as_payment, "arrangement") == (
        400, {"error": "not a payment: event 'arrangement'"})
    # A payment posted to the arrangements endpoint.
    assert post(receiver.arrangements_url, PAYMENT_JSON)[0] == 400
    assert post(receiver.arrangements_url, {**PAYMENT_JSON, "event": "arrangement"},
                "arrangement")[0] == 400
    # An arrangement without its header, or with a money field.
    assert post(receiver.arrangements_url, CONTRACT_JSON)[0] == 400
    assert post(receiver.arrangements_url, {**CONTRACT_JSON, "amount": "1.00"},
                "arrangement")[0] == 400
    for bad in ({"kind": "payment"}, {"balance": 312.8}, {"instalments": []},
                {"instalments": [{"due_date": "2026-02-30", "amount": "1.00"}]},
                {"created_at": "2026-12-01 15:04:05"}):
        assert post(receiver.arrangements_url, {**CONTRACT_JSON, **bad},
                    "arrangement")[0] == 400, bad
    assert receiver.payments() == [] and receiver.arrangements() == []
    assert post(receiver.arrangements_url, CONTRACT_JSON, "arrangement")[0] == 201
    assert requests.head(receiver.arrangements_url, timeout=5).status_code == 200


def test_slow_receiver_times_out_then_the_retry_is_safe(receiver: Receiver) -> None:
    with closing(WebhookConnector.from_settings(receiver.settings())) as connector:
        receiver.set_faults({"delay": 1.5, "count": 1})
        with pytest.raises(RetryableError, match="timed out"):
            connector.post_arrangement(ARRANGEMENT, timeout=0.5)
        deadline = time.monotonic() + 10
        while not receiver.arrangements() and time.monotonic() < deadline:
            time.sleep(0.05)  # the slow answer still stores it
        assert connector.post_arrangement(ARRANGEMENT).already_posted
    assert len(receiver.arrangements()) == 1


# --- hledger -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def hledger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HledgerServer]:
    problem = hledger_available()
    if problem:
        unavailable(problem)
    server = start_hledger(tmp_path_factory.mktemp("hledger"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def ledger(hledger: HledgerServer) -> Iterator[HledgerConnector]:
    if not hledger.running:
        hledger.start()
    with closing(HledgerConnector.from_settings(hledger.settings())) as connector:
        yield connector


def all_balances(server: HledgerServer) -> dict[str, list[Any]]:
    response = requests.get(f"{server.url}/accounts", timeout=5)
    response.raise_for_status()
    # Amounts of zero (the arrangement's posting) are no balance.
    return {a["aname"]: sorted((x["acommodity"], x["aquantity"]["decimalMantissa"],
                                x["aquantity"]["decimalPlaces"]) for x in a["aibalance"]
                               if x["aquantity"]["decimalMantissa"])
            for a in response.json()}


def server_transaction(server: HledgerServer, code: str) -> dict[str, Any]:
    response = requests.get(f"{server.url}/transactions", timeout=5)
    [txn] = [t for t in response.json() if t["tcode"] == code]
    return dict(txn)


def test_hledger_records_a_transaction_that_moves_nothing(hledger: HledgerServer,
                                                          ledger: HledgerConnector) -> None:
    arrangement = fresh()
    before = all_balances(hledger)
    result = ledger.post_arrangement(arrangement, timeout=5)
    code = arrangement_code(arrangement.idempotency_key)
    assert result.receipt_id == code == f"arr-{arrangement.idempotency_key}"
    assert not result.already_posted
    assert all_balances(hledger) == before
    assert hledger.balance("4401005678") == Decimal("312.80")
    assert hledger.transactions_with_code(code) == 1
    txn = server_transaction(hledger, code)
    assert txn["tdescription"] == "Payment arrangement A7K3P9Q2"
    assert txn["tdate"] == "2026-12-01"
    [posting] = txn["tpostings"]
    assert posting["paccount"] == "receivables:customers:4401005678"
    assert all(a["aquantity"]["decimalMantissa"] == 0 for a in posting["pamount"])
    assert dict(txn["ttags"]) == {
        "acct": "4401005678", "ivr_ref": code, "conf": "A7K3P9Q2",
        "arrangement": "instalments", "status": "active", "balance": "312.80",
        "down_payment": "78.20", "down_payment_conf": "IVR-7K3P9Q",
        "due_1": "2026-12-31 117.30", "due_2": "2027-01-30 117.30"}
    # Posted again (a retry after a lost answer): found by its code, not added.
    assert ledger.post_arrangement(arrangement, timeout=5).already_posted
    assert hledger.transactions_with_code(code) == 1
    # The journal still parses after a restart, with the arrangement in it.
    hledger.restart()
    assert server_transaction(hledger, code)["tcode"] == code
    assert all_balances(hledger) == before


def test_hledger_extension_and_unknown_customer(hledger: HledgerServer,
                                                ledger: HledgerConnector) -> None:
    extension = fresh(EXTENSION)
    ledger.post_arrangement(extension, timeout=5)
    tags = dict(server_transaction(hledger, arrangement_code(extension.idempotency_key))
                ["ttags"])
    assert tags["arrangement"] == "extension" and tags["due_1"] == "2026-12-15 312.80"
    assert "down_payment" not in tags
    with pytest.raises(PermanentError, match="unknown customer"):
        ledger.post_arrangement(fresh(account_number="9999999999"), timeout=5)
    with pytest.raises(PermanentError, match="cannot name"):
        ledger.post_arrangement(fresh(account_number="44 01;x"), timeout=5)


@pytest.mark.slow
def test_hledger_write_that_timed_out_but_landed_is_found_by_the_retry(
        hledger: HledgerServer) -> None:
    class StallsBeforeWriting(HledgerConnector):
        def _wait_after_read(self, deadline: Any) -> None:
            super()._wait_after_read(deadline)
            hledger.pause()  # the PUT is then queued by the kernel and answered too late

    arrangement = fresh()
    code = arrangement_code(arrangement.idempotency_key)
    stalling = StallsBeforeWriting.from_settings(hledger.settings())
    try:
        with pytest.raises(RetryableError, match="timed out"):
            stalling.post_arrangement(arrangement, timeout=1.0)
    finally:
        hledger.resume()
        stalling.close()
    deadline = time.monotonic() + 30
    while hledger.transactions_with_code(code) == 0:
        assert time.monotonic() < deadline, "the late PUT never landed"
        time.sleep(0.02)
    with closing(HledgerConnector.from_settings(hledger.settings())) as retry:
        assert retry.post_arrangement(arrangement, timeout=5).already_posted
    assert hledger.transactions_with_code(code) == 1


def test_hledger_arrangement_code_never_meets_a_payment_code() -> None:
    from connectors.accounting.hledger import transaction_code

    key = str(uuid.uuid4())
    assert arrangement_code(key) != transaction_code(key)
    assert arrangement_code("a)b;c").startswith("ivr-")  # unsafe keys are digested


# --- Tryton --------------------------------------------------------------------------------


@pytest.mark.slow
def test_tryton_notes_the_arrangement_on_the_party(tryton: Any) -> None:
    from connectors.accounting.tryton import TrytonConnector
    from tests.servers.tryton import IVR_PASSWORD, IVR_USER

    arrangement = fresh(created_at=datetime.now(UTC))
    before = tryton.receivable("4401005678"), tryton.invoice_amounts("4401005678")
    # As the user the operator docs tell billers to create (the "Accounting" group).
    with closing(TrytonConnector.from_settings(tryton.settings(IVR_USER, IVR_PASSWORD))) as c:
        result = c.post_arrangement(arrangement, timeout=10)
        assert result.receipt_id.startswith("ir.note,") and not result.already_posted
        # A retry (the first answer lost): found by its reference, nothing added.
        assert c.post_arrangement(arrangement, timeout=10) == replace(result,
                                                                      already_posted=True)
    with closing(TrytonConnector.from_settings(tryton.settings())) as fresh_session:
        assert fresh_session.post_arrangement(arrangement).already_posted
    assert (tryton.receivable("4401005678"), tryton.invoice_amounts("4401005678")) == before
    notes = [n for n in tryton.notes("4401005678") if arrangement.idempotency_key in n]
    [note] = notes
    assert note.splitlines() == [
        "IVR Payment arrangement A7K3P9Q2 made by phone (instalments: 2 instalment(s)). "
        "Status: active.",
        "Balance covered: USD 312.80",
        "Down payment: USD 78.20 (payment confirmation IVR-7K3P9Q, posted as a payment)",
        "Due 2026-12-31: USD 117.30", "Due 2027-01-30: USD 117.30",
        arrangement.summary_lines()[-1],
        f"IVR reference [{arrangement.idempotency_key}]"]
    # Another arrangement on the same party is a note of its own.
    other = fresh(EXTENSION)
    with closing(TrytonConnector.from_settings(tryton.settings())) as c:
        assert not c.post_arrangement(other).already_posted
    assert len(tryton.notes("4401005678")) == 2
    with closing(TrytonConnector.from_settings(tryton.settings())) as c, \
            pytest.raises(PermanentError, match="no customer"):
        c.post_arrangement(fresh(account_number="9999999999"))


def test_the_documented_example_is_what_is_sent() -> None:
    from connectors.accounting.webhook import arrangement_payload

    docs = (Path(__file__).resolve().parents[1] / "docs" / "connectors" / "webhook.md").read_text(
        encoding="utf-8")
    section = docs.split("## Payment arrangements", 1)[1].split("\n## ", 1)[0]
    [example] = [line for line in section.splitlines() if line.startswith('{"account_number"')]
    sent = replace(ARRANGEMENT, idempotency_key=json.loads(example)["idempotency_key"])
    assert example.encode() == json.dumps(arrangement_payload(sent), sort_keys=True,
                                          separators=(",", ":")).encode()
    documented = {line.split("`")[1] for line in section.splitlines()
                  if line.startswith("| `")}
    assert documented == set(arrangement_payload(sent))
