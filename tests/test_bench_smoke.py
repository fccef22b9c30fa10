"""The benchmarks still run end to end (small sizes; their figures are not checked)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from ivr.simulator.timing import STANDARD_CALLS
from tests.conftest import _PG_SERVER, REPO, need_espeak, unavailable
from tests.servers.hledger import hledger_available

pytestmark = pytest.mark.slow


@pytest.fixture
def bench_postgres() -> Iterator[str]:
    """A database name of this run's own on the test server (the bench creates it afresh)."""
    url = make_url(_PG_SERVER).set(database=f"ivr_bench_smoke_{os.getpid()}")
    admin = url.set(database="postgres").render_as_string(hide_password=False).replace(
        "postgresql+psycopg://", "postgresql://")
    try:
        psycopg.connect(admin, connect_timeout=3).close()
    except psycopg.Error as exc:
        unavailable(f"PostgreSQL not available at {admin}: {exc}")
    yield url.render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True, connect_timeout=3) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)')


def _bench(module: str, *args: str, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    """``python -m bench.<module> args`` from the repository; a failure shows its output."""
    done = subprocess.run(  # noqa: S603 - this repository's own bench
        [sys.executable, "-m", f"bench.{module}", *args],
        cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def test_the_import_bench_prints_every_figure(bench_postgres: str) -> None:
    done = _bench("imports", "--rows", "2000", "--payments", "200", "--postgres",
                  bench_postgres, "--idle-seconds", "2")
    lines = done.stdout.splitlines()
    assert lines[0].startswith("account file: 2,000 rows")
    for label in ("SQLite", "PostgreSQL"):
        mine = [line.strip() for line in lines if line.strip().startswith(label)]
        assert any(line.startswith(f"{label} import: ivr") for line in mine), done.stdout
        idle = [line for line in mine if line.startswith(f"{label} webhooks          idle:")]
        # Nothing else runs while idle: a failure there means the bench's calls no longer
        # follow the flow (a new question, a renamed state), not that the line is slow.
        assert len(idle) == 1 and ", 0 failed)" in idle[0], done.stdout
        assert any(line.startswith(f"{label} webhooks during import: p50") for line in mine)
        summary = [line for line in mine if "p99 during/idle" in line]
        assert len(summary) == 1 and summary[0].endswith("(applied)"), done.stdout
    assert any(line.strip().startswith("export: ivr") for line in lines), done.stdout


def test_the_call_time_bench_times_every_standard_call(tmp_path: Path) -> None:
    need_espeak()
    # Exit 0 means every standard call still reaches its confirmation number: a failure
    # means the calls no longer follow the flow, not that the line got slower.
    done = _bench("call_time", "--markdown", "--cache", str(tmp_path / "lengths.json"), timeout=300)
    lines = done.stdout.splitlines()
    assert lines[0].startswith("Call time: espeak-ng at ")
    for call in STANDARD_CALLS:
        assert f"{call.name}: {call.title}" in lines, done.stdout
        assert any(line.startswith(f"| {call.title} | ") for line in lines), done.stdout
    totals = [line for line in lines if line.strip().startswith("to confirmation: ")]
    assert len(totals) == len(STANDARD_CALLS), done.stdout
    # The lengths were measured, and kept for the next run.
    assert (tmp_path / "lengths.json").stat().st_size > 0


def test_the_load_bench_prints_the_ratios_it_is_judged_by() -> None:
    done = _bench("load", "--databases", "sqlite", "--rounds", "1", "--seconds", "1",
                  "--concurrency", "2", "--capacity-seconds", "0", timeout=300)
    lines = [line.strip() for line in done.stdout.splitlines()]
    # No webhook of the line failed: its calls still follow the flow the bench expects.
    line = [x for x in lines if x.startswith("sqlite  ivr sequential:")]
    assert len(line) == 1 and line[0].endswith("errors 0"), done.stdout
    assert any(x.startswith("sqlite bare sequential:") for x in lines), done.stdout
    assert any(x.startswith("sqlite ratio ivr/bare: mean latency ") for x in lines), done.stdout
    loop = [x for x in lines if x.startswith("sqlite closed loop   2 callers:")]
    # The line's part of the row (the floor's follows the first " | ").
    assert len(loop) == 1 and loop[0].split(" | ")[0].endswith(" errors 0"), done.stdout


def test_the_posting_bench_drains_every_receiver() -> None:
    problem = hledger_available()
    if problem is not None:
        unavailable(problem)
    # Each drain asserts that it posted every payment, so exit 0 is the check that matters.
    done = _bench("posting", "--payments", "20", "--rounds", "1", "--calls", "2")
    lines = [line.strip() for line in done.stdout.splitlines()]
    for name in ("webhook receiver:", "hledger-web:", "hledger-web off:",
                 "off, gap 0:", "hledger-web +2,000:", "off +2,000:"):
        assert any(x.startswith(name) and " ratio min/median " in x for x in lines), done.stdout
    assert any(x.startswith("hledger-web: real-time <Pay> callback") for x in lines), done.stdout


def test_the_visibility_bench_counts_unseen_writes_in_both_modes() -> None:
    problem = hledger_available()
    if problem is not None:
        unavailable(problem)
    # The bench stops with an error unless every post landed.
    done = _bench("hledger_visibility", "--rounds", "1", "--history", "50", "--writes", "2",
                  "--readers", "1")
    lines = done.stdout.splitlines()
    for mode in ("again", "once"):
        assert any(line.startswith(f"| {mode} | ") and " of 1 | " in line for line in lines), \
            done.stdout
