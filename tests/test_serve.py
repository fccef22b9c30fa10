"""`ivr serve` under gunicorn, driven over real HTTP on 127.0.0.1 by `ivr call --url`."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner

from ivr import get_database
from ivr.cli import main
from tests.conftest import REPO, TOKEN, make_app


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, str]]:
    url = f"sqlite:///{tmp_path / 'served.sqlite3'}"
    app = make_app(url, REPO / "prompts")  # migrates and seeds the demo accounts
    get_database(app).dispose()
    port = _free_port()
    env = {**os.environ, "IVR_DATABASE_URL": url, "IVR_TWILIO_AUTH_TOKEN": TOKEN,
           "IVR_LOG_LEVEL": "WARNING"}
    env.pop("IVR_PUBLIC_BASE_URL", None)
    proc = subprocess.Popen(  # noqa: S603 - our own CLI
        [sys.executable, "-c", "from ivr.cli import main; main()", "serve",
         "--port", str(port), "--workers", "2"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(proc.stderr.read().decode() if proc.stderr else "no server")
            time.sleep(0.2)
        yield base, url
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        if proc.stderr:
            proc.stderr.close()


def test_paid_call_over_http_against_gunicorn(server: tuple[str, str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    base, url = server
    assert requests.post(f"{base}/voice/incoming", data={"CallSid": "CA1"},
                         timeout=5).status_code == 403
    monkeypatch.setenv("IVR_DATABASE_URL", url)
    result = CliRunner().invoke(main, ["call", "--url", base, "--token", TOKEN,
                                       "--press", "1 1 60614 1 1 1 1 1", "--json"])
    assert result.exit_code == 0, result.output
    events = json.loads(result.output)["events"]
    pay = next(e for e in events if e["event"] == "pay")
    assert pay["result"] == "success"
    listed = json.loads(CliRunner().invoke(main, ["payments", "list", "--json"]).output)
    assert [row["confirmation"] for row in listed] == [pay["confirmation"]]


def test_call_with_wrong_token_hears_nothing(server: tuple[str, str]) -> None:
    base, _ = server
    result = CliRunner().invoke(main, ["call", "--url", base, "--token", "wrong",
                                       "--press", "1", "--json"])
    assert result.exit_code == 2
    assert json.loads(result.output)["ended_by"] == "error"
