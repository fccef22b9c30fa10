"""The accounting systems IVR_ACCOUNTING can name: one table, and the factory that reads it.

Everything else that lists systems derives from ``SYSTEMS``: the values IVR_ACCOUNTING
accepts and the variables handed to the connector (ivr.config), the metrics' system labels
(ivr.metrics), and a test holds the operator docs to it. To add a system, write its module
and add one row here (docs/connectors.md, "Adding an accounting system").
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol, cast

from connectors.accounting.base import AccountingConnector
from connectors.accounting.state import StateStore

# IVR_ACCOUNTING's value for "post nowhere": payments wait in the outbox.
NONE = "none"
# Settings every connector reads (IVR_ACCOUNTING_CONNECT_TIMEOUT, _READ_TIMEOUT).
SHARED_PREFIX = "IVR_ACCOUNTING_"


class ConnectorFactory(Protocol):
    """Builds a connector from its settings; ValueError names a missing or bad setting."""

    def __call__(self, settings: Mapping[str, str], state: StateStore) -> AccountingConnector:
        """The connector, given its IVR_* settings and its own state store."""
        ...


@dataclass(frozen=True)
class AccountingSystem:
    """One accounting system the line can post to."""

    name: str  # the IVR_ACCOUNTING value, the connector's ``name`` and its metrics label
    prefix: str  # its own settings: every variable starting with this reaches the connector
    # "module:Class"; imported only when this system is chosen, so an unused system's
    # dependencies never load. The class's ``from_settings(settings, state)`` builds it.
    factory: str
    description: str  # one line, for operators

    def load(self) -> ConnectorFactory:
        """Import the connector's module and return its ``from_settings``."""
        module, _, attr = self.factory.partition(":")
        connector_class = getattr(importlib.import_module(module), attr)
        return cast(ConnectorFactory, connector_class.from_settings)


SYSTEMS: tuple[AccountingSystem, ...] = (
    AccountingSystem("tryton", "IVR_TRYTON_", "connectors.accounting.tryton:TrytonConnector",
                     "Tryton 8 over JSON-RPC: pays the customer's open invoices"),
    AccountingSystem("hledger", "IVR_HLEDGER_", "connectors.accounting.hledger:HledgerConnector",
                     "hledger-web's JSON API: one balanced journal transaction per payment"),
    AccountingSystem("webhook", "IVR_WEBHOOK_", "connectors.accounting.webhook:WebhookConnector",
                     "a signed JSON POST to the biller's own receiver"),
)


def system_names() -> tuple[str, ...]:
    """Every value IVR_ACCOUNTING accepts, "none" first."""
    return (NONE, *(system.name for system in SYSTEMS))


def settings_prefixes() -> tuple[str, ...]:
    """Prefixes of the variables handed to the connector as they are."""
    return (*(system.prefix for system in SYSTEMS), SHARED_PREFIX)


def find_system(name: str) -> AccountingSystem:
    """The registered system called ``name``; ValueError for any other."""
    for system in SYSTEMS:
        if system.name == name:
            return system
    raise ValueError(f"unknown accounting system {name!r}")


def build_connector(system: str, settings: Mapping[str, str],
                    state: StateStore) -> AccountingConnector | None:
    """The connector for ``system`` ("none" gives None); ValueError on bad settings.

    ``state`` is the store this system's connector may keep its own state in.
    """
    if system == NONE:
        return None
    return find_system(system).load()(settings, state)
