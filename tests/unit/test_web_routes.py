"""Which paths are the gateway's pages (the route table) and which methods each takes (`PAGE_ROUTES`): the
two agree, and only exact paths are pages, so anything else goes on to MLflow's path resolution."""

from __future__ import annotations

import pytest

from hokusai_registry.admin.pages import PAGE_ROUTES
from hokusai_registry.policy.routes import Handler, own_route


def is_page_path(path: str) -> bool:
    route = own_route(path)
    return route is not None and route.handler is Handler.PAGES


def test_every_page_and_its_methods() -> None:
    methods: dict[str, set[str]] = {}
    for route in PAGE_ROUTES:
        methods.setdefault(route.path, set()).update(route.methods or ())
    assert methods == {
        "/assets/hokusai.css": {"GET", "HEAD"},
        "/login": {"GET", "HEAD", "POST"},
        "/logout": {"GET", "HEAD", "POST"},
        "/login/oidc": {"GET", "HEAD"},
        "/login/oidc/callback": {"GET", "HEAD"},
        "/keys": {"GET", "HEAD", "POST"},
        "/keys/revoke": {"POST"},
        "/admin/users": {"GET", "HEAD"},
        "/admin/users/disable": {"GET", "HEAD", "POST"},
        "/admin/users/enable": {"GET", "HEAD", "POST"},
        "/admin/keys": {"GET", "HEAD", "POST"},
        "/admin/keys/{key_id:key_id}/revoke": {"GET", "HEAD", "POST"},
        "/admin/keys/{key_id:key_id}/rotate": {"GET", "HEAD", "POST"},
        "/admin/teams": {"GET", "HEAD", "POST"},
        "/admin/teams/members": {"POST"},
        "/admin/teams/remove-member": {"GET", "HEAD", "POST"},
        "/admin/teams/delete": {"GET", "HEAD", "POST"},
        "/admin/grants": {"GET", "HEAD", "POST"},
        "/admin/grants/remove": {"GET", "HEAD", "POST"},
        "/admin/protections": {"GET", "HEAD", "POST"},
        "/admin/protections/remove": {"GET", "HEAD", "POST"},
        "/promotions": {"GET", "HEAD"},
        "/promotions/approve": {"POST"},
        "/promotions/reject": {"POST"},
    }
    fixed = {route.path for route in PAGE_ROUTES if not route.param_convertors}
    assert fixed == {
        "/assets/hokusai.css",
        "/login",
        "/logout",
        "/login/oidc",
        "/login/oidc/callback",
        "/keys",
        "/keys/revoke",
        "/admin/users",
        "/admin/users/disable",
        "/admin/users/enable",
        "/admin/keys",
        "/admin/teams",
        "/admin/teams/members",
        "/admin/teams/remove-member",
        "/admin/teams/delete",
        "/admin/grants",
        "/admin/grants/remove",
        "/admin/protections",
        "/admin/protections/remove",
        "/promotions",
        "/promotions/approve",
        "/promotions/reject",
    }
    assert all(is_page_path(path) for path in fixed)


@pytest.mark.parametrize(
    "path",
    [
        "/login",
        "/logout",
        "/admin/keys",
        "/assets/hokusai.css",
        "/admin/keys/Ab3456789012/revoke",
        "/admin/keys/Ab3456789012/rotate",
        "/admin/teams",
        "/admin/teams/members",
        "/admin/grants/remove",
    ],
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
        "/admin/keys/Ab3456789012/rotate/",
        "/admin/keys/Ab3456789012/Rotate",
        "/admin/keys/Ab3456789012/rotated",
        "/admin/keys/Ab3456789012/delete",
        "/admin/keys/Ab3456789012",
        "/mlflow/login",
        "/admin/teams/",
        "/admin/teams/ml",
        "/admin/teams/ml/delete",
        "/admin/grants/",
        "/admin/grants/remove/",
        "/admin/Teams",
    ],
)
def test_nothing_else_is_a_page(path: str) -> None:
    assert not is_page_path(path)
