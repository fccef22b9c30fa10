"""The `ivr` command line, end to end on a SQLite file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from ivr.cli import main
from ivr.models import Account
from ivr.simulator.demo import demo_file, demo_rows
from ivr.web.app import create_app, get_database
from tests.conftest import OPEN_TIME, REPO


def cli_database(tmp_path: Path) -> str:
    """The database the commands of a test work on."""
    return f"sqlite:///{tmp_path / 'cli.sqlite3'}"


def with_demo_accounts(runner: CliRunner, tmp_path: Path) -> None:
    """`ivr db upgrade`, then `ivr accounts import` of the demo accounts."""
    assert runner.invoke(main, ["db", "upgrade"]).exit_code == 0
    accounts = tmp_path / "accounts.csv"
    accounts.write_bytes(demo_file(OPEN_TIME.date()))
    result = runner.invoke(main, ["accounts", "import", str(accounts)])
    assert result.exit_code == 0, result.output


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("IVR_DATABASE_URL", cli_database(tmp_path))
    monkeypatch.setenv("IVR_PIN_KEY", "test-pin-key")
    monkeypatch.setenv("IVR_LOG_LEVEL", "WARNING")
    monkeypatch.delenv("IVR_TWILIO_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("IVR_PROMPTS_DIR", raising=False)
    return CliRunner()


def balances(tmp_path: Path) -> dict[str, int]:
    app = create_app({"database_url": cli_database(tmp_path)})
    database = get_database(app)
    try:
        with database.session() as db:
            return {a.account_number: a.balance_due_cents for a in db.scalars(select(Account))}
    finally:
        database.dispose()


def test_db_upgrade_then_import_and_report(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(main, ["db", "upgrade"])
    assert result.exit_code == 0, result.output
    good = tmp_path / "accounts.csv"
    good.write_bytes(demo_file(OPEN_TIME.date()))
    result = runner.invoke(main, ["accounts", "import", str(good)])
    assert result.exit_code == 0, result.output
    assert f"applied; {len(demo_rows(OPEN_TIME.date()))} accounts, 0 rejected" in result.output
    assert balances(tmp_path)["4401001234"] == 12345


def test_bad_file_is_rejected_with_report_and_cache_kept(runner: CliRunner,
                                                         tmp_path: Path) -> None:
    runner.invoke(main, ["db", "upgrade"])
    good = tmp_path / "accounts.csv"
    good.write_bytes(demo_file(OPEN_TIME.date()))
    runner.invoke(main, ["accounts", "import", str(good)])
    lines = demo_file(OPEN_TIME.date()).decode().splitlines()
    lines[1] = lines[1].replace("123.45", "999.99")  # a change that must not land
    lines[2] = lines[2].replace("312.80", "31x.80")  # a bad amount on line 3
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join(lines[:-1]) + "\n", encoding="utf-8")
    result = runner.invoke(main, ["accounts", "import", str(bad)])
    assert result.exit_code == 1
    assert "REJECTED" in result.output and "line 3" in result.output
    assert "balance_due" in result.output
    assert balances(tmp_path)["4401001234"] == 12345  # unchanged

    result = runner.invoke(main, ["accounts", "import", "--partial", str(bad)])
    assert result.exit_code == 0, result.output
    assert balances(tmp_path)["4401001234"] == 99999


def test_bad_trailer_rejects_the_whole_file(runner: CliRunner, tmp_path: Path) -> None:
    runner.invoke(main, ["db", "upgrade"])
    count = len(demo_rows(OPEN_TIME.date()))
    data = demo_file(OPEN_TIME.date()).decode().replace(f"TRAILER,{count},",
                                                        f"TRAILER,{count + 1},")
    bad = tmp_path / "trailer.csv"
    bad.write_text(data, encoding="utf-8")
    result = runner.invoke(main, ["accounts", "import", str(bad)])
    assert result.exit_code == 1
    assert "trailer" in result.output.lower()
    assert balances(tmp_path) == {}


def test_unknown_layout_is_refused(runner: CliRunner, tmp_path: Path) -> None:
    f = tmp_path / "a.csv"
    f.write_text("x\n")
    result = runner.invoke(main, ["accounts", "import", "--layout", "bank9", str(f)])
    assert result.exit_code != 0 and "unknown layout" in result.output


def test_simulated_call_json_and_payments_list(runner: CliRunner, tmp_path: Path) -> None:
    with_demo_accounts(runner, tmp_path)
    result = runner.invoke(main, ["call", "--press", "1 60614 1 1", "--json"])
    assert result.exit_code == 0, result.output
    transcript = json.loads(result.output)
    pays = [e for e in transcript["events"] if e["event"] == "pay"]
    assert pays and pays[0]["result"] == "success" and pays[0]["amount"] == "123.45"
    listed = runner.invoke(main, ["payments", "list", "--json"])
    rows = json.loads(listed.output)
    assert len(rows) == 1
    assert rows[0]["amount"] == "123.45" and rows[0]["last4"] == "1111"
    assert rows[0]["account"] == "******1234"
    assert rows[0]["confirmation"] == pays[0]["confirmation"]
    assert "4111111111111111" not in listed.output + result.output


def test_demo_plays_a_paid_call(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(main, ["demo", "--scripted", "--database",
                                  f"sqlite:///{tmp_path / 'demo.sqlite3'}"])
    assert result.exit_code == 0, result.output
    assert "[payment credit-card 123.45" in result.output
    assert "confirmation" in result.output.lower()


def test_prompts_check(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(main, ["prompts", "check"])
    assert result.exit_code == 0, result.output
    broken = tmp_path / "prompts"
    shutil.copytree(REPO / "prompts", broken)
    es = broken / "es-US.toml"
    es.write_text(es.read_text(encoding="utf-8").replace("{amount}", "{importe}", 1),
                  encoding="utf-8")
    result = runner.invoke(main, ["prompts", "check", "--dir", str(broken)])
    assert result.exit_code == 1
    assert "importe" in result.output



def test_prompts_check_refuses_an_endless_pause(runner: CliRunner, tmp_path: Path) -> None:
    broken = tmp_path / "prompts"
    shutil.copytree(REPO / "prompts", broken)
    en = broken / "en-US.toml"
    en.write_text(en.read_text(encoding="utf-8").replace(
        '<break time=\\"300ms\\"/>', '<break time=\\"100000s\\"/>', 1), encoding="utf-8")
    result = runner.invoke(main, ["prompts", "check", "--dir", str(broken)])
    assert result.exit_code == 1
    assert "break time '100000s' is too long: at most 10s (10000ms)" in result.output


def test_serve_refuses_without_token(runner: CliRunner) -> None:
    result = runner.invoke(main, ["serve"])
    assert result.exit_code != 0
    assert "IVR_TWILIO_AUTH_TOKEN" in result.output


def test_demo_keeps_to_its_own_database(runner: CliRunner, tmp_path: Path) -> None:
    demo_db = tmp_path / "demo.sqlite3"
    result = runner.invoke(main, ["demo", "--scripted", "--database", f"sqlite:///{demo_db}"])
    assert result.exit_code == 0, result.output
    assert demo_db.exists()
    # The configured line's database got no demo accounts and no payments.
    assert not (tmp_path / "cli.sqlite3").exists() or balances(tmp_path) == {}


def test_unlock_clears_the_lockout(runner: CliRunner, tmp_path: Path) -> None:
    from ivr.models import VerificationFailure, utcnow

    with_demo_accounts(runner, tmp_path)
    app = create_app({"database_url": cli_database(tmp_path)})
    with get_database(app).session() as db:
        account = db.scalar(select(Account).where(Account.account_number == "4401001234"))
        assert account is not None
        db.add_all([VerificationFailure(account_id=account.id, call_sid="CA1", failed_at=utcnow())
                    for _ in range(5)])
    get_database(app).dispose()
    result = runner.invoke(main, ["accounts", "unlock", "4401001234"])
    assert result.exit_code == 0 and "5 failed check(s) cleared" in result.output
    assert "4401001234" not in result.output


def test_simulated_call_payment_is_marked_test(runner: CliRunner, tmp_path: Path) -> None:
    from ivr.models import OutboxEntry

    with_demo_accounts(runner, tmp_path)
    result = runner.invoke(main, ["call", "--press", "1 60614 1 1", "--json"])
    assert result.exit_code == 0, result.output
    listed = json.loads(runner.invoke(main, ["payments", "list", "--json"]).output)
    assert [row["posting"] for row in listed] == ["test"]
    # Real callers still hear the real balance; no worker will ever post it.
    assert balances(tmp_path)["4401001234"] == 12345
    app = create_app({"database_url": cli_database(tmp_path)})
    with get_database(app).session() as db:
        assert [e.status for e in db.scalars(select(OutboxEntry))] == ["test"]
    get_database(app).dispose()


@pytest.mark.parametrize("day", ["9999-12-31", "0001-01-01", "2026-02-30", "tomorrow"])
def test_reconcile_refuses_a_day_it_cannot_reconcile(runner: CliRunner, day: str) -> None:
    runner.invoke(main, ["db", "upgrade"])
    result = runner.invoke(main, ["reconcile", "--date", day])
    assert result.exit_code == 1  # a clear refusal, not a crash
    assert isinstance(result.exception, SystemExit)
    assert "--date:" in result.output and day in result.output


def test_every_command_written_is_on_ivr() -> None:
    """A command defined in ivr/cli/ but left out of COMMANDS would never run."""
    import importlib
    import pkgutil

    import click

    import ivr.cli

    defined: set[click.Command] = set()
    for module in pkgutil.iter_modules(ivr.cli.__path__):
        found = vars(importlib.import_module(f"ivr.cli.{module.name}")).values()
        defined |= {obj for obj in found if isinstance(obj, click.Command)}
    nested = {sub for group in defined if isinstance(group, click.Group)
              for sub in group.commands.values()}
    assert len(defined) > 20
    assert defined - nested == set(main.commands.values())


def test_python_m_ivr_is_the_command_line() -> None:
    """Where the ``ivr`` script is not on PATH (a bare venv, cron), ``python -m ivr`` is it."""
    import subprocess
    import sys

    shown = subprocess.run([sys.executable, "-m", "ivr", "accounts", "--help"],
                           capture_output=True, text=True, check=True, timeout=60).stdout
    assert "Usage: ivr accounts" in shown and "import" in shown
