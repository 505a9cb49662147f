"""What one request costs a server: µs of CPU and system calls, for before/after comparisons of a hot path.

`request_cost` measures a running server under wrk: the CPU time (user + system, from /proc, of the server's
whole process tree) over one run divided by the requests wrk counted, then, in a second run with
`strace -c -f` attached to every thread of that tree, the system calls per request (strace slows the server,
so that run's rate is not reported). The requests still in flight when wrk stops (at most one per
connection) are served but not counted: each run is long enough for that to stay within a few per cent.

`python -m bench.syscalls` starts the small-request stack of `make bench` (an nginx stub, an nginx reverse
proxy, a bare ASGI hello world, the bare proxy and a one-worker gateway in front of the stub) and prints,
for each but the stub: req/s, µs CPU per request, syscalls per request and the most frequent calls.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import psutil

from bench.load import Target, wrk
from bench.model import Cost
from bench.stack import running, stub_servers

# strace -c's table rows: % time, seconds, usecs/call, calls, [errors,] syscall.
_ROW = re.compile(r"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)\s*$")
Ran = TypeVar("Ran")
# How many calls per request a report names, most frequent first.
TOP_CALLS = 5


def _tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds spent so far by `pid` and its living descendants."""
    total = 0.0
    for process in _tree(pid):
        with contextlib.suppress(psutil.NoSuchProcess):
            times = process.cpu_times()
            total += times.user + times.system
    return total


def strace_unavailable() -> str | None:
    """Why system calls cannot be counted here, or None."""
    if not shutil.which("strace"):
        return "strace is not installed (Debian's package strace)"
    with subprocess.Popen(["sleep", "5"]) as sleeper:
        try:
            probe = subprocess.run(
                ["strace", "-c", "-o", "/dev/null", "-p", str(sleeper.pid)],
                capture_output=True,
                text=True,
                timeout=1,
                check=False,
            )
            reason = probe.stderr.strip().splitlines()[-1] if probe.stderr.strip() else "strace exited"
            return f"strace cannot attach ({reason}): ptrace is not permitted here"
        except subprocess.TimeoutExpired:
            return None  # attached and tracing, as it should
        finally:
            sleeper.kill()


def _threads(pids: list[int]) -> list[Path]:
    return [task for pid in pids for task in Path(f"/proc/{pid}/task").iterdir()]


def _traced(pids: list[int]) -> bool:
    """Whether every thread of `pids` has a tracer attached (strace attaches them one by one)."""
    for task in _threads(pids):
        with contextlib.suppress(FileNotFoundError):
            status = (task / "status").read_text()
            if re.search(r"^TracerPid:\s+0$", status, re.MULTILINE):
                return False
    return True


def parse_summary(text: str) -> Counter[str]:
    """Calls per system call from `strace -c`'s summary table (the `total` row left out)."""
    counts: Counter[str] = Counter()
    for line in text.splitlines():
        if (match := _ROW.match(line)) and match.group(2) != "total":
            counts[match.group(2)] += int(match.group(1))
    return counts


def count_syscalls(pid: int, run: Callable[[], Ran]) -> tuple[Counter[str], Ran]:
    """System calls made by every thread of `pid`'s process tree while `run` runs, and what it returned."""
    pids = [process.pid for process in _tree(pid)]
    with tempfile.TemporaryDirectory(prefix="bench-strace-") as tmp:
        summary = Path(tmp) / "summary.txt"
        args = ["strace", "-c", "-f", "-qq", "-o", str(summary)]
        for traced in pids:
            args += ["-p", str(traced)]
        tracer = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 15
            while not _traced(pids):
                if tracer.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"strace did not attach: {tracer.stderr.read().decode()[-300:]}")  # type: ignore[union-attr]
                time.sleep(0.05)
            rate = run()
            time.sleep(0.2)  # the answers to the last requests in flight, counted with the rest
        finally:
            tracer.send_signal(signal.SIGINT)
            tracer.wait(30)
        return parse_summary(summary.read_text()), rate


def request_cost(
    target: Target, pid: int, connections: int, seconds: float, strace_reason: str | None
) -> Cost:
    """CPU µs and system calls per request of the server `pid` answering `target` (pass
    `strace_unavailable()` as `strace_reason`, checked once per run)."""
    before = cpu_seconds(pid)
    rate = wrk(target, connections, seconds)
    cpu_us = (cpu_seconds(pid) - before) / max(1, rate.requests) * 1e6
    if strace_reason:
        return Cost(rate, cpu_us, None, note=strace_reason)
    counts, traced = count_syscalls(pid, lambda: wrk(target, connections, seconds))
    served = max(1, traced.requests)
    top = tuple((name, calls / served) for name, calls in counts.most_common(TOP_CALLS))
    return Cost(rate, cpu_us, sum(counts.values()) / served, top, f"{traced.requests:,} requests traced")


def format_top(cost: Cost) -> str:
    return ", ".join(f"{name} {per:.2f}" for name, per in cost.top) or cost.note


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.syscalls", description=__doc__)
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    parser.add_argument("--seconds", type=float, default=5, help="seconds per wrk run (default 5)")
    args = parser.parse_args()
    reason = strace_unavailable()
    with tempfile.TemporaryDirectory(prefix="hokusai-syscalls-") as tmp, running(Path(tmp)) as processes:
        servers = stub_servers(processes, Path(tmp))
        print(f"c={args.connections}, {args.seconds:g} s per run; CPU: the server's process tree", flush=True)
        header = f"{'server':<12} {'req/s':>9} {'µs CPU/req':>11} {'syscalls/req':>13}"
        print(f"{header}  most frequent per request")
        for name in ("nginx", "hello world", "bare proxy", "gateway"):
            server = servers[name]
            cost = request_cost(server.target, server.pid, args.connections, args.seconds, reason)
            syscalls = "-" if cost.syscalls is None else f"{cost.syscalls:.2f}"
            print(
                f"{name:<12} {cost.rate.rps:>9,.0f} {cost.cpu_us:>11.1f} {syscalls:>13}  {format_top(cost)}",
                flush=True,
            )


if __name__ == "__main__":
    main()
