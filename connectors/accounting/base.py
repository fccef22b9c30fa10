"""What every accounting-system connector offers, and how its failures are classified.

A connector posts a payment (idempotently, by the payment's key), may look up an account's
live balance, and reports its health. Failures are either retryable (the system is slow,
down or throttling: the outbox tries again later) or permanent (the system refused the
payment as invalid: it is dead-lettered for a person to look at, never retried forever).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Protocol, runtime_checkable


class ConnectorError(Exception):
    """A call to an accounting system failed."""

    def __init__(self, system: str, message: str) -> None:
        super().__init__(f"{system}: {message}")
        self.system = system
        self.message = message


class RetryableError(ConnectorError):
    """Timeouts, connection errors, 429 (with its Retry-After), 5xx: try again later."""

    def __init__(self, system: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(system, message)
        self.retry_after = retry_after


class PermanentError(ConnectorError):
    """Validation faults, unknown customer, a refusal: retrying would not help."""


class LookupUnsupported(ConnectorError):
    """The system cannot look up balances (the call then reads the cache)."""


@dataclass(frozen=True)
class PaymentPost:
    """One payment as sent to an accounting system. Masked data only."""

    idempotency_key: str
    account_number: str
    amount: Decimal  # applied to the account; the convenience fee is separate
    fee: Decimal
    currency: str
    paid_at: datetime  # aware UTC
    confirmation_number: str
    method: str  # "card" or "ach"
    last4: str | None
    card_brand: str | None = None


@dataclass(frozen=True)
class PostResult:
    """The system's acknowledgement: its own id for the posting."""

    receipt_id: str
    already_posted: bool = False  # found by its key: an earlier attempt had landed


@dataclass(frozen=True)
class LiveBalance:
    """An account's balance as the accounting system has it right now."""

    account_number: str
    balance_due: Decimal


@runtime_checkable
class AccountingConnector(Protocol):
    """The interface the posting worker and the call use."""

    name: str

    def post_payment(self, payment: PaymentPost, timeout: float | None = None) -> PostResult:
        """Post once (idempotent by ``payment.idempotency_key``); raise Retryable/Permanent."""
        ...

    def lookup_balance(self, account_number: str, timeout: float | None = None) -> LiveBalance:
        """The live balance; LookupUnsupported where the system cannot say."""
        ...

    def health(self, timeout: float | None = None) -> None:
        """Return when the system answers; raise ConnectorError otherwise."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


Settings = Mapping[str, str]
