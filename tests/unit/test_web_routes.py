"""Which paths are the gateway's pages, and which methods each takes (`PAGE_ROUTES`, the data the
gateway routes by): exact paths only, so anything else goes on to MLflow's path resolution."""

from __future__ import annotations

import pytest

from hokusai_registry.admin.pages import PAGE_PATHS, PAGE_ROUTES, is_page_path


def test_every_page_and_its_methods() -> None:
    methods: dict[str, set[str]] = {}
    for route in PAGE_ROUTES:
        methods.setdefault(route.path, set()).update(route.methods or ())
    assert methods == {
        "/assets/hokusai.css": {"GET", "HEAD"},
        "/login": {"GET", "HEAD", "POST"},
        "/logout": {"GET", "HEAD", "POST"},
        "/admin/keys": {"GET", "HEAD", "POST"},
        "/admin/keys/{key_id:key_id}/revoke": {"POST"},
    }
    assert {"/assets/hokusai.css", "/login", "/logout", "/admin/keys"} == PAGE_PATHS


@pytest.mark.parametrize(
    "path", ["/login", "/logout", "/admin/keys", "/assets/hokusai.css", "/admin/keys/Ab3456789012/revoke"]
)
def test_page_paths(path: str) -> None:
    assert is_page_path(path)


@pytest.mark.parametrize(
    "path",
    [
        "/login/",
        "/login\n",
        "/Login",
        "/admin/keys/",
        "/admin/keys/short/revoke",
        "/admin/keys/Ab34567890123/revoke",
        "/admin/keys/Ab345678901-/revoke",
        "/admin/keys/Ab3456789012/revoke\n",
        "/admin/keys/Ab3456789012/revoke/",
        "/admin/keys/Ab3456789012",
        "/mlflow/login",
    ],
)
def test_nothing_else_is_a_page(path: str) -> None:
    assert not is_page_path(path)
