"""Where the commands find the MLflow of a running `serve`: `DATA_DIR/mlflow-url`, written when its MLflow
starts and removed when `serve` stops, so `teams` and `grants` on the same data directory need no flags.
It holds a loopback URL and nothing secret."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

FILE_NAME = "mlflow-url"


def path(data_dir: Path) -> Path:
    return data_dir.resolve() / FILE_NAME


def write(data_dir: Path, url: str) -> Path:
    """Written whole, then moved into place: a reader never sees half a URL."""
    target = path(data_dir)
    partial = target.with_name(f".{FILE_NAME}.{os.getpid()}")
    partial.write_text(url + "\n", encoding="utf-8")
    partial.replace(target)
    return target


def remove(written: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        written.unlink()


def read(data_dir: Path) -> str | None:
    try:
        url = path(data_dir).read_text(encoding="utf-8").strip()
    except (FileNotFoundError, NotADirectoryError):
        return None
    return url if url.startswith(("http://", "https://")) else None
