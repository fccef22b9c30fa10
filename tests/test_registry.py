"""The registry of accounting systems is the one list: configuration, metrics and the
operator docs follow it, and only the chosen system's module is ever imported."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

import ivr.metrics
from connectors.accounting import registry
from connectors.accounting.base import AccountingConnector
from connectors.accounting.registry import (
    NONE,
    SYSTEMS,
    AccountingSystem,
    build_connector,
    find_system,
)
from connectors.accounting.state import MemoryStateStore, StateStore
from connectors.accounting.webhook import WebhookConnector
from ivr.config import ConfigError, load_config

REPO = Path(__file__).resolve().parent.parent


def test_every_system_loads_a_connector_class_of_its_name() -> None:
    assert len({s.name for s in SYSTEMS}) == len({s.prefix for s in SYSTEMS}) == len(SYSTEMS)
    for system in SYSTEMS:
        assert system.prefix == f"IVR_{system.name.upper()}_"
        assert system.description and "\n" not in system.description
        connector_class = system.load().__self__  # type: ignore[attr-defined]
        assert connector_class.name == system.name
        for method in ("post_payment", "lookup_balance", "health", "close"):
            assert callable(getattr(connector_class, method)), (system.name, method)


def test_only_the_chosen_system_is_imported() -> None:
    script = (
        "import sys\n"
        "import ivr.config, ivr.metrics\n"
        "from connectors.accounting.registry import SYSTEMS, build_connector\n"
        "from connectors.accounting.state import MemoryStateStore\n"
        "modules = {s.factory.partition(':')[0] for s in SYSTEMS}\n"
        "assert not modules & set(sys.modules), modules & set(sys.modules)\n"
        "build_connector('webhook', {'IVR_WEBHOOK_URL': 'https://x.example/p',\n"
        "                'IVR_WEBHOOK_SECRET': 's' * 16}, MemoryStateStore()).close()\n"
        "print(sorted(modules & set(sys.modules)))\n")
    out = subprocess.run(  # noqa: S603 - our own fixed script
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60,
        check=True).stdout
    assert out.strip() == "['connectors.accounting.webhook']"


def test_configuration_follows_the_registry() -> None:
    names = [NONE, *(s.name for s in SYSTEMS)]
    for name in names:
        assert load_config(environ={"IVR_ACCOUNTING": name}).accounting == name
    with pytest.raises(ConfigError) as excinfo:
        load_config(environ={"IVR_ACCOUNTING": "quickbooks"})
    assert str(excinfo.value) == (f"IVR_ACCOUNTING must be one of {', '.join(names)}, "
                                  "not 'quickbooks'")
    environ = {f"{s.prefix}URL": f"https://{s.name}.example" for s in SYSTEMS}
    environ.update(IVR_ACCOUNTING_READ_TIMEOUT="4", IVR_SYNC_INBOX="inbox",
                   IVR_DATABASE_URL="sqlite://")
    handed = load_config(environ=environ).accounting_settings
    assert handed == {k: v for k, v in environ.items()
                      if k not in ("IVR_SYNC_INBOX", "IVR_DATABASE_URL")}


def test_metrics_label_every_system_by_name() -> None:
    for system in SYSTEMS:
        before = _attempts(system.name)
        ivr.metrics.observe_posting(system.name, "posted", 0.01)
        assert _attempts(system.name) == before + 1
    before = _attempts("other")
    ivr.metrics.observe_posting("quickbooks", "posted", 0.01)
    assert _attempts("other") == before + 1


def _attempts(system: str) -> float:
    value = ivr.metrics.PROCESS.get_sample_value(
        "ivr_posting_attempts_total", {"system": system, "outcome": "posted"})
    return value or 0.0


@pytest.mark.parametrize("doc", ["README.md", "docs/connectors.md", "docs/configuration.md"])
def test_operator_docs_name_every_system_and_its_settings(doc: str) -> None:
    text = (REPO / doc).read_text(encoding="utf-8")
    for system in SYSTEMS:
        named = (f"`{system.name}`", f"IVR_ACCOUNTING={system.name}")
        assert any(name in text for name in named), (doc, system.name)
        assert f"`{system.prefix}" in text, (doc, system.prefix)


class Recorder:
    """A connector that only remembers what the factory handed it."""

    name = "recorder"

    def __init__(self, settings: Mapping[str, str], state: StateStore) -> None:
        self.settings = settings
        self.state = state

    @classmethod
    def from_settings(cls, settings: Mapping[str, str], state: StateStore) -> Recorder:
        """What the registry calls."""
        return cls(settings, state)


def test_the_factory_hands_settings_and_the_state_store(
        monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = AccountingSystem("recorder", "IVR_RECORDER_", f"{__name__}:Recorder",
                                "remembers what it was given")
    monkeypatch.setattr(registry, "SYSTEMS", (*SYSTEMS, recorder))
    state = MemoryStateStore()
    built = build_connector("recorder", {"IVR_RECORDER_X": "1"}, state)
    assert isinstance(built, Recorder)
    assert built.settings == {"IVR_RECORDER_X": "1"} and built.state is state
    webhook = build_connector("webhook", {"IVR_WEBHOOK_URL": "https://x.example/p",
                                          "IVR_WEBHOOK_SECRET": "s" * 16}, state)
    assert isinstance(webhook, WebhookConnector) and isinstance(webhook, AccountingConnector)
    webhook.close()
    assert build_connector(NONE, {}, state) is None
    with pytest.raises(ValueError, match="unknown accounting system 'quickbooks'"):
        build_connector("quickbooks", {}, state)
    assert find_system("recorder") is recorder
