"""Move biller files over SFTP (paramiko, pinned host key, key auth) or a local/mounted folder.

Both transports give the same guarantees: a download lands in ``dest`` only after its bytes
were counted against the file's size and the file did not change while being read; an upload
is written to ``NAME.part`` and renamed to ``NAME`` only once complete, so readers never see a
partial file under its final name. Listings skip ``*.part`` files and dotfiles for the same
reason (they are someone's unfinished writes).
"""

from __future__ import annotations

import base64
import contextlib
import fnmatch
import hashlib
import logging
import os
import posixpath
import stat
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Self, TypeVar
from urllib.parse import unquote, urlsplit

import paramiko

log = logging.getLogger(__name__)

CHUNK_SIZE = 32768  # paramiko's largest SFTP read/write request; fine for local files too
PART_SUFFIX = ".part"
KEY_FILE_SETTING = "IVR_SFTP_KEY_FILE"
KNOWN_HOSTS_SETTING = "IVR_SFTP_KNOWN_HOSTS"
T = TypeVar("T")


class TransferError(Exception):
    """A listing, download, upload or rename failed (after any retries)."""


class HostKeyError(TransferError):
    """The server's host key is not the pinned one (unknown or changed); never retried."""


class AuthError(TransferError):
    """The server refused our key, or the key could not be loaded; never retried."""


@dataclass(frozen=True)
class RemoteFile:
    """A regular file in the remote folder; ``mtime`` in whole seconds since the epoch."""

    name: str
    size: int
    mtime: int


class _Reader(Protocol):
    def read(self, size: int = ..., /) -> bytes: ...


class Transport(Protocol):
    """A folder of files on the biller's side; names are relative to that folder."""

    @property
    def location(self) -> str:
        """Where the folder is, for logs (no secrets)."""
        ...

    def list_files(self, pattern: str = "*") -> list[RemoteFile]:
        """Regular files matching ``pattern``, sorted by name, without ``*.part`` or dotfiles."""
        ...

    def download(self, name: str, dest: Path, *, expected: RemoteFile | None = None) -> str:
        """Copy ``name`` to ``dest`` verified and atomically; return the sha256 hex digest."""
        ...

    def upload(self, src: Path, name: str) -> None:
        """Write ``src`` to ``name + '.part'``, check its size, rename it over ``name``."""
        ...

    def rename(self, old: str, new: str) -> None:
        """Rename atomically, replacing ``new`` if it exists."""
        ...

    def makedirs(self, path: str) -> None:
        """Create a folder and its parents; no error if it exists."""
        ...

    def close(self) -> None:
        """Release the connection, if any."""
        ...

    def __enter__(self) -> Self: ...

    def __exit__(self, *exc: object) -> None: ...


def check_name(name: str) -> str:
    """Reject names that could escape the folder (absolute, ``..``, empty parts, NUL)."""
    parts = name.split("/")
    if (not name or name.startswith("/") or "\0" in name or "\\" in name
            or any(part in ("", ".", "..") for part in parts)):
        raise ValueError(f"bad file name {name!r}: must be a relative path inside the folder")
    return name


def _is_listed(name: str, pattern: str) -> bool:
    return (not name.startswith(".") and not name.endswith(PART_SUFFIX)
            and fnmatch.fnmatchcase(name, pattern))


def _fsync_dir(path: Path) -> None:
    # Makes the rename itself durable: without it a crash can forget the new directory entry.
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _BaseTransport:
    """The download/upload algorithms; subclasses supply the file primitives."""

    location = ""

    def _stat(self, name: str) -> tuple[RemoteFile, object]:
        """The file's listing entry, plus the finest change token the backend offers."""
        raise NotImplementedError

    def _open_read(self, name: str, size: int) -> contextlib.AbstractContextManager[_Reader]:
        raise NotImplementedError

    def _download_once(self, name: str, dest: Path, expected: RemoteFile | None) -> str:
        before, token = self._stat(name)
        if expected is not None and (expected.size, expected.mtime) != (before.size,
                                                                          before.mtime):
            raise TransferError(
                f"{self.location}/{name} changed since it was listed (size {expected.size} -> "
                f"{before.size}, mtime {expected.mtime} -> {before.mtime}); not downloaded")
        digest = hashlib.sha256()
        count = 0
        fd, temporary = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.",
                                         suffix=PART_SUFFIX)
        try:
            with os.fdopen(fd, "wb") as out, self._open_read(name, before.size) as source:
                # Read to EOF rather than to the listed size, so a file that grew is noticed.
                while chunk := source.read(CHUNK_SIZE):
                    digest.update(chunk)
                    out.write(chunk)
                    count += len(chunk)
                out.flush()
                os.fsync(out.fileno())
            after, token_after = self._stat(name)
            if count != before.size:
                raise TransferError(
                    f"{self.location}/{name}: read {count} bytes but it was {before.size} bytes "
                    f"(now {after.size}); it is being written or was truncated")
            if token_after != token:
                raise TransferError(
                    f"{self.location}/{name} changed during the download (size {before.size} "
                    f"-> {after.size}, mtime {before.mtime} -> {after.mtime})")
            os.replace(temporary, dest)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise
        _fsync_dir(dest.parent)
        return digest.hexdigest()


class FileTransport(_BaseTransport):
    """A local or mounted folder (``file:///path``)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.location = root.as_uri() if root.is_absolute() else str(root)

    def _path(self, name: str) -> Path:
        return self.root / check_name(name)

    def list_files(self, pattern: str = "*") -> list[RemoteFile]:
        """Regular files matching ``pattern``, sorted by name, without ``*.part`` or dotfiles."""
        try:
            with os.scandir(self.root) as entries:
                found = [RemoteFile(entry.name, info.st_size, int(info.st_mtime))
                         for entry in entries
                         if _is_listed(entry.name, pattern)
                         and stat.S_ISREG((info := entry.stat(follow_symlinks=False)).st_mode)]
        except OSError as exc:
            raise TransferError(f"cannot list {self.location}: {exc}") from exc
        return sorted(found, key=lambda item: item.name)

    def _stat(self, name: str) -> tuple[RemoteFile, object]:
        info = os.stat(self._path(name), follow_symlinks=False)
        if not stat.S_ISREG(info.st_mode):
            raise TransferError(f"{self.location}/{name} is not a regular file")
        # Nanosecond mtime and inode catch a same-size rewrite within the same second.
        return (RemoteFile(name, info.st_size, int(info.st_mtime)),
                (info.st_size, info.st_mtime_ns, info.st_ino))

    def _open_read(self, name: str, size: int) -> contextlib.AbstractContextManager[_Reader]:
        return open(self._path(name), "rb")  # the caller's with-block closes it

    def download(self, name: str, dest: Path, *, expected: RemoteFile | None = None) -> str:
        """Copy ``name`` to ``dest`` verified and atomically; return the sha256 hex digest."""
        check_name(name)
        try:
            return self._download_once(name, dest, expected)
        except OSError as exc:
            raise TransferError(f"cannot download {self.location}/{name}: {exc}") from exc

    def upload(self, src: Path, name: str) -> None:
        """Write ``src`` to ``name + '.part'``, check its size, ``os.replace`` it over ``name``."""
        target = self._path(name)
        part = target.with_name(target.name + PART_SUFFIX)
        try:
            try:
                with src.open("rb") as source, part.open("wb") as out:
                    sent = 0
                    while chunk := source.read(CHUNK_SIZE):
                        out.write(chunk)
                        sent += len(chunk)
                    out.flush()
                    os.fsync(out.fileno())
                written = part.stat().st_size
                if written != sent:
                    raise TransferError(f"{self.location}/{part.name} has {written} bytes, "
                                        f"sent {sent}")
                os.replace(part, target)
            except BaseException:
                with contextlib.suppress(OSError):
                    part.unlink()
                raise
            _fsync_dir(target.parent)
        except OSError as exc:
            raise TransferError(f"cannot upload {src} to {self.location}/{name}: {exc}") from exc

    def rename(self, old: str, new: str) -> None:
        """Rename atomically (``os.replace``), replacing ``new`` if it exists."""
        source, target = self._path(old), self._path(new)
        try:
            os.replace(source, target)
            _fsync_dir(target.parent)
        except OSError as exc:
            raise TransferError(f"cannot rename {self.location}/{old} to {new}: {exc}") from exc

    def makedirs(self, path: str) -> None:
        """Create a folder and its parents; no error if it exists."""
        try:
            self._path(path).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TransferError(f"cannot create {self.location}/{path}: {exc}") from exc

    def close(self) -> None:
        """Nothing to release."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def key_fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH's ``SHA256:…`` fingerprint, as ``ssh-keygen -l`` prints it."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


class _PinnedHostKeys(paramiko.MissingHostKeyPolicy):
    """Refuse any host not in known_hosts, naming the key it offered (RejectPolicy's text
    does not, and the operator needs the fingerprint to check with the biller)."""

    def __init__(self, known_hosts: Path) -> None:
        self.known_hosts = known_hosts

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str,
                         key: paramiko.PKey) -> None:
        raise HostKeyError(
            f"host {hostname} is not in {self.known_hosts}: it offered {key.get_name()} key "
            f"{key_fingerprint(key)}; refusing to connect. Check that fingerprint with the "
            f"server's owner, then add the key to {self.known_hosts}")


class SftpTransport(_BaseTransport):
    """An SFTP folder: one SSH connection, opened lazily and reopened after transient errors."""

    def __init__(self, host: str, port: int, username: str, path: str, key_file: Path,
                 known_hosts: Path, timeout: float = 15.0, retries: int = 3,
                 backoff: float = 1.0) -> None:
        self.host = host
        self.port = port
        self.username = username
        self.path = path
        self.key_file = key_file
        self.known_hosts = known_hosts
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        # A relative path is relative to the login directory, written "/~/" in sftp URLs.
        shown = path if path.startswith("/") else "/~/" + path
        self.location = f"sftp://{username}@{host}:{port}{shown}"
        self._client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None

    # -- connection ---------------------------------------------------------------------------

    def _connect(self) -> paramiko.SFTPClient:
        if self._sftp is not None:
            return self._sftp
        try:
            key = paramiko.PKey.from_path(self.key_file)
        except Exception as exc:
            # Depending on the format paramiko raises OSError, ValueError, TypeError (for a
            # passphrase), UnknownKeyType or SSHException: all mean "fix the key file".
            raise AuthError(f"cannot load SSH private key {self.key_file}: {exc!r} (an "
                            f"unencrypted OpenSSH or PEM key is required)") from exc
        client = paramiko.SSHClient()
        try:
            # Only the configured file: never ~/.ssh/known_hosts, never auto-add.
            client.load_host_keys(str(self.known_hosts))
        except OSError as exc:
            raise HostKeyError(f"cannot read known_hosts {self.known_hosts}: {exc}") from exc
        client.set_missing_host_key_policy(_PinnedHostKeys(self.known_hosts))
        try:
            client.connect(self.host, self.port, username=self.username, pkey=key,
                           look_for_keys=False, allow_agent=False, timeout=self.timeout,
                           banner_timeout=self.timeout, auth_timeout=self.timeout,
                           channel_timeout=self.timeout)
            sftp = client.open_sftp()
            channel = sftp.get_channel()
            if channel is not None:
                # Without a channel timeout a silently dead network blocks a read forever.
                channel.settimeout(self.timeout)
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise HostKeyError(
                f"host key for {self.host} port {self.port} has CHANGED: it offered "
                f"{exc.key.get_name()} key {key_fingerprint(exc.key)} but {self.known_hosts} "
                f"pins {exc.expected_key.get_name()} key {key_fingerprint(exc.expected_key)}; "
                f"refusing to connect (the server was rebuilt, or someone is intercepting). "
                f"Confirm the new fingerprint with the server's owner before updating "
                f"{self.known_hosts}") from exc
        except paramiko.AuthenticationException as exc:
            client.close()
            raise AuthError(
                f"{self.username}@{self.host}:{self.port} refused key {self.key_file} "
                f"({key_fingerprint(key)}): {exc}") from exc
        except BaseException:
            client.close()
            raise
        self._client, self._sftp = client, sftp
        return sftp

    def _alive(self) -> bool:
        # A dying connection closes the channel before the transport notices, and the channel
        # then raises a plain OSError("Socket is closed"): check both.
        transport = self._client.get_transport() if self._client is not None else None
        channel = self._sftp.get_channel() if self._sftp is not None else None
        return (transport is not None and transport.is_active()
                and channel is not None and not channel.closed)

    def close(self) -> None:
        """Close the SFTP session and the SSH connection."""
        sftp, client = self._sftp, self._client
        self._sftp = self._client = None
        if sftp is not None:
            with contextlib.suppress(Exception):
                sftp.close()
        if client is not None:
            client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _retrying(self, what: str, operation: Callable[[paramiko.SFTPClient, int], T]) -> T:
        """Run ``operation(sftp, attempt)``, reconnecting and retrying transient failures."""
        attempt = 0
        while True:
            attempt += 1
            try:
                return operation(self._connect(), attempt)
            except TransferError:
                # Host key, auth and verification failures: retrying cannot fix them.
                raise
            except (OSError, EOFError, paramiko.SSHException) as exc:
                # The server answered with an SFTP error (no such file, permission denied…)
                # over a healthy connection: permanent. A dead connection, a timeout, a
                # refused connect or an SSH protocol error: transient.
                permanent = (self._alive() and isinstance(exc, OSError)
                             and not isinstance(exc, TimeoutError))
                if not permanent:
                    self.close()
                if permanent or attempt > self.retries:
                    raise TransferError(f"{what} on {self.location} failed: "
                                        f"{exc.__class__.__name__}: {exc}") from exc
                delay = self.backoff * 2 ** (attempt - 1)
                log.warning("%s on %s failed (%s: %s); retry %d/%d in %.1f s", what,
                            self.location, exc.__class__.__name__, exc, attempt, self.retries,
                            delay)
                time.sleep(delay)
            except BaseException:
                # E.g. KeyboardInterrupt mid-request: the SFTP session may be out of step.
                self.close()
                raise

    def _remote(self, name: str) -> str:
        return posixpath.join(self.path, check_name(name))

    # -- primitives used by the shared download ---------------------------------------------

    def _stat(self, name: str) -> tuple[RemoteFile, object]:
        attrs = self._connect().lstat(self._remote(name))  # as listdir_attr: symlinks not followed
        if attrs.st_mode is None or not stat.S_ISREG(attrs.st_mode):
            raise TransferError(f"{self.location}/{name} is not a regular file")
        entry = RemoteFile(name, attrs.st_size or 0, attrs.st_mtime or 0)
        return entry, (entry.size, entry.mtime)

    @contextlib.contextmanager
    def _open_read(self, name: str, size: int) -> Iterator[_Reader]:
        with self._connect().open(self._remote(name), "rb") as remote:
            # Pipelined reads of the listed size: without them every 32 KiB costs a round trip.
            remote.prefetch(size)
            yield remote

    # -- operations ----------------------------------------------------------------------------

    def list_files(self, pattern: str = "*") -> list[RemoteFile]:
        """Regular files matching ``pattern``, sorted by name, without ``*.part`` or dotfiles."""
        def run(sftp: paramiko.SFTPClient, attempt: int) -> list[RemoteFile]:
            return sorted(
                (RemoteFile(item.filename, item.st_size or 0, item.st_mtime or 0)
                 for item in sftp.listdir_attr(self.path or ".")
                 if _is_listed(item.filename, pattern)
                 and item.st_mode is not None and stat.S_ISREG(item.st_mode)),
                key=lambda entry: entry.name)
        return self._retrying("list", run)

    def download(self, name: str, dest: Path, *, expected: RemoteFile | None = None) -> str:
        """Copy ``name`` to ``dest`` verified and atomically; return the sha256 hex digest."""
        check_name(name)
        return self._retrying(f"download {name}",
                              lambda sftp, attempt: self._download_once(name, dest, expected))

    def upload(self, src: Path, name: str) -> None:
        """Write ``src`` to ``name + '.part'``, check its size, ``posix_rename`` it over ``name``.

        A retry rewrites the ``.part`` file from the start, so it is always safe.
        """
        target = self._remote(name)
        part = target + PART_SUFFIX

        def run(sftp: paramiko.SFTPClient, attempt: int) -> None:
            try:
                sent = 0
                with src.open("rb") as source, sftp.open(part, "wb") as remote:
                    # Pipelined: don't wait for each write's ack; close() collects them all.
                    remote.set_pipelined(True)
                    while chunk := source.read(CHUNK_SIZE):
                        remote.write(chunk)
                        sent += len(chunk)
                written = sftp.stat(part).st_size
                if written != sent:
                    raise TransferError(f"{self.location}/{name}{PART_SUFFIX} has {written} "
                                        f"bytes, sent {sent}")
                self._posix_rename(sftp, part, target)
            except BaseException:
                if self._alive():  # else the next attempt overwrites it
                    with contextlib.suppress(OSError, paramiko.SSHException, EOFError):
                        sftp.remove(part)
                raise

        self._retrying(f"upload {name}", run)

    def _posix_rename(self, sftp: paramiko.SFTPClient, old: str, new: str) -> None:
        try:
            sftp.posix_rename(old, new)
        except OSError as exc:
            if exc.errno is None and "unsupported" in str(exc).lower():
                # Plain SFTP rename refuses to replace an existing file, and remove-then-rename
                # is not atomic, so we don't pretend.
                raise TransferError(
                    f"{self.location} does not support posix-rename@openssh.com; cannot "
                    f"replace {new} atomically") from exc
            raise

    def rename(self, old: str, new: str) -> None:
        """Rename atomically (``posix_rename``), replacing ``new`` if it exists."""
        source, target = self._remote(old), self._remote(new)

        def run(sftp: paramiko.SFTPClient, attempt: int) -> None:
            try:
                self._posix_rename(sftp, source, target)
            except FileNotFoundError:
                # A retry after a lost reply: the first attempt may have renamed it already.
                if attempt > 1 and _exists(sftp, target):
                    return
                raise

        self._retrying(f"rename {old} to {new}", run)

    def makedirs(self, path: str) -> None:
        """Create a folder and its parents; no error if it exists."""
        check_name(path)

        def run(sftp: paramiko.SFTPClient, attempt: int) -> None:
            current = self.path
            for part in path.split("/"):
                current = posixpath.join(current, part) if current else part
                if _exists(sftp, current):
                    continue
                try:
                    sftp.mkdir(current)
                except OSError:
                    if not _exists(sftp, current):  # else someone else just created it
                        raise

        self._retrying(f"makedirs {path}", run)


def _exists(sftp: paramiko.SFTPClient, path: str) -> bool:
    try:
        sftp.stat(path)
    except FileNotFoundError:
        return False
    return True


def open_transport(url: str, settings: Mapping[str, str]) -> Transport:
    """A transport for ``sftp://user@host[:port]/path`` or ``file:///abs/path``.

    SFTP needs ``IVR_SFTP_KEY_FILE`` and ``IVR_SFTP_KNOWN_HOSTS`` in ``settings``. Raises
    ValueError, naming the problem, for a bad URL or missing settings.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"bad transfer URL {url!r}: {exc}") from exc
    if parts.query or parts.fragment:
        raise ValueError(f"bad transfer URL {url!r}: no query or fragment allowed")
    path = unquote(parts.path)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ValueError(f"bad file URL {url!r}: use file:///absolute/path (no host)")
        if not path.startswith("/") or "\0" in path:
            raise ValueError(f"bad file URL {url!r}: the path must be absolute")
        return FileTransport(Path(path))
    if parts.scheme != "sftp":
        raise ValueError(f"bad transfer URL {url!r}: expected sftp://user@host:port/path "
                         f"or file:///path")
    if not parts.hostname:
        raise ValueError(f"bad SFTP URL {url!r}: no host")
    if not parts.username:
        raise ValueError(f"bad SFTP URL {url!r}: no user (sftp://user@host/path)")
    if parts.password is not None:
        raise ValueError(f"bad SFTP URL: passwords are not supported, use key authentication "
                         f"({KEY_FILE_SETTING})")
    if "\0" in path:
        raise ValueError(f"bad SFTP URL {url!r}: NUL in path")
    # As in the sftp URI draft: "/~/dir" is relative to the login directory, "/dir" absolute.
    if path == "/~" or path.startswith("/~/"):
        path = path[3:]
    elif not path:
        path = "/"
    files: dict[str, Path] = {}
    for setting in (KEY_FILE_SETTING, KNOWN_HOSTS_SETTING):
        value = settings.get(setting, "").strip()
        if not value:
            raise ValueError(f"{setting} must be set for {parts.scheme}:// transfers")
        files[setting] = Path(value).expanduser()
        if not files[setting].is_file():
            raise ValueError(f"{setting}={value}: no such file")
    return SftpTransport(parts.hostname, port or 22, unquote(parts.username), path,
                         files[KEY_FILE_SETTING], files[KNOWN_HOSTS_SETTING])

