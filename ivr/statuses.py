"""The fixed sets of words status columns hold, one enum each.

StrEnums: a member is the very string stored in the database, shown in `ivr ... --json`, the
console and /metrics, so existing rows and outputs keep their meaning. Columns typed with
``ivr.models.EnumText`` read back as members and refuse a word outside the set.
"""

from __future__ import annotations

from enum import StrEnum


class PostingStatus(StrEnum):
    """``payments.posting_status``: where a payment stands with the accounting system."""

    QUEUED = "queued"  # waiting in the outbox
    POSTED = "posted"  # acknowledged by the system
    DEAD = "dead"  # refused or out of attempts: waits for a person
    TEST = "test"  # taken by a simulated call: never posted


class OutboxStatus(StrEnum):
    """``outbox.status``: what the posting worker still has to do with a row."""

    PENDING = "pending"  # to post, retried with backoff
    POSTED = "posted"
    DEAD = "dead"
    TEST = "test"  # a simulated call's payment: no worker takes it


class PostingOutcome(StrEnum):
    """What one try at posting achieved (``posting_attempts.outcome``)."""

    POSTED = "posted"
    RETRY = "retry"  # a retryable failure: tried again after a backoff
    DEAD = "dead"  # refused, or the last attempt failed
    SKIPPED = "skipped"  # another poster holds or finished the row: nothing recorded


class SyncKind(StrEnum):
    """``sync_runs.kind``."""

    PULL = "pull"  # account files in
    PUSH = "push"  # payment confirmation files out


class SyncRunStatus(StrEnum):
    """``sync_runs.status``."""

    RUNNING = "running"
    OK = "ok"
    FAILED = "failed"


class ImportStatus(StrEnum):
    """``import_runs.status``: an account file is applied whole or not at all."""

    APPLIED = "applied"
    REJECTED = "rejected"


class IngestOutcome(StrEnum):
    """``ingested_files.status``: what `ivr sync pull` did with one remote file."""

    APPLIED = "applied"
    REJECTED = "rejected"
    SKIPPED = "skipped"  # the same content was seen before: nothing loaded


class LoginOutcome(StrEnum):
    """``ops_login_attempts.outcome``."""

    OK = "ok"
    FAILED = "failed"  # wrong user name or password
    REFUSED = "refused"  # over the sign-in limit: the password was not even checked


class CallOutcome(StrEnum):
    """``call_sessions.outcome``: how a call ended (NULL while it goes on)."""

    PAID = "paid"
    TRANSFERRED = "transferred"
    GAVE_UP = "gave_up"
    HUNG_UP = "hung_up"
    HUNG_UP_IN_PAY = "hung_up_in_pay"
    DEADLINE = "deadline"
    COMPLETED = "completed"


class ArrangementStatus(StrEnum):
    """``arrangements.status``: where a payment arrangement stands."""

    ACTIVE = "active"  # holds the account's service while its instalments are kept
    BROKEN = "broken"  # an instalment date passed with the amount still unpaid (on import)
    KEPT = "kept"  # every instalment date passed with the amounts paid
    TEST = "test"  # made on a simulated call: holds nothing, never posted


class ArrangementKind(StrEnum):
    """``arrangements.kind``: what the caller agreed to."""

    EXTENSION = "extension"  # the balance by one later date
    INSTALMENTS = "instalments"  # a share now, the rest in instalments on set dates


class PaymentStatus(StrEnum):
    """``payments.status``: whether the money taken is still the biller's."""

    PAID = "paid"
    RETURNED = "returned"  # the bank sent the debit back (a return code, R01-R99)
    REFUNDED = "refunded"  # refunded at the processor in full
    VOIDED = "voided"  # voided at the processor before settlement


class ReversalKind(StrEnum):
    """``reversals.kind``: what took a payment's money back (all travel one path)."""

    RETURN = "return"  # a bank return from a returns file
    REFUND = "refund"  # recorded by ops: refunded at the processor (whole or part)
    VOID = "void"  # recorded by ops: voided at the processor (whole)
