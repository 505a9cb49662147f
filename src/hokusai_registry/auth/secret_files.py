"""Secrets kept in files: the KEK passphrase MLflow encrypts with and the key gateways sign MLflow
requests with. Only a default file (in the data directory) is ever created, once, with a random
value: a named file that is missing is a mistake (a secret not mounted, a typo), and a new value there
would make what was stored or signed with the old one unreadable."""

from __future__ import annotations

import logging
import os
import secrets
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)


class SecretFileError(Exception):
    """The file cannot be read, is empty or cannot be created; the message names the setting."""


def read_secret(path: Path, *, setting: str, create: bool, purpose: str) -> str:
    """The secret in `path`, created first when `create` and missing."""
    if create and not path.exists() and _create(path, setting):
        log.warning("Created %s: %s. Keep it with the data directory.", path, purpose)
    try:
        secret = path.read_text().strip()
    except OSError as exc:
        raise SecretFileError(f"{setting} ({path}) cannot be read: {exc.strerror}") from None
    if not secret:
        raise SecretFileError(f"{setting} ({path}) is empty")
    return secret


def _create(path: Path, setting: str) -> bool:
    """Written whole beside it, then linked into place: a concurrent start or a crash never leaves an
    empty or half-written file, and a file that appeared meanwhile is kept (False)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, draft = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mode 0600
        try:
            with os.fdopen(descriptor, "w") as created:
                created.write(secrets.token_urlsafe(32) + "\n")
                created.flush()
                os.fsync(created.fileno())
            os.link(draft, path)
        finally:
            os.unlink(draft)
    except FileExistsError:
        return False
    except OSError as exc:
        raise SecretFileError(f"{path} ({setting}) cannot be created: {exc.strerror}") from None
    return True
