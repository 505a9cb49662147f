"""Access lines: written straight to the batching handler when it alone would receive them, and through
logging otherwise, with the same text either way (text and JSON), redacted, one line per request."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
from collections.abc import Iterator

import pytest

from hokusai_registry.core.record import RequestRecord
from hokusai_registry.ops import logs
from tests.support.logs import captured

# The time at the start of a text line, which differs between two lines written a moment apart.
_TIME = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ")


@pytest.fixture(params=["text", "json"])
def configured(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """Logging as `configure_logging` leaves it, its batching handler writing to a string. (Set up in the
    test's own phase: pytest adds handlers of its own to the root logger for each phase.)"""
    monkeypatch.setattr(logs, "_batching", [])
    monkeypatch.setattr(logs, "_json_lines", request.param == "json")
    handler = logs.BatchingStderrHandler()
    handler.stream.close()
    stream = io.StringIO()
    handler.stream = stream
    handler.setFormatter(logs.JsonFormatter() if request.param == "json" else logs.TextFormatter())
    yield stream
    logging.getLogger().removeHandler(handler)


@contextlib.contextmanager
def alone(stream: io.StringIO) -> Iterator[None]:
    """The configured handler as the root logger's only one, at INFO, while the block runs."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    root.handlers[:] = [logs._batching[0]]
    root.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


def _record() -> RequestRecord:
    record = RequestRecord(b"req-1")
    record.upstream, record.status, record.bytes_in, record.bytes_out = "/api/2.0/mlflow/x", 200, 3, 120
    record.key_id, record.upstream_ms = "hk_test_abcd", 1.234
    return record


def _written(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def test_the_sole_handler_gets_the_same_line_as_logging_would_give_it(configured: io.StringIO) -> None:
    with alone(configured):
        assert logs._sole_handler() is logs._batching[0]
        logs.log_access(_record(), "10.0.0.1", "GET", "/api/2.0/mlflow/x", 2.5)
        direct = _written(configured)
        # Another handler on the way: the line goes through logging, to both.
        with captured(logs.ACCESS_LOGGER, logging.Formatter("%(message)s")) as other:
            assert logs._sole_handler() is None
            logs.log_access(_record(), "10.0.0.1", "GET", "/api/2.0/mlflow/x", 2.5)
    through_logging = _written(configured)[1:]
    assert len(direct) == len(through_logging) == 1
    if logs._json_lines:
        first, second = json.loads(direct[0]), json.loads(through_logging[0])
        assert first.pop("ts") and second.pop("ts")
        assert first == second
        assert first["key_id"] == "hk_test_[redacted]" and first["upstream_ms"] == 1.23
        assert other.lines == ["req-1 GET /api/2.0/mlflow/x -> /api/2.0/mlflow/x 200"]
    else:
        assert _TIME.match(direct[0]) and _TIME.match(through_logging[0])
        assert (
            _TIME.sub("", direct[0])
            == _TIME.sub("", through_logging[0])
            == (
                "INFO hokusai_registry.access: req-1 10.0.0.1 GET /api/2.0/mlflow/x -> /api/2.0/mlflow/x 200 "
                "in=3 out=120 2.5ms key=hk_test_[redacted]"
            )
        )
        assert other.lines == [_TIME.sub("", direct[0]).split(": ", 1)[1].replace("[redacted]", "abcd")]


def test_a_filter_or_a_quieter_level_sends_the_line_through_logging(configured: io.StringIO) -> None:
    access = logging.getLogger(logs.ACCESS_LOGGER)
    dropped = logging.Filter("somewhere.else")
    with alone(configured):
        access.addFilter(dropped)
        try:
            assert logs._sole_handler() is None
            logs.log_access(_record(), "10.0.0.1", "GET", "/x", 1.0)
        finally:
            access.removeFilter(dropped)
        access.setLevel(logging.WARNING)
        try:
            logs.log_access(_record(), "10.0.0.1", "GET", "/x", 1.0)
        finally:
            access.setLevel(logging.NOTSET)
    assert _written(configured) == []


def test_a_path_with_control_characters_stays_on_one_line(configured: io.StringIO) -> None:
    forged = "/x\n2026-01-01 00:00:00,000 INFO hokusai_registry.access: forged\x1b[2J"
    with alone(configured):
        logs.log_access(_record(), "10.0.0.1", "GET", forged, 1.0)
    lines = _written(configured)
    assert len(lines) == 1
    assert "\\n2026-01-01" in lines[0] and "\\x1b[2J" in lines[0]


def test_local_time_is_logging_s_default(monkeypatch: pytest.MonkeyPatch) -> None:
    formatter = logging.Formatter("%(asctime)s")
    for created in (1_700_000_000.0, 1_700_000_000.999, 1_700_000_001.5):
        record = logging.makeLogRecord({"created": created, "msecs": int((created - int(created)) * 1000)})
        assert logs._local_time(created) == formatter.formatTime(record)
