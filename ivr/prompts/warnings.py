"""Settings that load but that ops should look at again: warnings, never errors.

`ivr prompts check` prints them and still succeeds; the line runs with them.
"""

from __future__ import annotations

from connectors.amounts import cents_to_text
from ivr.prompts.settings import LineSettings


def settings_warnings(settings: LineSettings) -> list[str]:
    """One line per setting worth a second look, naming its dotted key."""
    warnings: list[str] = []
    fee = settings.fee
    if settings.ach.enabled and fee.card_cents != fee.ach_cents:
        # Card network rules ask for one flat convenience fee whatever the way to pay
        # (docs/configuration.md, `[fee]`).
        warnings.append(
            f"settings.toml: fee.card ({cents_to_text(fee.card_cents)}) and fee.ach "
            f"({cents_to_text(fee.ach_cents)}) differ while bank payments are enabled: card "
            "networks generally require one flat convenience fee across every way to pay; "
            "confirm with your acquirer")
    return warnings
