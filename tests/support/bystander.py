"""Another client while an attack runs: what the attack tests measure besides the attack itself."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import requests

EXPERIMENTS_GET = "/mlflow/api/2.0/mlflow/experiments/get?experiment_id=0"
# What the issue asks of every attack: the others are still answered, within this.
DEADLINE_S = 2.0


class Bystander:
    """Asks `/health` and an authenticated `experiments/get` in turn, on each gateway, each on a fresh
    connection (an attack on connections must not be hidden by a kept-alive pool), until the block ends.
    A failure or no answer within 10 s counts as a failure and as 10 s."""

    def __init__(self, urls: str | Sequence[str], key: str) -> None:
        self.urls = [urls] if isinstance(urls, str) else list(urls)
        self.headers = {"Authorization": f"Bearer {key}"}
        self.latencies: list[float] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _ask(self, url: str, headers: dict[str, str]) -> None:
        started = time.perf_counter()
        try:
            status = requests.get(url, headers=headers, timeout=10).status_code
            if status != 200:
                self.failures.append(f"{url}: {status}")
        except requests.RequestException as exc:
            self.failures.append(f"{url}: {type(exc).__name__}")
        self.latencies.append(time.perf_counter() - started)

    def _run(self) -> None:
        while not self._stop.is_set():
            for url in self.urls:
                self._ask(url + "/health", {})
                self._ask(url + EXPERIMENTS_GET, self.headers)
            self._stop.wait(0.2)

    @property
    def worst(self) -> float:
        return max(self.latencies, default=0.0)

    def summary(self) -> str:
        return f"other clients' slowest answer {self.worst:.2f} s ({len(self.latencies)} requests, " + (
            f"{len(self.failures)} failed)"
        )

    def __enter__(self) -> Bystander:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def check(self) -> None:
        assert self.latencies, "the bystander never got to ask"
        assert self.failures == [], f"other clients were refused or timed out: {self.failures[:5]}"
        assert self.worst < DEADLINE_S, f"another client waited {self.worst:.1f} s"
