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
def serve_line(env: Mapping[str, str], workers: int = 2) -> Iterator[str]:
    """Run `ivr serve` with ``env`` added to ours; yield its base URL once /healthz answers."""
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
                if requests.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(proc.stderr.read().decode() if proc.stderr else "no server")
            time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        if proc.stderr:
            proc.stderr.close()
