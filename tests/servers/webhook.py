"""The reference webhook receiver (examples/webhook_receiver.py) as a real separate process.

``start_receiver(workdir, secret)`` launches it with ``sys.executable`` on a free 127.0.0.1
port and returns once it answers. Its SQLite file, fault file and logs live in ``workdir``.
Always ``stop()`` it (the tests do so in a fixture's ``finally``); an atexit hook kills any
receiver a crashed test run forgot, so no process outlives pytest.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import requests

from tests.servers.process import ServerProcess

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "examples" / "webhook_receiver.py"
# A variable of its own, so the receiver provably reads --secret-env and not the default.
SECRET_ENV = "IVR_TEST_RECEIVER_SECRET"
START_TIMEOUT = 20.0



class Receiver(ServerProcess):
    """One receiver process; ``restart()`` brings it back on the same port and database."""

    def __init__(self, workdir: Path, secret: str) -> None:
        self.workdir = workdir
        self.secret = secret
        self.db = workdir / "receiver.sqlite3"
        self.faults_file = workdir / "receiver-faults.json"
        self.log_file = workdir / "receiver.log"
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._starts = 0

    @property
    def url(self) -> str:
        """The webhook URL (POST payments here)."""
        return f"http://127.0.0.1:{self.port}/payments"

    @property
    def arrangements_url(self) -> str:
        """The arrangements webhook URL."""
        return f"http://127.0.0.1:{self.port}/arrangements"

    @property
    def reversals_url(self) -> str:
        """The reversals webhook URL."""
        return f"http://127.0.0.1:{self.port}/reversals"

    def settings(self, *, arrangements: bool = True, reversals: bool = True) -> dict[str, str]:
        """IVR settings that point the webhook connector at this receiver (and, unless
        ``arrangements`` or ``reversals`` is False, those at their own endpoints)."""
        settings = {"IVR_ACCOUNTING": "webhook", "IVR_WEBHOOK_URL": self.url,
                    "IVR_WEBHOOK_SECRET": self.secret}
        if arrangements:
            settings["IVR_WEBHOOK_ARRANGEMENTS_URL"] = self.arrangements_url
        if reversals:
            settings["IVR_WEBHOOK_REVERSALS_URL"] = self.reversals_url
        return settings

    def payments(self) -> list[dict[str, Any]]:
        """Stored payments, oldest first: receipt_id, idempotency_key, received_at, payment."""
        return self._listing(self.url)

    def arrangements(self) -> list[dict[str, Any]]:
        """Stored arrangements, oldest first: receipt_id, idempotency_key, received_at,
        arrangement (the body as sent)."""
        return self._listing(self.arrangements_url)

    def reversals(self) -> list[dict[str, Any]]:
        """Stored reversals, oldest first: receipt_id, idempotency_key, received_at,
        reversal (the body as sent)."""
        return self._listing(self.reversals_url)

    @staticmethod
    def _listing(url: str) -> list[dict[str, Any]]:
        response = requests.get(url, timeout=5)
        response.raise_for_status()
        rows: list[dict[str, Any]] = response.json()
        return rows

    def set_faults(self, *rules: Mapping[str, Any]) -> None:
        """Replace the injected faults (see the receiver's docstring); none clears them."""
        temporary = self.faults_file.with_name(self.faults_file.name + ".new")
        temporary.write_text(json.dumps([dict(rule) for rule in rules]), encoding="utf-8")
        os.replace(temporary, self.faults_file)  # the receiver never reads a half-written file

    def clear_faults(self) -> None:
        """No more injected faults."""
        self.set_faults()

    def start(self) -> None:
        """Launch the process (on ``self.port``, 0 = any free one) and wait until it answers."""
        if self.running:
            raise RuntimeError("receiver already running")
        self._starts += 1
        ready_file = self.workdir / f"receiver-ready-{self._starts}.txt"
        env = {**os.environ, SECRET_ENV: self.secret}
        with ready_file.open("wb") as out, self.log_file.open("ab") as log:
            process = subprocess.Popen(  # noqa: S603 - our own script, fixed arguments
                [sys.executable, str(SCRIPT), "--port", str(self.port), "--db", str(self.db),
                 "--secret-env", SECRET_ENV, "--faults", str(self.faults_file)],
                env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=log, cwd=self.workdir)
        self._launched(process)
        try:
            self.port = self._wait_listening(ready_file)
            self._wait_answering()
        except BaseException:
            self.kill()
            raise

    def _wait_listening(self, ready_file: Path) -> int:
        # The receiver prints "listening on <url>" once bound, which also tells us the port
        # it picked: no race between choosing a free port and binding it.
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            text = ready_file.read_text(encoding="utf-8")
            if text.startswith("listening on ") and text.endswith("\n"):
                return int(text.strip().rsplit(":", 1)[1].split("/", 1)[0])
            if not self.running:
                raise RuntimeError(f"receiver exited: {self._log_tail()}")
            time.sleep(0.02)
        raise RuntimeError(f"receiver did not start in {START_TIMEOUT} s: {self._log_tail()}")

    def _wait_answering(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                requests.head(self.url, timeout=1)
                return
            except requests.ConnectionError:
                if time.monotonic() > deadline or not self.running:
                    raise
            time.sleep(0.02)

    def _log_tail(self) -> str:
        try:
            return self.log_file.read_text(encoding="utf-8", errors="replace")[-2000:]
        except FileNotFoundError:
            return "(no log)"

def start_receiver(workdir: Path, secret: str) -> Receiver:
    """A running receiver process keeping its database and logs in ``workdir``."""
    workdir.mkdir(parents=True, exist_ok=True)
    receiver = Receiver(workdir, secret)
    receiver.start()
    return receiver

