"""hledger-web 1.25's JSON for transactions: the codes and text they carry, exact amounts,
postings, transactions, and the check that a transaction balances before it is sent
(connectors/accounting/hledger.py)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from connectors.accounting.base import PermanentError

__all__ = ["Posting", "arrangement_code", "clean", "decimal_places", "exact_quantity",
           "reversal_code", "transaction_code", "unbalanced_by", "wire_amount", "wire_posting",
           "wire_transaction"]

SYSTEM = "hledger"
# Characters that are inert in a transaction header, a code, a tag value and a URL path.
_SAFE = re.compile(r"[A-Za-z0-9._-]+")
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]")
_MAX_CODE = 64
_MAX_DESCRIPTION_PART = 32


def transaction_code(idempotency_key: str) -> str:
    """The ``tcode`` for a key: the key itself when it is safe in a journal, else a digest.

    ``)`` ends a code in the journal text and ``;`` starts a comment, so a raw key with
    such characters would be read back as a different code and never match again.
    """
    if len(idempotency_key) <= _MAX_CODE and _SAFE.fullmatch(idempotency_key):
        return idempotency_key
    digest = hashlib.sha256(idempotency_key.encode("utf-8")).hexdigest()
    return f"ivr-{digest[:32]}"


def reversal_code(idempotency_key: str) -> str:
    """The ``tcode`` for a reversal's key: "rev-" keeps it apart from payments' codes."""
    return transaction_code("rev-" + idempotency_key)


def arrangement_code(idempotency_key: str) -> str:
    """The ``tcode`` for an arrangement's key: "arr-" keeps it apart from payments' codes,
    so an arrangement can never be taken for a payment that landed, nor the reverse."""
    return transaction_code("arr-" + idempotency_key)


def clean(value: str | None, limit: int = _MAX_DESCRIPTION_PART) -> str:
    """``value`` reduced to characters that are inert in a journal header line."""
    return _UNSAFE_CHARS.sub("", value or "")[:limit]


@dataclass(frozen=True)
class Posting:
    """One posting line: ``amount`` (debit positive, credit negative) to ``account``."""

    account: str
    amount: Decimal


def decimal_places(value: Decimal) -> int:
    """Decimal places needed to write ``value`` exactly (at least 2: cents)."""
    exponent = value.normalize().as_tuple().exponent
    if not isinstance(exponent, int):  # NaN or infinity
        raise PermanentError(SYSTEM, f"amount {value} is not a number")
    return max(2, -exponent)


def wire_amount(commodity: str, value: Decimal) -> dict[str, Any]:
    """One hledger amount; the quantity is an exact mantissa, never a float."""
    places = decimal_places(value)
    mantissa = int(value.scaleb(places))
    return {
        "acommodity": commodity,
        # 1.25 ignores "floatingPoint" and does not require it: leaving it out keeps
        # floats off the wire entirely.
        "aquantity": {"decimalMantissa": mantissa, "decimalPlaces": places},
        "aprice": None,
        "astyle": {
            "ascommodityside": "L",
            # "USD 1.00" but "$1.00", as hledger itself writes them.
            "ascommodityspaced": len(commodity) > 1,
            "asprecision": places,
            "asdecimalpoint": ".",
            "asdigitgroups": None,
        },
    }


def wire_posting(posting: Posting, commodity: str) -> dict[str, Any]:
    # Every key is required by 1.25's parser (a missing one is a 400), even unused ones.
    return {
        "pdate": None,
        "pdate2": None,
        "pstatus": "Unmarked",
        "paccount": posting.account,
        "pamount": [wire_amount(commodity, posting.amount)],
        "pcomment": "",
        "ptype": "RegularPosting",
        "ptags": [],
        "pbalanceassertion": None,
        "ptransaction_": "0",
        "poriginal": None,
    }


def wire_transaction(day: str, status: str, code: str, description: str, tags: list[str],
                      postings: list[dict[str, Any]]) -> dict[str, Any]:
    source = {"sourceName": "", "sourceLine": 1, "sourceColumn": 1}
    # Every key is required by 1.25's parser, even those it ignores (tindex, ttags...).
    return {
        "tindex": 0,
        "tprecedingcomment": "",
        "tsourcepos": [source, dict(source)],
        "tdate": day,
        "tdate2": None,
        "tstatus": status,
        "tcode": code,
        "tdescription": description,
        # ttags is ignored on write; tags are read back from the comment.
        "tcomment": ", ".join(tags),
        "ttags": [],
        "tpostings": postings,
    }


def exact_quantity(amount: Any) -> Decimal:
    """The exact value of one JSON amount (``decimalMantissa`` / ``decimalPlaces``)."""
    quantity = amount["aquantity"]
    mantissa, places = quantity["decimalMantissa"], quantity["decimalPlaces"]
    if not (isinstance(mantissa, int) and isinstance(places, int)) or places < 0:
        raise ValueError(f"not an exact quantity: {quantity!r}")
    return Decimal(mantissa).scaleb(-places)


def unbalanced_by(transaction: Mapping[str, Any]) -> dict[str, Decimal]:
    """Per commodity, what the postings of a JSON transaction fail to balance by.

    Read from the very dicts that will be sent, so a slip anywhere between the payment
    and the wire is caught. An empty result means balanced; a posting without an
    amount (hledger would infer it) counts as a fault too.
    """
    totals: dict[str, Decimal] = {}
    for posting in transaction["tpostings"]:
        amounts = posting["pamount"]
        if not amounts:
            totals.setdefault("(missing amount)", Decimal(1))
        for amount in amounts:
            commodity = amount["acommodity"]
            totals[commodity] = totals.get(commodity, Decimal(0)) + exact_quantity(amount)
    return {c: total for c, total in totals.items() if total != 0}
