"""Lines a logger of the gateway emits in this process, formatted by the gateway's own formatter (as its
log file or audit file would get them)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator


class Lines(logging.Handler):
    def __init__(self, formatter: logging.Formatter) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(formatter)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    def text(self) -> str:
        return "\n".join(self.lines)


@contextlib.contextmanager
def captured(name: str, formatter: logging.Formatter, level: int = logging.INFO) -> Iterator[Lines]:
    """Every line logger `name` emits at `level` or above while the block runs. The handler sits on that
    logger itself, so it sees the lines whether or not they propagate (the audit channel does not once
    `configure_audit` has run in this process)."""
    handler = Lines(formatter)
    logger = logging.getLogger(name)
    saved = logger.level
    logger.setLevel(level)
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved)
