"""What every accounting-system connector offers, and how its failures are classified.

A connector posts a payment (idempotently, by the payment's key), records a payment
arrangement (a promise to pay: a non-cash event that never changes a balance, idempotent
by its own key), posts a reversal (a return, refund or void of an earlier payment: the
balance goes back up, idempotent by its own key), may look up an account's live balance,
and reports its health. Failures
are either retryable (the system is slow, down or throttling: the outbox tries again later)
or permanent (the system refused the payment as invalid: it is dead-lettered for a person
to look at, never retried forever).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Literal, Protocol, runtime_checkable


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
    # False only when no earlier attempt can have reached the system (the outbox's first
    # try): the connector may then skip looking for an earlier copy. True (the default)
    # for retries, expired claims and any caller that cannot tell.
    may_exist: bool = True


ArrangementKind = Literal["extension", "instalments"]


@dataclass(frozen=True)
class ArrangementPost:
    """One payment arrangement as sent to an accounting system: terms, not money.

    An extension promises the rest of ``balance`` by one date; instalments follow a down
    payment (already taken, and posted as a payment of its own) with amounts by dates.
    Nothing here is a payment: a connector records it where the system keeps notes and
    never lets it change a balance.
    """

    idempotency_key: str
    account_number: str
    confirmation_number: str  # the arrangement's, as the caller heard it
    kind: ArrangementKind
    balance: Decimal  # the balance the arrangement covers
    down_payment: Decimal  # paid now (0 for none); posted separately as a payment
    down_payment_confirmation: str | None  # that payment's confirmation number
    instalments: tuple[tuple[date, Decimal], ...]  # (due date, amount), in date order
    created_at: datetime  # aware UTC
    status: str  # "active", "broken" or "kept" when sent
    currency: str = "USD"
    may_exist: bool = True  # as PaymentPost.may_exist

    def summary_lines(self) -> list[str]:
        """The terms in plain words, one per line, for systems that keep free-text notes."""
        what = ("the rest by one date" if self.kind == "extension"
                else f"{len(self.instalments)} instalment(s)")
        lines = [f"Payment arrangement {self.confirmation_number} made by phone "
                 f"({self.kind}: {what}). Status: {self.status}.",
                 f"Balance covered: {self.currency} {self.balance:.2f}"]
        if self.down_payment:
            conf = self.down_payment_confirmation or "unknown"
            lines.append(f"Down payment: {self.currency} {self.down_payment:.2f} "
                         f"(payment confirmation {conf}, posted as a payment)")
        lines += [f"Due {due.isoformat()}: {self.currency} {amount:.2f}"
                  for due, amount in self.instalments]
        made = self.created_at.astimezone(UTC)
        lines.append(f"Made {made:%Y-%m-%d %H:%M} UTC. "
                     "A promise to pay: no amount was posted.")
        return lines


ReversalKind = Literal["return", "refund", "void"]


@dataclass(frozen=True)
class ReversalPost:
    """Money of an earlier payment taken back: a bank return, a refund or a void.

    A new event with its own idempotency key, never an edit of the payment: a connector
    undoes ``amount`` of the payment's effect on the customer's balance (the balance due
    goes back up by it) and names the payment it reverses.
    """

    idempotency_key: str
    account_number: str
    kind: ReversalKind
    amount: Decimal  # taken back from the payment: its whole amount, or part of a refund
    currency: str
    effective_date: date  # the bank's return date, or the day the refund or void was made
    recorded_at: datetime  # aware UTC
    payment_confirmation_number: str
    payment_idempotency_key: str
    payment_paid_at: datetime  # aware UTC
    method: str  # the payment's: "card" or "ach"
    code: str | None  # R01-R99 for a return
    reason: str
    may_exist: bool = True  # as PaymentPost.may_exist

    def description(self) -> str:
        """One line naming what was reversed and why, for systems that keep a text."""
        why = self.code or self.kind
        return (f"Reversal ({self.kind} {why}) of payment {self.payment_confirmation_number}"
                f" made {self.payment_paid_at.astimezone(UTC):%Y-%m-%d}")


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
        """Post once (idempotent by ``payment.idempotency_key``); raise Retryable/Permanent.

        A connector that must read to find an earlier copy may skip that read when
        ``payment.may_exist`` is False; idempotency still holds whenever it is True.
        """
        ...

    def post_arrangement(self, arrangement: ArrangementPost,
                         timeout: float | None = None) -> PostResult:
        """Record once (idempotent by ``arrangement.idempotency_key``) without changing any
        balance; raise Retryable/Permanent as ``post_payment`` does."""
        ...

    def post_reversal(self, reversal: ReversalPost, timeout: float | None = None) -> PostResult:
        """Undo ``reversal.amount`` of an earlier payment once (idempotent by
        ``reversal.idempotency_key``); raise Retryable/Permanent as ``post_payment`` does."""
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
