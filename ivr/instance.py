"""What a line keeps in its instance folder when no setting says otherwise: the embedded
SQLite database and the keys made on first use. No Flask here: the web app, the CLI and
the demo all ask it where those files are."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

DATABASE_FILE = "ivr.sqlite3"


def default_database_url(instance: Path | str, file: str = DATABASE_FILE) -> str:
    """The embedded default: a SQLite file (``ivr.sqlite3`` unless named) in the instance
    folder."""
    return f"sqlite:///{Path(instance) / file}"


def instance_pin_key(instance: Path) -> str:
    """The PIN key kept in the instance folder, created on first use (one machine only:
    several machines must share IVR_PIN_KEY)."""
    return _instance_key(instance, "pin.key")


def instance_secret_key(instance: Path) -> str:
    """The ops console's session key kept in the instance folder, created on first use
    (one machine only: several machines must share IVR_SECRET_KEY)."""
    return _instance_key(instance, "secret.key")


def _instance_key(instance: Path, name: str) -> str:
    path = instance / name
    if path.exists():
        return path.read_text(encoding="ascii").strip()
    instance.mkdir(parents=True, exist_ok=True)
    # Written aside and linked into place: workers starting together all end up with the
    # one key that won, never with a half-written file or a key of their own.
    temp = instance / f".{name}.{secrets.token_hex(4)}"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as stream:
        stream.write(secrets.token_hex(32))
    try:
        os.link(temp, path)
    except FileExistsError:
        pass
    except OSError:  # a file system without hard links: last writer wins, still whole
        if not path.exists():
            os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)
    return path.read_text(encoding="ascii").strip()
