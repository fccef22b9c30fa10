"""The line itself under `ivr serve` (gunicorn), as a real process on 127.0.0.1."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import requests


def free_port() -> int:
    """A port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve_line(env: Mapping[str, str], workers: int = 2, *,
               healthy: bool = True) -> Iterator[str]:
    """Run `ivr serve` with ``env`` added to ours; yield its base URL once /healthz answers.

    With ``healthy=False`` (a database that is meant to be down), once the app answers at all.
    """
    port = free_port()
    full = {**os.environ, "IVR_LOG_LEVEL": "WARNING", **env}
    full.pop("IVR_PUBLIC_BASE_URL", None)
    proc = subprocess.Popen(  # noqa: S603 - our own CLI
        [sys.executable, "-c", "from ivr.cli import main; main()", "serve",
         "--port", str(port), "--workers", str(workers)],
        env=full, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if healthy and requests.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
                # GET on a webhook path is refused (405) without touching the database.
                if not healthy and requests.get(f"{base}/voice/status", timeout=1).status_code:
                    break
            except (requests.ConnectionError, requests.Timeout):
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(proc.stderr.read().decode() if proc.stderr else "no server")
            time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:  # a worker stuck past gunicorn's graceful timeout
            proc.kill()
            proc.wait(timeout=5)
        if proc.stderr:
            proc.stderr.close()
