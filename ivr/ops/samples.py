"""Sample placeholder values for previews, in words as the line would say them."""

from __future__ import annotations

import string
from collections.abc import Mapping
from datetime import date, time
from decimal import Decimal

from ivr.prompts import speech
from ivr.prompts.catalog import Catalog, escape_text


class PreviewError(ValueError):
    """A draft cannot be rendered; the message is for the operator."""


def _word(catalog: Catalog, prompt_id: str, lang: str, fallback: str) -> str:
    try:
        return catalog.render(prompt_id, lang).ssml
    except KeyError:
        return fallback


def sample_values(catalog: Catalog, lang: str) -> dict[str, str]:
    """A value for every placeholder the code supplies, made the way the line makes them."""
    return {
        "amount": speech.money(4250, lang),
        "total": speech.money(4645, lang),
        "fee": speech.money(395, lang),
        "minimum": speech.money(100, lang),
        "maximum": speech.money(500000, lang),
        "date": speech.date_words(date(2026, 12, 15), lang),
        "day": _word(catalog, "words.tomorrow", lang, "tomorrow"),
        "time": speech.time_words(time(8, 0), lang),
        "last4": speech.digits("1234"),
        "code": speech.spell("A7K2Q9"),
        "key": "1",
        "name": "Jordan Rivera",
        "phone": speech.phone_number("+15555550100"),
        "method": _word(catalog, "words.method_card", lang, "card"),
        "account_type": _word(catalog, "words.checking", lang, "checking"),
        "quantity": speech.quantity(Decimal("640"), lang),
        "unit": _word(catalog, "units.kwh", lang, "kilowatt hours"),
        "account_last4": "1234",
        "payment_last4": "1111",
    }


def render_draft(text: str, values: Mapping[str, str]) -> str:
    """A draft's SSML with ``values`` in its placeholders (escaped, as the catalog does)."""
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise PreviewError(f"bad placeholder syntax ({exc}); write {{{{ and }}}} for braces") \
            from None
    pieces = []
    for literal, name, _spec, _conversion in parsed:
        pieces.append(literal)
        if name is not None:
            pieces.append(escape_text(values.get(name) or f"[{name}]"))
    return "".join(pieces)
