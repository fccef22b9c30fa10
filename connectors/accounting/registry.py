"""Choosing the accounting connector named by IVR_ACCOUNTING."""

from __future__ import annotations

from collections.abc import Mapping

from connectors.accounting.base import AccountingConnector


def build_connector(system: str, settings: Mapping[str, str]) -> AccountingConnector | None:
    """The connector for ``system`` ("none" gives None); ValueError on bad settings."""
    if system == "none":
        return None
    if system == "tryton":
        from connectors.accounting.tryton import TrytonConnector

        return TrytonConnector.from_settings(settings)
    if system == "hledger":
        from connectors.accounting.hledger import HledgerConnector

        return HledgerConnector.from_settings(settings)
    if system == "webhook":
        from connectors.accounting.webhook import WebhookConnector

        return WebhookConnector.from_settings(settings)
    raise ValueError(f"unknown accounting system {system!r}")
