"""What MLflow's auth app looks up for every request, looked up less often.

**The auth store's repeated reads, answered once per request.**

MLflow's auth app asks its store for the caller's user (for the admin flag and the user id) two to four
times per request, and for the caller's grants once or more, each time in a session of its own (on SQLite
four statements): 2.8-4.7 ms of the 5.7-13.5 ms of CPU a light call cost MLflow with permissions on
before this module (docs/benchmarks.md, "Where the time goes"). Within one request those answers do not
change unless the request itself changes the store, so `get_user` and `list_grants` are kept on the
request (its WSGI environ: a Flask app context may outlive a request, the environ never does) and every
other store method forgets them first: a request that writes grants or users reads what it wrote. Nothing
is kept across requests: a grant, revoke or DENY applies to the next request, as before. Outside a
request (start-up, MLflow's own scripts) every call goes to the store.

**The experiment of a run, remembered per process.** To decide a run's calls (`runs/log-batch`,
`log-metric`, `set-tag`: a training loop's) the auth app loads the whole run from the tracking store (its
tags, params, latest metrics and inputs: 10 of the 19 statements of a `log-batch`) and reads only
`run.info.experiment_id`; a run never changes experiment, so the answer is kept (up to RUNS_KEPT runs).
Only runs found are kept: a run id not yet created, or gone, is looked up every time. A run deleted for
good (`mlflow gc`) after being kept is then decided on its former experiment, and a caller allowed there
gets MLflow's RESOURCE_DOES_NOT_EXIST instead of PERMISSION_DENIED.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

from flask import has_request_context, request

# The reads kept per request; MLflow's SqlAlchemyStore has both (a test fails if it drops one).
MEMOIZED = ("get_user", "list_grants")
_ENVIRON_KEY = "hokusai.auth_store_reads"
_INSTALLED = "_hokusai_reads_per_request"
RUNS_KEPT = 100_000


def _reads() -> dict[Hashable, Any] | None:
    """This request's kept answers, or None outside a request."""
    if not has_request_context():
        return None
    kept: dict[Hashable, Any] = request.environ.setdefault(_ENVIRON_KEY, {})
    return kept


def _hashable(value: Any) -> Any:
    if isinstance(value, set | frozenset):
        return frozenset(value)
    if isinstance(value, list):
        return tuple(value)
    return value


def _key(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Hashable | None:
    """The call as a dict key (sets of resource types as frozensets, positional or by name), or None if
    an argument is not hashable (that call is not kept)."""
    named = tuple((keyword, _hashable(value)) for keyword, value in sorted(kwargs.items()))
    key = (name, *map(_hashable, args), *named)
    try:
        hash(key)
    except TypeError:
        return None
    return key


def _kept(name: str, read: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(read)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        kept = _reads()
        key = _key(name, args, kwargs) if kept is not None else None
        if kept is None or key is None:
            return read(*args, **kwargs)
        if key not in kept:
            kept[key] = read(*args, **kwargs)
        answer = kept[key]
        # A list handed out is the caller's to change: each gets its own.
        return list(answer) if isinstance(answer, list) else answer

    return wrapper


def _forgetting(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        kept = _reads()
        if kept:
            kept.clear()
        return method(*args, **kwargs)

    return wrapper


def keep_reads_per_request(store: Any) -> None:
    """Make `store` (MLflow's auth store instance) answer MEMOIZED once per request; idempotent."""
    if getattr(store, _INSTALLED, False):
        return
    for name in dir(type(store)):
        if name.startswith("_") or not callable(getattr(type(store), name)):
            continue
        method = getattr(store, name)
        setattr(store, name, _kept(name, method) if name in MEMOIZED else _forgetting(method))
    setattr(store, _INSTALLED, True)


@dataclass(frozen=True)
class KnownRunInfo:
    experiment_id: str


@dataclass(frozen=True)
class KnownRun:
    """A run the auth app has seen: all it reads of one (any other attribute fails, so a new use in
    MLflow shows up as an error, never as a stale answer)."""

    info: KnownRunInfo


class RunExperiments:
    """run id -> experiment id, the oldest forgotten first past `limit`."""

    def __init__(self, limit: int = RUNS_KEPT) -> None:
        self._limit = limit
        self._known: dict[str, str] = {}
        self._lock = threading.Lock()

    def get(self, run_id: str) -> str | None:
        return self._known.get(run_id)

    def remember(self, run_id: str, experiment_id: str) -> None:
        with self._lock:
            if len(self._known) >= self._limit:
                del self._known[next(iter(self._known))]
            self._known[run_id] = experiment_id


class TrackingStoreForAuth:
    """MLflow's tracking store as its auth app sees it: `get_run` answered from `runs` when it knows the
    run; everything else is the store's own."""

    def __init__(self, store: Any, runs: RunExperiments) -> None:
        self._store = store
        self._runs = runs

    def get_run(self, run_id: str) -> Any:
        if not isinstance(run_id, str):  # not a run id MLflow would find: its own answer
            return self._store.get_run(run_id)
        experiment_id = self._runs.get(run_id)
        if experiment_id is not None:
            return KnownRun(KnownRunInfo(experiment_id))
        run = self._store.get_run(run_id)
        self._runs.remember(run_id, run.info.experiment_id)
        return run

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def keep_lookups(auth: Any) -> None:
    """Install both on MLflow's auth app (`mlflow.server.auth`); idempotent."""
    keep_reads_per_request(auth.store)
    tracking_store = auth._get_tracking_store
    if isinstance(getattr(tracking_store, "runs", None), RunExperiments):
        return
    runs = RunExperiments()

    def tracking_store_for_auth() -> TrackingStoreForAuth:
        return TrackingStoreForAuth(tracking_store(), runs)

    tracking_store_for_auth.runs = runs  # type: ignore[attr-defined]
    auth._get_tracking_store = tracking_store_for_auth
