"""The signed-webhook connector against the reference receiver running as a real process."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from connectors.accounting.base import (
    AccountingConnector,
    LookupUnsupported,
    PaymentPost,
    PermanentError,
    RetryableError,
)
from connectors.accounting.registry import build_connector
from connectors.accounting.state import MemoryStateStore
from connectors.accounting.webhook import WebhookConnector, sign, verify
from tests.servers.webhook import Receiver, start_receiver

SECRET = "test-webhook-secret-0123456789"

PAYMENT = PaymentPost(
    idempotency_key="pay-0001",
    account_number="4401001234",
    amount=Decimal("123.45"),
    fee=Decimal("2.95"),
    currency="USD",
    # 09:04:05.5 in Chicago is 15:04:05 UTC: the connector converts and drops the fraction.
    paid_at=datetime(2026, 11, 26, 9, 4, 5, 500000, tzinfo=timezone(timedelta(hours=-6))),
    confirmation_number="IVR-7K3P9Q",
    method="card",
    last4="1111",
    card_brand="visa",
)
# Exactly what the contract says the receiver gets for PAYMENT (card_brand is not in it).
CONTRACT_JSON = {
    "account_number": "4401001234",
    "amount": "123.45",
    "currency": "USD",
    "paid_at": "2026-11-26T15:04:05Z",
    "confirmation_number": "IVR-7K3P9Q",
    "method": "card",
    "last4": "1111",
    "fee": "2.95",
    "idempotency_key": "pay-0001",
}


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    rcv = start_receiver(tmp_path / "receiver", SECRET)
    try:
        yield rcv
    finally:
        rcv.stop()


@pytest.fixture
def connector(receiver: Receiver) -> Iterator[WebhookConnector]:
    with closing(WebhookConnector.from_settings(receiver.settings())) as conn:
        yield conn


def keys(receiver: Receiver) -> list[str]:
    return [row["idempotency_key"] for row in receiver.payments()]


# --- signing -------------------------------------------------------------------------------

def test_signature_known_answer() -> None:
    body = b'{"amount":"123.45"}'
    by_hand = hmac.new(b"whsec-known-answer-0001", b"1795705445." + body,
                       hashlib.sha256).hexdigest()
    # Also pinned as a literal (computed with `openssl dgst -sha256 -hmac`), so a change of
    # encoding (base64, upper case) would fail too.
    assert by_hand == "8f415845e74ab334f8cb23a81e3b7153216b997902d7f1e69fa63a4b866db12c"
    assert sign("whsec-known-answer-0001", body, 1795705445) == f"t=1795705445,v1={by_hand}"


def test_verify_accepts_and_rejects() -> None:
    body = json.dumps(CONTRACT_JSON, sort_keys=True, separators=(",", ":")).encode()
    t = 1795705445
    header = sign(SECRET, body, t)
    assert verify(SECRET, body, header, now=t)
    assert verify(SECRET, body, header, now=t + 300)  # the tolerance's edge
    assert not verify(SECRET, body.replace(b"123.45", b"923.45"), header, now=t)  # tampered
    assert not verify(SECRET, body, header, now=t + 301)  # stale: a replay
    assert not verify(SECRET, body, header, now=t - 301)  # from the future
    assert not verify(SECRET, body, header, now=t + 60, tolerance=30)
    assert not verify("another-secret-0123456789", body, header, now=t)
    # The timestamp is signed: moving it to look fresh breaks the signature.
    assert not verify(SECRET, body, header.replace(f"t={t}", f"t={t + 1000}"), now=t + 1000)
    for bad in ("", "garbage", f"t={t}", header.split(",")[1], f"t=-{t},{header.split(',')[1]}",
                f"t={t},v1=", f"t={t},v1=é"):
        assert not verify(SECRET, body, bad, now=t), bad
    # Order, spaces, unknown keys and a second (rotated-out) v1 are tolerated.
    v1 = header.split(",")[1]
    assert verify(SECRET, body, f" v0=x, {v1} ,v1={'0' * 64}, t={t}", now=t)


# --- settings ------------------------------------------------------------------------------

GOOD = {"IVR_WEBHOOK_URL": "https://billing.example.com/ivr/payments",
        "IVR_WEBHOOK_SECRET": SECRET}


@pytest.mark.parametrize(("changes", "variable"), [
    ({"IVR_WEBHOOK_URL": ""}, "IVR_WEBHOOK_URL"),
    ({"IVR_WEBHOOK_URL": "ftp://billing.example.com/x"}, "IVR_WEBHOOK_URL"),
    ({"IVR_WEBHOOK_URL": "billing.example.com/x"}, "IVR_WEBHOOK_URL"),
    ({"IVR_WEBHOOK_URL": "https:///x"}, "IVR_WEBHOOK_URL"),
    ({"IVR_WEBHOOK_URL": "https://billing.example.com:99999/x"}, "IVR_WEBHOOK_URL"),
    ({"IVR_WEBHOOK_SECRET": ""}, "IVR_WEBHOOK_SECRET"),
    ({"IVR_WEBHOOK_SECRET": "short-secret"}, "IVR_WEBHOOK_SECRET"),
    ({"IVR_WEBHOOK_SECRET": SECRET + "\n"}, "IVR_WEBHOOK_SECRET"),
    ({"IVR_ACCOUNTING_CONNECT_TIMEOUT": "soon"}, "IVR_ACCOUNTING_CONNECT_TIMEOUT"),
    ({"IVR_ACCOUNTING_READ_TIMEOUT": "0"}, "IVR_ACCOUNTING_READ_TIMEOUT"),
    ({"IVR_ACCOUNTING_READ_TIMEOUT": "nan"}, "IVR_ACCOUNTING_READ_TIMEOUT"),
])
def test_bad_settings_name_the_variable(changes: dict[str, str], variable: str) -> None:
    settings = {**GOOD, **changes}
    settings = {k: v for k, v in settings.items() if k not in changes or v}
    with pytest.raises(ValueError, match=variable) as excinfo:
        WebhookConnector.from_settings(settings)
    assert "short-secret" not in str(excinfo.value)  # a credential is never echoed


def test_built_by_the_registry() -> None:
    settings = {**GOOD, "IVR_ACCOUNTING_CONNECT_TIMEOUT": "1.5",
                "IVR_ACCOUNTING_READ_TIMEOUT": "4"}
    connector = build_connector("webhook", settings, MemoryStateStore())
    assert isinstance(connector, WebhookConnector)
    assert isinstance(connector, AccountingConnector)
    assert connector.name == "webhook"
    with pytest.raises(LookupUnsupported):
        connector.lookup_balance("4401001234")
    connector.close()


def test_unsendable_amounts_are_permanent_without_a_request() -> None:
    # Port 9 (discard) is never contacted: the payment is refused before any I/O.
    with closing(WebhookConnector("http://127.0.0.1:9/payments", SECRET)) as connector:
        for bad in (replace(PAYMENT, amount=Decimal("1.005")),
                    replace(PAYMENT, fee=Decimal("NaN")),
                    replace(PAYMENT, amount=Decimal("1E+40")),
                    replace(PAYMENT, paid_at=datetime(2026, 11, 26, 15, 4, 5))):  # noqa: DTZ001
            with pytest.raises(PermanentError):
                connector.post_payment(bad)


# --- the wire ------------------------------------------------------------------------------

class _Capture(BaseHTTPRequestHandler):
    """Records each request and answers with the server's canned (status, body)."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        server: Any = self.server
        body = self.rfile.read(int(self.headers["Content-Length"]))
        server.seen.append((dict(self.headers), body))
        server.targets.append(self.path)  # absolute when the request came as to a proxy
        status, answer = server.answer
        self.send_response(status)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def capture() -> Iterator[Any]:
    server: Any = ThreadingHTTPServer(("127.0.0.1", 0), _Capture)
    server.seen = []
    server.targets = []
    server.answer = (201, b'{"receipt_id": "R-1"}')
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.mark.slow
def test_request_on_the_wire(capture: Any) -> None:
    url = f"http://127.0.0.1:{capture.server_address[1]}/hook"
    with closing(WebhookConnector(url, SECRET)) as connector:
        before = int(time.time())
        assert connector.post_payment(PAYMENT).receipt_id == "R-1"
        after = int(time.time())
    [(headers, body)] = capture.seen
    assert body == json.dumps(CONTRACT_JSON, sort_keys=True, separators=(",", ":")).encode()
    assert headers["Content-Type"] == "application/json"
    assert headers["Idempotency-Key"] == "pay-0001"
    signature = headers["X-IVR-Signature"]
    t = int(signature.split(",")[0].removeprefix("t="))
    assert before <= t <= after
    assert signature == sign(SECRET, body, t)
    assert verify(SECRET, body, signature, now=after)


@pytest.mark.slow
@pytest.mark.parametrize(("status", "answer", "receipt", "already"), [
    (201, b'{"receipt_id": "R-9"}', "R-9", False),
    (200, b'{"receipt_id": 12345}', "12345", False),
    (200, b"", "pay-0001", False),  # no body: the idempotency key stands in
    (202, b'{"ok": true}', "pay-0001", False),
    (200, b'["R-9"]', "pay-0001", False),
    (204, b"", "pay-0001", False),
    (409, b'{"receipt_id": "R-ORIG"}', "R-ORIG", True),
    (409, b"duplicate", "pay-0001", True),
])
def test_receipt_ids(capture: Any, status: int, answer: bytes, receipt: str,
                     already: bool) -> None:
    capture.answer = (status, answer)
    url = f"http://127.0.0.1:{capture.server_address[1]}/hook"
    with closing(WebhookConnector(url, SECRET)) as connector:
        result = connector.post_payment(PAYMENT)
    assert (result.receipt_id, result.already_posted) == (receipt, already)


@pytest.mark.slow
def test_the_environments_proxy_carries_posts_except_where_no_proxy_says(
        capture: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # A biller's receiver behind the operator's HTTP proxy (the capture server plays it:
    # nothing leaves 127.0.0.1). The session reads the environment once, not per request.
    proxy = f"http://127.0.0.1:{capture.server_address[1]}"
    for name in ("http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(name, proxy)
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(name, "127.0.0.1,localhost")
    with closing(WebhookConnector("http://books.biller.invalid/hook", SECRET)) as connector:
        assert connector.post_payment(PAYMENT).receipt_id == "R-1"
        assert connector.post_payment(replace(PAYMENT, idempotency_key="pay-0002"))
    assert capture.targets == ["http://books.biller.invalid/hook"] * 2
    direct = f"http://127.0.0.1:{capture.server_address[1]}/hook"
    with closing(WebhookConnector(direct, SECRET)) as connector:
        connector.post_payment(PAYMENT)
    assert capture.targets[-1] == "/hook"  # NO_PROXY: straight to the receiver


@pytest.mark.slow
def test_redirect_is_not_followed(capture: Any) -> None:
    capture.answer = (302, b"")
    url = f"http://127.0.0.1:{capture.server_address[1]}/hook"
    with closing(WebhookConnector(url, SECRET)) as connector, \
            pytest.raises(PermanentError, match="HTTP 302"):
        connector.post_payment(PAYMENT)


# --- against the reference receiver --------------------------------------------------------

def test_post_stores_the_contract_json(receiver: Receiver, connector: WebhookConnector) -> None:
    result = connector.post_payment(PAYMENT)
    assert not result.already_posted
    [row] = receiver.payments()
    assert row["payment"] == CONTRACT_JSON
    assert row["receipt_id"] == result.receipt_id
    assert result.receipt_id.startswith("R-")


def test_ach_with_two_or_no_last_digits(receiver: Receiver, connector: WebhookConnector) -> None:
    # Bank payments carry only the last two digits (all that <Pay> reveals), or none.
    ach = replace(PAYMENT, idempotency_key="pay-ach", method="ach", last4="89",
                  fee=Decimal("0"), amount=Decimal("50"))
    connector.post_payment(ach)
    connector.post_payment(replace(ach, idempotency_key="pay-ach-2", last4=None))
    assert [row["payment"] for row in receiver.payments()] == [
        {**CONTRACT_JSON, "idempotency_key": "pay-ach", "method": "ach", "last4": "89",
         "fee": "0.00", "amount": "50.00"},
        {**CONTRACT_JSON, "idempotency_key": "pay-ach-2", "method": "ach", "last4": None,
         "fee": "0.00", "amount": "50.00"},
    ]


def test_repeat_is_already_posted(receiver: Receiver, connector: WebhookConnector) -> None:
    first = connector.post_payment(PAYMENT)
    again = connector.post_payment(PAYMENT)
    assert again.already_posted
    assert again.receipt_id == first.receipt_id
    assert keys(receiver) == ["pay-0001"]


def test_concurrent_duplicates_make_one_row(receiver: Receiver,
                                            connector: WebhookConnector) -> None:
    start = threading.Barrier(20)
    results: list[Any] = []

    def post() -> None:
        start.wait()
        try:
            results.append(connector.post_payment(PAYMENT))
        except Exception as exc:  # reported by the assertion below
            results.append(exc)

    threads = [threading.Thread(target=post) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(results) == 20
    assert sorted(r.already_posted for r in results) == [False] + [True] * 19, results
    assert {r.receipt_id for r in results} == {receiver.payments()[0]["receipt_id"]}
    assert keys(receiver) == ["pay-0001"]


def test_same_key_different_payment_is_permanent(receiver: Receiver,
                                                 connector: WebhookConnector) -> None:
    connector.post_payment(PAYMENT)
    with pytest.raises(PermanentError, match="HTTP 422"):
        connector.post_payment(replace(PAYMENT, amount=Decimal("1.00")))
    assert [row["payment"]["amount"] for row in receiver.payments()] == ["123.45"]


def test_5xx_is_retryable_until_it_recovers(receiver: Receiver,
                                           connector: WebhookConnector) -> None:
    receiver.set_faults({"status": 500, "count": 2})
    for _ in range(2):
        with pytest.raises(RetryableError, match="HTTP 500") as excinfo:
            connector.post_payment(PAYMENT)
        assert excinfo.value.retry_after is None
    assert receiver.payments() == []
    assert not connector.post_payment(PAYMENT).already_posted
    assert keys(receiver) == ["pay-0001"]


def test_429_is_retryable_with_retry_after(receiver: Receiver,
                                           connector: WebhookConnector) -> None:
    receiver.set_faults({"status": 429, "retry_after": 7, "count": 1})
    with pytest.raises(RetryableError, match="HTTP 429") as excinfo:
        connector.post_payment(PAYMENT)
    assert excinfo.value.retry_after == 7.0
    connector.post_payment(PAYMENT)
    assert keys(receiver) == ["pay-0001"]


@pytest.mark.parametrize("status", [400, 403, 404, 422])
def test_other_4xx_is_permanent(receiver: Receiver, connector: WebhookConnector,
                                status: int) -> None:
    receiver.set_faults({"status": status})
    with pytest.raises(PermanentError, match=f"HTTP {status}"):
        connector.post_payment(PAYMENT)
    assert receiver.payments() == []


@pytest.mark.parametrize("change", [
    {"amount": Decimal("-5.00")},
    {"amount": Decimal("0")},
    {"method": "cash"},
    {"currency": "usd"},
    {"last4": "11111"},
    {"account_number": ""},
])
def test_receiver_validation_is_permanent(receiver: Receiver, connector: WebhookConnector,
                                          change: dict[str, Any]) -> None:
    with pytest.raises(PermanentError, match="HTTP 400"):
        connector.post_payment(replace(PAYMENT, **change))
    assert receiver.payments() == []


@pytest.mark.slow
def test_slow_receiver_times_out_then_the_retry_is_safe(receiver: Receiver) -> None:
    settings = {**receiver.settings(), "IVR_ACCOUNTING_READ_TIMEOUT": "0.5"}
    # The receiver answers only after 6 s: a timeout raised at all shows the 0.5 s setting
    # (not the answer) ended the wait; the loose upper bound tells 0.5 s from "almost 6".
    receiver.set_faults({"delay": 6.0, "count": 1})
    with closing(WebhookConnector.from_settings(settings)) as connector:
        began = time.monotonic()
        with pytest.raises(RetryableError, match="timed out"):
            connector.post_payment(PAYMENT)
        assert 0.4 < time.monotonic() - began < 4
        # The receiver stores it once its delay is over; the retry then finds it.
        deadline = time.monotonic() + 30
        while not receiver.payments() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert connector.post_payment(PAYMENT).already_posted
    assert keys(receiver) == ["pay-0001"]


@pytest.mark.slow
def test_call_budget_shrinks_the_timeout(receiver: Receiver,
                                         connector: WebhookConnector) -> None:
    # Without the budget the default 8 s read timeout would let the 6 s answer arrive.
    receiver.set_faults({"delay": 6.0, "count": 1})
    began = time.monotonic()
    with pytest.raises(RetryableError, match="timed out"):
        connector.post_payment(PAYMENT, timeout=0.3)
    assert time.monotonic() - began < 4


def test_lost_response_then_retry_is_already_posted(receiver: Receiver,
                                                    connector: WebhookConnector) -> None:
    receiver.set_faults({"drop": True, "count": 1})
    with pytest.raises(RetryableError, match="connection"):
        connector.post_payment(PAYMENT)
    [row] = receiver.payments()
    again = connector.post_payment(PAYMENT)
    assert again.already_posted
    assert again.receipt_id == row["receipt_id"]


def test_receiver_down_is_retryable_and_restart_keeps_the_data(receiver: Receiver) -> None:
    # Waiting on a timeout would take 30 s: "refused at once" is far from any machine's stall.
    settings = {**receiver.settings(), "IVR_ACCOUNTING_CONNECT_TIMEOUT": "30",
                "IVR_ACCOUNTING_READ_TIMEOUT": "30"}
    with closing(WebhookConnector.from_settings(settings)) as connector:
        connector.post_payment(PAYMENT)
        receiver.kill()
        second = replace(PAYMENT, idempotency_key="pay-0002")
        began = time.monotonic()
        with pytest.raises(RetryableError, match="connection failed"):
            connector.post_payment(second)
        assert time.monotonic() - began < 10
        with pytest.raises(RetryableError):
            connector.health()
        receiver.restart()
        assert not connector.post_payment(second).already_posted
        assert connector.post_payment(PAYMENT).already_posted
    assert keys(receiver) == ["pay-0001", "pay-0002"]


def test_wrong_secret_is_refused_permanently(receiver: Receiver) -> None:
    with closing(WebhookConnector(receiver.url, "not-the-receivers-secret")) as connector, \
            pytest.raises(PermanentError, match="HTTP 401"):
        connector.post_payment(PAYMENT)
    assert receiver.payments() == []


def test_stale_clock_is_refused_permanently(receiver: Receiver) -> None:
    with closing(WebhookConnector(receiver.url, SECRET,
                                  clock=lambda: time.time() - 600)) as connector, \
            pytest.raises(PermanentError, match="outside tolerance"):
        connector.post_payment(PAYMENT)
    assert receiver.payments() == []


def test_health(receiver: Receiver, connector: WebhookConnector) -> None:
    connector.health()
    receiver.set_faults({"status": 405, "methods": ["HEAD"], "count": 1})
    connector.health()  # any answer below 500 means reachable
    receiver.set_faults({"status": 503, "methods": ["HEAD"], "count": 1})
    with pytest.raises(RetryableError, match="HTTP 503"):
        connector.health()
    connector.health()


@pytest.mark.slow
def test_health_accepts_a_server_without_head(capture: Any) -> None:
    # http.server answers 501 to a method it lacks: still a live receiver.
    url = f"http://127.0.0.1:{capture.server_address[1]}/hook"
    with closing(WebhookConnector(url, SECRET)) as connector:
        connector.health()


# --- the reference receiver's own refusals -------------------------------------------------

def _signed(body: bytes, key: str | None = "pay-0001", secret: str = SECRET
            ) -> dict[str, str]:
    headers = {"Content-Type": "application/json",
               "X-IVR-Signature": sign(secret, body, int(time.time()))}
    if key is not None:
        headers["Idempotency-Key"] = key
    return headers


def test_receiver_refusals(receiver: Receiver) -> None:
    good = json.dumps(CONTRACT_JSON).encode()

    def post(body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
        response = requests.post(receiver.url, data=body, headers=headers, timeout=5)
        return response.status_code, response.json()

    assert post(good, {"Idempotency-Key": "pay-0001"}) == (
        401, {"error": "missing X-IVR-Signature"})
    assert post(good, _signed(b"{}"))[0] == 401
    assert post(b"not json", _signed(b"not json")) == (400, {"error": "body must be UTF-8 JSON"})
    assert post(b"[1]", _signed(b"[1]")) == (400, {"error": "body must be a JSON object"})
    assert post(good, _signed(good, key="other"))[0] == 400
    assert post(good, _signed(good, key=None))[0] == 400
    no_last4 = json.dumps({k: v for k, v in CONTRACT_JSON.items() if k != "last4"}).encode()
    assert post(no_last4, _signed(no_last4))[0] == 400
    as_number = json.dumps({**CONTRACT_JSON, "amount": 123.45}).encode()
    assert post(as_number, _signed(as_number)) == (
        400, {"error": 'amount must be a string like "12.34"'})
    bad_date = json.dumps({**CONTRACT_JSON, "paid_at": "2026-13-26T15:04:05Z"}).encode()
    assert post(bad_date, _signed(bad_date))[0] == 400
    huge = b" " * (65 * 1024)
    assert post(huge, _signed(huge))[0] == 413
    assert receiver.payments() == []
    # Unknown fields are kept but do not stop the payment (the contract may grow).
    extra = json.dumps({**CONTRACT_JSON, "future_field": 1}).encode()
    status, answer = post(extra, _signed(extra))
    assert status == 201
    [row] = receiver.payments()
    assert answer == {"receipt_id": row["receipt_id"]}
    assert row["payment"]["future_field"] == 1
    assert requests.get(receiver.url.replace("/payments", "/other"), timeout=5).status_code == 404


def test_receiver_refuses_to_start_without_a_secret(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="at least 16 characters"):
        start_receiver(tmp_path, "short")


def test_a_mistyped_fault_rule_is_loud(receiver: Receiver, connector: WebhookConnector) -> None:
    receiver.set_faults({"stauts": 500})
    with pytest.raises(RetryableError, match="unknown fault rule key"):
        connector.post_payment(PAYMENT)
    receiver.clear_faults()
    connector.post_payment(PAYMENT)
