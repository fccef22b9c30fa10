"""A real OpenSSH sshd on 127.0.0.1 with a chrooted, key-only SFTP user, for transport tests.

Needs root (sshd must chroot and switch user), Debian's ``openssh-server`` (``/usr/sbin/sshd``)
and ``ssh-keygen``. Per server it makes a throwaway host key and client key, a known_hosts file
pinning the host key, and a chroot holding writable ``inbox/`` and ``outbox/``.

sshd refuses a ChrootDirectory (and, with StrictModes, an authorized keys file) unless every
component of its path is owned by root and not group/world writable, so ``/tmp`` (1777) cannot
hold them: the chroot lives under ``IVR_TEST_SFTP_BASE`` (default ``/srv/ivr-test-sftp``). Keys,
config and log live in the caller's ``workdir``.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from tests.servers.process import free_port

SSHD = Path("/usr/sbin/sshd")  # sshd re-execs itself, so it must be started by absolute path
USER = "ivrsftp"
BASE = Path(os.environ.get("IVR_TEST_SFTP_BASE", "/srv/ivr-test-sftp"))
START_TIMEOUT = 10.0
_LIVE: set[SshdServer] = set()


def sshd_available() -> str | None:
    """None if a real sshd can be started here, else why not (for ``pytest.skip``)."""
    if not SSHD.is_file():
        return f"{SSHD} missing (apt-get install -y --no-install-recommends openssh-server)"
    if shutil.which("ssh-keygen") is None:
        return "ssh-keygen missing (openssh-client)"
    if os.geteuid() != 0:
        return "sshd with ChrootDirectory and a dedicated user needs root"
    if not _user_exists() and shutil.which("useradd") is None:
        return f"user {USER} missing and useradd unavailable"
    return None


def _tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if found is None:
        raise RuntimeError(f"{name} not found")
    return found


def generate_key(path: Path, passphrase: str = "") -> Path:
    """A new Ed25519 key pair at ``path`` and ``path.pub`` (no passphrase unless given)."""
    for old in (path, path.with_name(path.name + ".pub")):
        old.unlink(missing_ok=True)
    subprocess.run(  # noqa: S603 - fixed arguments
        [_tool("ssh-keygen"), "-q", "-t", "ed25519", "-N", passphrase, "-C", path.name,
         "-f", str(path)],
        check=True, stdin=subprocess.DEVNULL, capture_output=True)
    return path


def fingerprint(public_key_file: Path) -> str:
    """The OpenSSH SHA256 fingerprint (``SHA256:…``) of a public key file."""
    out = subprocess.run(  # noqa: S603 - fixed arguments
        [_tool("ssh-keygen"), "-l", "-E", "sha256", "-f", str(public_key_file)],
        check=True, capture_output=True, text=True).stdout
    return out.split()[1]


def _user_exists() -> bool:
    try:
        pwd.getpwnam(USER)
    except KeyError:
        return False
    return True


def ensure_user() -> None:
    """Create the system user ``ivrsftp`` (no home, no shell, no password) if missing."""
    if not _user_exists():
        subprocess.run(  # noqa: S603 - fixed arguments
            [_tool("useradd"), "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
             USER],
            check=True, capture_output=True)
    # useradd leaves the password field "!", which sshd (without PAM) treats as a locked
    # account and then refuses even a valid key; "*" means "no password" but not locked.
    if _shadow_field(USER).startswith("!"):
        subprocess.run([_tool("usermod"), "-p", "*", USER],  # noqa: S603 - fixed arguments
                       check=True, capture_output=True)


def _shadow_field(user: str) -> str:
    for line in Path("/etc/shadow").read_text(encoding="utf-8").splitlines():
        fields = line.split(":")
        if fields[0] == user:
            return fields[1]
    return ""


def _check_root_owned(path: Path) -> None:
    # Fail with the real reason instead of sshd's terse "bad ownership or modes".
    for part in [path, *path.parents]:
        info = part.stat()
        if info.st_uid != 0 or info.st_mode & 0o022:
            raise RuntimeError(
                f"{part} must be owned by root and not group/world writable for sshd's "
                f"ChrootDirectory; set IVR_TEST_SFTP_BASE to such a directory")


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue  # exited while we looked
        # The command name is in parentheses and may contain spaces: split after the last ")".
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if state != "Z":  # already dead, only waiting to be reaped
            children.setdefault(int(ppid), []).append(int(entry))
    return children


def _descendants(pid: int) -> list[int]:
    children = _children_map()
    found: list[int] = []
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def _dead(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def _wait_dead(pids: list[int], timeout: float) -> bool:
    """Wait until each of ``pids`` has exited (a zombie has: only its reaping is pending)."""
    deadline = time.monotonic() + timeout
    while not all(_dead(pid) for pid in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


class SshdServer:
    """One sshd process (``-D``, our direct child) serving SFTP to ``user`` in a chroot."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.host = "127.0.0.1"
        self.port = 0
        self.user = USER
        self.key_file = workdir / "client_ed25519"
        self.known_hosts = workdir / "known_hosts"
        self.host_key = workdir / "host_ed25519"
        self.config = workdir / "sshd_config"
        self.log_file = workdir / "sshd.log"
        BASE.mkdir(mode=0o755, parents=True, exist_ok=True)
        _check_root_owned(BASE)
        self.state = Path(tempfile.mkdtemp(prefix="sshd-", dir=BASE))
        self.state.chmod(0o755)  # the SFTP user must traverse it after the chroot
        self.root = self.state / "chroot"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def host_fingerprint(self) -> str:
        """SHA256 fingerprint of the host key the server currently presents."""
        return fingerprint(self.host_key.with_name(self.host_key.name + ".pub"))

    def url(self, subdir: str = "") -> str:
        """``sftp://ivrsftp@127.0.0.1:PORT/subdir`` (paths are relative to the chroot)."""
        return f"sftp://{self.user}@{self.host}:{self.port}/{subdir.strip('/')}"

    def settings(self) -> dict[str, str]:
        """The SFTP settings the transport needs to reach this server."""
        return {"IVR_SFTP_KEY_FILE": str(self.key_file),
                "IVR_SFTP_KNOWN_HOSTS": str(self.known_hosts)}

    def setup(self) -> None:
        """Create the user, keys, chroot and config (no process yet)."""
        ensure_user()
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation directory
        account = pwd.getpwnam(USER)
        self.root.mkdir(mode=0o755)  # the chroot itself: root-owned, not writable by the user
        for name in ("inbox", "outbox"):
            data = self.root / name
            data.mkdir(mode=0o755)
            os.chown(data, account.pw_uid, account.pw_gid)
        keys = self.state / "authorized_keys"
        keys.mkdir(mode=0o755)
        generate_key(self.host_key)
        generate_key(self.key_file)
        shutil.copyfile(self.key_file.with_name(self.key_file.name + ".pub"), keys / USER)
        (keys / USER).chmod(0o644)

    def _write_config(self) -> None:
        self.config.write_text(
            f"Port {self.port}\n"
            f"ListenAddress {self.host}\n"
            f"HostKey {self.host_key}\n"
            f"PidFile {self.workdir / 'sshd.pid'}\n"
            f"AuthorizedKeysFile {self.state / 'authorized_keys'}/%u\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            "PubkeyAuthentication yes\n"
            "PermitRootLogin no\n"
            "UsePAM no\n"
            f"AllowUsers {USER}\n"
            "Subsystem sftp internal-sftp\n"
            f"Match User {USER}\n"
            f"    ChrootDirectory {self.root}\n"
            "    ForceCommand internal-sftp\n"
            "    AllowTcpForwarding no\n"
            "    X11Forwarding no\n",
            encoding="utf-8")

    def _write_known_hosts(self) -> None:
        public = self.host_key.with_name(self.host_key.name + ".pub").read_text(encoding="utf-8")
        kind, blob = public.split()[:2]
        self.known_hosts.write_text(f"[{self.host}]:{self.port} {kind} {blob}\n", encoding="utf-8")

    @property
    def running(self) -> bool:
        """The listening sshd is alive."""
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start sshd (on ``self.port``; a free one the first time) and wait until it listens."""
        if self.running:
            raise RuntimeError("sshd already running")
        pick_port = self.port == 0
        for _ in range(5):
            if pick_port:
                self.port = free_port()
            self._write_config()
            if self._launch():
                break
            if not pick_port or "Address already in use" not in self._log_tail():
                raise RuntimeError(f"sshd exited: {self._log_tail()}")
            # Another process took the port between our probe and sshd's bind: try another.
        else:
            raise RuntimeError(f"sshd could not bind a port: {self._log_tail()}")
        if pick_port:
            self._write_known_hosts()
        _LIVE.add(self)

    def _launch(self) -> bool:
        start = self.log_file.stat().st_size if self.log_file.exists() else 0
        with self.log_file.open("ab") as log:
            # -D: stay in the foreground as our child, so we hold its pid; -E: log to a file.
            self._process = subprocess.Popen(  # noqa: S603 - fixed arguments
                [str(SSHD), "-D", "-f", str(self.config), "-E", str(self.log_file)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        ready = f"Server listening on {self.host} port {self.port}"
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            with self.log_file.open("rb") as log:
                log.seek(start)
                if ready in log.read().decode(errors="replace"):
                    return True
            if not self.running:
                self._process.wait()
                return False
            time.sleep(0.01)
        self.pause()
        raise RuntimeError(f"sshd did not start in {START_TIMEOUT} s: {self._log_tail()}")

    def _log_tail(self) -> str:
        try:
            return self.log_file.read_text(encoding="utf-8", errors="replace")[-2000:]
        except FileNotFoundError:
            return "(no log)"

    def drop_connections(self) -> None:
        """SIGKILL every per-connection sshd process: clients see the connection die."""
        if self._process is None:
            return
        deadline = time.monotonic() + 10
        # Leaves first, one level at a time, each waited for, so that each killed process is
        # reaped by its still-living parent. (The privsep monitor exits without reaping its
        # network child; that zombie is left to init, which reaps it.)
        while victims := _descendants(self._process.pid):
            children = _children_map()
            leaves = [pid for pid in victims if not children.get(pid)]
            for pid in leaves:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if not _wait_dead(leaves, 5.0) or time.monotonic() > deadline:
                raise RuntimeError(f"sshd connection processes {victims} would not exit")

    def pause(self) -> None:
        """Stop sshd and its connections but keep keys and files, so ``start()`` can resume."""
        process = self._process
        if process is None:
            return
        # Connection handlers call setsid(), so killing the listener (or its process group)
        # would orphan them: kill them by pid first.
        self.drop_connections()
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        self._process = None
        _LIVE.discard(self)

    def stop(self) -> None:
        """Stop sshd and every connection, and delete the chroot."""
        self.pause()
        shutil.rmtree(self.state, ignore_errors=True)

    def regenerate_host_key(self) -> None:
        """Restart on the same port with a NEW host key; known_hosts keeps pinning the old one."""
        self.pause()
        generate_key(self.host_key)
        self.start()

    def __enter__(self) -> SshdServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_sshd(workdir: Path) -> SshdServer:
    """A running sshd whose keys, config and log are in ``workdir``; call ``stop()`` after."""
    workdir.mkdir(parents=True, exist_ok=True)
    server = SshdServer(workdir)
    try:
        server.setup()
        server.start()
    except BaseException:
        server.stop()
        raise
    return server


@atexit.register
def _stop_leftovers() -> None:
    for server in list(_LIVE):
        server.stop()
