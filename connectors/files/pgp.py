"""Optional PGP for billers that require it: encrypt outbound files, decrypt inbound ones.

A thin wrapper on python-gnupg, which drives the real ``gpg`` binary, always with an explicit
GnuPG home so the line's keys never mix with anyone's personal keyring. Files are streamed
through gpg (file objects in, ``--output`` to a file), never read into memory, and written
to a temporary name beside ``dest`` that is renamed into place only on success, so a failed
run never leaves a half-written or unverified file under the final name.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gnupg  # type: ignore[import-untyped]

__all__ = ["PgpError", "decrypt_file", "encrypt_file"]

# v4 keys have 40 hex digits, v5/v6 keys 64. A short key id or an e-mail address could match
# a different key someone imported later; a full fingerprint names exactly one.
_FINGERPRINT_RE = re.compile(r"[0-9A-F]{40}|[0-9A-F]{64}")
_PART_SUFFIX = ".part"

# gpg's status words (as python-gnupg reports them) in plain terms.
_DECRYPT_REASONS = {
    "no secret key": "no secret key in the GnuPG home can decrypt this file",
    "no data was provided": "the file is not PGP-encrypted data",
    "no valid openpgp data found": "the file is not PGP-encrypted data",
    "need passphrase": "the secret key needs a passphrase",
    "bad passphrase": "the passphrase is wrong",
    "decryption failed": "decryption failed (wrong key or passphrase, or damaged data)",
    "decryption incomplete": "decryption failed (damaged or truncated data)",
}


class PgpError(Exception):
    """Encryption or decryption failed; the message says why in plain terms."""


def _gpg(gnupghome: Path) -> Any:
    if not gnupghome.is_dir():
        raise PgpError(f"GnuPG home {gnupghome} is not a directory")
    try:
        return gnupg.GPG(gnupghome=str(gnupghome))
    except (OSError, ValueError) as exc:
        raise PgpError(f"cannot run gpg: {exc}") from None


def _fingerprint(raw: str) -> str:
    fingerprint = raw.replace(" ", "").upper()
    if not _FINGERPRINT_RE.fullmatch(fingerprint):
        raise PgpError(
            f"recipient must be a full key fingerprint (40 or 64 hex digits), not {raw!r}"
        )
    return fingerprint


@contextlib.contextmanager
def _staged(dest: Path) -> Iterator[Path]:
    """A temporary file beside ``dest``, renamed onto it if the block succeeds."""
    fd, name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=_PART_SUFFIX)
    os.close(fd)
    temporary = Path(name)
    try:
        yield temporary
        temporary.replace(dest)
    finally:
        temporary.unlink(missing_ok=True)


def _gpg_detail(result: Any) -> str:
    """The last line gpg printed that is not a machine status line, for context."""
    lines = [
        line.strip()
        for line in str(getattr(result, "stderr", "") or "").splitlines()
        if line.strip() and not line.startswith("[GNUPG:]")
    ]
    return lines[-1] if lines else ""


def encrypt_file(
    src: Path,
    dest: Path,
    recipient_fingerprint: str,
    gnupghome: Path,
    *,
    armor: bool = False,
) -> None:
    """Encrypt ``src`` to ``dest`` for the one key with ``recipient_fingerprint``.

    The key must already be imported in ``gnupghome``. It is trusted for this call without
    being certified in the keyring (gpg's ``always`` trust model): the biller's fingerprint
    in our configuration is the trust decision. ``--no-encrypt-to`` keeps a gpg.conf from
    adding recipients that trust would then extend to. ``armor`` writes ASCII text
    (``-----BEGIN PGP MESSAGE-----``) instead of binary.
    """
    fingerprint = _fingerprint(recipient_fingerprint)
    gpg = _gpg(gnupghome)
    keys = gpg.list_keys(keys=[fingerprint])
    if not keys:
        raise PgpError(f"no public key with fingerprint {fingerprint} in {gnupghome}")
    with src.open("rb") as source, _staged(dest) as temporary:
        result = gpg.encrypt_file(
            source,
            recipients=[fingerprint],
            armor=armor,
            always_trust=True,
            output=str(temporary),
            extra_args=["--no-encrypt-to"],
        )
        if not result.ok:
            status = str(result.status or "gpg failed")
            detail = _gpg_detail(result)
            raise PgpError(
                f"encrypting {src.name} for {fingerprint} failed: {status}"
                + (f" ({detail})" if detail else "")
            )


def decrypt_file(src: Path, dest: Path, gnupghome: Path, passphrase: str | None = None) -> None:
    """Decrypt ``src`` to ``dest`` with a secret key in ``gnupghome``.

    ``passphrase`` unlocks a protected key; without one gpg is told never to prompt, so a
    protected key fails at once instead of waiting for a person. ``dest`` appears only when
    gpg reports the data decrypted and intact.
    """
    gpg = _gpg(gnupghome)
    # With a passphrase python-gnupg feeds it through loopback pinentry itself.
    extra_args = [] if passphrase is not None else ["--pinentry-mode", "error"]
    with src.open("rb") as source, _staged(dest) as temporary:
        try:
            result = gpg.decrypt_file(
                source, passphrase=passphrase, output=str(temporary), extra_args=extra_args
            )
        except ValueError as exc:
            # python-gnupg refuses passphrases with line breaks before running gpg.
            raise PgpError(f"decrypting {src.name} failed: {exc}") from None
        if not result.ok:
            status = str(result.status or "gpg failed")
            reason = _DECRYPT_REASONS.get(status, status)
            detail = _gpg_detail(result)
            raise PgpError(
                f"decrypting {src.name} failed: {reason}" + (f" ({detail})" if detail else "")
            )
