"""Gateway worker processes (`--workers N`): forked after the listening socket is bound, so they share it
and the kernel spreads connections over them. The parent makes the directory where their metrics meet
before it forks them (`ops.metrics.shared_directory`), passes SIGTERM on, reaps each worker as it exits
(taking it out of the metrics) and removes the directory when all are gone."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from hokusai_registry.ops.metrics import shared_directory, worker_exited

log = logging.getLogger(__name__)

STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


class Workers:
    def __init__(self, metrics_dir: Path) -> None:
        self.metrics_dir = metrics_dir
        self._running: set[int] = set()
        self._codes: dict[int, int] = {}
        # The reapers take workers off `_running` while `stop` reads it; reentrant, as `stop` also runs in
        # a signal handler, perhaps while this thread holds it.
        self._lock = threading.RLock()

    def fork(self, count: int, serve: Callable[[Path], None]) -> None:
        """Workers get their own process group, so Ctrl-C reaches only the parent, which passes SIGTERM
        on (a worker that got both would stop without draining). From before the first fork, SIGINT and
        SIGTERM reach the parent's `stop`: held back while forking, so none lands between a fork and a
        worker's own handlers (uvicorn's, once it serves)."""
        for sig in STOP_SIGNALS:
            signal.signal(sig, lambda _signum, _frame: self.stop())
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            for _ in range(count):
                pid = os.fork()
                if pid == 0:  # worker
                    for sig in STOP_SIGNALS:
                        signal.signal(sig, signal.SIG_DFL)
                    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
                    os.setpgid(0, 0)
                    code = 0
                    try:
                        serve(self.metrics_dir)
                    except BaseException:
                        log.exception("worker failed")
                        code = 1
                    os._exit(code)
                with self._lock:
                    self._running.add(pid)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)

    def stop(self) -> None:
        with self._lock:
            for pid in self._running:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)

    def wait(self) -> int:
        """Until every worker has exited; the worst exit code. Each is reaped as it exits, not in turn,
        so a worker that dies early leaves the metrics' live sums at once."""
        with self._lock:
            reapers = [threading.Thread(target=self._reap, args=(pid,), daemon=True) for pid in self._running]
        for reaper in reapers:
            reaper.start()
        for reaper in reapers:
            reaper.join()
        return max(self._codes.values(), default=0)

    def _reap(self, pid: int) -> None:
        _, status = os.waitpid(pid, 0)
        with self._lock:
            self._running.discard(pid)
        worker_exited(self.metrics_dir, pid)
        code = os.waitstatus_to_exitcode(status)
        self._codes[pid] = code if code >= 0 else 128 - code  # killed by a signal: as a shell reports it


@contextlib.contextmanager
def forked(count: int, serve: Callable[[Path], None]) -> Iterator[Workers]:
    """`count` workers, each running `serve(metrics_dir)`; on leaving, stopped and reaped (if the parent
    did not wait for them already) before their metrics directory is removed."""
    with shared_directory() as metrics_dir:
        workers = Workers(metrics_dir)
        try:
            workers.fork(count, serve)
            yield workers
        finally:
            workers.stop()
            workers.wait()
