"""What the test servers share: a child process that can be stopped, killed, paused and
restarted, and that no test run leaves behind (an atexit hook kills any a crash forgot)."""

from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Self

_LIVE: set[ServerProcess] = set()


class ServerProcess:
    """A server started as a child process; subclasses implement ``start()``."""

    _process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Launch the server and wait until it answers."""
        raise NotImplementedError

    def _launched(self, process: subprocess.Popen[bytes]) -> None:
        """Remember the child just started, so it is stopped even if the run crashes."""
        self._process = process
        _LIVE.add(self)

    @property
    def running(self) -> bool:
        """The process is alive (paused counts as alive)."""
        return self._process is not None and self._process.poll() is None

    def pause(self) -> None:
        """SIGSTOP: the kernel still accepts connections, but nothing answers.

        Returns once every thread of the server is stopped: SIGSTOP is only queued by
        kill(), and a request sent at once could otherwise still be answered.
        """
        if self.running and self._process is not None:
            os.kill(self._process.pid, signal.SIGSTOP)
            _wait_stopped(self._process.pid)

    def resume(self) -> None:
        """SIGCONT after ``pause()``."""
        if self.running and self._process is not None:
            os.kill(self._process.pid, signal.SIGCONT)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited within 10 s."""
        process = self._process
        if process is not None and process.poll() is None:
            self.resume()  # a stopped process would hold SIGTERM until continued
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        self._reap()

    def kill(self) -> None:
        """SIGKILL: the server dies at once, as in a crash (works while paused too)."""
        process = self._process
        if process is not None and process.poll() is None:
            process.kill()
        self._reap()

    def _reap(self) -> None:
        if self._process is not None:
            self._process.wait(timeout=10)
        _LIVE.discard(self)

    def restart(self) -> None:
        """Stop (if running) and start again, on the same port with the same data."""
        self.stop()
        self.start()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _wait_stopped(pid: int, timeout: float = 10.0) -> None:
    """Wait until each thread of ``pid`` is in state T (stopped), per /proc."""
    deadline = time.monotonic() + timeout
    while True:
        states = []
        for task in Path(f"/proc/{pid}/task").glob("*/stat"):
            try:
                # "pid (comm) S ...": the state follows the last ")".
                states.append(task.read_text(encoding="ascii", errors="replace")
                              .rsplit(")", 1)[1].split()[0])
            except OSError:
                continue  # a thread that just exited
        if states and all(state in "tT" for state in states):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"process {pid} did not stop: thread states {states}")
        time.sleep(0.001)


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now (see ``listens_on`` for the race)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def listens_on(pid: int, port: int) -> bool:
    """Whether process ``pid`` holds the socket listening on TCP ``port`` (Linux /proc).

    A server given a port we probed as free may lose it to another process before it binds
    (other test runs share the machine); then whatever answers on that port is not ours.
    """
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text(encoding="ascii").splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            # local_address is HEXIP:HEXPORT; state 0A is LISTEN; field 9 is the inode.
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{fields[9]}]")
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(fd) in inodes:
                return True
        except OSError:
            continue
    return False


@atexit.register
def _kill_leftovers() -> None:
    for server in list(_LIVE):
        server.kill()
