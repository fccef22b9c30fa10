"""`ivr serve` and `ivr worker` refuse a schema this version has not migrated: every call on
it would end in the apology, and every post in a retry."""

from __future__ import annotations

import sqlite3

import pytest
from alembic import command
from click.testing import CliRunner

from ivr.cli import main
from ivr.db import alembic_config
from tests.test_nodes import _line_env

LINE_COMMANDS = [["serve"], ["worker", "--once"]]


def _revision(sqlite_url: str) -> str | None:
    with sqlite3.connect(sqlite_url.removeprefix("sqlite:///")) as db:
        row = db.execute("SELECT version_num FROM alembic_version").fetchone()
    return None if row is None else str(row[0])


@pytest.mark.parametrize("command_line", LINE_COMMANDS)
def test_a_database_without_a_schema_is_refused(sqlite_url: str, command_line: list[str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    _line_env(monkeypatch, sqlite_url)
    result = CliRunner().invoke(main, command_line)
    assert result.exit_code == 1
    assert "the database has no schema yet: run `ivr db upgrade` first" in result.output
    assert "started the line" not in str(result.exception)


@pytest.mark.parametrize("command_line", LINE_COMMANDS)
def test_a_schema_one_migration_behind_is_refused_until_upgraded(
        sqlite_url: str, command_line: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    _line_env(monkeypatch, sqlite_url)
    runner = CliRunner()
    assert runner.invoke(main, ["db", "upgrade"]).exit_code == 0
    head = _revision(sqlite_url)
    command.downgrade(alembic_config(sqlite_url), "-1")
    behind = _revision(sqlite_url)
    assert behind is not None and behind != head
    result = runner.invoke(main, command_line)
    assert result.exit_code == 1
    assert (f"the database schema is at revision {behind} and this version needs {head}: "
            "run `ivr db upgrade` first") in result.output
    assert runner.invoke(main, ["db", "upgrade"]).exit_code == 0
    if command_line == ["serve"]:
        assert "ivr serve started the line" in str(runner.invoke(main, command_line).exception)


def test_a_schema_newer_than_this_version_is_served(sqlite_url: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Another node upgraded first, or this one was rolled back: refusing would stop the
    older nodes of a rolling upgrade, and a rollback."""
    _line_env(monkeypatch, sqlite_url)
    runner = CliRunner()
    assert runner.invoke(main, ["db", "upgrade"]).exit_code == 0
    with sqlite3.connect(sqlite_url.removeprefix("sqlite:///")) as db:
        db.execute("UPDATE alembic_version SET version_num = '9999_from_a_later_version'")
    assert "ivr serve started the line" in str(runner.invoke(main, ["serve"]).exception)
