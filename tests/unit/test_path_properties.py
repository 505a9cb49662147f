"""Properties of path handling over generated request targets: what resolves is what the client asked for,
and the path that is authorized is exactly the path forwarded (after MLflow decodes it once)."""

from __future__ import annotations

from urllib.parse import unquote, unquote_to_bytes

from hypothesis import given, settings
from hypothesis import strategies as st

from hokusai_registry.core.refusals import Refusal
from hokusai_registry.policy.paths import Redirect, Target, resolve, upstream_path
from hokusai_registry.transport.forward import Forwarder

MOUNTS = ["", "/mlflow", "/api/mlflow", "/mlflowx", "/api"]
ROUTES = [
    "/api/2.0/mlflow/runs/create",
    "/ajax-api/2.0/mlflow/experiments/search",
    "/api/3.0/mlflow/traces",
    "/api/2.0/mlflow-artifacts/artifacts",
    "/get-artifact",
    "/graphql",
    "/static-files",
    "/",
    "/admin",
    "",
]
# Pieces that have fooled proxies: dot segments, encoded separators, overlong UTF-8, NUL, parameters.
PIECES = [
    "..",
    ".",
    "%2e%2e",
    "%2E.",
    "%2f",
    "%5c",
    "%252e",
    "%c0%ae",
    "%00",
    ";x=1",
    "//",
    "\\",
    "a",
    "m%20n",
    "é",
    "%C3%A9",
]

target = st.builds(
    lambda mount, route, tail: (mount + route + "/" + "/".join(tail)).encode(),
    st.sampled_from(MOUNTS),
    st.sampled_from(ROUTES),
    st.lists(st.sampled_from(PIECES), max_size=5),
)
FORWARDER = Forwarder(
    "http://mlflow.internal:5000",
    api_prefix="api",
    connect_timeout=1,
    read_timeout=1,
    transfer_idle_timeout=1,
    pool_size=1,
    mark="m",
)


def resolved(raw: bytes) -> Target | Redirect | None:
    try:
        return resolve(raw)
    except Refusal:
        return None


@settings(max_examples=1000)
@given(st.one_of(target, st.binary(max_size=80).map(lambda raw: b"/" + raw)))
def test_whatever_resolves_is_an_mlflow_route_authorized_and_forwarded_as_one_path(raw: bytes) -> None:
    found = resolved(raw)
    if found is None or isinstance(found, Redirect):
        return
    # Nothing added or dropped: the mount and the authorized path are the client's path, decoded once.
    assert found.mount + found.path == unquote_to_bytes(raw).decode("utf-8")
    forwarded = FORWARDER.target_bytes(found, b"").decode("ascii")
    assert unquote(forwarded) == found.path  # MLflow decodes once and sees what was authorized
    assert ".." not in found.path.split("/") and "//" not in found.path and "\\" not in found.path


@given(target, st.sampled_from(["api", "ajax-api"]))
def test_translation_changes_only_the_api_prefix(raw: bytes, prefix: str) -> None:
    found = resolved(raw)
    if found is None or isinstance(found, Redirect):
        return
    forwarded = unquote(upstream_path(found.path, prefix))
    if prefix == "ajax-api" and found.path.startswith("/api/"):
        assert forwarded == "/ajax-api/" + found.path[len("/api/") :]
    else:
        assert forwarded == found.path
