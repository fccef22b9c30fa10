"""The signed-webhook connector: POST each payment as JSON to a receiver the biller runs.

The contract (docs/connectors/webhook.md) is fixed, because billers build receivers against
it: a compact JSON body, an ``Idempotency-Key`` header and an ``X-IVR-Signature`` header of
``t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>``. 2xx and 409 mean posted
(409: the receiver already had that key); other 4xx are permanent; 429, 5xx, timeouts and
connection errors are retried by the outbox. ``sign`` and ``verify`` are public so Python
receivers (and our tests) can reuse them.

Payment arrangements go to a URL of their own (``IVR_WEBHOOK_ARRANGEMENTS_URL``), signed the
same way, with ``X-IVR-Event: arrangement`` and ``"event": "arrangement"`` in a body that has
no ``amount``, ``paid_at`` or ``method``: a receiver built for payments, which ignores
unknown fields, can never read one as a payment. Without that URL an arrangement is refused
permanently (dead-lettered, naming the variable) and payments go on as before.

Reversals (a bank return, a refund or a void of an earlier payment) go to
``IVR_WEBHOOK_REVERSALS_URL`` the same way, with ``X-IVR-Event: reversal`` and
``"event": "reversal"``; the money taken back is ``reversed_amount``, never ``amount``, so a
payments receiver can never book one as a payment. Without that URL a reversal is
dead-lettered, naming the variable, until it is set and the row retried.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import requests

from connectors.accounting.base import (
    ArrangementPost,
    LiveBalance,
    LookupUnsupported,
    PaymentPost,
    PermanentError,
    PostResult,
    ReversalPost,
)
from connectors.accounting.http import (
    DEFAULT_TIMEOUT,
    make_session,
    request,
    timeout_for,
    timeouts_from_settings,
    url_setting,
)
from connectors.accounting.state import StateStore

__all__ = [
    "EVENT_HEADER",
    "IDEMPOTENCY_HEADER",
    "SIGNATURE_HEADER",
    "WebhookConnector",
    "arrangement_payload",
    "payload",
    "reversal_payload",
    "sign",
    "verify",
]

SYSTEM = "webhook"
SIGNATURE_HEADER = "X-IVR-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
EVENT_HEADER = "X-IVR-Event"
ARRANGEMENTS_URL = "IVR_WEBHOOK_ARRANGEMENTS_URL"
REVERSALS_URL = "IVR_WEBHOOK_REVERSALS_URL"
MIN_SECRET_LENGTH = 16
DEFAULT_TOLERANCE = 300
# A receipt id is stored beside the payment and shown to staff; anything longer than this
# is not an id, so the idempotency key is used instead.
_MAX_RECEIPT_ID = 255
# Health: any HTTP answer proves DNS, TCP and TLS work. Receivers need not implement HEAD,
# so 401/404/405 count, and so does 501, which is what a server without HEAD support
# (Python's http.server, for one) answers.
_REACHABLE = (*range(100, 500), 501)
_HEALTH_TIMEOUT = (2.0, 3.0)
_CENT = Decimal("0.01")


def _digest(secret: str, body: bytes, timestamp: int) -> str:
    return hmac.new(secret.encode("utf-8"), b"%d." % timestamp + body, hashlib.sha256).hexdigest()


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The ``X-IVR-Signature`` header value for ``body`` sent at ``timestamp``."""
    return f"t={timestamp},v1={_digest(secret, body, timestamp)}"


def verify(secret: str, body: bytes, header: str, now: int,
           tolerance: int = DEFAULT_TOLERANCE) -> bool:
    """True when ``header`` signs ``body`` with ``secret`` within ``tolerance`` s of ``now``.

    Unknown keys are ignored and any one of several ``v1`` values may match, so a sender
    can later add schemes or sign with an old and a new secret during a rotation.
    """
    timestamp: int | None = None
    candidates: list[bytes] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t" and value.isascii() and value.isdigit() and len(value) <= 15:
            timestamp = int(value)
        elif key == "v1":
            candidates.append(value.encode("utf-8", "replace"))
    if timestamp is None or not candidates:
        return False
    # Both directions: a far-future stamp is as suspect as an old one (a replay store).
    if abs(now - timestamp) > tolerance:
        return False
    expected = _digest(secret, body, timestamp).encode("ascii")
    # No early exit: every candidate is compared, each in constant time.
    matches = [hmac.compare_digest(expected, candidate) for candidate in candidates]
    return any(matches)


def _money(field: str, value: Decimal) -> str:
    """``value`` as "123.45"; refuse what would need rounding (never change an amount)."""
    try:
        cents = value.quantize(_CENT)
    except InvalidOperation:
        cents = None
    if cents is None or not value.is_finite() or cents != value:
        raise PermanentError(SYSTEM, f"{field} {value} is not a whole number of cents")
    # Decimal("-0.00") would print its sign.
    return f"{cents.copy_abs() if cents.is_zero() else cents:f}"


def payload(payment: PaymentPost) -> dict[str, Any]:
    """The contract's JSON object for ``payment`` (PermanentError if it cannot be sent)."""
    # Whole seconds, UTC, "Z": the one form every receiver's ISO 8601 parser reads.
    paid_at = _utc_z(payment.paid_at, "paid_at")
    return {
        "account_number": payment.account_number,
        "amount": _money("amount", payment.amount),
        "currency": payment.currency,
        "paid_at": paid_at,
        "confirmation_number": payment.confirmation_number,
        "method": payment.method,
        "last4": payment.last4,
        "fee": _money("fee", payment.fee),
        "idempotency_key": payment.idempotency_key,
    }


def _utc_z(when: datetime, field: str) -> str:
    """``when`` in UTC with whole seconds and a ``Z`` (PermanentError if it has no zone)."""
    offset = when.utcoffset()
    if offset is None:
        raise PermanentError(SYSTEM, f"{field} has no time zone")
    return (when - offset).replace(tzinfo=None, microsecond=0).isoformat() + "Z"


def arrangement_payload(arrangement: ArrangementPost) -> dict[str, Any]:
    """The contract's JSON object for an arrangement: terms only, never a payment's fields."""
    if arrangement.kind not in ("extension", "instalments"):
        raise PermanentError(SYSTEM, f"unknown arrangement kind {arrangement.kind!r}")
    return {
        "event": "arrangement",
        "account_number": arrangement.account_number,
        "confirmation_number": arrangement.confirmation_number,
        "kind": arrangement.kind,
        "status": arrangement.status,
        "currency": arrangement.currency,
        "balance": _money("balance", arrangement.balance),
        "down_payment": _money("down_payment", arrangement.down_payment),
        "down_payment_confirmation": arrangement.down_payment_confirmation,
        "instalments": [{"due_date": due.isoformat(), "amount": _money("instalment", amount)}
                        for due, amount in arrangement.instalments],
        "created_at": _utc_z(arrangement.created_at, "created_at"),
        "idempotency_key": arrangement.idempotency_key,
    }


def reversal_payload(reversal: ReversalPost) -> dict[str, Any]:
    """The contract's JSON object for a reversal: ``reversed_amount`` and the payment it
    takes back, never a payment's ``amount``, ``paid_at`` or ``method``."""
    if reversal.kind not in ("return", "refund", "void"):
        raise PermanentError(SYSTEM, f"unknown reversal kind {reversal.kind!r}")
    return {
        "event": "reversal",
        "kind": reversal.kind,
        "account_number": reversal.account_number,
        "reversed_amount": _money("reversed_amount", reversal.amount),
        "currency": reversal.currency,
        "effective_date": reversal.effective_date.isoformat(),
        "recorded_at": _utc_z(reversal.recorded_at, "recorded_at"),
        "return_code": reversal.code,
        "reason": reversal.reason,
        "payment_confirmation_number": reversal.payment_confirmation_number,
        "payment_idempotency_key": reversal.payment_idempotency_key,
        "payment_method": reversal.method,
        "idempotency_key": reversal.idempotency_key,
    }


def _encode(body: dict[str, Any]) -> bytes:
    # Deterministic bytes: a retry sends exactly what the first attempt sent.
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _receipt_id(response: requests.Response, fallback: str) -> str:
    """The receiver's ``receipt_id`` if its body is JSON carrying one, else ``fallback``."""
    try:
        data = response.json()
    except ValueError:
        return fallback
    value = data.get("receipt_id") if isinstance(data, dict) else None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str) and value.strip() and len(value) <= _MAX_RECEIPT_ID:
        return value.strip()
    return fallback


def _url(settings: Mapping[str, str], name: str = "IVR_WEBHOOK_URL") -> str:
    url, _ = url_setting(settings, name)
    if any(c.isspace() for c in url):
        raise ValueError(f"{name} must not contain spaces")
    return url


def _event_url(settings: Mapping[str, str], payments_url: str, name: str) -> str | None:
    """An event's own URL (optional: IVR_WEBHOOK_ARRANGEMENTS_URL, IVR_WEBHOOK_REVERSALS_URL),
    never the payments URL."""
    if not settings.get(name, "").strip():
        return None
    url = _url(settings, name)
    if url.rstrip("/") == payments_url.rstrip("/"):
        # A payments receiver must never be handed anything but a payment.
        raise ValueError(f"{name} must differ from IVR_WEBHOOK_URL")
    return url


def _secret(settings: Mapping[str, str]) -> str:
    # The value is never quoted in a message: it is a credential.
    name = "IVR_WEBHOOK_SECRET"
    secret = settings.get(name, "")
    if not secret:
        raise ValueError(f"{name} is required")
    if secret != secret.strip():
        # Usually a newline pasted from a file; the receiver's copy would then differ.
        raise ValueError(f"{name} must not start or end with whitespace")
    if len(secret) < MIN_SECRET_LENGTH:
        raise ValueError(f"{name} must be at least {MIN_SECRET_LENGTH} characters")
    return secret



class WebhookConnector:
    """Posts payments to the biller's signed-webhook receiver. No balance lookups."""

    name = SYSTEM

    def __init__(self, url: str, secret: str, *, arrangements_url: str | None = None,
                 reversals_url: str | None = None,
                 timeout: tuple[float, float] = DEFAULT_TIMEOUT,
                 clock: Callable[[], float] = time.time) -> None:
        self.url = url
        self.arrangements_url = arrangements_url
        self.reversals_url = reversals_url
        self._secret = secret
        self._timeout = timeout
        self._clock = clock
        self._session = make_session(*(u for u in (url, arrangements_url, reversals_url) if u))

    @classmethod
    def from_settings(cls, settings: Mapping[str, str],
                      state: StateStore | None = None) -> WebhookConnector:
        """Build from IVR_WEBHOOK_* / IVR_ACCOUNTING_*_TIMEOUT; ValueError naming the bad one.

        Keeps no state between runs: ``state`` is not used.
        """
        timeout = timeouts_from_settings(settings)
        url = _url(settings)
        return cls(url, _secret(settings),
                   arrangements_url=_event_url(settings, url, ARRANGEMENTS_URL),
                   reversals_url=_event_url(settings, url, REVERSALS_URL), timeout=timeout)

    def post_payment(self, payment: PaymentPost, timeout: float | None = None) -> PostResult:
        """POST the signed payment; 409 means the receiver already had this key."""
        return self._post(self.url, _encode(payload(payment)), payment.idempotency_key,
                          timeout)

    def post_arrangement(self, arrangement: ArrangementPost,
                         timeout: float | None = None) -> PostResult:
        """POST the signed arrangement to IVR_WEBHOOK_ARRANGEMENTS_URL (409: already had it).

        Without that URL it is refused permanently, so it waits, dead-lettered and visible,
        until the receiver is ready and a person retries it.
        """
        return self._post_event("arrangement", self.arrangements_url, ARRANGEMENTS_URL,
                                arrangement_payload(arrangement), arrangement.idempotency_key,
                                timeout)

    def post_reversal(self, reversal: ReversalPost, timeout: float | None = None) -> PostResult:
        """POST the signed reversal to IVR_WEBHOOK_REVERSALS_URL (409: already had it).

        Without that URL it is refused permanently, as an arrangement is.
        """
        return self._post_event("reversal", self.reversals_url, REVERSALS_URL,
                                reversal_payload(reversal), reversal.idempotency_key, timeout)

    def _post_event(self, event: str, url: str | None, variable: str, body: dict[str, Any],
                    key: str, timeout: float | None) -> PostResult:
        """POST an event other than a payment to its own URL, or refuse it permanently
        (dead-lettered, naming ``variable``) while that URL is not set."""
        if url is None:
            raise PermanentError(SYSTEM, f"{variable} is not set, so {event}s cannot be "
                                         "sent; set it, restart, then `ivr outbox retry` "
                                         "this row")
        return self._post(url, _encode(body), key, timeout, event=event)

    def _post(self, url: str, body: bytes, key: str, timeout: float | None, *,
              event: str | None = None) -> PostResult:
        headers = {
            "Content-Type": "application/json",
            IDEMPOTENCY_HEADER: key,
            SIGNATURE_HEADER: sign(self._secret, body, int(self._clock())),
        }
        if event is not None:
            headers[EVENT_HEADER] = event  # payments' requests stay exactly as they were
        response = request(SYSTEM, self._session, "POST", url, data=body, headers=headers,
                           timeout=timeout_for(timeout, self._timeout), ok_statuses=(409,))
        return PostResult(receipt_id=_receipt_id(response, key),
                          already_posted=response.status_code == 409)

    def lookup_balance(self, account_number: str, timeout: float | None = None) -> LiveBalance:
        """Always LookupUnsupported: the contract only carries payments."""
        raise LookupUnsupported(SYSTEM, "the webhook contract has no balance lookup")

    def health(self, timeout: float | None = None) -> None:
        """HEAD the URL: any HTTP answer below 500 (or 501) means the receiver is reachable.

        Unsigned on purpose: it posts nothing, and a receiver's 401/405 still proves the
        address, TLS and the process answer. 5xx, timeouts and refusals raise RetryableError.
        """
        short = (min(_HEALTH_TIMEOUT[0], self._timeout[0]),
                 min(_HEALTH_TIMEOUT[1], self._timeout[1]))
        request(SYSTEM, self._session, "HEAD", self.url, ok_statuses=_REACHABLE,
                timeout=timeout_for(timeout, short))

    def close(self) -> None:
        """Release pooled connections."""
        self._session.close()
