"""Random secrets kept in the workspace's ``secrets/`` folder (mode 0600, folder 0700).

One helper for every generated key (the cookie-signing key, the API-key hashing key): created on
first use by whichever process gets there first; several workers may start at once, so the key is
written to a private temporary file and linked into place, and a reader never sees a half-written
key and exactly one key wins.
"""

from __future__ import annotations

import logging
import os
import secrets
import stat
import uuid
from pathlib import Path

from models.errors import ConfigError

logger = logging.getLogger(__name__)

#: Shortest key accepted from a secret file (32 random bytes are written as 64 hex characters).
MIN_SECRET_LENGTH = 32


def workspace_secret(secrets_dir: Path, name: str, setting: str) -> str:
    """The secret in ``secrets_dir/name``, created (32 random bytes, hex) when missing.

    ``setting`` names the variable that can replace the file, for the error of a short key."""
    path = secrets_dir / name
    try:
        return _read_key(path, setting)
    except FileNotFoundError:
        pass
    secrets_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = secrets_dir / f".{name}.{os.getpid()}.{uuid.uuid4().hex}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(secrets.token_hex(32))
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp, path)  # atomic; fails if another worker's key is there already
            logger.info("created the secret %s", path)
        except FileExistsError:
            pass
    finally:
        tmp.unlink(missing_ok=True)
    return _read_key(path, setting)


def _read_key(path: Path, setting: str) -> str:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:  # readable by others: make it private again, and say so
        logger.warning("%s had mode %o; set to 600", path, mode)
        path.chmod(0o600)
    key = path.read_text(encoding="ascii").strip()
    if len(key) < MIN_SECRET_LENGTH:
        raise ConfigError(
            f"{path} holds a key of {len(key)} characters; at least {MIN_SECRET_LENGTH} are "
            f"needed: delete the file to have a new one generated, or set {setting}"
        )
    return key
