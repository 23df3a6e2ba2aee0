"""The Docker mode's JWT secret, for devtools.docker (``./run.sh --docker``).

JWT_SECRET from the environment when set, else the one kept in ``$DATA_DIR/secret`` (48 random
bytes, URL-safe base64, generated on first use with mode 600 and reused, so tokens survive a
redeploy). Standard library only: it runs with the machine's python3, before any .venv exists.
The secret is returned to the caller and never put into a message.
"""

from __future__ import annotations

import os
import secrets
import stat
import sys
from collections.abc import Mapping
from pathlib import Path

MIN_SECRET_BYTES = 32  # what the app requires in production


class SecretError(Exception):
    """The secret cannot be used; ``str()`` is the one line to print."""


def docker_secret(environ: Mapping[str, str], data_dir: Path) -> str:
    """JWT_SECRET, else the kept one (created and tightened to mode 600 as needed)."""
    secret = environ.get("JWT_SECRET") or _kept_secret(data_dir / "secret")
    if len(secret.encode()) < MIN_SECRET_BYTES:
        raise SecretError(
            f"JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes"
            " (the app refuses a shorter one in production)"
        )
    return secret


def _kept_secret(path: Path) -> str:
    if not path.is_file() or path.stat().st_size == 0:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".tmp")
        partial.unlink(missing_ok=True)
        # Created with mode 600: never readable by others, not even for a moment.
        descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as sink:
            sink.write(secrets.token_urlsafe(48) + "\n")
        partial.replace(path)
        _log(f"generated a JWT secret into {path} (mode 600); it is reused from now on")
    if stat.S_IMODE(path.stat().st_mode) & 0o077:
        path.chmod(0o600)
        _log(f"tightened {path} to mode 600")
    return path.read_text().strip()


def _log(message: str) -> None:
    print(f"run.sh: {message}", file=sys.stderr)
