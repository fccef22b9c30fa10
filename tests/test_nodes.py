"""Several machines on one database: the keys they must share, and what they agree on."""

from __future__ import annotations

import shutil
import time
from collections.abc import Mapping
from pathlib import Path

import pytest
from click.testing import CliRunner
from flask import Flask
from sqlalchemy import select

from ivr.cli import main
from ivr.models import Payment
from ivr.simulator import CallResult, FlaskTransport, ScriptedCaller, run_call
from ivr.simulator.demo import demo_file
from ivr.web.app import create_app, get_database
from tests.conftest import _APPS, OPEN_TIME, REPO, TOKEN, make_app, never_serve
from tests.test_ops_helpers import ops_app, signed_in
from tests.test_ops_prompts import _save

KEYS = ("IVR_PIN_KEY", "IVR_SECRET_KEY")


def _line_env(monkeypatch: pytest.MonkeyPatch, database_url: str, **keys: str) -> None:
    monkeypatch.setenv("IVR_DATABASE_URL", database_url)
    monkeypatch.setenv("IVR_TWILIO_AUTH_TOKEN", TOKEN)
    monkeypatch.setenv("IVR_PROMPTS_DIR", str(REPO / "prompts"))
    monkeypatch.delenv("IVR_ACCOUNTING", raising=False)
    for var in KEYS:
        monkeypatch.delenv(var, raising=False)
    for var, value in keys.items():
        monkeypatch.setenv(var, value)
    never_serve(monkeypatch)
    # The commands' apps join the ones closed after each test.
    monkeypatch.setattr("ivr.cli.base.create_app", _kept_app)


def _kept_app(overrides: dict[str, object] | None = None) -> Flask:
    app = create_app(overrides)
    _APPS.append(app)
    return app


@pytest.mark.parametrize("command", [["serve"], ["worker", "--once"]])
@pytest.mark.parametrize("given", [(), ("IVR_PIN_KEY",), ("IVR_SECRET_KEY",)])
def test_a_server_database_needs_the_shared_keys(postgres_url: str, command: list[str],
                                                 given: tuple[str, ...],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    _line_env(monkeypatch, postgres_url, **{var: "shared-" + var for var in given})
    result = CliRunner().invoke(main, command)
    assert result.exit_code != 0
    missing = [var for var in KEYS if var not in given]
    assert f"{' and '.join(missing)} must be set on a server database" in result.output
    assert "ivr serve started the line" not in str(result.exception)


@pytest.mark.parametrize("command", [["accounts", "import", "accounts.csv"], ["sync", "pull"]])
def test_an_import_into_a_server_database_needs_the_pin_key(
        postgres_url: str, command: list[str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """PINs in the file are hashed with the PIN key: one made on this machine alone would
    fail every caller's PIN on the others. The console key is not needed to import."""
    _line_env(monkeypatch, postgres_url, IVR_SECRET_KEY="shared-secret")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "accounts.csv").write_bytes(demo_file(OPEN_TIME.date()))
    result = CliRunner().invoke(main, command)
    assert result.exit_code != 0
    assert "IVR_PIN_KEY must be set on a server database" in result.output
    assert "IVR_SECRET_KEY" not in result.output.split("must be set")[0]


def test_with_both_keys_a_server_database_serves(postgres_url: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    _line_env(monkeypatch, postgres_url, IVR_PIN_KEY="pin", IVR_SECRET_KEY="secret")
    result = CliRunner().invoke(main, ["serve"])
    assert "ivr serve started the line" in str(result.exception)


def test_one_machine_on_sqlite_makes_its_own_keys(sqlite_url: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    _line_env(monkeypatch, sqlite_url)
    assert CliRunner().invoke(main, ["db", "upgrade"]).exit_code == 0
    result = CliRunner().invoke(main, ["serve"])
    assert "ivr serve started the line" in str(result.exception)


# --- two nodes on one database ----------------------------------------------------------------

WELCOME = "Thanks for calling."
PAID = "1 60614 5 12*00# 1 1"
# The same account again: "a payment was made today; press 1 for another" comes first.
PAID_AGAIN = "1 60614 1 1 3 12*00# 1 1"


class Alternating(FlaskTransport):
    """Twilio behind a load balancer: each webhook of a call goes to the next node."""

    def __init__(self, nodes: list[Flask]) -> None:
        super().__init__(nodes[0], TOKEN)
        self.clients = [node.test_client() for node in nodes]
        self.sent = 0

    def post(self, url: str, params: Mapping[str, str]) -> tuple[int, str]:
        self.client = self.clients[self.sent % len(self.clients)]
        self.sent += 1
        return super().post(url, params)


def _call(nodes: list[Flask], presses: str) -> CallResult:
    transport = Alternating(nodes)
    caller = ScriptedCaller(presses.split(), cards=["4111111111111111"],
                            bank_accounts=["123456789"])
    result = run_call(transport, caller)
    assert transport.sent >= 2
    return result


def _nodes(database_url: str, tmp_path: Path) -> list[Flask]:
    """Two nodes with their own prompts folder and instance folder, the keys shared."""
    return [ops_app(database_url, tmp_path / "a"), _node(database_url, tmp_path / "b")]


def _node(database_url: str, folder: Path) -> Flask:
    """Another node of the line (the ops user exists already in the shared database)."""
    if not (folder / "prompts").exists():
        shutil.copytree(REPO / "prompts", folder / "prompts")
    app = make_app(database_url, folder / "prompts", secret_key="test-secret-key")
    app.instance_path = str(folder / "instance")
    return app


def test_two_nodes_share_calls_prompts_and_sessions(database_url: str, tmp_path: Path) -> None:
    a, b = _nodes(database_url, tmp_path)
    sids = []
    for n in range(6):
        transport_order = [a, b] if n % 2 else [b, a]
        sids.append(_call(transport_order, PAID_AGAIN if n else PAID).call_sid)
    with get_database(a).session() as db:
        paid = db.scalars(select(Payment.call_sid)).all()
    assert sorted(paid) == sorted(sids)  # every call paid, once

    # A console session made on A is valid on B.
    on_a = signed_in(a)
    cookie = on_a.get_cookie("ivr_ops", path="/ops")
    assert cookie is not None
    on_b = b.test_client()
    assert on_b.get("/ops/prompts").status_code == 302  # signed out: to the sign-in page
    on_b.set_cookie("ivr_ops", cookie.value, path="/ops", secure=cookie.secure)
    assert on_b.get("/ops/prompts").status_code == 200

    # A console edit on A is heard on B's next call, and B's folder never takes it back.
    assert WELCOME in _call([b], "-").said()
    saved = _save(on_a, "greeting.welcome", {("en-US", "say"): "Welcome to Lakeside Power."})
    assert saved.status_code == 302, saved.text
    time.sleep(0.25)  # each node looks at the database's stamp at most every 0.2 s
    said = _call([b], "-").said()
    assert "Welcome to Lakeside Power." in said and WELCOME not in said
    restarted = _node(database_url, tmp_path / "b")  # B's folder still has the old wording
    assert "Welcome to Lakeside Power." in _call([restarted], "-").said()


def test_prompts_export_and_import(database_url: str, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    node = _node(database_url, tmp_path / "a")
    _line_env(monkeypatch, database_url, IVR_PIN_KEY="test-pin-key",
              IVR_SECRET_KEY="test-secret-key")
    monkeypatch.setenv("IVR_PROMPTS_DIR", str(tmp_path / "a" / "prompts"))
    out = tmp_path / "git"
    assert CliRunner().invoke(main, ["prompts", "export", str(out)]).exit_code == 0
    en = out / "en-US.toml"
    en.write_text(en.read_text(encoding="utf-8").replace(WELCOME, "Hello from git."),
                  encoding="utf-8")
    (out / "es-US.toml").write_text("[broken\n", encoding="utf-8")
    refused = CliRunner().invoke(main, ["prompts", "import", str(out)])
    assert refused.exit_code != 0 and "nothing imported" in refused.output
    shutil.copyfile(tmp_path / "a" / "prompts" / "es-US.toml", out / "es-US.toml")
    done = CliRunner().invoke(main, ["prompts", "import", str(out)])
    assert done.exit_code == 0, done.output
    time.sleep(0.25)
    said = _call([node], "-").said()
    assert "Hello from git." in said and WELCOME not in said
