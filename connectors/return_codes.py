"""NACHA return reason codes (R01-R99) and notice-of-change codes (C01-C13): which are
which, what they mean, and which of the three return-rate categories each counts in.

One place for these facts: the returns file check, the account rules, the rates page and
docs/returns.md all read them here (the docs' table is checked against ``MEANINGS``).
"""

from __future__ import annotations

import re
from typing import Final

_RETURN_RE: Final = re.compile(r"R(0[1-9]|[1-9][0-9])")
_NOTICE_RE: Final = re.compile(r"C(0[1-9]|1[0-3])")

# Return-rate categories NACHA watches over the preceding 60 days, and their thresholds
# (percent of debits taken in the window).
UNAUTHORIZED: Final = frozenset({"R05", "R07", "R10", "R11", "R29", "R51"})
ADMINISTRATIVE: Final = frozenset({"R02", "R03", "R04"})
THRESHOLDS_PERCENT: Final = {"unauthorized": 0.5, "administrative": 3.0, "overall": 15.0}

# The codes a biller most often meets, in words for ops (others show as "return R..").
MEANINGS: Final = {
    "R01": "insufficient funds",
    "R02": "account closed",
    "R03": "no account / unable to locate account",
    "R04": "invalid account number",
    "R05": "unauthorized debit to a consumer account using a corporate SEC code",
    "R07": "authorization revoked by customer",
    "R08": "payment stopped",
    "R09": "uncollected funds",
    "R10": "customer advises not authorized",
    "R11": "customer advises entry not in accordance with the authorization",
    "R16": "account frozen",
    "R20": "non-transaction account",
    "R29": "corporate customer advises not authorized",
    "R51": "item related to RCK entry is ineligible or RCK entry is improper",
    "C01": "incorrect account number",
    "C02": "incorrect routing number",
    "C03": "incorrect routing number and account number",
    "C05": "incorrect transaction code (checking or savings)",
    "C06": "incorrect account number and transaction code",
    "C07": "incorrect routing number, account number and transaction code",
}


def is_return(code: str) -> bool:
    """A return reason code, R01-R99."""
    return _RETURN_RE.fullmatch(code) is not None


def is_notice(code: str) -> bool:
    """A notice-of-change code, C01-C13."""
    return _NOTICE_RE.fullmatch(code) is not None


def category(code: str) -> str:
    """The rate category a return code counts in besides "overall": "unauthorized",
    "administrative" or "other"."""
    if code in UNAUTHORIZED:
        return "unauthorized"
    if code in ADMINISTRATIVE:
        return "administrative"
    return "other"


def meaning(code: str) -> str:
    """The code in words for ops."""
    default = "notice of change" if is_notice(code) else "bank return"
    return MEANINGS.get(code, default)
