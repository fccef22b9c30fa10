"""The hledger-web connector: post each payment as a balanced journal transaction.

Written against hledger-web 1.25 (Debian bookworm) started with ``--serve-api``. Its JSON
API has no idempotency, no authentication and (in 1.25) no validation, so this module does
what the server does not:

* Dedupe: a payment's transaction carries a code (``tcode``) made from its idempotency
  key; before adding a payment an earlier attempt may have reached (``may_exist``: a retry,
  an expired claim), the customer's register is read and a transaction with that code
  means that attempt landed (``already_posted``). A first attempt skips the read.
* One writer: 1.25 fails requests that overlap inside it (a reload meeting an append), so
  one connector sends one post at a time (``max_concurrency``).
* Balance: 1.25 answers 201 to an unbalanced transaction, appends it, and the journal then
  no longer parses (the server keeps serving stale data and cannot restart). The postings
  are summed from the exact JSON about to be sent; anything but zero is a PermanentError.
* Injection: the code, description and tags are written into the journal as text, where
  ``)``, ``;``, ``,`` and newlines have meaning; only safe characters reach it.
* Unknown customers: hledger would silently create any account it is given, so the
  customer's receivable account must already exist (``GET /accountnames``).

Journal conventions (see docs/connectors.md): one receivable account per customer, named
``IVR_HLEDGER_RECEIVABLE_PREFIX`` + account number, with the balance due as its positive
balance; the payment debits the clearing account and credits the receivable (and the
convenience fee, when there is one, credits the fee income account).

A payment arrangement moves no money: it is a transaction "Payment arrangement <conf>"
with one zero posting on the customer's receivable account (so it shows in the customer's
register and changes no balance), its code made from its key like a payment's (with an
"arr-" prefix), and its terms as tags in the comment. It is deduplicated by code exactly
as payments are.

A reversal (a return, refund or void of a payment) is a transaction of its own debiting the
receivable and crediting clearing; code "rev-" + its key, tagged ``reverses:`` (docs/connectors.md).
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import requests

from connectors.accounting.base import (
    ArrangementPost,
    LiveBalance,
    PaymentPost,
    PermanentError,
    PostResult,
    RetryableError,
    ReversalPost,
)
from connectors.accounting.hledger_journal import (
    JournalStamp,
    journal_found_elsewhere,
    journal_setting,
    keep_journal,
    source_file,
    stampable,
)
from connectors.accounting.hledger_json import (
    Posting,
    arrangement_code,
    clean,
    decimal_places,
    exact_quantity,
    reversal_code,
    transaction_code,
    unbalanced_by,
    wire_posting,
    wire_transaction,
)
from connectors.accounting.http import (
    DEFAULT_TIMEOUT,
    Deadline,
    make_session,
    request,
    timeouts_from_settings,
    url_setting,
)
from connectors.accounting.state import StateStore

__all__ = ["HledgerConnector", "Posting", "arrangement_code", "reversal_code",
           "transaction_code", "unbalanced_by"]

log = logging.getLogger(__name__)

SYSTEM = "hledger"
# What hledger-web 1.25 says in --serve-api mode when a request failed inside it.
_INTERNAL_FAILURE = "server-side UI is disabled"
DEFAULT_RECEIVABLE_PREFIX = "receivables:customers:"
DEFAULT_CLEARING_ACCOUNT = "assets:bank:clearing"
DEFAULT_FEE_ACCOUNT = "income:convenience-fees"
DEFAULT_COMMODITY = "USD"

# Account names: one space is part of a name, two end it; ; ( ) [ ] and # mean something
# else in a posting line. Refusing them keeps every name we write a single account.
_ACCOUNT_NAME = re.compile(r"[^\s;()\[\]#]+(?: [^\s;()\[\]#]+)*")
_ACCOUNT_NUMBER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# A commodity written unquoted: no digits, signs, separators, spaces or quotes.
_COMMODITY = re.compile(r"[^\s\d+\-.,;@*\"'()=]+")
_ISO_CURRENCY = re.compile(r"[A-Z]{3}")
# hledger-web reloads its journal only when the file's mtime is newer than its last read.
# Linux stamps mtimes from a coarse clock (one kernel tick, 1-10 ms), so a write landing
# within a tick of a reload looks older than that read and stays invisible until the next
# write: a retry's dedupe read could then miss a transaction that landed. Leaving this much
# time between our last read and our write keeps every write newer than the last reload.
# Every write follows a read of ours (see _add_alone), unless the journal is stamped
# (IVR_HLEDGER_JOURNAL, hledger_journal.py). Twice the longest Linux tick (HZ=100:
# 10 ms; Windows stamps file times every 15.6 ms). IVR_HLEDGER_RELOAD_GAP_MS sets it: 0 is
# safe where the journal's filesystem stamps fine-grained mtimes (Linux 6.13+ multigrain
# timestamps on ext4, xfs, btrfs, tmpfs); more is needed where it stamps whole seconds.
_RELOAD_GAP = 0.02
# Known account names are reused this long; a name missing from the cache is re-read
# at once, so a customer added to the journal is never refused because of the cache.
_NAMES_TTL = 60.0
# Reads of a write's own transaction to find the journal, per process, before giving up.
_FINDS = 3


def _setting(settings: Mapping[str, str], name: str, default: str,
             pattern: re.Pattern[str], what: str) -> str:
    value = settings.get(name, "").strip() or default
    if not pattern.fullmatch(value):
        raise ValueError(f"{name} must be {what}, not {value!r}")
    return value


def _url(settings: Mapping[str, str]) -> str:
    name = "IVR_HLEDGER_URL"
    url, parts = url_setting(settings, name, strip="/",
                             required=" (for example http://127.0.0.1:5051)")
    if parts.query or parts.fragment or any(c.isspace() for c in url):
        raise ValueError(f"{name} must be a plain base URL")
    return url


def _zone(settings: Mapping[str, str]) -> ZoneInfo:
    name = "IVR_HLEDGER_TIMEZONE"
    raw = settings.get(name, "").strip() or "UTC"
    try:
        return ZoneInfo(raw)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{name} must be an IANA time zone such as America/Chicago, "
                         f"not {raw!r}") from None


class HledgerConnector:
    """Posts payments to hledger-web's JSON API and reads balances back from it."""

    name = SYSTEM
    # Posts the outbox worker may have in flight at once through one connector.
    max_concurrency = 1

    def __init__(self, url: str, *, receivable_prefix: str = DEFAULT_RECEIVABLE_PREFIX,
                 clearing_account: str = DEFAULT_CLEARING_ACCOUNT,
                 fee_account: str = DEFAULT_FEE_ACCOUNT, commodity: str = DEFAULT_COMMODITY,
                 currency: str | None = None, zone: ZoneInfo | None = None,
                 timeout: tuple[float, float] = DEFAULT_TIMEOUT,
                 reload_gap: float | None = None, journal: Path | None = None,
                 find_journal: bool = False, state: StateStore | None = None) -> None:
        self.url = url.rstrip("/")
        self.receivable_prefix = receivable_prefix
        self.clearing_account = clearing_account
        self.fee_account = fee_account
        self.commodity = commodity
        # The ISO code payments must carry: the commodity when it is one, else USD ("$").
        self.currency = currency or (commodity if _ISO_CURRENCY.fullmatch(commodity) else "USD")
        self.zone = zone or ZoneInfo("UTC")
        self._timeout = timeout
        self.reload_gap = _RELOAD_GAP if reload_gap is None else reload_gap
        # The journal's file, when this machine can stamp it (hledger_journal.py).
        self.journal = JournalStamp(journal) if journal is not None else None
        # Unless named (or turned off), the journal is found through hledger-web's answers
        # and kept in ``state`` for every process of this line (hledger_journal.py).
        self._finding = find_journal and journal is None
        self._finds_left = _FINDS if self._finding else 0
        self._state = state
        self._session = make_session(self.url)
        self._lock = threading.Lock()
        # Held for a whole post: hledger-web 1.25 takes one post at a time.
        self._writing = threading.Lock()
        self._names: frozenset[str] = frozenset()
        self._names_at = -math.inf
        self._last_read = -math.inf

    @classmethod
    def from_settings(cls, settings: Mapping[str, str],
                      state: StateStore | None = None) -> HledgerConnector:
        """Build from IVR_HLEDGER_* / IVR_ACCOUNTING_*_TIMEOUT; ValueError naming the bad one.

        ``state`` keeps the journal's path once found (``IVR_HLEDGER_JOURNAL`` unset).
        """
        account = "an hledger account name (no ; ( ) [ ] # or double spaces)"
        prefix = _setting(settings, "IVR_HLEDGER_RECEIVABLE_PREFIX", DEFAULT_RECEIVABLE_PREFIX,
                          _ACCOUNT_NAME, account)
        journal, find_journal = journal_setting(settings.get("IVR_HLEDGER_JOURNAL", ""))
        currency = settings.get("IVR_HLEDGER_CURRENCY", "").strip().upper() or None
        if currency is not None and not _ISO_CURRENCY.fullmatch(currency):
            raise ValueError(f"IVR_HLEDGER_CURRENCY must be an ISO 4217 code, not {currency!r}")
        return cls(
            _url(settings),
            receivable_prefix=prefix,
            clearing_account=_setting(settings, "IVR_HLEDGER_CLEARING_ACCOUNT",
                                      DEFAULT_CLEARING_ACCOUNT, _ACCOUNT_NAME, account),
            fee_account=_setting(settings, "IVR_HLEDGER_FEE_ACCOUNT", DEFAULT_FEE_ACCOUNT,
                                 _ACCOUNT_NAME, account),
            commodity=_setting(settings, "IVR_HLEDGER_COMMODITY", DEFAULT_COMMODITY,
                               _COMMODITY, "a commodity symbol such as USD or $"),
            currency=currency,
            zone=_zone(settings),
            timeout=timeouts_from_settings(settings),
            reload_gap=_gap(settings),
            journal=journal,
            find_journal=find_journal,
            state=state,
        )

    # -- building -------------------------------------------------------------------------

    def receivable_account(self, account_number: str) -> str:
        """The customer's receivable account; PermanentError for an unusable number."""
        if not _ACCOUNT_NUMBER.fullmatch(account_number):
            raise PermanentError(SYSTEM, f"account number {account_number!r} cannot name "
                                         "an hledger account")
        return self.receivable_prefix + account_number

    def postings(self, payment: PaymentPost) -> list[Posting]:
        """The payment's postings. Override to split differently; the sum is still checked."""
        postings = [
            Posting(self.clearing_account, payment.amount + payment.fee),
            Posting(self.receivable_account(payment.account_number), -payment.amount),
        ]
        if payment.fee:
            postings.append(Posting(self.fee_account, -payment.fee))
        return postings

    def _check_money(self, amount: Decimal, currency: str, when: datetime, name: str) -> None:
        """A positive amount in the journal's currency, at an aware time (``name``)."""
        if not amount.is_finite() or amount <= 0:
            raise PermanentError(SYSTEM, f"amount {amount} must be a positive number")
        if currency.upper() != self.currency:
            raise PermanentError(SYSTEM, f"currency {currency} does not match the "
                                         f"journal's {self.currency} ({self.commodity})")
        if when.utcoffset() is None:
            raise PermanentError(SYSTEM, f"{name} has no time zone")

    def _check_payment(self, payment: PaymentPost) -> None:
        self._check_money(payment.amount, payment.currency, payment.paid_at, "paid_at")
        if not payment.fee.is_finite() or payment.fee < 0:
            raise PermanentError(SYSTEM, f"fee {payment.fee} must be a number, not negative")

    def _description(self, payment: PaymentPost) -> str:
        method = clean(payment.method) or "payment"
        if payment.card_brand:
            method = f"{clean(payment.card_brand)} {method}"
        last4 = clean(payment.last4, 4)
        masked = f" ****{last4}" if last4 else ""
        return f"IVR payment conf {clean(payment.confirmation_number)} {method}{masked}"

    def transaction(self, payment: PaymentPost) -> dict[str, Any]:
        """The JSON transaction for ``payment`` as ``PUT /add`` takes it (not yet checked)."""
        self._check_payment(payment)
        code = transaction_code(payment.idempotency_key)
        tags = [f"acct:{clean(payment.account_number, 64)}", f"ivr_ref:{code}"]
        if conf := clean(payment.confirmation_number, 64):
            tags.append(f"conf:{conf}")
        return wire_transaction(
            payment.paid_at.astimezone(self.zone).date().isoformat(), "Cleared", code,
            self._description(payment), tags,
            [wire_posting(p, self.commodity) for p in self.postings(payment)])

    def arrangement_transaction(self, arrangement: ArrangementPost) -> dict[str, Any]:
        """The JSON transaction recording an arrangement: one zero posting, terms as tags."""
        if arrangement.created_at.utcoffset() is None:
            raise PermanentError(SYSTEM, "created_at has no time zone")
        money = [arrangement.balance, arrangement.down_payment,
                 *(amount for _, amount in arrangement.instalments)]
        if not all(value.is_finite() and value >= 0 for value in money):
            raise PermanentError(SYSTEM, "arrangement amounts must be numbers, not negative")
        code = arrangement_code(arrangement.idempotency_key)
        conf = clean(arrangement.confirmation_number, 64)
        tags = [f"acct:{clean(arrangement.account_number, 64)}", f"ivr_ref:{code}",
                f"conf:{conf}", f"arrangement:{clean(arrangement.kind)}",
                f"status:{clean(arrangement.status)}", f"balance:{arrangement.balance:f}"]
        if arrangement.down_payment:
            tags.append(f"down_payment:{arrangement.down_payment:f}")
            if down := clean(arrangement.down_payment_confirmation, 64):
                tags.append(f"down_payment_conf:{down}")
        # "date" would be hledger's posting-date tag; "due_N" is plain data.
        tags += [f"due_{n}:{due.isoformat()} {amount:f}"
                 for n, (due, amount) in enumerate(arrangement.instalments, start=1)]
        account = self.receivable_account(arrangement.account_number)
        return wire_transaction(
            arrangement.created_at.astimezone(self.zone).date().isoformat(), "Unmarked", code,
            f"Payment arrangement {conf}", tags,
            [wire_posting(Posting(account, Decimal("0.00")), self.commodity)])

    def reversal_transaction(self, reversal: ReversalPost) -> dict[str, Any]:
        """The reversing transaction: receivable up and clearing down by the amount (the
        fee stays earned); a code of its own, the reversed payment's code as a tag."""
        self._check_money(reversal.amount, reversal.currency, reversal.recorded_at,
                          "recorded_at")
        code = reversal_code(reversal.idempotency_key)
        conf = clean(reversal.payment_confirmation_number, 64)
        tags = [f"acct:{clean(reversal.account_number, 64)}", f"ivr_ref:{code}",
                f"conf:{conf}", f"reversal:{clean(reversal.kind)}",
                f"reverses:{transaction_code(reversal.payment_idempotency_key)}"]
        if reversal.code:
            tags.append(f"return_code:{clean(reversal.code, 3)}")
        why = clean(reversal.code or reversal.kind)
        postings = [Posting(self.receivable_account(reversal.account_number), reversal.amount),
                    Posting(self.clearing_account, -reversal.amount)]
        return wire_transaction(
            reversal.effective_date.isoformat(), "Cleared", code,
            f"IVR reversal {why} of payment conf {conf}", tags,
            [wire_posting(p, self.commodity) for p in postings])

    # -- HTTP -----------------------------------------------------------------------------

    def _deadline(self, budget: float | None) -> Deadline:
        return Deadline(SYSTEM, budget, self._timeout, spent="timed out: time budget spent")

    def _request(self, method: str, path: str, deadline: Deadline,
                 **kwargs: Any) -> requests.Response:
        """One request to hledger-web, its time noted for the journal's stamps."""
        sent = time.monotonic_ns()
        response = request(SYSTEM, self._session, method, self.url + path,
                           timeout=deadline.timeouts(), **kwargs)
        if self.journal is not None:
            self.journal.answered(time.monotonic_ns() - sent)
        return response

    def _get(self, path: str, deadline: Deadline) -> Any:
        response = self._request("GET", path, deadline, ok_statuses=(403,))
        _raise_if_busy(response, f"GET {path}")
        if response.status_code == 403:
            raise PermanentError(SYSTEM, f"GET {path}: HTTP 403: {_error_text(response)}")
        with self._lock:
            self._last_read = time.monotonic()
        try:
            return response.json()
        except ValueError:
            # Not hledger-web answering (a proxy page?): no refusal, so try again later.
            raise RetryableError(SYSTEM, f"GET {path}: answer is not JSON") from None

    def _account_names(self, deadline: Deadline, *, fresh: bool) -> frozenset[str]:
        with self._lock:
            if not fresh and time.monotonic() - self._names_at < _NAMES_TTL:
                return self._names
        data = self._get("/accountnames", deadline)
        if not isinstance(data, list):
            raise RetryableError(SYSTEM, "GET /accountnames: unexpected answer")
        names = frozenset(n for n in data if isinstance(n, str))
        with self._lock:
            self._names, self._names_at = names, time.monotonic()
        return names

    def _is_known(self, account: str, deadline: Deadline) -> bool:
        # A hit may come from the cache; a miss is always re-read before it is believed.
        return (account in self._account_names(deadline, fresh=False)
                or account in self._account_names(deadline, fresh=True))

    def _find_code(self, account: str, code: str, deadline: Deadline) -> dict[str, Any] | None:
        """The transaction with ``code`` in the account's register (None: not there)."""
        data = self._get("/accounttransactions/" + quote(account, safe=":"), deadline)
        if not isinstance(data, list):
            raise RetryableError(SYSTEM, "GET /accounttransactions: unexpected answer")
        for row in data:
            # 1.25 answers register rows: [transaction, transaction, split?, others, change,
            # balance]; accept a bare transaction too, as later versions may send.
            txn = row[0] if isinstance(row, list) and row else row
            if isinstance(txn, dict) and txn.get("tcode") == code:
                return txn
        return None

    def _wait_after_read(self, deadline: Deadline) -> None:
        with self._lock:
            wait = self._last_read + self.reload_gap - time.monotonic()
        if wait > 0:
            left = deadline.remaining()
            time.sleep(wait if left is None else min(wait, left))

    def post_payment(self, payment: PaymentPost, timeout: float | None = None) -> PostResult:
        """Add the payment's transaction unless one with its code is already there.

        ``timeout`` bounds the whole call (dedupe read, account check and the write).
        """
        return self._add(self.transaction(payment), payment.account_number, timeout,
                         may_exist=payment.may_exist)

    def post_arrangement(self, arrangement: ArrangementPost,
                         timeout: float | None = None) -> PostResult:
        """Add the arrangement's zero-amount transaction unless its code is already there."""
        return self._add(self.arrangement_transaction(arrangement), arrangement.account_number,
                         timeout, may_exist=arrangement.may_exist)

    def post_reversal(self, reversal: ReversalPost, timeout: float | None = None) -> PostResult:
        """Add the reversing transaction unless one with its code is already there."""
        return self._add(self.reversal_transaction(reversal), reversal.account_number,
                         timeout, may_exist=reversal.may_exist)

    def _add(self, transaction: dict[str, Any], account_number: str,
             timeout: float | None, *, may_exist: bool) -> PostResult:
        """Check, dedupe by code (when an earlier attempt may have landed), then
        ``PUT /add``; ``timeout`` bounds all of it, the wait for another thread's post too."""
        deadline = self._deadline(timeout)
        left = deadline.remaining()
        if not self._writing.acquire(timeout=-1 if left is None else left):
            raise RetryableError(SYSTEM, "timed out: time budget spent")
        try:
            return self._add_alone(transaction, account_number, deadline, may_exist=may_exist)
        finally:
            self._writing.release()

    def _add_alone(self, transaction: dict[str, Any], account_number: str,
                   deadline: Deadline, *, may_exist: bool) -> PostResult:
        try:
            off = unbalanced_by(transaction)
        except (KeyError, TypeError, ValueError, InvalidOperation) as exc:
            raise PermanentError(SYSTEM, f"transaction not checkable: {exc}") from None
        if off:
            # Never send it: hledger-web 1.25 would accept it and break the journal.
            detail = ", ".join(f"{c} {v}" for c, v in sorted(off.items()))
            raise PermanentError(SYSTEM, f"transaction does not balance (off by {detail}); "
                                         "not sent")
        code = transaction["tcode"]
        account = self.receivable_account(account_number)
        if may_exist:
            journal = self.journal or (journal_found_elsewhere(self._state)
                                       if self._finding else None)
            if journal is not None:
                # The read below then reloads whatever an earlier attempt appended, even
                # one that died between its write and its stamp.
                journal.stamp()
            if self._find_code(account, code, deadline) is not None:
                return PostResult(receipt_id=code, already_posted=True)
        known = self._is_known(account, deadline)
        # With the journal stamped after every write, each write is seen at once: no read
        # and no pause before it.
        stamped = self.journal is not None and self.journal.trusted
        if not may_exist and not stamped:
            # No dedupe read, but still one read: a PUT that finds the journal changed
            # reloads it just before appending, and that append can stay unseen until the
            # next write. A read first takes the reload: /version, the smallest answer
            # hledger-web gives (every request reloads a changed journal), where the account
            # names grow with the customers and a register with their history.
            self._get("/version", deadline)
        if not known:
            # hledger would create the account; posting to a customer the biller does not
            # have is for a person to look at, and retrying will not make the account exist.
            raise PermanentError(SYSTEM, f"unknown customer: no account {account!r} "
                                         "in the journal")
        if not stamped:
            self._wait_after_read(deadline)
        size = self.journal.size() if self.journal is not None else None
        response = self._request("PUT", "/add", deadline, json=transaction,
                                 ok_statuses=(400, 403))
        # The duplicate check above makes a retry safe even had a busy write landed.
        _raise_if_busy(response, "PUT /add")
        if response.status_code in (400, 403):
            raise PermanentError(SYSTEM, f"refused (HTTP {response.status_code}): "
                                         f"{_error_text(response)}")
        if self.journal is not None:
            self.journal.after_write(size)
        elif self._finds_left:
            self._find_journal(account, code, deadline)
        return PostResult(receipt_id=code)

    def _find_journal(self, account: str, code: str, deadline: Deadline) -> None:
        """After a write that took the read and the pause: read its transaction back and
        stamp the file hledger-web says it is in, when this process can (hledger_journal.py).
        The write has landed whatever happens here."""
        self._finds_left -= 1
        try:
            path = source_file(self._find_code(account, code, deadline))
        except (RetryableError, PermanentError) as exc:
            log.debug("hledger: looking for the journal's file: %s", exc)
            return
        if path is None:
            return
        self._finds_left = 0
        why = stampable(path)
        if why is not None:
            log.info("hledger: hledger-web's journal %s cannot be stamped from here (%s); "
                     "every write waits for the reload gap", path, why)
            return
        journal = JournalStamp(path)
        if journal.adopt(code) and keep_journal(self._state, path):
            self.journal = journal

    def lookup_balance(self, account_number: str, timeout: float | None = None) -> LiveBalance:
        """The receivable account's balance (``aibalance`` in ``GET /accounts``)."""
        deadline = self._deadline(timeout)
        account = self.receivable_account(account_number)
        data = self._get("/accounts", deadline)
        if not isinstance(data, list):
            raise RetryableError(SYSTEM, "GET /accounts: unexpected answer")
        entry = next((a for a in data if isinstance(a, dict) and a.get("aname") == account),
                     None)
        if entry is None:
            # /accounts leaves out accounts that are declared but have no postings yet.
            if not self._is_known(account, deadline):
                raise PermanentError(SYSTEM, f"unknown customer: no account {account!r}")
            return LiveBalance(account_number, Decimal("0.00"))
        return LiveBalance(account_number, self._balance(account, entry.get("aibalance")))

    def _balance(self, account: str, amounts: Any) -> Decimal:
        total = Decimal("0.00")
        try:
            for amount in amounts or ():
                value = exact_quantity(amount)
                if amount["acommodity"] == self.commodity:
                    total += value
                elif value:
                    raise PermanentError(SYSTEM, f"{account} holds {amount['acommodity']}, "
                                                 f"not only {self.commodity}")
        except (KeyError, TypeError, ValueError) as exc:
            raise RetryableError(SYSTEM, f"GET /accounts: unexpected amount: {exc}") from None
        # At least cents, so 50 reads as 50.00 like every other amount in the app.
        return total if decimal_places(total) > 2 else total.quantize(Decimal("0.01"))

    def health(self, timeout: float | None = None) -> None:
        """``GET /version``. Note 1.25 answers even when its journal no longer parses."""
        data = self._get("/version", self._deadline(timeout))
        if not isinstance(data, str):
            raise RetryableError(SYSTEM, "GET /version: unexpected answer")

    def close(self) -> None:
        """Release pooled connections; stop stamping the journal again."""
        self._session.close()
        if self.journal is not None:
            self.journal.close()


def _gap(settings: Mapping[str, str]) -> float:
    """IVR_HLEDGER_RELOAD_GAP_MS in seconds (default 20 ms)."""
    raw = settings.get("IVR_HLEDGER_RELOAD_GAP_MS", "").strip()
    if not raw:
        return _RELOAD_GAP
    if not raw.isdigit() or int(raw) > 1000:
        raise ValueError("IVR_HLEDGER_RELOAD_GAP_MS must be a whole number of milliseconds, "
                         f"0 to 1000, not {raw!r}")
    return int(raw) / 1000


def _raise_if_busy(response: requests.Response, what: str) -> None:
    """RetryableError for hledger-web 1.25's answer to a failure inside it.

    A journal reload meeting an append from another writer ("resource busy (file is
    locked)") fails the request, read or write, and --serve-api mode answers it with this 403
    having done nothing. Another try finds the journal free: never a refusal to dead-letter.
    """
    if response.status_code == 403 and _INTERNAL_FAILURE in response.text:
        raise RetryableError(SYSTEM, f"{what}: HTTP 403 (hledger-web busy): "
                                     f"{_error_text(response)}")


def _error_text(response: requests.Response) -> str:
    """hledger-web's error: a JSON string (not an object), shortened."""
    try:
        data = response.json()
    except ValueError:
        data = response.text
    return str(data)[:300]

