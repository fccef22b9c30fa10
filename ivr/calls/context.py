"""What a state can see: the stored call, the database session, the catalog and the clock."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from ivr.config import AppConfig
from ivr.models import Account, CallSession
from ivr.prompts import speech
from ivr.prompts.catalog import Catalog
from ivr.prompts.settings import LineSettings

if TYPE_CHECKING:
    from ivr.money.accounting import Accounting


@dataclass
class CallContext:
    """One webhook's view of its call. States read and change ``call``; the caller commits."""

    db: Session
    call: CallSession
    catalog: Catalog
    config: AppConfig
    now: datetime
    accounting: Accounting | None = None

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
        if self.call.account_id is None:
            return None
        return self.db.get(Account, self.call.account_id)

    def today(self) -> date:
        """Today in the biller's time zone (due dates are local dates)."""
        return self.now.astimezone(self.settings.transfer.timezone).date()

    def money(self, cents: int) -> str:
        """An amount in words in the caller's language."""
        return speech.money(abs(cents), self.lang)

    def date(self, value: date) -> str:
        """A date in words in the caller's language."""
        return speech.date_words(value, self.lang, self.today())
