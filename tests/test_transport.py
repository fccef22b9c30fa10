"""File transports against a real OpenSSH sshd (chrooted, key-only SFTP user) and file://."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paramiko
import pytest

from connectors.files.transport import (
    AuthError,
    FileTransport,
    HostKeyError,
    RemoteFile,
    SftpTransport,
    TransferError,
    Transport,
    open_transport,
)
from tests.conftest import requires, unavailable
from tests.servers.sshd import SshdServer, generate_key, sshd_available, start_sshd

SSHD_MISSING = sshd_available()
needs_sshd = requires(SSHD_MISSING)
MTIME = 1_767_225_600  # 2026-01-01T00:00:00Z
PAYLOAD = os.urandom(200_000)  # several 32 KiB chunks


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshdServer]:
    """One sshd for the module; tests that restart or re-key it use ``spare_sshd``."""
    if SSHD_MISSING:
        unavailable(SSHD_MISSING)
    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()


@pytest.fixture
def spare_sshd(tmp_path: Path) -> Iterator[SshdServer]:
    """A private sshd a test may pause, restart or re-key."""
    if SSHD_MISSING:
        unavailable(SSHD_MISSING)
    server = start_sshd(tmp_path / "spare")
    yield server
    server.stop()


def sftp_transport(server: SshdServer, *, subdir: str = "outbox", retries: int = 3,
                   backoff: float = 0.01, key_file: Path | None = None,
                   known_hosts: Path | None = None) -> SftpTransport:
    """A transport to ``server`` with test-friendly retry timing."""
    return SftpTransport(server.host, server.port, server.user, f"/{subdir}",
                         key_file or server.key_file, known_hosts or server.known_hosts,
                         timeout=5.0, retries=retries, backoff=backoff)


@dataclass
class Side:
    """A transport plus the local directory behind its folder, to plant and inspect files."""

    kind: str
    transport: Transport
    folder: Path


@pytest.fixture(params=["file", "sftp"])
def side(request: pytest.FixtureRequest,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Side]:
    """The same tests run against a local folder and against the real sshd."""
    if request.param == "file":
        folder = tmp_path_factory.mktemp("outbox")  # not in tmp_path: tests inspect that
        transport = open_transport(folder.as_uri(), {})
    else:
        server: SshdServer = request.getfixturevalue("sshd")
        folder = server.root / "outbox"
        for item in folder.iterdir():
            if item.is_dir() and not item.is_symlink():
                shutil.rmtree(item)
            else:
                item.unlink()
        transport = open_transport(server.url("outbox"), server.settings())
    with transport:
        yield Side(request.param, transport, folder)


def plant(folder: Path, name: str, data: bytes) -> Path:
    """Put a file straight onto the server's disk, with a known mtime."""
    path = folder / name
    path.write_bytes(data)
    os.utime(path, (MTIME, MTIME))
    return path


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class _Tamper:
    """Wraps a reader: after the first chunk, ``action`` changes the file on the server."""

    def __init__(self, reader: Any, action: Callable[[], None]) -> None:
        self.reader = reader
        self.action: Callable[[], None] | None = action

    def read(self, size: int = -1, /) -> bytes:
        data: bytes = self.reader.read(size)
        if self.action is not None:
            action, self.action = self.action, None
            action()
        return data


def tamper_during_read(monkeypatch: pytest.MonkeyPatch, transport: Transport,
                       action: Callable[[], None]) -> None:
    """Run ``action`` mid-download (hooks the private reader both transports share)."""
    original = transport._open_read  # type: ignore[attr-defined]

    @contextlib.contextmanager
    def opened(name: str, size: int) -> Iterator[_Tamper]:
        with original(name, size) as reader:
            yield _Tamper(reader, action)

    monkeypatch.setattr(transport, "_open_read", opened)


# -- round trips -------------------------------------------------------------------------------


def test_list_download_upload_round_trip(side: Side, tmp_path: Path) -> None:
    plant(side.folder, "b.csv", b"b,2\n")
    plant(side.folder, "a.csv", PAYLOAD)
    plant(side.folder, "c.txt", b"")
    plant(side.folder, "late.csv.part", b"half")
    plant(side.folder, ".hidden.csv", b"x")
    (side.folder / "archive").mkdir()
    (side.folder / "link.csv").symlink_to("a.csv")

    assert side.transport.list_files() == [RemoteFile("a.csv", len(PAYLOAD), MTIME),
                                           RemoteFile("b.csv", 4, MTIME),
                                           RemoteFile("c.txt", 0, MTIME)]
    assert [f.name for f in side.transport.list_files("*.csv")] == ["a.csv", "b.csv"]

    local = tmp_path / "local"
    local.mkdir()
    assert side.transport.download("a.csv", local / "a.csv") == sha256(PAYLOAD)
    assert (local / "a.csv").read_bytes() == PAYLOAD
    assert side.transport.download("c.txt", local / "c.txt") == sha256(b"")
    assert sorted(p.name for p in local.iterdir()) == ["a.csv", "c.txt"]  # no temp files

    upload = tmp_path / "payments.csv"
    upload.write_bytes(PAYLOAD[::-1])
    side.transport.upload(upload, "payments.csv")
    assert (side.folder / "payments.csv").read_bytes() == PAYLOAD[::-1]
    assert not (side.folder / "payments.csv.part").exists()
    assert "payments.csv" in [f.name for f in side.transport.list_files()]
    digest = side.transport.download("payments.csv", local / "back.csv")
    assert digest == sha256(PAYLOAD[::-1])


def test_upload_replaces_existing_file_atomically(side: Side, tmp_path: Path) -> None:
    old = plant(side.folder, "report.csv", b"old contents\n")
    old_inode = old.stat().st_ino
    src = tmp_path / "report.csv"
    src.write_bytes(b"new contents, longer than before\n")
    with old.open("rb") as reader_of_old:
        side.transport.upload(src, "report.csv")
        # A rename swaps the directory entry: a reader that had the old file open still sees
        # the old bytes, and nobody ever sees a half-written report.csv.
        assert reader_of_old.read() == b"old contents\n"
    assert old.read_bytes() == b"new contents, longer than before\n"
    assert old.stat().st_ino != old_inode
    assert sorted(p.name for p in side.folder.iterdir()) == ["report.csv"]


def test_download_over_existing_dest_and_moving_to_archive(side: Side, tmp_path: Path) -> None:
    plant(side.folder, "accounts.csv", b"1001,12.34\n")
    dest = tmp_path / "accounts.csv"
    dest.write_bytes(b"stale")
    side.transport.download("accounts.csv", dest)
    assert dest.read_bytes() == b"1001,12.34\n"

    side.transport.makedirs("archive/2026")
    side.transport.makedirs("archive/2026")  # idempotent
    side.transport.rename("accounts.csv", "archive/2026/accounts.csv")
    assert side.transport.list_files() == []
    assert (side.folder / "archive/2026/accounts.csv").read_bytes() == b"1001,12.34\n"

    plant(side.folder, "accounts.csv", b"newer\n")
    side.transport.rename("accounts.csv", "archive/2026/accounts.csv")  # replaces
    assert (side.folder / "archive/2026/accounts.csv").read_bytes() == b"newer\n"


def test_missing_file_and_bad_names(side: Side, tmp_path: Path) -> None:
    with pytest.raises(TransferError, match=r"nothing\.csv"):
        side.transport.download("nothing.csv", tmp_path / "x")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(TransferError, match=r"nothing\.csv"):
        side.transport.rename("nothing.csv", "other.csv")
    for bad in ("../escape.csv", "/etc/passwd", "a//b", "", "archive/../../x"):
        with pytest.raises(ValueError, match="bad file name"):
            side.transport.download(bad, tmp_path / "x")
        with pytest.raises(ValueError, match="bad file name"):
            side.transport.upload(tmp_path / "x", bad)


# -- verification of downloads -----------------------------------------------------------------


@pytest.mark.parametrize("change", ["grow", "truncate", "touch"])
def test_download_of_a_file_changing_during_transfer_fails(
        side: Side, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: str) -> None:
    path = plant(side.folder, "accounts.csv", PAYLOAD)

    def mutate() -> None:
        if change == "grow":
            with path.open("ab") as out:
                out.write(b"more rows\n" * 100)
        elif change == "truncate":
            os.truncate(path, 1000)
        else:  # same size, new mtime: rewritten in place
            os.utime(path, (MTIME + 60, MTIME + 60))

    tamper_during_read(monkeypatch, side.transport, mutate)
    dest = tmp_path / "accounts.csv"
    dest.write_bytes(b"previous good copy")
    with pytest.raises(TransferError, match=r"being written|changed during"):
        side.transport.download("accounts.csv", dest)
    assert dest.read_bytes() == b"previous good copy"  # untouched
    assert [p.name for p in tmp_path.iterdir()] == ["accounts.csv"]  # temp file removed


def test_download_refuses_a_file_changed_since_listing(side: Side, tmp_path: Path) -> None:
    plant(side.folder, "accounts.csv", b"1001,12.34\n")
    [listed] = side.transport.list_files()
    plant(side.folder, "accounts.csv", b"1001,12.34\n1002,5.00\n")
    with pytest.raises(TransferError, match="changed since it was listed"):
        side.transport.download("accounts.csv", tmp_path / "a.csv", expected=listed)
    assert not (tmp_path / "a.csv").exists()
    [relisted] = side.transport.list_files()
    side.transport.download("accounts.csv", tmp_path / "a.csv", expected=relisted)


# -- interrupted and retried uploads --------------------------------------------------------


def test_interrupted_local_upload_leaves_no_file(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "outbox"
    folder.mkdir()
    plant(folder, "payments.csv", b"yesterday\n")
    src = tmp_path / "src.csv"
    src.write_bytes(PAYLOAD)

    def disk_error(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", disk_error)  # the .part is written, then the disk fails
    with pytest.raises(TransferError, match="Input/output error"):
        FileTransport(folder).upload(src, "payments.csv")
    assert (folder / "payments.csv").read_bytes() == b"yesterday\n"
    assert [p.name for p in folder.iterdir()] == ["payments.csv"]


def _drop_connection_after_first_write(monkeypatch: pytest.MonkeyPatch, server: SshdServer,
                                       times: int) -> list[int]:
    """Kill the server side of the SSH connection mid-upload, on the first ``times`` uploads."""
    original = paramiko.SFTPFile.write
    drops: list[int] = []
    written: dict[int, int] = {}

    def write(self: paramiko.SFTPFile, data: Any) -> None:
        written[id(self)] = written.get(id(self), 0) + 1
        if written[id(self)] == 2 and len(drops) < times:  # one chunk already sent
            drops.append(1)
            server.drop_connections()
        original(self, data)

    monkeypatch.setattr(paramiko.SFTPFile, "write", write)
    return drops


@needs_sshd
def test_upload_cut_off_midway_leaves_no_file_under_final_name(
        sshd: SshdServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    outbox = sshd.root / "outbox"
    plant(outbox, "cut.csv", b"yesterday\n")
    src = tmp_path / "cut.csv"
    src.write_bytes(PAYLOAD)
    drops = _drop_connection_after_first_write(monkeypatch, sshd, times=1)
    with sftp_transport(sshd, retries=0) as transport, \
            pytest.raises(TransferError, match=r"upload cut\.csv"):
        transport.upload(src, "cut.csv")
    assert drops == [1]
    assert (outbox / "cut.csv").read_bytes() == b"yesterday\n"
    monkeypatch.undo()
    with sftp_transport(sshd) as transport:
        # The dead connection could not clean up its .part; it is invisible to readers and
        # the next upload of the same name overwrites it.
        assert "cut.csv.part" not in [f.name for f in transport.list_files("*")]
        transport.upload(src, "cut.csv")
    assert (outbox / "cut.csv").read_bytes() == PAYLOAD
    assert not (outbox / "cut.csv.part").exists()


@needs_sshd
def test_connection_dropped_midway_is_retried(
        sshd: SshdServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    src = tmp_path / "retried.csv"
    src.write_bytes(PAYLOAD)
    drops = _drop_connection_after_first_write(monkeypatch, sshd, times=1)
    with caplog.at_level(logging.WARNING, "connectors.files.transport"), \
            sftp_transport(sshd, retries=2) as transport:
        transport.upload(src, "retried.csv")
    assert drops == [1]
    assert (sshd.root / "outbox/retried.csv").read_bytes() == PAYLOAD
    assert [r.getMessage() for r in caplog.records if "retry 1/2" in r.getMessage()]


@needs_sshd
def test_server_coming_up_late_is_retried(spare_sshd: SshdServer,
                                          caplog: pytest.LogCaptureFixture) -> None:
    spare_sshd.pause()
    with sftp_transport(spare_sshd, retries=1, backoff=0.01) as transport, \
            pytest.raises(TransferError, match=r"list on sftp://.*failed"):
        transport.list_files()

    # The server comes up while the transport waits to retry: started from its first
    # "retry" warning, so the first try surely fails and a retry surely finds it up.
    class StartOnRetry(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            retries.append(record.getMessage())
            if not spare_sshd.running:
                spare_sshd.start()

    retries: list[str] = []
    plant(spare_sshd.root / "outbox", "late.csv", b"x")
    handler = StartOnRetry(logging.WARNING)
    logger = logging.getLogger("connectors.files.transport")
    logger.addHandler(handler)
    try:
        with caplog.at_level(logging.WARNING, "connectors.files.transport"), \
                sftp_transport(spare_sshd, retries=6, backoff=0.05) as transport:
            assert [f.name for f in transport.list_files()] == ["late.csv"]
    finally:
        logger.removeHandler(handler)
    assert len(retries) == 1 and "retry 1/6" in retries[0], retries


# -- host keys and authentication --------------------------------------------------------------


@needs_sshd
def test_changed_host_key_is_refused(spare_sshd: SshdServer,
                                     caplog: pytest.LogCaptureFixture) -> None:
    with sftp_transport(spare_sshd) as transport:
        transport.list_files()
    old = spare_sshd.host_fingerprint
    spare_sshd.regenerate_host_key()
    new = spare_sshd.host_fingerprint
    assert new != old
    with caplog.at_level(logging.WARNING, "connectors.files.transport"), \
            sftp_transport(spare_sshd, backoff=30) as transport, \
            pytest.raises(HostKeyError) as caught:
        transport.list_files()
    message = str(caught.value)
    assert "CHANGED" in message
    assert f"127.0.0.1 port {spare_sshd.port}" in message
    assert new in message and old in message
    assert not caplog.records  # refused at once, not retried


@needs_sshd
def test_unknown_host_is_refused(sshd: SshdServer, tmp_path: Path,
                                 caplog: pytest.LogCaptureFixture) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with caplog.at_level(logging.WARNING, "connectors.files.transport"), \
            sftp_transport(sshd, known_hosts=empty, backoff=30) as transport, \
            pytest.raises(HostKeyError) as caught:
        transport.list_files()
    message = str(caught.value)
    assert f"[127.0.0.1]:{sshd.port}" in message
    assert sshd.host_fingerprint in message
    assert "not in" in message
    assert not caplog.records


@needs_sshd
def test_wrong_client_key_is_an_auth_error(sshd: SshdServer, tmp_path: Path,
                                           caplog: pytest.LogCaptureFixture) -> None:
    stranger = generate_key(tmp_path / "stranger")
    with caplog.at_level(logging.WARNING, "connectors.files.transport"), \
            sftp_transport(sshd, key_file=stranger, backoff=30) as transport, \
            pytest.raises(AuthError, match=re.escape(f"ivrsftp@127.0.0.1:{sshd.port} refused key")):
        transport.list_files()
    assert not caplog.records

    not_a_key = tmp_path / "not_a_key"
    not_a_key.write_text("hello\n")
    with sftp_transport(sshd, key_file=not_a_key) as transport, \
            pytest.raises(AuthError, match="cannot load SSH private key"):
        transport.list_files()

    locked = tmp_path / "locked"
    generate_key(locked, passphrase="correct horse")
    with sftp_transport(sshd, key_file=locked) as transport, \
            pytest.raises(AuthError, match=r"cannot load SSH private key.*password-protected"):
        transport.list_files()


@needs_sshd
def test_chroot_confines_the_user(sshd: SshdServer, tmp_path: Path) -> None:
    with sftp_transport(sshd, subdir="") as transport:
        # The login sees only the chroot: "/" holds inbox and outbox, ".." goes nowhere.
        assert transport.list_files() == []
        transport.makedirs("inbox/archive")
    assert (sshd.root / "inbox/archive").is_dir()
    with sftp_transport(sshd, subdir="..") as transport:
        assert transport.list_files() == []


# -- URLs --------------------------------------------------------------------------------------


def test_open_transport_parses_urls(tmp_path: Path) -> None:
    key, hosts = tmp_path / "key", tmp_path / "known_hosts"
    key.write_text("k")
    hosts.write_text("")
    settings = {"IVR_SFTP_KEY_FILE": str(key), "IVR_SFTP_KNOWN_HOSTS": str(hosts)}

    sftp = open_transport("sftp://biller@sftp.example.com/inbound", settings)
    assert isinstance(sftp, SftpTransport)
    assert (sftp.host, sftp.port, sftp.username, sftp.path) == (
        "sftp.example.com", 22, "biller", "/inbound")
    assert (sftp.key_file, sftp.known_hosts) == (key, hosts)
    assert sftp.location == "sftp://biller@sftp.example.com:22/inbound"

    home = open_transport("sftp://biller@10.0.0.5:2222/~/out%20box", settings)
    assert isinstance(home, SftpTransport)
    assert (home.port, home.path) == (2222, "out box")
    root = open_transport("sftp://biller@[::1]:2222", settings)
    assert isinstance(root, SftpTransport)
    assert (root.host, root.path) == ("::1", "/")

    local = open_transport("file:///mnt/biller/outbox", {})
    assert isinstance(local, FileTransport)
    assert local.root == Path("/mnt/biller/outbox")


@pytest.mark.parametrize(("url", "message"), [
    ("ftp://biller@host/in", "expected sftp://"),
    ("/srv/outbox", "expected sftp://"),
    ("sftp://host/in", "no user"),
    ("sftp://biller@:22/in", "no host"),
    ("sftp://biller@host:99999/in", "bad transfer URL"),
    ("sftp://biller@host:port/in", "bad transfer URL"),
    ("sftp://biller:secret@host/in", "passwords are not supported"),
    ("sftp://biller@host/in?x=1", "no query"),
    ("file://server/share", "no host"),
    ("file:relative/path", "must be absolute"),
])
def test_open_transport_rejects_bad_urls(url: str, message: str, tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text("k")
    settings = {"IVR_SFTP_KEY_FILE": str(key), "IVR_SFTP_KNOWN_HOSTS": str(key)}
    with pytest.raises(ValueError, match=message) as caught:
        open_transport(url, settings)
    assert "secret" not in str(caught.value)


def test_open_transport_needs_key_and_known_hosts(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text("k")
    url = "sftp://biller@host/in"
    with pytest.raises(ValueError, match="IVR_SFTP_KEY_FILE must be set"):
        open_transport(url, {"IVR_SFTP_KNOWN_HOSTS": str(key)})
    with pytest.raises(ValueError, match="IVR_SFTP_KNOWN_HOSTS must be set"):
        open_transport(url, {"IVR_SFTP_KEY_FILE": str(key), "IVR_SFTP_KNOWN_HOSTS": " "})
    with pytest.raises(ValueError, match=r"IVR_SFTP_KNOWN_HOSTS=.*no such file"):
        open_transport(url, {"IVR_SFTP_KEY_FILE": str(key),
                             "IVR_SFTP_KNOWN_HOSTS": str(tmp_path / "missing")})
