"""Tryton 8.x connector: pay a customer's open invoices over JSON-RPC, like the Tryton client.

The customer is the party whose ``code`` is the IVR account number. A payment is applied to
the party's posted customer invoices, oldest first (invoice date, then id), each through
Tryton's own pay wizard (``wizard.account.invoice.pay``), so Tryton creates, posts and
reconciles the payment move exactly as a clerk would:

* an invoice the payment does not cover in full is paid partially and stays open for the
  rest (the wizard's "partial" answer);
* money beyond everything open is kept, not refused: the card was charged already. It goes
  onto the newest open invoice as Tryton's "overpayment", which leaves the excess as an
  unreconciled credit on the party's receivable account. With no open invoice at all the
  payment becomes a posted move crediting the party's receivable account (a credit on
  account). Either way the party's receivable balance drops by exactly the amount paid;
* only ``amount`` is posted; the convenience fee is not the biller's receivable.

Tryton has no idempotency key, so every move this connector creates carries the key in its
description, ``IVR {confirmation} [{key}]``, and each post an earlier attempt may have
reached (``may_exist``) first looks those moves up; a first attempt skips that search. If
they already add up to the amount, the payment is reported as ``already_posted``. If a
multi-invoice payment stopped half-way (a crash, a timeout, an outage between two
invoices), the retry finds the moves that landed and applies only the rest, so nothing is
ever posted twice and nothing is lost. Each wizard run is one Tryton transaction: an
invoice's payment is either wholly there or not at all. Two workers posting the *same*
payment at the same moment could both miss each other's moves; the outbox never does that.

A payment arrangement moves no money, so it is no move: it is a note (``ir.note``, what a
clerk sees under the party's notes) attached to the customer party, with the terms in plain
words and ``IVR reference [{key}]`` as its last line. Before creating one, the party's notes
are searched for that reference; one found means an earlier attempt landed.

A reversal (a bank return, a refund or a void of an earlier payment) is a move of its own,
never an edit of the payment's: a posted move in the payment method's journal that debits
the party's receivable and credits the payment method's account by the amount taken back,
as a clerk books a returned payment. The party's receivable goes back up by exactly that
amount (an open debit the next invoice payment settles), and the payment's own moves and
reconciliations stay as they were, so the audit trail shows both. It carries
``IVR reversal {confirmation} [{key}]`` with the reversal's own key and is deduplicated by
it exactly as payments are.

Errors: connection failures, timeouts, 5xx and 429 are retryable; so are faults that stop
every payment alike (login refused, database or payment method missing), so that payments
wait for the fix instead of being dead-lettered, and passing server faults (a concurrent
update, an unexpected exception: Tryton rolled the transaction back). A Tryton
``UserError`` or ``UserWarning`` about this payment, an unknown account number, a currency
the company does not keep, or an amount with too many decimals is permanent.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import quote, urlsplit

import requests

from connectors.accounting.base import (
    ArrangementPost,
    ConnectorError,
    LiveBalance,
    PaymentPost,
    PermanentError,
    PostResult,
    RetryableError,
    ReversalPost,
)
from connectors.accounting.http import (
    DEFAULT_TIMEOUT,
    Deadline,
    make_session,
    request,
    timeouts_from_settings,
)
from connectors.accounting.state import StateStore

__all__ = ["TrytonConnector"]

log = logging.getLogger(__name__)

SYSTEM = "tryton"
# Tryton errors that are about the request itself; anything else it reports is treated
# as a passing server-side fault.
_PERMANENT_ERRORS = frozenset({"UserError", "UserWarning"})
# Logging out is a courtesy; never hold up shutdown for it.
_LOGOUT_TIMEOUT = (1.0, 1.0)


@dataclass(frozen=True)
class _Invoice:
    id: int
    number: str
    to_pay: Decimal


@dataclass(frozen=True)
class _Move:
    id: int
    number: str
    state: str
    amount: Decimal  # total debit: what the payment move moved into the payment account


@dataclass(frozen=True)
class _Step:
    invoice: _Invoice
    amount: Decimal


def _decode(obj: dict[str, Any]) -> Any:
    # Tryton sends Decimals as tagged objects; dates stay tagged and go back unchanged.
    if obj.get("__class__") == "Decimal":
        return Decimal(obj["decimal"])
    return obj


def _encode(obj: object) -> Any:
    if isinstance(obj, Decimal):
        return {"__class__": "Decimal", "decimal": str(obj)}
    if isinstance(obj, date):
        return {"__class__": "date", "year": obj.year, "month": obj.month, "day": obj.day}
    raise TypeError(f"cannot send {type(obj).__name__} to Tryton")


def _form(defaults: Mapping[str, Any]) -> dict[str, Any]:
    # Wizard defaults carry dotted display helpers ("company.") the server rejects.
    return {key: value for key, value in defaults.items() if "." not in key}


def _like_literal(text: str) -> str:
    # Tryton's "like" escapes with a backslash.
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _dict(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise RetryableError(SYSTEM, f"unexpected answer for {what}: {type(value).__name__}")
    return value


def _list(value: Any, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise RetryableError(SYSTEM, f"unexpected answer for {what}: {type(value).__name__}")
    return value


def _setting(settings: Mapping[str, str], name: str, default: str | None = None) -> str:
    value = (settings.get(name) or "").strip() or default
    if not value:
        raise ValueError(f"{name} is required for the Tryton connector")
    return value



class TrytonConnector:
    """Posts payments to Tryton's customer invoices, notes arrangements on the party, and
    looks up the party's receivable."""

    name = "tryton"

    def __init__(self, url: str, database: str, user: str, password: str, *,
                 payment_method: str = "IVR",
                 timeouts: tuple[float, float] = DEFAULT_TIMEOUT) -> None:
        self.url = url.rstrip("/")
        self.database = database
        self.user = user
        self.payment_method = payment_method
        self.timeouts = timeouts
        self._password = password
        self._rpc_url = f"{self.url}/{quote(database, safe='')}/rpc/"
        self._session = make_session(self.url)
        self._lock = threading.Lock()
        self._auth: str | None = None
        self._context: dict[str, Any] = {}
        self._currency: tuple[str, int] | None = None
        self._ids = 0

    @classmethod
    def from_settings(cls, settings: Mapping[str, str],
                      state: StateStore | None = None) -> TrytonConnector:
        """Build from IVR_TRYTON_* settings; ValueError names a missing or bad one.

        Keeps no state between runs: ``state`` is not used.
        """
        url = _setting(settings, "IVR_TRYTON_URL")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"IVR_TRYTON_URL must be an http(s) URL, not {url!r}")
        timeouts = timeouts_from_settings(settings)
        return cls(url, _setting(settings, "IVR_TRYTON_DATABASE"),
                   _setting(settings, "IVR_TRYTON_USER"),
                   _setting(settings, "IVR_TRYTON_PASSWORD"),
                   payment_method=_setting(settings, "IVR_TRYTON_PAYMENT_METHOD", "IVR"),
                   timeouts=timeouts)

    # -- the interface -------------------------------------------------------------------

    def post_payment(self, payment: PaymentPost, timeout: float | None = None) -> PostResult:
        """Apply the payment to the party's open invoices, once per idempotency key."""
        budget = Deadline(SYSTEM, timeout, self.timeouts)
        key = payment.idempotency_key
        if not key.strip():
            raise PermanentError(SYSTEM, "payment has no idempotency key")
        description = f"IVR {payment.confirmation_number} [{key}]"
        # Tryton dates moves in the company's time zone; two days cover any offset.
        since = payment.paid_at.date() - timedelta(days=2)

        # A first attempt cannot have left moves behind: look only when one may have.
        moves = self._moves_for(key, since, budget) if payment.may_exist else []
        posted = sum((move.amount for move in moves), Decimal(0))
        if moves and posted >= payment.amount:
            log.info("tryton: payment %s already posted as move(s) %s", key, _receipt(moves))
            return PostResult(receipt_id=_receipt(moves), already_posted=True)

        # Everything that could refuse this payment is checked before anything is posted.
        self._check_amount(payment, budget)
        party = self._party_id(payment.account_number, budget)
        method = self._payment_method(budget)
        remaining = payment.amount - posted
        if moves:
            log.warning("tryton: payment %s was half-applied (%s of %s); posting the rest",
                        key, posted, payment.amount)
        steps = _allocate(remaining, self._open_invoices(party, payment.currency, budget))
        if steps:
            for step in steps:
                self._pay_invoice(step, method, description, budget)
        else:
            self._post_move(party, method, remaining, description, budget)

        moves = self._moves_for(key, since, budget)
        if not moves:
            raise RetryableError(SYSTEM, "the payment move did not show up after posting")
        log.info("tryton: payment %s posted as move(s) %s", key, _receipt(moves))
        return PostResult(receipt_id=_receipt(moves))

    def post_arrangement(self, arrangement: ArrangementPost,
                         timeout: float | None = None) -> PostResult:
        """Attach the arrangement's terms to the customer party as a note, once per key."""
        budget = Deadline(SYSTEM, timeout, self.timeouts)
        key = arrangement.idempotency_key
        if not key.strip():
            raise PermanentError(SYSTEM, "arrangement has no idempotency key")
        reference = f"IVR reference [{key}]"
        resource = f"party.party,{self._party_id(arrangement.account_number, budget)}"
        # Tryton lets notes be searched only together with the record they belong to.
        # A first attempt cannot have left a note behind: look only when one may have.
        rows = _list(self._call("model.ir.note.search_read", [
            [["resource", "=", resource],
             ["message", "like", f"%{_like_literal(reference)}%"]], 0, None, [["id", "ASC"]],
            ["id", "message"]], budget), "notes") if arrangement.may_exist else []
        for raw in rows:
            row = _dict(raw, "note")
            # SQLite's LIKE ignores case; compare exactly here.
            if reference in str(row.get("message") or "").splitlines():
                return PostResult(receipt_id=f"ir.note,{row['id']}", already_posted=True)
        first, *rest = arrangement.summary_lines()
        message = "\n".join(["IVR " + first, *rest, reference])
        created = _list(self._call("model.ir.note.create", [[{
            "resource": resource, "message": message}]], budget), "note")
        log.info("tryton: arrangement %s recorded as note %s", key, created[0])
        return PostResult(receipt_id=f"ir.note,{created[0]}")

    def post_reversal(self, reversal: ReversalPost, timeout: float | None = None) -> PostResult:
        """Post the reversing move (receivable back up by the amount), once per key."""
        budget = Deadline(SYSTEM, timeout, self.timeouts)
        key = reversal.idempotency_key
        if not key.strip():
            raise PermanentError(SYSTEM, "reversal has no idempotency key")
        description = f"IVR reversal {reversal.payment_confirmation_number} [{key}]"
        since = reversal.recorded_at.date() - timedelta(days=2)
        moves = self._moves_for(key, since, budget) if reversal.may_exist else []
        if moves:
            return PostResult(receipt_id=_receipt(moves), already_posted=True)
        self._check_amount(reversal, budget)
        party = self._party_id(reversal.account_number, budget)
        method = self._payment_method(budget)
        self._post_move(party, method, reversal.amount, description, budget,
                        receivable_debit=True)
        moves = self._moves_for(key, since, budget)
        if not moves:
            raise RetryableError(SYSTEM, "the reversal move did not show up after posting")
        log.info("tryton: reversal %s posted as move(s) %s", key, _receipt(moves))
        return PostResult(receipt_id=_receipt(moves))

    def lookup_balance(self, account_number: str, timeout: float | None = None) -> LiveBalance:
        """The party's receivable balance (negative when the customer is in credit)."""
        budget = Deadline(SYSTEM, timeout, self.timeouts)
        rows = _list(self._call("model.party.party.search_read", [
            [["code", "=", account_number]], 0, 2, None, ["id", "receivable"]], budget),
            "party")
        if len(rows) != 1:
            raise PermanentError(SYSTEM, f"no customer with code {account_number!r}")
        receivable = _dict(rows[0], "party").get("receivable")
        if not isinstance(receivable, Decimal):
            raise RetryableError(SYSTEM, "party receivable missing from the answer")
        return LiveBalance(account_number=account_number,
                           balance_due=receivable.quantize(Decimal("0.01")))

    def health(self, timeout: float | None = None) -> None:
        """Log in if needed and find the payment method: a bad setup shows up here."""
        self._payment_method(Deadline(SYSTEM, timeout, self.timeouts))

    def close(self) -> None:
        """Log out (best effort) and release the connections."""
        with self._lock:
            auth, self._auth = self._auth, None
        if auth is not None:
            # A courtesy: the server drops idle sessions by itself anyway.
            with contextlib.suppress(ConnectorError):
                self._post("common.db.logout", [], auth, _LOGOUT_TIMEOUT)
        self._session.close()

    def __enter__(self) -> TrytonConnector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- posting -------------------------------------------------------------------------

    def _moves_for(self, key: str, since: date, budget: Deadline) -> list[_Move]:
        """Moves carrying this key, oldest first; drafts (a crash mid-post) are posted."""
        # The description cannot use an index (leading wildcard); the move date can, and
        # no move for this payment is dated before the payment was taken.
        rows = _list(self._call("model.account.move.line.search_read", [
            [["move.date", ">=", since],
             ["move.description", "like", f"%[{_like_literal(key)}]"]], 0, None,
            [["move", "ASC"], ["id", "ASC"]],
            ["move", "debit", "move.number", "move.state", "move.description"]], budget),
            "move lines")
        suffix = f"[{key}]"
        found: dict[int, _Move] = {}
        for raw in rows:
            row = _dict(raw, "move line")
            move = _dict(row.get("move."), "move")
            # SQLite's LIKE ignores case; compare exactly here.
            if not str(move.get("description") or "").endswith(suffix):
                continue
            move_id = int(row["move"])
            before = found.get(move_id)
            debit = row.get("debit") or Decimal(0)
            found[move_id] = _Move(
                id=move_id, number=str(move.get("number") or ""), state=str(move.get("state")),
                amount=(before.amount if before else Decimal(0)) + debit)
        drafts = [move.id for move in found.values() if move.state != "posted"]
        if drafts:
            self._call("model.account.move.post", [drafts], budget)
            return self._moves_for(key, since, budget)
        return list(found.values())

    def _check_amount(self, payment: PaymentPost | ReversalPost, budget: Deadline) -> None:
        code, digits = self._company_currency(budget)
        if payment.currency.upper() != code:
            raise PermanentError(SYSTEM, f"payment in {payment.currency}, company keeps {code}")
        if payment.amount <= 0:
            raise PermanentError(SYSTEM, f"amount must be positive, not {payment.amount}")
        try:
            exact = payment.amount == payment.amount.quantize(Decimal(1).scaleb(-digits))
        except InvalidOperation:
            exact = False
        if not exact:
            raise PermanentError(SYSTEM, f"amount {payment.amount} has more than {digits} "
                                         "decimals")

    def _company_currency(self, budget: Deadline) -> tuple[str, int]:
        if self._currency is None:
            self._ensure_login(budget)  # the company comes with the session's context
            rows = _list(self._call("model.company.company.read", [
                [self._context.get("company")], ["currency.code", "currency.digits"]],
                budget), "company")
            currency = _dict(_dict(rows[0], "company").get("currency."), "currency")
            self._currency = (str(currency["code"]), int(currency["digits"]))
        return self._currency

    def _party_id(self, account_number: str, budget: Deadline) -> int:
        ids = _list(self._call("model.party.party.search", [
            [["code", "=", account_number]], 0, 2, None], budget), "party")
        if len(ids) != 1:
            raise PermanentError(SYSTEM, f"no customer with code {account_number!r}")
        return int(ids[0])

    def _payment_method(self, budget: Deadline) -> dict[str, Any]:
        self._ensure_login(budget)
        rows = _list(self._call("model.account.invoice.payment.method.search_read", [
            [["name", "=", self.payment_method], ["company", "=", self._context.get("company")]],
            0, 2, None, ["id", "journal", "debit_account"]], budget), "payment method")
        if len(rows) != 1:
            # Every payment would fail the same way: keep them queued until it is set up.
            raise RetryableError(SYSTEM, f"{len(rows)} payment methods named "
                                         f"{self.payment_method!r} in the company; need one")
        return _dict(rows[0], "payment method")

    def _open_invoices(self, party: int, currency: str, budget: Deadline) -> list[_Invoice]:
        rows = _list(self._call("model.account.invoice.search_read", [
            [["party", "=", party], ["type", "=", "out"], ["state", "=", "posted"],
             ["currency.code", "=", currency.upper()]],
            0, None, [["invoice_date", "ASC"], ["id", "ASC"]],
            ["id", "number", "amount_to_pay"]], budget), "invoices")
        invoices = []
        for raw in rows:
            row = _dict(raw, "invoice")
            to_pay = row.get("amount_to_pay")
            # Credit notes are "out" invoices too, with nothing (or less than nothing) to pay.
            if isinstance(to_pay, Decimal) and to_pay > 0:
                invoices.append(_Invoice(int(row["id"]), str(row.get("number") or ""), to_pay))
        return invoices

    def _pay_invoice(self, step: _Step, method: Mapping[str, Any], description: str,
                     budget: Deadline) -> None:
        """Run Tryton's pay wizard on one invoice: one transaction, one posted move."""
        invoice = step.invoice
        context = {"active_model": "account.invoice", "active_id": invoice.id,
                   "active_ids": [invoice.id]}
        wizard = "wizard.account.invoice.pay"
        created = _list(self._call(f"{wizard}.create", [], budget), "wizard")
        session_id, start = created[0], created[1]
        try:
            view = _dict(self._call(f"{wizard}.execute", [session_id, {}, start], budget,
                                    context=context).get("view"), "wizard start")
            form = _form(_dict(view.get("defaults"), "wizard defaults"))
            form.update(amount=step.amount, payment_method=method["id"],
                        description=description)
            result = self._call(f"{wizard}.execute", [session_id, {start: form}, "choice"],
                                budget, context=context)
            ask = _dict(result, "wizard choice").get("view")
            if ask:
                # Tryton asks when the amount differs from what is due: "partial" keeps the
                # rest open; "overpayment" pays it off and leaves the excess as a credit.
                answer = _form(_dict(_dict(ask, "wizard ask").get("defaults"), "defaults"))
                answer["type"] = "partial" if step.amount < invoice.to_pay else "overpayment"
                self._call(f"{wizard}.execute",
                           [session_id, {start: form, "ask": answer}, "pay"], budget,
                           context=context)
        finally:
            # Best effort, within what is left of the budget: an abandoned wizard session
            # holds nothing.
            with contextlib.suppress(ConnectorError):
                self._post_rpc(f"{wizard}.delete", [session_id, self._context],
                               budget.timeouts(_LOGOUT_TIMEOUT))

    def _post_move(self, party: int, method: Mapping[str, Any], amount: Decimal,
                   description: str, budget: Deadline, *, receivable_debit: bool = False) -> None:
        """A posted move between the party's receivable and the payment method's account:
        a payment with no open invoice credits the receivable; a reversal debits it."""
        rows = _list(self._call("model.party.party.read", [[party], ["account_receivable"]],
                                budget), "party")
        account = _dict(rows[0], "party").get("account_receivable")
        if not account:
            config = _list(self._call("model.account.configuration.read", [
                [1], ["default_account_receivable"]], budget), "configuration")
            account = _dict(config[0], "configuration").get("default_account_receivable")
        if not account:
            raise PermanentError(SYSTEM, "the party has no receivable account")
        zero = Decimal(0)
        receivable, other = (amount, zero) if receivable_debit else (zero, amount)
        lines = [
            {"account": account, "party": party, "debit": receivable, "credit": other},
            {"account": method["debit_account"], "debit": other, "credit": receivable},
        ]
        created = _list(self._call("model.account.move.create", [[{
            "journal": method["journal"], "description": description,
            "lines": [["create", lines]]}]], budget), "move")
        # A crash before this leaves a draft carrying the key; the next try posts it.
        self._call("model.account.move.post", [created], budget)

    # -- JSON-RPC --------------------------------------------------------------------------

    def _ensure_login(self, budget: Deadline) -> str:
        """The session's Authorization header; logs in (and reads the context) once."""
        with self._lock:
            if self._auth is not None:
                return self._auth
        auth = self._login(budget)
        response = self._post("model.res.user.get_preferences", [True, {}], auth,
                              budget.timeouts())
        if response.status_code in (401, 403):
            raise RetryableError(SYSTEM, f"session refused right after login "
                                         f"(HTTP {response.status_code})")
        # Every call takes this context (company, language) as its last parameter.
        context = _dict(self._result(response, "get_preferences"), "preferences")
        with self._lock:
            self._auth, self._context = auth, context
        return auth

    def _login(self, budget: Deadline) -> str:
        response = request(SYSTEM, self._session, "POST", self._rpc_url,
                           timeout=budget.timeouts(), ok_statuses=(401, 403, 404),
                           data=self._body("common.db.login",
                                           [self.user, {"password": self._password}, "en"]),
                           headers={"Content-Type": "application/json"})
        if response.status_code in (401, 403):
            # Wrong credentials hold up every payment alike: keep them queued for the fix.
            raise RetryableError(SYSTEM, f"login as {self.user!r} refused "
                                         f"(HTTP {response.status_code})")
        if response.status_code == 404:
            raise RetryableError(SYSTEM, f"database {self.database!r} not found")
        result = _list(self._result(response, "common.db.login"), "login")
        user_id, token = result[0], result[1]
        credentials = f"{self.user}:{user_id}:{token}".encode()
        return "Session " + base64.b64encode(credentials).decode("ascii")

    def _call(self, method: str, params: Sequence[Any], budget: Deadline, *,
              context: Mapping[str, Any] | None = None) -> Any:
        """An authenticated call (context appended); one new login if the session died."""
        auth = self._ensure_login(budget)
        for attempt in (1, 2):
            full = [*params, {**self._context, **(context or {})}]
            response = self._post(method, full, auth, budget.timeouts())
            if response.status_code not in (401, 403):
                return self._result(response, method)
            if attempt == 2:
                break
            # Sessions expire (idle longer than [session] max_age, or than [session]
            # timeout for calls that want a fresh session, such as the pay wizard) and are
            # deleted then. Nothing ran, so trying again after a new login is safe.
            with self._lock:
                if self._auth == auth:
                    self._auth = None
            auth = self._ensure_login(budget)
        raise RetryableError(SYSTEM, f"{method} refused after a fresh login "
                                     f"(HTTP {response.status_code})")

    def _post_rpc(self, method: str, params: Sequence[Any],
                  timeouts: tuple[float, float]) -> Any:
        """A call with the current session and no re-login (for clean-up)."""
        if self._auth is None:
            return None
        return self._result(self._post(method, params, self._auth, timeouts), method)

    def _post(self, method: str, params: Sequence[Any], auth: str,
              timeouts: tuple[float, float]) -> requests.Response:
        return request(SYSTEM, self._session, "POST", self._rpc_url, timeout=timeouts,
                       ok_statuses=(401, 403), data=self._body(method, params),
                       headers={"Content-Type": "application/json", "Authorization": auth})

    def _body(self, method: str, params: Sequence[Any]) -> bytes:
        self._ids += 1
        payload = {"id": self._ids, "method": method, "params": list(params)}
        return json.dumps(payload, default=_encode).encode("utf-8")

    @staticmethod
    def _result(response: requests.Response, method: str) -> Any:
        """The JSON-RPC result, or the error classified."""
        try:
            body = response.json(object_hook=_decode, parse_float=Decimal)
        except ValueError as exc:
            raise RetryableError(SYSTEM, f"{method}: answer is not JSON") from exc
        if not isinstance(body, dict):
            raise RetryableError(SYSTEM, f"{method}: unexpected answer")
        if "error" not in body:
            return body.get("result")
        error = body["error"]
        kind = error[0] if isinstance(error, list) and error else error
        detail = error[1] if isinstance(error, list) and len(error) > 1 else ""
        if isinstance(detail, list) and detail:
            # UserError: [message, description, domain]; UserWarning: [name, message, ...]
            detail = detail[1] if kind == "UserWarning" and len(detail) > 1 else detail[0]
        if kind in _PERMANENT_ERRORS:
            raise PermanentError(SYSTEM, f"{method}: {kind}: {detail}")
        # ConcurrencyException, LoginException, or a server-side exception (which Tryton
        # sends as [str(exc), traceback]; the transaction was rolled back).
        first_line = str(kind).splitlines()[0][:200] if kind else "unknown error"
        raise RetryableError(SYSTEM, f"{method}: {first_line}")


def _allocate(amount: Decimal, invoices: Sequence[_Invoice]) -> list[_Step]:
    """Oldest invoice first; what is left after the newest stays on it as an overpayment."""
    steps = []
    left = amount
    for index, invoice in enumerate(invoices):
        if left <= 0:
            break
        last = index == len(invoices) - 1
        share = left if last else min(left, invoice.to_pay)
        steps.append(_Step(invoice, share))
        left -= share
    return steps


def _receipt(moves: Sequence[_Move]) -> str:
    return ",".join(move.number or f"id{move.id}" for move in moves)
