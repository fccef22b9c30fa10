"""Running the app under gunicorn from `ivr serve`."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from gunicorn.app.base import BaseApplication


class _Gunicorn(BaseApplication):  # type: ignore[misc]
    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options
        self.threads = int(options["threads"])
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        from ivr.web.app import create_app

        # What no served log line shows (ours name their logger; gunicorn's, its process)
        # is not gathered for every record: the caller's frame, the thread's and the
        # multiprocessing process's names (the logging HOWTO's "Optimization").
        logging._srcfile = None
        logging.logThreads = False
        logging.logMultiprocessing = False

        # The app sizes its database pool and its bounded work threads to the threads.
        return create_app({"serve_threads": self.threads})


def _on_starting(_server: Any) -> None:
    from ivr.metrics import clear_multiproc_dir

    clear_multiproc_dir()


def _pre_fork(_server: Any, _worker: Any) -> None:
    # The master has imported every module the workers run (about 60 MB of Python objects),
    # shared with each worker until written to. The cyclic collector writes to every object
    # it scans, so a worker's first full collection copied nearly all of it: frozen objects
    # are never scanned. Measured: each worker's own memory 55-58 MB -> 34-37 MB after load.
    import gc

    gc.freeze()


def _child_exit(_server: Any, worker: Any) -> None:
    # With PROMETHEUS_MULTIPROC_DIR set, a dead worker's counters stay summed in /metrics.
    from ivr.metrics import mark_worker_dead

    mark_worker_dead(worker.pid)


def _worker_exit(_server: Any, worker: Any) -> None:
    # A web worker posts payments too; the connector's last duties (hledger: a journal
    # stamp still due) are done before the process goes.
    accounting = getattr(worker.wsgi, "extensions", {}).get("ivr.money.accounting")
    if accounting is not None:
        accounting.close()


# gunicorn's gthread worker: requests read whole before a thread takes them, graceful closes
# out of its main thread.
WORKER_CLASS = "ivr.web.worker.LineThreadWorker"
# Memory-backed on Linux. gunicorn makes its file there with mkstemp and unlinks it at once.
SHM = Path("/dev/shm")  # noqa: S108


def heartbeat_dir(shm: Path = SHM) -> str | None:
    """Where gunicorn's workers keep their heartbeat file: in memory (``/dev/shm``) where the
    machine has it, else gunicorn's default (the temporary directory).

    A worker's main loop, the one that accepts connections, touches that file once a second
    (``os.utime``; ivr.web.worker), and the master reads it to find hung workers. On a
    disk-backed ``/tmp`` a stalled disk holds that call, and with it every new caller,
    however healthy the database (gunicorn's own docs, "Blocking OS calls")."""
    return str(shm) if shm.is_dir() and os.access(shm, os.W_OK | os.X_OK) else None


def run_gunicorn(host: str, port: int, workers: int, threads: int,
                 access_log: bool = False) -> None:
    """Serve with threaded (gthread) workers (ivr.web.worker).

    A sync worker is held for as long as one client takes to send its request; a plain
    gthread worker's thread too. ``ivr.web.worker`` reads each request whole in the
    worker's main loop before a thread takes it, so slow clients hold no thread.
    gunicorn's access line is off unless asked (IVR_ACCESS_LOG=1): the app's own "webhook"
    line already says what it would, for every webhook.
    """
    _Gunicorn({"bind": f"{host}:{port}", "workers": workers, "threads": threads,
               "timeout": 30, "accesslog": "-" if access_log else None,
               "worker_class": WORKER_CLASS, "worker_tmp_dir": heartbeat_dir(),
               "on_starting": _on_starting, "pre_fork": _pre_fork,
               "child_exit": _child_exit, "worker_exit": _worker_exit}).run()
