"""The line itself under `ivr serve` (gunicorn), as a real process on 127.0.0.1."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import requests

from tests.servers.process import free_port, listens_on


@contextmanager
def serve_line(env: Mapping[str, str], workers: int = 2, *,
               healthy: bool = True) -> Iterator[str]:
    """Run `ivr serve` with ``env`` added to ours; yield its base URL once /healthz answers.

    With ``healthy=False`` (a database that is meant to be down), once the app answers at all.
    """
    # The keys make_app hashes the demo PINs with; a server database refuses to serve without.
    full = {**os.environ, "IVR_LOG_LEVEL": "WARNING", "IVR_PIN_KEY": "test-pin-key",
            "IVR_SECRET_KEY": "test-secret-key", **env}
    full.pop("IVR_PUBLIC_BASE_URL", None)
    for _ in range(5):
        port = free_port()
        proc = subprocess.Popen(  # noqa: S603 - our own CLI
            [sys.executable, "-c", "from ivr.cli import main; main()", "serve",
             "--port", str(port), "--workers", str(workers)],
            env=full, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        base = f"http://127.0.0.1:{port}"
        try:
            if _wait_ready(proc, port, base, healthy):
                yield base
                return
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:  # a worker stuck past gunicorn's graceful timeout
                proc.kill()
                proc.wait(timeout=5)
            if proc.stderr:
                proc.stderr.close()
        # Another process took the port between our probe and gunicorn's bind: another one.
    raise RuntimeError("ivr serve could not bind a port")


def _wait_ready(proc: subprocess.Popen[bytes], port: int, base: str, healthy: bool) -> bool:
    """True once our server answers (/healthz with 200, or anything when ``healthy`` is
    False); False if it lost its port; else raises."""
    deadline = time.monotonic() + 30
    while True:
        # Only the answer of our gunicorn (its master holds the socket) counts.
        if listens_on(proc.pid, port):
            try:
                if healthy and requests.get(f"{base}/healthz", timeout=1).status_code == 200:
                    return True
                # GET on a webhook path is refused (405) without touching the database.
                if not healthy and requests.get(f"{base}/voice/status", timeout=1).status_code:
                    return True
            except (requests.ConnectionError, requests.Timeout):
                pass
        if proc.poll() is not None or time.monotonic() > deadline:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=15)
            why = proc.stderr.read().decode() if proc.stderr else "no server"
            if "Address already in use" in why:
                return False
            raise RuntimeError(why)
        time.sleep(0.2)
