#!/usr/bin/env python3
"""Reference receiver for the pay-by-phone IVR's signed payment webhook.

Copy it and adapt ``validate`` and ``Store`` to your billing system. It needs only Python 3.11+
(standard library: ``http.server`` and ``sqlite3``), and shows the three things every
receiver must get right (docs/connectors/webhook.md has the contract):

1. Verify ``X-IVR-Signature`` over the exact bytes received, in constant time, and refuse stale
   timestamps (401), before believing anything in the request.
2. Deduplicate by ``Idempotency-Key`` with a UNIQUE constraint, not a look-then-insert: the IVR
   retries after timeouts, so the same payment can arrive twice, even at the same instant. A
   repeat gets 409 with the original ``receipt_id``; the same key with a *different* payment
   gets 422 (a bug worth a person's attention, never silently merged).
3. Answer 201 ``{"receipt_id": ...}`` only once the payment is durably stored (SQLite in WAL
   mode with synchronous=FULL: a commit is on disk when it returns).

Run::

    export IVR_WEBHOOK_SECRET=...   # the same secret the IVR has, at least 16 characters
    python examples/webhook_receiver.py --port 8080 --db payments.sqlite3
    # then, on the IVR: IVR_ACCOUNTING=webhook IVR_WEBHOOK_URL=http://127.0.0.1:8080/payments
    #   and IVR_WEBHOOK_ARRANGEMENTS_URL=http://127.0.0.1:8080/arrangements
    #   and IVR_WEBHOOK_REVERSALS_URL=http://127.0.0.1:8080/reversals

``--secret-env VAR`` reads the secret from another variable; ``--host`` binds elsewhere than
127.0.0.1 (put TLS in front: a reverse proxy). On start it prints ``listening on <url>``.

Endpoints:

- ``POST /payments``: the webhook. 201 stored; 409 already stored (original receipt_id);
  400 malformed or invalid (JSON ``{"error": ...}``); 401 bad, missing or stale signature;
  411/413 no or oversized body; 422 key reused for a different payment; 500 storage failed.
- ``POST /arrangements``: payment arrangements (promises to pay, never money), signed and
  answered the same way, stored apart from payments and deduplicated by their own key. The
  body must say ``"event": "arrangement"`` (and the ``X-IVR-Event`` header too); a body at
  ``/payments`` saying any event but ``"payment"`` is refused (400).
- ``POST /reversals``: money of an earlier payment taken back (a bank return, a refund, a
  void), answered the same way and stored apart. The body says ``"event": "reversal"`` (and
  the ``X-IVR-Event`` header too) and carries ``reversed_amount``, never ``amount``: put the
  balance back up by it and look the payment up by ``payment_idempotency_key``.
- ``HEAD /payments``, ``HEAD /arrangements``, ``HEAD /reversals``: 200, for the health check.
- ``GET /payments``, ``GET /arrangements``, ``GET /reversals``: TEST/DEBUG AID ONLY.
  Everything stored, oldest first: ``[{"receipt_id", "idempotency_key", "received_at",
  "payment": <the body as sent>}]``
  (``"arrangement"`` or ``"reversal"`` instead of ``"payment"`` for the others). It has
  no authentication, so it is served only while bound to a loopback address (otherwise
  404). Delete it from your copy.

Fault injection, for tests, without code changes: with ``--faults FILE``, FILE is re-read
on every POST/HEAD (missing or empty: no faults). It holds one rule or a list of rules;
the first rule matching the request's method applies::

    {"status": 500, "count": 2}                    answer 500 to the next 2 POSTs
    {"status": 429, "retry_after": 1, "count": 1}  429 with "Retry-After: 1"
    {"delay": 3.0, "count": 1}                     sleep 3 s, then handle normally (stores)
    {"status": 422}                                422 to every POST until FILE changes
    {"drop": true, "count": 1}                     store the payment, then close the
                                                   connection unanswered (a lost response)
    {"status": 200, "body": null}                  200 with an empty body, nothing stored

Keys: ``status`` (answer it without storing; the body is ``body`` if given, JSON ``null``
meaning empty, else ``{"error": "injected fault"}``), ``retry_after``, ``delay`` (seconds,
before anything else), ``drop``, ``count`` (uses left; the rule is removed, and the file
rewritten, when it reaches 0; no count: forever), ``methods`` (default ``["POST"]``).
Unknown keys or bad JSON answer 500 naming the problem. Change FILE between requests, and
atomically (write a temporary file, then rename it over FILE).
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import ipaddress
import json
import os
import re
import secrets
import signal
import sqlite3
import sys
import threading
import time
from contextlib import closing
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any, cast
from urllib.parse import urlsplit

PATH = "/payments"
ARRANGEMENTS_PATH = "/arrangements"
REVERSALS_PATH = "/reversals"
MAX_BODY = 64 * 1024
TOLERANCE = 300  # seconds either side of our clock that a signature's timestamp may be
MIN_SECRET = 16

_AMOUNT = re.compile(r"(?:0|[1-9][0-9]{0,11})\.[0-9]{2}")
_CURRENCY = re.compile(r"[A-Z]{3}")
_PAID_AT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?Z")
# Cards give four digits; bank accounts only two (what Twilio's <Pay> reveals of them).
_LAST4 = re.compile(r"[0-9]{1,4}")
_METHODS = ("card", "ach")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_KINDS = ("extension", "instalments")
_REVERSAL_KINDS = ("return", "refund", "void")
_MAX_INSTALMENTS = 24

SCHEMA = """
CREATE TABLE IF NOT EXISTS payments (
    id INTEGER PRIMARY KEY,
    idempotency_key TEXT NOT NULL UNIQUE,
    receipt_id TEXT NOT NULL UNIQUE,
    account_number TEXT NOT NULL,
    amount_cents INTEGER NOT NULL,
    fee_cents INTEGER NOT NULL,
    currency TEXT NOT NULL,
    paid_at TEXT NOT NULL,
    confirmation_number TEXT NOT NULL,
    method TEXT NOT NULL,
    last4 TEXT,
    body TEXT NOT NULL,
    received_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS arrangements (
    id INTEGER PRIMARY KEY,
    idempotency_key TEXT NOT NULL UNIQUE,
    receipt_id TEXT NOT NULL UNIQUE,
    account_number TEXT NOT NULL,
    confirmation_number TEXT NOT NULL,
    kind TEXT NOT NULL,
    body TEXT NOT NULL,
    received_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS reversals (
    id INTEGER PRIMARY KEY,
    idempotency_key TEXT NOT NULL UNIQUE,
    receipt_id TEXT NOT NULL UNIQUE,
    account_number TEXT NOT NULL,
    payment_idempotency_key TEXT NOT NULL,
    kind TEXT NOT NULL,
    reversed_cents INTEGER NOT NULL,
    body TEXT NOT NULL,
    received_at TEXT NOT NULL
);
"""


def verify_signature(secret: bytes, body: bytes, header: str | None, now: int,
                     tolerance: int = TOLERANCE) -> str | None:
    """None if ``header`` (``t=...,v1=...``) signs ``body``; otherwise what is wrong."""
    if not header:
        return "missing X-IVR-Signature"
    timestamp: int | None = None
    candidates: list[bytes] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t" and value.isascii() and value.isdigit() and len(value) <= 15:
            timestamp = int(value)
        elif key == "v1":  # several are allowed: a sender rotating its secret signs twice
            candidates.append(value.encode("utf-8", "replace"))
    if timestamp is None or not candidates:
        return "malformed X-IVR-Signature"
    # An old timestamp is a replay; so is a far-future one, stored up for later.
    if abs(now - timestamp) > tolerance:
        return "signature timestamp outside tolerance (check both clocks)"
    expected = hmac.new(secret, b"%d." % timestamp + body, hashlib.sha256).hexdigest().encode()
    # compare_digest takes the same time wherever the first difference is.
    if not any([hmac.compare_digest(expected, c) for c in candidates]):
        return "signature mismatch"
    return None


class Invalid(Exception):
    """The payment is malformed; the message is safe to send back."""


def _text(payment: dict[str, Any], name: str, max_len: int = 64) -> str:
    value = payment.get(name)
    if (not isinstance(value, str) or not value or len(value) > max_len
            or not value.isprintable() or value != value.strip()):
        raise Invalid(f"{name} must be a non-empty string of at most {max_len} characters")
    return value


def _cents(payment: dict[str, Any], name: str, positive: bool) -> int:
    value = payment.get(name)
    # Strings, never JSON numbers: a float would already have rounded the money.
    if not isinstance(value, str) or not _AMOUNT.fullmatch(value):
        raise Invalid(f'{name} must be a string like "12.34"')
    cents = int(value.replace(".", ""))
    if positive and cents == 0:
        raise Invalid(f"{name} must be greater than zero")
    return cents


def validate(payment: object, key_header: str | None) -> dict[str, Any]:
    """The payment's fields, checked; Invalid says what is wrong. Unknown keys are ignored.

    Ignoring unknown keys (they stay in the stored body) lets the IVR add fields later
    without breaking receivers. Add your own checks here, e.g. that the account exists.
    """
    if not isinstance(payment, dict):
        raise Invalid("body must be a JSON object")
    if payment.get("event", "payment") != "payment":
        # An arrangement (or a later kind of event) is never a payment, whatever else it has.
        raise Invalid(f"not a payment: event {str(payment.get('event'))[:20]!r}")
    key = _key(payment, key_header)
    paid_at = _utc(payment, "paid_at")
    currency = _currency(payment)
    method = payment.get("method")
    if method not in _METHODS:
        raise Invalid('method must be "card" or "ach"')
    if "last4" not in payment:
        raise Invalid("last4 is required (null when unknown)")
    last4 = payment["last4"]
    if last4 is not None and (not isinstance(last4, str) or not _LAST4.fullmatch(last4)):
        raise Invalid("last4 must be one to four digits or null")
    return {
        "idempotency_key": key,
        "account_number": _text(payment, "account_number"),
        "amount_cents": _cents(payment, "amount", positive=True),
        "fee_cents": _cents(payment, "fee", positive=False),
        "currency": currency,
        "paid_at": paid_at,
        "confirmation_number": _text(payment, "confirmation_number"),
        "method": method,
        "last4": last4,
    }


def _key(body: dict[str, Any], key_header: str | None) -> str:
    key = _text(body, "idempotency_key", 255)
    if key_header != key:
        raise Invalid("Idempotency-Key header must equal the body's idempotency_key")
    return key


def _utc(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    try:
        if not isinstance(value, str) or not _PAID_AT.fullmatch(value):
            raise ValueError
        datetime.fromisoformat(value.replace("Z", "+00:00"))  # a real date and time?
    except ValueError:
        raise Invalid(f'{name} must be UTC ISO 8601 like "2026-11-26T15:04:05Z"') from None
    return value


def _currency(body: dict[str, Any]) -> str:
    currency = body.get("currency")
    if not isinstance(currency, str) or not _CURRENCY.fullmatch(currency):
        raise Invalid("currency must be a three-letter ISO 4217 code like USD")
    return currency


def _instalments(body: dict[str, Any]) -> None:
    rows = body.get("instalments")
    if not isinstance(rows, list) or not 1 <= len(rows) <= _MAX_INSTALMENTS:
        raise Invalid(f"instalments must be a list of 1 to {_MAX_INSTALMENTS} objects")
    for row in rows:
        due = row.get("due_date") if isinstance(row, dict) else None
        try:
            if not isinstance(due, str) or not _DATE.fullmatch(due):
                raise ValueError
            datetime.strptime(due, "%Y-%m-%d")  # noqa: DTZ007 - a calendar date, no time
        except ValueError:
            raise Invalid('each instalment needs a due_date like "2026-12-26"') from None
        _cents(row, "amount", positive=True)


def validate_arrangement(body: object, key_header: str | None,
                         event_header: str | None) -> dict[str, Any]:
    """An arrangement's fields, checked (Invalid says what is wrong); unknown keys ignored.

    An arrangement is a promise to pay: record it against the account (a note, a flag that
    holds off disconnection), never as money received.
    """
    if not isinstance(body, dict):
        raise Invalid("body must be a JSON object")
    if body.get("event") != "arrangement" or event_header != "arrangement":
        raise Invalid('an arrangement says "event": "arrangement" and X-IVR-Event: arrangement')
    if "amount" in body or "paid_at" in body:
        raise Invalid("an arrangement carries no amount or paid_at")
    kind = body.get("kind")
    if kind not in _KINDS:
        raise Invalid('kind must be "extension" or "instalments"')
    down_conf = body.get("down_payment_confirmation")
    if down_conf is not None:
        _text(body, "down_payment_confirmation")
    _currency(body)
    _utc(body, "created_at")
    _text(body, "status", 16)
    _cents(body, "balance", positive=True)
    _cents(body, "down_payment", positive=False)
    _instalments(body)
    return {
        "idempotency_key": _key(body, key_header),
        "account_number": _text(body, "account_number"),
        "confirmation_number": _text(body, "confirmation_number"),
        "kind": kind,
    }


def validate_reversal(body: object, key_header: str | None,
                      event_header: str | None) -> dict[str, Any]:
    """A reversal's fields, checked (Invalid says what is wrong); unknown keys ignored.

    A reversal takes back money of an earlier payment: the customer's balance goes back up
    by ``reversed_amount``. It never carries ``amount``, so it cannot be booked as a payment.
    """
    if not isinstance(body, dict):
        raise Invalid("body must be a JSON object")
    if body.get("event") != "reversal" or event_header != "reversal":
        raise Invalid('a reversal says "event": "reversal" and X-IVR-Event: reversal')
    if "amount" in body or "paid_at" in body:
        raise Invalid("a reversal carries reversed_amount, never amount or paid_at")
    kind = body.get("kind")
    if kind not in _REVERSAL_KINDS:
        raise Invalid('kind must be "return", "refund" or "void"')
    _currency(body)
    _utc(body, "recorded_at")
    return {
        "idempotency_key": _key(body, key_header),
        "account_number": _text(body, "account_number"),
        "payment_idempotency_key": _text(body, "payment_idempotency_key", 255),
        "kind": kind,
        "reversed_cents": _cents(body, "reversed_amount", positive=True),
    }


class Store:
    """Payments and arrangements in one SQLite file; each table's UNIQUE idempotency_key is
    what deduplicates."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with closing(self._connect()) as conn:
            # WAL lets the listing read while a payment is written; it persists in the file.
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        # One connection per request (sqlite3 connections are not for sharing across
        # threads); autocommit, so each statement is its own transaction, and a 30 s busy
        # wait so concurrent writers queue instead of failing.
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        conn.execute("PRAGMA synchronous=FULL")  # durable before we answer 201
        return conn

    def add(self, fields: dict[str, Any], body: str, table: str = "payments"
            ) -> tuple[int, str]:
        """Store once; (201, new receipt) or (409, original) or (422, original) on reuse."""
        if table not in _TABLES:
            raise ValueError(f"no table {table!r}")
        receipt = _TABLES[table] + secrets.token_hex(8).upper()
        received_at = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        row = {**fields, "receipt_id": receipt, "body": body, "received_at": received_at}
        # Column names come from validate(), never from the request.
        columns = ", ".join(row)
        values = ", ".join(f":{name}" for name in row)
        with closing(self._connect()) as conn:
            # One atomic statement: of any number of concurrent duplicates exactly one
            # inserts; the others do nothing and then read the winner's row.
            inserted = conn.execute(
                f"INSERT INTO {table} ({columns}) VALUES ({values})"  # noqa: S608
                " ON CONFLICT (idempotency_key) DO NOTHING", row).rowcount
            if inserted == 1:
                return 201, receipt
            original, stored = conn.execute(
                f"SELECT receipt_id, body FROM {table} WHERE idempotency_key = ?",  # noqa: S608
                (fields["idempotency_key"],),
            ).fetchone()
        same = json.loads(stored) == json.loads(body)
        return (409 if same else 422), str(original)

    def listing(self, table: str = "payments") -> list[dict[str, Any]]:
        """Every stored payment (or arrangement), oldest first (test/debug aid)."""
        if table not in _TABLES:
            raise ValueError(f"no table {table!r}")
        with closing(self._connect()) as conn:
            rows = conn.execute(
                "SELECT receipt_id, idempotency_key, received_at, body"  # noqa: S608
                f" FROM {table} ORDER BY id").fetchall()
        item = table.removesuffix("s")
        return [{"receipt_id": r, "idempotency_key": k, "received_at": at,
                 item: json.loads(body)} for r, k, at, body in rows]


# Table by table, the prefix of the receipt ids it hands out.
_TABLES = {"payments": "R-", "arrangements": "A-", "reversals": "V-"}
# The path each kind of event is posted to, and its table.
_ROUTES = {PATH: "payments", ARRANGEMENTS_PATH: "arrangements", REVERSALS_PATH: "reversals"}


class FaultError(Exception):
    """The faults file is unreadable or has a bad rule."""


_RULE_KEYS = frozenset({"status", "count", "delay", "retry_after", "body", "drop", "methods"})


class Faults:
    """Injected failures read from a JSON file on every request (see the module docstring)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()  # consuming a count is a read-modify-write of the file

    def take(self, method: str) -> dict[str, Any] | None:
        """The rule for this request, with one use of its count consumed; None: no fault."""
        if self.path is None:
            return None
        with self._lock:
            try:
                text = self.path.read_text(encoding="utf-8")
            except FileNotFoundError:
                return None
            try:
                data = json.loads(text) if text.strip() else []
            except ValueError as exc:
                raise FaultError(f"faults file is not JSON: {exc}") from None
            rules = data if isinstance(data, list) else [data]
            for index, rule in enumerate(rules):
                self._check(rule)
                if method not in rule.get("methods", ["POST"]):
                    continue
                if "count" in rule:
                    left = rule["count"] - 1
                    if left > 0:
                        rules[index] = {**rule, "count": left}
                    else:
                        del rules[index]
                    self._write(self.path, rules)
                return cast(dict[str, Any], rule)
            return None

    @staticmethod
    def _check(rule: object) -> None:
        if not isinstance(rule, dict):
            raise FaultError("each fault rule must be a JSON object")
        unknown = set(rule) - _RULE_KEYS
        if unknown:
            raise FaultError(f"unknown fault rule key(s): {', '.join(sorted(unknown))}")
        status = rule.get("status", 200)
        count = rule.get("count", 1)
        delay = rule.get("delay", 0)
        if not isinstance(status, int) or not 200 <= status <= 599:
            raise FaultError("fault status must be an HTTP status from 200 to 599")
        if not isinstance(count, int) or count < 1:
            raise FaultError("fault count must be a whole number of at least 1")
        if not isinstance(delay, int | float) or delay < 0:
            raise FaultError("fault delay must be a number of seconds")
        methods = rule.get("methods", ["POST"])
        if not isinstance(methods, list) or not all(isinstance(m, str) for m in methods):
            raise FaultError('fault methods must be a list like ["POST", "HEAD"]')
        if not isinstance(rule.get("retry_after", 0), int | str):
            raise FaultError("fault retry_after must be seconds or an HTTP date")

    @staticmethod
    def _write(path: Path, rules: list[Any]) -> None:
        temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        temporary.write_text(json.dumps(rules), encoding="utf-8")
        os.replace(temporary, path)  # atomic: a concurrent reader sees old or new


class Server(ThreadingHTTPServer):
    """One thread per connection; the listen backlog sized for bursts of concurrent posts."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], store: Store, secret: bytes, faults: Faults,
                 *, listing: bool, verbose: bool) -> None:
        super().__init__(address, Handler)
        self.store = store
        self.secret = secret
        self.faults = faults
        self.listing = listing
        self.verbose = verbose


class Handler(BaseHTTPRequestHandler):
    """Routes /payments; every answer is JSON with a Content-Length (keep-alive works)."""

    protocol_version = "HTTP/1.1"
    server_version = "ivr-webhook-receiver/1"
    timeout = 60  # an idle or stalled connection frees its thread after this
    # Headers and body leave in two writes; with Nagle's algorithm on, the body would wait
    # for the client's delayed ACK (~40 ms a request on Linux).
    disable_nagle_algorithm = True

    @property
    def app(self) -> Server:
        return cast(Server, self.server)

    def log_message(self, format: str, *args: Any) -> None:
        if self.app.verbose:
            super().log_message(format, *args)

    def log_error(self, format: str, *args: Any) -> None:
        sys.stderr.write(f"{self.address_string()} {format % args}\n")

    def _send(self, status: int, data: object = None, *, raw: bytes | None = None,
              headers: dict[str, str] | None = None, close: bool = False) -> None:
        body = raw if raw is not None else json.dumps(data).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            if close:
                # The request body may be unread, so the connection cannot be reused.
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
        except OSError:
            # The client gave up (its timeout) before we answered; nothing left to tell it.
            self.close_connection = True

    def _fault(self) -> tuple[bool, dict[str, Any] | None]:
        """Apply an injected fault; (answered, rule)."""
        try:
            rule = self.app.faults.take(self.command)
        except (FaultError, OSError) as exc:
            self._send(500, {"error": str(exc)}, close=True)
            return True, None
        if rule is None:
            return False, None
        time.sleep(float(rule.get("delay", 0)))
        if "status" not in rule:
            return False, rule
        body = rule.get("body", {"error": "injected fault"})
        raw = b"" if body is None else json.dumps(body).encode()
        headers = {"Retry-After": str(rule["retry_after"])} if "retry_after" in rule else {}
        self._send(int(rule["status"]), raw=raw, headers=headers)
        return True, rule

    def do_HEAD(self) -> None:
        """Health check."""
        if urlsplit(self.path).path not in _ROUTES:
            self._send(404, raw=b"")
            return
        answered, _ = self._fault()
        if not answered:
            self._send(200, raw=b"")

    def do_GET(self) -> None:
        """TEST/DEBUG AID: list stored payments or arrangements (loopback only)."""
        table = _ROUTES.get(urlsplit(self.path).path)
        if table is None or not self.app.listing:
            self._send(404, {"error": "not found"})
            return
        self._send(200, self.app.store.listing(table))

    def do_POST(self) -> None:
        """The webhook: payments, and arrangements at their own path."""
        table = _ROUTES.get(urlsplit(self.path).path)
        if table is None:
            self._send(404, {"error": "not found"}, close=True)
            return
        length = self.headers.get("Content-Length", "")
        if not length.isdigit():
            self._send(411, {"error": "Content-Length required"}, close=True)
            return
        if int(length) > MAX_BODY:
            self._send(413, {"error": f"body larger than {MAX_BODY} bytes"}, close=True)
            return
        body = self.rfile.read(int(length))
        answered, rule = self._fault()
        if answered:
            return
        status, answer = self._handle(body, table)
        if rule is not None and rule.get("drop"):
            self.close_connection = True  # stored (or not) but never answered
            return
        self._send(status, answer)

    def _handle(self, body: bytes, table: str) -> tuple[int, dict[str, Any]]:
        # Authenticate the exact bytes before parsing anything in them.
        problem = verify_signature(self.app.secret, body, self.headers.get("X-IVR-Signature"),
                                   int(time.time()))
        if problem is not None:
            return 401, {"error": problem}
        try:
            text = body.decode("utf-8")
            data, key = json.loads(text), self.headers.get("Idempotency-Key")
            if table == "arrangements":
                fields = validate_arrangement(data, key, self.headers.get("X-IVR-Event"))
            elif table == "reversals":
                fields = validate_reversal(data, key, self.headers.get("X-IVR-Event"))
            else:
                fields = validate(data, key)
        except (ValueError, RecursionError):  # bad UTF-8 or JSON, or absurdly nested JSON
            return 400, {"error": "body must be UTF-8 JSON"}
        except Invalid as exc:
            return 400, {"error": str(exc)}
        try:
            status, receipt = self.app.store.add(fields, text, table)
        except sqlite3.Error as exc:
            self.log_error("storage failed: %s", exc)
            return 500, {"error": "storage failed"}  # the IVR retries 5xx
        if status == 422:
            return 422, {"error": "Idempotency-Key already used for a different "
                                  + table.removesuffix("s"),
                         "receipt_id": receipt}
        return status, {"receipt_id": receipt}


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _stop(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)  # unwinds serve_forever, so the socket is closed cleanly


def main(argv: list[str] | None = None) -> int:
    """Run the receiver until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else "")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port (8080; 0: any free)")
    parser.add_argument("--db", type=Path, default=Path("webhook_payments.sqlite3"),
                        help="SQLite file, created if missing")
    parser.add_argument("--secret-env", default="IVR_WEBHOOK_SECRET",
                        help="environment variable holding the shared secret")
    parser.add_argument("--faults", type=Path, help="fault-injection JSON file (tests)")
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    args = parser.parse_args(argv)

    secret = os.environ.get(args.secret_env, "")
    if len(secret) < MIN_SECRET:
        print(f"error: ${args.secret_env} must hold a secret of at least {MIN_SECRET} "
              "characters", file=sys.stderr)
        return 2
    server = Server((args.host, args.port), Store(args.db), secret.encode("utf-8"),
                    Faults(args.faults), listing=_is_loopback(args.host),
                    verbose=args.verbose)
    signal.signal(signal.SIGTERM, _stop)
    host, port = str(server.server_address[0]), server.server_address[1]
    shown = f"[{host}]" if ":" in host else host
    print(f"listening on http://{shown}:{port}{PATH}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
