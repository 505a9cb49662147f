"""Logging (text or JSON lines, a debug mode that really changes the level) and access lines.

Every line passes through `redact` on its way out, so a key or credential that reaches a message by
accident is still never written.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import datetime as dt
import json
import logging
import os
import sys
import time
from typing import Any

from hokusai_registry.core.record import RequestRecord
from hokusai_registry.core.redaction import redact

# A channel name that log readers filter on, not a module path: it stays when modules move.
ACCESS_LOGGER = "hokusai_registry.access"


class TextFormatter(logging.Formatter):
    """`time level logger: message`, the time as logging's default shows it (local, milliseconds)."""

    def line(self, created: float, level: str, name: str, message: str, fields: dict[str, Any] | None) -> str:
        return redact(f"{_local_time(created)} {level} {name}: {message}")

    def format(self, record: logging.LogRecord) -> str:
        text = self.line(record.created, record.levelname, record.name, record.getMessage(), None)
        if record.exc_info:
            text += "\n" + redact(self.formatException(record.exc_info))
        if record.stack_info:
            text += "\n" + redact(self.formatStack(record.stack_info))
        return text


class JsonFormatter(logging.Formatter):
    """One JSON object per line; access lines carry their fields (`extra={"fields": {...}}`)."""

    def line(self, created: float, level: str, name: str, message: str, fields: dict[str, Any] | None) -> str:
        line: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": level.lower(),
            "logger": name,
            "message": message,
        }
        if fields:
            line.update(fields)
        return redact(json.dumps(line, default=str))

    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", None)
        line_fields = dict(fields) if isinstance(fields, dict) else {}
        if record.exc_info:
            line_fields["exception"] = self.formatException(record.exc_info)
        return self.line(record.created, record.levelname, record.name, record.getMessage(), line_fields)


# The seconds part of the last local time formatted: one strftime per second, not one per line.
_second: tuple[int, str] = (-1, "")


def _local_time(created: float) -> str:
    global _second
    whole = int(created)
    if _second[0] != whole:
        _second = (whole, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(whole)))
    return f"{_second[1]},{int((created - whole) * 1000):03d}"


class BatchingStderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to standard error in batches: a write per log line would be a system call per request.
    `flush_now` runs every FLUSH_INTERVAL seconds while the gateway serves (see `flush_periodically`),
    at exit, and at once after any warning or error."""

    def __init__(self) -> None:
        # The handler owns this stream for the life of the process.
        fd = os.dup(sys.stderr.fileno())
        super().__init__(open(fd, "w", buffering=1 << 16, encoding="utf-8", errors="replace"))  # noqa: SIM115
        atexit.register(self.flush_now)
        _batching.append(self)

    def emit(self, record: logging.LogRecord) -> None:
        # Called under the handler's lock by Handler.handle; no flush per line (see flush_now).
        try:
            self.stream.write(self.format(record) + "\n")
        except Exception:
            self.handleError(record)
        if record.levelno >= logging.WARNING:
            self.stream.flush()

    def write_line(self, line: str) -> None:
        """A formatted INFO line, written as `emit` would write it (for `log_access`)."""
        with self.lock or contextlib.nullcontext():
            self.stream.write(line + "\n")

    def flush_now(self) -> None:
        with self.lock or contextlib.nullcontext():
            if not self.stream.closed:
                self.stream.flush()

    def flush(self) -> None:
        self.flush_now()


FLUSH_INTERVAL = 0.2
# Every batching handler (the log's and the audit log's), for flush_logs.
_batching: list[BatchingStderrHandler] = []


async def flush_periodically() -> None:
    """Runs for as long as the gateway serves; flushes batched log lines."""
    try:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL)
            flush_logs()
    finally:
        flush_logs()


def flush_logs() -> None:
    for handler in _batching:
        handler.flush_now()


def configure_logging(log_format: str = "text", debug: bool = False) -> None:
    global _json_lines
    _json_lines = log_format == "json"
    handler = BatchingStderrHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    # The debug switch changes the effective level of the gateway's own loggers, not just a flag.
    logging.getLogger("hokusai_registry").setLevel(logging.DEBUG if debug else logging.INFO)
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # Migration chatter on every start says nothing an operator needs.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # No format of ours shows the process id, and recording it costs a getpid() call per line.
    logging.logProcesses = False


_access = logging.getLogger(ACCESS_LOGGER)
# Access-line fields are built only when a JSON formatter will read them.
_json_lines = False


def _sole_handler() -> BatchingStderrHandler | None:
    """The batching handler, when it is the only place an access line would reach and nothing filters
    it (as `configure_logging` leaves things): then `log_access` writes the line itself, without the
    LogRecord, caller lookup and locking that logging spends per line. A handler or filter added by a
    test or an operator gets the line through logging as usual."""
    logger: logging.Logger | None = _access
    found: logging.Handler | None = None
    while logger is not None:
        if logger.filters:
            return None
        for handler in logger.handlers:
            if found is not None:
                return None
            found = handler
        if not logger.propagate:
            break
        logger = logger.parent
    if (
        isinstance(found, BatchingStderrHandler)
        and not found.filters
        and found.level <= logging.INFO
        and isinstance(found.formatter, TextFormatter | JsonFormatter)
    ):
        return found
    return None


def log_access(record: RequestRecord, client: str, method: str, path: str, duration_ms: float) -> None:
    if not _access.isEnabledFor(logging.INFO):
        return
    request_id = record.request_id.decode("latin-1")
    if not path.isprintable():
        # A decoded path may hold CR, LF or escape sequences: never let it split or forge a line.
        path = path.encode("unicode_escape").decode("ascii")
    fields: dict[str, Any] | None = None
    if _json_lines:
        message = f"{request_id} {method} {path} -> {record.upstream} {record.status}"
        fields = {
            "request_id": request_id,
            "client": client,
            "method": method,
            "path": path,
            "upstream": record.upstream,
            "status": record.status,
            "bytes_in": record.bytes_in,
            "bytes_out": record.bytes_out,
            "duration_ms": round(duration_ms, 2),
            "upstream_ms": None if record.upstream_ms is None else round(record.upstream_ms, 2),
            "key_id": record.key_id,
        }
    else:
        message = (
            f"{request_id} {client} {method} {path} -> {record.upstream} {record.status} "
            f"in={record.bytes_in} out={record.bytes_out} {duration_ms:.1f}ms key={record.key_id}"
        )
    handler = _sole_handler()
    if handler is None:
        _access.info("%s", message, extra={"fields": fields} if fields else None)
        return
    formatter: TextFormatter | JsonFormatter = handler.formatter  # type: ignore[assignment]
    handler.write_line(formatter.line(time.time(), "INFO", ACCESS_LOGGER, message, fields))
