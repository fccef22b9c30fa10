"""Moving a call to another account: everything the call learned about the last one goes.

A caller whose number is on several accounts may pay more than one in a call
(docs/call-flow.md, "Several accounts on one number"). Each account is verified on its own,
so switching forgets the verification, the payment being set up and every answer given for
the last account. Each ``CallSession`` column is either per account (reset here) or per call
(kept); a test fails when a new column is neither, so the choice is made once, here.
"""

from __future__ import annotations

from typing import Any

from ivr.models import CallSession

# Per account: the value a call has before it has learned anything about an account.
PER_ACCOUNT: dict[str, Any] = {
    "account_id": None,
    "verified": False,
    # Wrong ZIP/PIN entries for this account; the cross-call lockout is per account anyway.
    "verify_failures": 0,
    "amount_cents": None,
    "fee_cents": 0,
    "method": None,
    "bank_account_type": None,
    "payment_id": None,
    "payment_purpose": None,
    "paid_today_confirmed": False,
    "arrangement_offer": None,
    "arrangement_id": None,
    "text_receipt_sent": False,
}

# Per call: kept across accounts. ``pay_tries`` guards against card testing for the whole
# call; ``identify_failures`` bounds account look-ups; the rest is the call itself.
PER_CALL = frozenset({
    "call_sid", "from_number", "to_number", "language", "state", "tries", "silences",
    "extended_time", "awaiting_more_time", "identify_failures", "pay_tries",
    "ach_recording_sid", "prompts_version", "outcome", "call_status", "started_at",
    "updated_at", "ended_at",
})


def switch_account(call: CallSession, account_id: int | None) -> None:
    """Point the call at ``account_id`` (None: no account yet), unverified, with nothing
    carried over from the account before."""
    for name, value in PER_ACCOUNT.items():
        setattr(call, name, value)
    call.account_id = account_id
