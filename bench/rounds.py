"""Interleaved rounds: every figure is the median of several runs, its targets taken in turn."""

from __future__ import annotations

import time

from bench.load import Rate, Target, median_rate, wrk
from bench.model import Plan

# The longest pause after a run for the requests wrk left in flight (see `rounds`).
MAX_SETTLE_SECONDS = 5.0


def rounds(
    plan: Plan, targets: dict[str, Target], connections: int, headers: dict[str, str] | None = None
) -> dict[str, Rate]:
    """Median of `plan.runs` runs per target, taking the targets in turn so drift hits all alike;
    `headers` are added to every target's own. After each run, a pause as long as its p99 latency: wrk
    stops with a request in flight on every connection, and a slow server (a password hash per request)
    would otherwise still be answering them during the next target's run."""
    samples: dict[str, list[Rate]] = {name: [] for name in targets}
    for _ in range(plan.runs):
        for name, target in targets.items():
            rate = wrk(target, connections, plan.seconds, headers)
            samples[name].append(rate)
            time.sleep(min(MAX_SETTLE_SECONDS, rate.p99_ms / 1000 if rate.requests else MAX_SETTLE_SECONDS))
    return {name: median_rate(rates) for name, rates in samples.items()}
