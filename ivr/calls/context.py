"""What a state can see: the stored call, the database, the catalog and the clock."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from connectors.phones import normalize_e164
from ivr.config import AppConfig
from ivr.db_webhook import DbHandle, session_of
from ivr.models import Account, CallSession
from ivr.prompts import speech
from ivr.prompts.catalog import Catalog
from ivr.prompts.settings import LineSettings

if TYPE_CHECKING:
    from ivr.money.accounting import Accounting


@dataclass
class CallContext:
    """One webhook's view of its call. States read and change ``call``; the caller commits.

    ``handle`` is the webhook's transaction (or, on the console, a session): hot reads take
    it as it is, and ``db`` is its ORM session, created when first asked for (ivr.db_webhook).
    """

    handle: DbHandle
    call: CallSession
    catalog: Catalog
    config: AppConfig
    now: datetime
    accounting: Accounting | None = None
    # Reads this webhook makes more than once, kept for its length (the session's identity
    # map holds rows only weakly, so a looked-up account could be read again).
    _account: Account | None = field(default=None, init=False, repr=False)
    _phone_matches: list[Account] | None = field(default=None, init=False, repr=False)

    @property
    def db(self) -> Session:
        """The ORM session for a state's writes and object reads (created on first use)."""
        return session_of(self.handle)

    @property
    def settings(self) -> LineSettings:
        """The line settings in force for this request."""
        return self.catalog.settings

    @property
    def lang(self) -> str:
        """The caller's language tag, e.g. "en-US" (the default when not offered)."""
        if self.call.language in self.settings.languages:
            return self.call.language
        return self.settings.default_language

    @property
    def account(self) -> Account | None:
        """The account this call is about (identified, maybe not yet verified)."""
        account_id = self.call.account_id
        if account_id is None:
            return None
        if self._account is None or self._account.id != account_id:
            self._account = self.handle.get(Account, account_id)
        return self._account

    def phone_matches(self) -> list[Account]:
        """The accounts listing the calling number (at most two: one is a caller-ID match),
        read once per webhook; none when the number is withheld or not a phone number."""
        if self._phone_matches is None:
            from ivr.accounts import cache as accounts

            phone = normalize_e164(self.call.from_number)
            self._phone_matches = accounts.find_by_phone(self.handle, phone) if phone else []
        return self._phone_matches

    def today(self) -> date:
        """Today in the biller's time zone (due dates are local dates)."""
        return self.now.astimezone(self.settings.transfer.timezone).date()

    def money(self, cents: int) -> str:
        """An amount in words in the caller's language."""
        return speech.money(abs(cents), self.lang)

    def date(self, value: date) -> str:
        """A date in words in the caller's language."""
        return speech.date_words(value, self.lang, self.today())
