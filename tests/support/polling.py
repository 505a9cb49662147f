"""One poller for every "wait until the other side has caught up" in the tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def eventually(
    predicate: Callable[[], T | None], timeout: float = 10, interval: float = 0.2, message: str = ""
) -> T:
    """Calls `predicate` until it returns something other than None or False and returns that; fails
    after `timeout` seconds. Not truthiness: a refused `requests.Response` is falsy, and is often what a
    caller waits for. Callers wait for another process or a background task, never measure time."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result is not None and result is not False:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not true after {timeout} s" + (f": {message}" if message else ""))
        time.sleep(interval)
