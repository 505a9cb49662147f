"""Load generators and samplers: wrk for request rates and latency, streaming transfers for
artifacts, /proc for a process tree's resident memory."""

from __future__ import annotations

import contextlib
import re
import statistics
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import requests

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


@dataclass(frozen=True)
class Target:
    """What wrk sends: a URL, the headers of this target (a key, say), and a Lua script for a method and
    body other than a plain GET."""

    url: str
    headers: dict[str, str] = field(default_factory=dict)
    script: Path | None = None


@dataclass(frozen=True)
class Rate:
    """One wrk run, or the median of several: `rps_min` and `rps_max` are the slowest and fastest run,
    `requests` the responses counted over all of them."""

    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int = 0
    rps_min: float = 0.0
    rps_max: float = 0.0

    @property
    def spread(self) -> str:
        """The runs' range, as a table shows it (`412–455`)."""
        low, high = self.rps_min or self.rps, self.rps_max or self.rps
        return f"{low:,.0f}–{high:,.0f}"


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if not match:
        raise ValueError(f"unexpected wrk latency {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


# wrk's default of 2 s drops slower answers from the latencies and counts them as errors; MLflow's auth app
# hashing a password per request under 8 connections on 2 cores is slower than that.
WRK_TIMEOUT = "30s"


def wrk(target: Target, connections: int, seconds: float, headers: dict[str, str] | None = None) -> Rate:
    """One wrk run against `target`, with `headers` added to the target's own."""
    args = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency", "--timeout", WRK_TIMEOUT]
    for name, value in {**target.headers, **(headers or {})}.items():
        args += ["-H", f"{name}: {value}"]
    if target.script:
        args += ["-s", str(target.script)]
    out = subprocess.run(
        [*args, target.url], capture_output=True, text=True, timeout=seconds + 60, check=True
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    requests_done = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    errors = 0
    if found := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        errors += int(found.group(1))
    if found := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        errors += sum(int(n) for n in found.groups())
    return Rate(rps, p50, p99, errors, requests_done, rps, rps)


def median_rate(samples: list[Rate]) -> Rate:
    return Rate(
        statistics.median(s.rps for s in samples),
        statistics.median(s.p50_ms for s in samples),
        statistics.median(s.p99_ms for s in samples),
        sum(s.errors for s in samples),
        sum(s.requests for s in samples),
        min(s.rps for s in samples),
        max(s.rps for s in samples),
    )


class RssSampler:
    """Peak resident memory of a process and its children, sampled while a transfer runs.

    The process tree is looked up once a second, not at every sample: finding children reads every
    process's /proc entry (~3 ms for 85 processes, under the GIL), which at every 20 ms sample slowed the
    transfer measured in this very process, and only on the route sampled."""

    TREE_INTERVAL = 1.0

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.process = psutil.Process(pid)
        self.interval = interval
        self.peak_mb = 0.0
        self.baseline_mb = 0.0
        self._tree: list[psutil.Process] = []
        self._tree_at = -self.TREE_INTERVAL
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> float:
        now = time.monotonic()
        if now - self._tree_at >= self.TREE_INTERVAL:
            self._tree = [self.process, *self.process.children(recursive=True)]
            self._tree_at = now
        total = 0
        for member in self._tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                total += member.memory_info().rss
        return total / 2**20

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, self._sample())
            time.sleep(self.interval)

    @property
    def growth_mb(self) -> float:
        """How far the peak rose above the resident memory at the start: what the transfer itself cost."""
        return self.peak_mb - self.baseline_mb

    def __enter__(self) -> RssSampler:
        self.baseline_mb = self._sample()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def upload(url: str, path: Path, headers: dict[str, str]) -> float:
    """PUT a file, streamed from disk; returns MB/s."""
    size = path.stat().st_size
    started = time.perf_counter()
    with path.open("rb") as body:
        response = requests.put(url, data=body, headers={**headers, "Content-Length": str(size)}, timeout=600)
    response.raise_for_status()
    return size / 1e6 / (time.perf_counter() - started)


def download(url: str, headers: dict[str, str], expected: int) -> float:
    """GET a file, streamed and discarded; returns MB/s."""
    started = time.perf_counter()
    received = 0
    with requests.get(url, headers=headers, stream=True, timeout=600) as response:
        response.raise_for_status()
        for chunk in response.iter_content(1 << 20):
            received += len(chunk)
    if received != expected:
        raise RuntimeError(f"downloaded {received} bytes, expected {expected}")
    return expected / 1e6 / (time.perf_counter() - started)
