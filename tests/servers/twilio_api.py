"""A local HTTP stand-in for Twilio's REST API on 127.0.0.1: Messages, call Recordings, and
the Payments subresource of a live call (agent-assisted capture).

Payments answers like Twilio and, like Twilio, posts signed status callbacks to the app's
StatusCallback URL, one after another: a field being keyed (PartialResult=true), then entered
(or its ErrorType), with the fields still Required; after Status=complete the final Result
with PaymentConfirmationCode and the masked card or bank details. ``caller`` is what the
simulated caller keys; the app only ever receives it masked, as from Twilio.
"""

from __future__ import annotations

import base64
import json
import queue
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import requests
from twilio.request_validator import RequestValidator

CARD_FIELDS = ("payment-card-number", "expiration-date", "security-code", "postal-code")
BANK_FIELDS = ("bank-routing-number", "bank-account-number")
# Twilio's error type per field when what the caller keyed is not valid.
ERROR_TYPES = {"payment-card-number": "invalid-card-number",
               "expiration-date": "invalid-date", "security-code": "invalid-security-code",
               "postal-code": "invalid-postal-code",
               "bank-routing-number": "invalid-bank-routing-number",
               "bank-account-number": "invalid-bank-account-number"}
DEFAULT_CALLER = {"payment-card-number": "4111111111111111", "expiration-date": "1228",
                  "security-code": "123", "postal-code": "60614",
                  "bank-routing-number": "121000248", "bank-account-number": "123456789"}


@dataclass
class PaymentSession:
    """What the stand-in knows of one Payments session."""

    sid: str
    call_sid: str
    account_sid: str
    callback: str
    form: dict[str, str]
    entered: dict[str, str] = field(default_factory=dict)
    errors_left: set[str] = field(default_factory=set)

    @property
    def method(self) -> str:
        return self.form.get("PaymentMethod", "credit-card")

    def fields(self) -> tuple[str, ...]:
        if self.method == "ach-debit":
            return BANK_FIELDS
        return tuple(f for f in CARD_FIELDS
                     if (f != "security-code" or self.form.get("SecurityCode") != "false")
                     and (f != "postal-code" or self.form.get("PostalCode") != "false"))

    def required(self) -> str:
        return ",".join(f for f in self.fields() if f not in self.entered)


def _masked(name: str, value: str) -> dict[str, str]:
    """The callback fields Twilio sends for an entered value: masked as Twilio masks them."""
    if name == "payment-card-number":
        return {"PaymentCardNumber": "xxxx-xxxx-xxxx-" + value[-4:], "PaymentCardType": "visa"}
    if name == "expiration-date":
        return {"ExpirationDate": value}  # not cardholder data: Twilio sends it in clear
    if name == "security-code":
        return {"SecurityCode": "x" * len(value)}
    if name == "postal-code":
        return {"PaymentCardPostalCode": value}
    if name == "bank-routing-number":
        return {"BankRoutingNumber": value}
    return {"BankAccountNumber": "*" * (len(value) - 2) + value[-2:]}


@dataclass
class StandIn:
    """Records every request; answers like Twilio, or with ``fail_status``.

    Payments: ``caller`` (what is keyed per field), ``invalid_once`` (fields whose first
    entry Twilio finds invalid), ``decline`` (the processor refuses the charge),
    ``final_copies`` (how many times the final callback is delivered, at once: Twilio's
    retries). ``callbacks`` holds every callback posted.
    """

    token: str = ""
    requests: list[dict[str, Any]] = field(default_factory=list)
    fail_status: int | None = None
    # When set, a request whose Basic auth password is none of these gets Twilio's 401.
    accepted_tokens: tuple[str, ...] = ()
    url: str = ""
    caller: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_CALLER))
    invalid_once: set[str] = field(default_factory=set)
    decline: bool = False
    final_copies: int = 1
    delay: float = 0.0  # seconds before each callback (a caller takes time to key)
    callbacks: list[dict[str, Any]] = field(default_factory=list)
    sessions: dict[str, PaymentSession] = field(default_factory=dict)
    _keys: dict[str, str] = field(default_factory=dict)
    _server: ThreadingHTTPServer | None = None
    _queue: queue.Queue[tuple[str, dict[str, str], int]] = field(default_factory=queue.Queue)

    def authenticated(self, authorization: str) -> bool:
        """Whether Basic ``authorization`` carries one of ``accepted_tokens``."""
        scheme, _, encoded = authorization.partition(" ")
        try:
            password = base64.b64decode(encoded).decode().partition(":")[2]
        except ValueError:
            return False
        return scheme == "Basic" and password in self.accepted_tokens

    def start(self) -> StandIn:
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
                stand_in.requests.append({"path": self.path, "form": form,
                                          "auth": self.headers.get("Authorization", "")})
                if stand_in.accepted_tokens and not stand_in.authenticated(
                        self.headers.get("Authorization", "")):
                    self._send(401, {"code": 20003, "message": "Authenticate", "status": 401})
                    return
                if stand_in.fail_status:
                    body = {"code": 20500, "message": "Internal error", "status": 500}
                    self._send(stand_in.fail_status, body)
                    return
                account = self.path.split("/")[3]
                if "/Payments" in self.path:
                    status, body = stand_in._payments(self.path, account, form)
                    self._send(status, body)
                    return
                if "/Recordings" in self.path:
                    # Create (…/Calls/CA…/Recordings.json) or update (…/Recordings/RE….json).
                    sid = (self.path.rsplit("/", 1)[1].removesuffix(".json")
                           if self.path.endswith(".json") and "/Recordings/" in self.path
                           else "RE" + "1" * 32)
                    self._send(201, {"sid": sid, "account_sid": account,
                                     "status": form.get("Status", "in-progress")})
                    return
                self._send(201, {"sid": "SM" + "0" * 32, "account_sid": account,
                                 "to": form.get("To"), "from": form.get("From"),
                                 "body": form.get("Body"), "status": "queued"})

            def _send(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        threading.Thread(target=self._deliver, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    # --- Payments -----------------------------------------------------------------------

    def _payments(self, path: str, account: str, form: dict[str, str]
                  ) -> tuple[int, dict[str, Any]]:
        """Create (…/Calls/CA…/Payments.json) or update (…/Payments/PK….json)."""
        parts = path.split("?")[0].split("/")
        call_sid = parts[parts.index("Calls") + 1]
        for name in ("IdempotencyKey", "StatusCallback"):
            if name not in form:
                return 400, {"code": 21201, "message": f"Missing required parameter {name}",
                             "status": 400}
        now = datetime.now(UTC).strftime("%a, %d %b %Y %H:%M:%S +0000")
        if path.endswith("/Payments.json"):
            key = form["IdempotencyKey"]
            if key in self._keys:  # the same request again: the same session, no new one
                sid = self._keys[key]
            else:
                sid = "PK" + uuid.uuid4().hex
                self._keys[key] = sid
                session = PaymentSession(sid, call_sid, account, form["StatusCallback"], form,
                                         errors_left=set(self.invalid_once))
                self.sessions[sid] = session
                self._post(session, {"DateCreated": now}, "started")
            return 201, self._resource(self.sessions[sid], now)
        sid = parts[-1].removesuffix(".json")
        session = self.sessions.get(sid)
        if session is None or session.call_sid != call_sid:
            return 404, {"code": 20404, "message": "The requested resource was not found",
                         "status": 404}
        if form.get("IdempotencyKey") in self._keys:
            return 200, self._resource(session, now)
        self._keys[form["IdempotencyKey"]] = sid
        if form.get("Capture"):
            self._capture(session, form["Capture"], now)
        elif form.get("Status") == "complete":
            self._complete(session, now)
        elif form.get("Status") != "cancel":
            return 400, {"code": 21218, "message": "Invalid Capture or Status", "status": 400}
        return 200, self._resource(session, now)

    def _resource(self, session: PaymentSession, now: str) -> dict[str, Any]:
        return {"sid": session.sid, "account_sid": session.account_sid,
                "call_sid": session.call_sid, "date_created": now, "date_updated": now,
                "uri": f"/2010-04-01/Accounts/{session.account_sid}/Calls/{session.call_sid}"
                       f"/Payments/{session.sid}.json"}

    def _capture(self, session: PaymentSession, name: str, now: str) -> None:
        value = self.caller.get(name, "")
        base = {"DateUpdated": now, "Capture": name}
        session.entered.pop(name, None)
        self._post(session, {**base, "PartialResult": "true", "Required": session.required()},
                   "keying")
        if name in session.errors_left:
            session.errors_left.discard(name)
            self._post(session, {**base, "PartialResult": "false",
                                 "ErrorType": ERROR_TYPES[name],
                                 "Required": session.required()}, "error")
            return
        session.entered[name] = value
        self._post(session, {**base, "PartialResult": "false", **_masked(name, value),
                             "Required": session.required()}, "entered")

    def _complete(self, session: PaymentSession, now: str) -> None:
        final = {"DateUpdated": now}
        for name, value in session.entered.items():
            final.update(_masked(name, value))
        if self.decline or session.required():
            final.update(Result="payment-connector-error", PaymentError="card is declined",
                         ConnectorError="card_declined")
        else:
            final.update(Result="success",
                         PaymentConfirmationCode="ch_" + uuid.uuid4().hex[:20])
        self._post(session, final, "final", copies=self.final_copies)

    def _post(self, session: PaymentSession, extra: dict[str, str], kind: str,
              copies: int = 1) -> None:
        form = {"AccountSid": session.account_sid, "CallSid": session.call_sid,
                "Sid": session.sid, "PaymentConnector": session.form.get("PaymentConnector",
                                                                         "Default"),
                "PaymentMethod": session.method,
                "ChargeAmount": session.form.get("ChargeAmount", ""),
                "TokenType": session.form.get("TokenType", "one-time"), **extra}
        if session.method == "ach-debit":
            form["BankAccountType"] = session.form.get("BankAccountType", "consumer-checking")
        self._queue.put((session.callback, form, copies))
        self.callbacks.append({"kind": kind, "form": form, "copies": copies})

    def _deliver(self) -> None:
        """Post callbacks in order, each signed as Twilio signs; copies of one at once."""
        while True:
            url, form, copies = self._queue.get()
            time.sleep(self.delay)
            try:
                signature = RequestValidator(self.token).compute_signature(url, form)
                threads = [threading.Thread(target=requests.post, args=(url,), kwargs={
                    "data": form, "headers": {"X-Twilio-Signature": signature},
                    "timeout": 15}) for _ in range(copies)]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
            finally:
                self._queue.task_done()

    def settle(self) -> None:
        """Wait until every callback so far has been delivered and answered."""
        self._queue.join()
