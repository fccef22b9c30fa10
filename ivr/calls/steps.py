"""What a state asks the line to do next. The TwiML module turns these into XML."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Speech:
    """A prompt from the catalog, with values for its placeholders.

    ``lang`` overrides the call's language (the bilingual language menu needs it).
    """

    prompt_id: str
    params: Mapping[str, str] = field(default_factory=dict)
    variant: str = "say"
    lang: str | None = None


@dataclass(frozen=True)
class Ask:
    """Speak, then collect keys; the keys are posted back to ``state``."""

    state: str
    speech: tuple[Speech, ...]
    num_digits: int | None = None
    finish_on_key: str = "#"
    timeout: int = 7


@dataclass(frozen=True)
class Transfer:
    """Speak, then connect the caller to a representative."""

    speech: tuple[Speech, ...]
    number: str


@dataclass(frozen=True)
class Hangup:
    """Speak, then end the call."""

    speech: tuple[Speech, ...]


@dataclass(frozen=True)
class PayCapture:
    """Speak, then hand the caller to Twilio's <Pay> for card or bank entry."""

    speech: tuple[Speech, ...]
    charge_cents: int
    method: str  # "credit-card" or "ach-debit"
    bank_account_type: str | None
    description: str


@dataclass(frozen=True)
class Silent:
    """Answer with an empty response (the caller is gone)."""


Step = Ask | Transfer | Hangup | PayCapture | Silent


@dataclass(frozen=True)
class Go:
    """Move to ``state`` (tries reset), saying ``before`` first."""

    state: str
    before: tuple[Speech, ...] = ()


@dataclass(frozen=True)
class Retry:
    """The input was not acceptable: count a failed try and ask again, saying ``help`` first.

    ``counts`` is False where the state keeps its own count (wrong ZIP or PIN).
    """

    help: tuple[Speech, ...] = ()
    counts: bool = True


@dataclass(frozen=True)
class Finish:
    """Leave the menu system with a final step (transfer, hang-up or <Pay>)."""

    step: Step
    state: str | None = None


Outcome = Go | Retry | Finish
